"""Adapters survive any answer body: every error maps into the taxonomy by its status code.

A tiny aiohttp server on loopback answers every call with the status, body and headers a test
chooses; the three adapters talk to it through the official SDKs, as they talk to a provider
(or to a proxy in front of one). Whatever the body (a string, HTML, empty, truncated JSON,
``{"error": "a string"}``, numbers, nested nulls, bytes that are not UTF-8, any JSON at all) and
whatever the Retry-After header says, a call ends in its documented outcome or in one of the
taxonomy's errors, chosen by the status code: never an ``AttributeError``, ``KeyError`` or
``TypeError`` escaping, never the API key in a message, never an unusable retry delay.

The named bodies run as a table; hypothesis fuzzes bodies x status codes x headers (short
profile in ``make test``, ``HYPOTHESIS_PROFILE=long`` or ``bench/properties.py`` for more).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.base import (
    AdapterError,
    AuthError,
    BatchItem,
    BatchStatus,
    PermanentError,
    ProviderAdapter,
    ResultsGone,
    TransientError,
    UnknownOutcome,
)
from adapters.registry import make_adapter

settings.register_profile(
    "long", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])
LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"

KEY = "sk-error-bodies-secret-key"
PROVIDERS = ("openai", "anthropic", "gemini")
CALLS = ("poll", "results", "submit", "find")
BATCH = {"openai": "batch_1", "anthropic": "msgbatch_1", "gemini": "batches/1"}
MODEL = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}
BODY = {
    "openai": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
    "anthropic": {
        "model": "claude-haiku-4-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "x"}],
    },
    "gemini": {"contents": [{"role": "user", "parts": [{"text": "x"}]}]},
}
NAMED_BODIES = {
    "empty": b"",
    "string": b'"a string"',
    "html": b"<html><body><h1>502 Bad Gateway</h1></body></html>",
    "truncated": b'{"error": {"message": "over',
    "error_string": b'{"error": "a string"}',
    "number": b"42",
    "nested_nulls": b'{"error": {"message": null, "code": null, "details": [null, {"x": null}]}}',
    "error_list": b'{"error": [1, {"message": 2}]}',
    "details_number": b'{"error": {"details": 5}}',
    "not_utf8": b"\xff\xfe\xfa",
    "deep": b"[" * 5000,
    "key_echoed": b'{"error": {"message": "bad key sk-error-bodies-secret-key"}}',
}


@dataclass
class Reply:
    status: int = 500
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class Rig:
    """The server, its next reply, and one adapter per provider, on one event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.reply = Reply()
        self.spool = Path(tempfile.mkdtemp(prefix="batchd-error-bodies-"))
        self.runner: web.AppRunner | None = None
        self.adapters: dict[str, ProviderAdapter] = {}

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(
            status=self.reply.status, body=self.reply.body, headers=self.reply.headers
        )

    def start(self) -> Rig:
        async def start() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
            for provider in PROVIDERS:
                self.adapters[provider] = make_adapter(
                    provider,
                    base_url=url + ("/v1" if provider == "openai" else ""),
                    api_key=KEY,
                    timeout_s=10,
                    spool_dir=self.spool,
                    options={},
                )

        self.loop.run_until_complete(start())
        return self

    def stop(self) -> None:
        async def stop() -> None:
            for adapter in self.adapters.values():
                await adapter.close()
            if self.runner is not None:
                await self.runner.cleanup()

        self.loop.run_until_complete(stop())
        self.loop.close()

    def call(self, provider: str, call: str, reply: Reply) -> Any:
        """The call's return value, or the exception it raised."""
        self.reply = reply
        adapter = self.adapters[provider]
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "poll": lambda: adapter.poll(BATCH[provider]),
            "results": lambda: _all(adapter, BATCH[provider]),
            "submit": lambda: adapter.submit(
                "tag-1", MODEL[provider], [BatchItem("r1", BODY[provider])]
            ),
            "find": lambda: adapter.find("tag-1", MODEL[provider], 1, 0.0, set(), ["r1"]),
        }

        async def run() -> Any:
            try:
                return await asyncio.wait_for(calls[call](), 20)
            except Exception as exc:
                return exc

        return self.loop.run_until_complete(run())


async def _all(adapter: ProviderAdapter, batch: str) -> list[Any]:
    return [item async for item in adapter.results(batch)]


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    rig = Rig().start()
    yield rig
    rig.stop()


def expected_error(call: str, status: int) -> type[AdapterError] | str:
    """What an error status means for a call: the taxonomy's rule, whatever the body."""
    if status in (401, 403):
        return AuthError
    if status == 404:
        return {"poll": "gone", "results": ResultsGone}.get(call, PermanentError)
    if status in (408, 409, 429) or status >= 500:
        return TransientError
    return PermanentError


def check_error_answer(provider: str, call: str, status: int, outcome: Any) -> None:
    expected = expected_error(call, status)
    if expected == "gone":
        assert isinstance(outcome, BatchStatus) and outcome.state == "gone", outcome
        return
    assert type(outcome) is expected, (provider, call, status, repr(outcome))
    assert KEY not in str(outcome), outcome
    if isinstance(outcome, TransientError) and outcome.retry_after is not None:
        assert math.isfinite(outcome.retry_after) and outcome.retry_after >= 0, outcome


# -- the named bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 529])
@pytest.mark.parametrize("name", sorted(NAMED_BODIES))
def test_named_error_bodies_map_by_status(rig: Rig, name: str, status: int) -> None:
    reply = Reply(status, NAMED_BODIES[name], {"Content-Type": "application/json"})
    for provider in PROVIDERS:
        for call in CALLS:
            check_error_answer(provider, call, status, rig.call(provider, call, reply))


@pytest.mark.parametrize("name", ["empty", "string", "html", "truncated", "number", "not_utf8"])
def test_a_success_status_with_an_unreadable_body_is_a_failed_read(rig: Rig, name: str) -> None:
    """A 200 whose body is not the object the SDK expects: a read is tried again; a create
    (the batch may exist) is an unknown outcome, looked up and never sent again blindly."""
    for content_type in ("application/json", "text/html"):
        reply = Reply(200, NAMED_BODIES[name], {"Content-Type": content_type})
        for provider in PROVIDERS:
            for call in ("poll", "results", "find"):
                outcome = rig.call(provider, call, reply)
                assert isinstance(outcome, TransientError), (provider, call, repr(outcome))
            outcome = rig.call(provider, "submit", reply)
            if provider == "openai":  # its first call uploads the file: no batch yet
                assert isinstance(outcome, TransientError), repr(outcome)
            else:
                assert isinstance(outcome, UnknownOutcome), (provider, repr(outcome))


# -- fuzzing ----------------------------------------------------------------------------------

WORDS = ["error", "message", "status", "code", "details", "type", "@type", "retryDelay", "errors"]
KEYS = st.sampled_from(WORDS) | st.text(max_size=4)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=12,
)
bodies = st.one_of(
    st.sampled_from(list(NAMED_BODIES.values())),
    st.binary(max_size=80),
    json_values.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps({"error": v}).encode()),
    st.tuples(json_values, st.integers(min_value=0, max_value=40)).map(
        lambda vc: json.dumps({"error": vc[0]}).encode()[: vc[1]]
    ),
)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
retry_after = st.one_of(
    st.none(),
    st.sampled_from(["0.5", "-3", "inf", "nan", "1e400", "Wed, 21 Oct 2015 07:28:00 GMT", "x"]),
    header_text,
)


@settings(
    max_examples=2000 if LONG else 60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    status=st.integers(min_value=400, max_value=599),
    body=bodies,
    content_type=st.sampled_from(["application/json", "text/html", "text/plain"]),
    retry_after=retry_after,
    retry_after_ms=st.none() | header_text,
    provider=st.sampled_from(PROVIDERS),
    call=st.sampled_from(CALLS),
)
def test_any_error_answer_maps_by_its_status(
    rig: Rig,
    status: int,
    body: bytes,
    content_type: str,
    retry_after: str | None,
    retry_after_ms: str | None,
    provider: str,
    call: str,
) -> None:
    headers = {"Content-Type": content_type}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    if retry_after_ms is not None:
        headers["retry-after-ms"] = retry_after_ms
    outcome = rig.call(provider, call, Reply(status, body, headers))
    check_error_answer(provider, call, status, outcome)
