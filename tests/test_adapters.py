"""The three provider adapters against the in-process emulator, through the real SDKs.

One suite runs against every provider (as saq runs one test class against every backend);
provider-specific behaviour (Gemini inline vs file input, Anthropic's unlabelled batches,
OpenAI's files) has its own tests below. The emulator runs at time scale 0: a batch has
ended the first time it is looked at after its creation.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from adapters.base import (
    AuthError,
    BatchItem,
    BatchStatus,
    ItemResult,
    PermanentError,
    ProviderAdapter,
    ResultsGone,
    TransientError,
    UnknownOutcome,
)
from adapters.emulator import Emulator, FaultSet
from adapters.facts import PROVIDER_LIMITS
from adapters.registry import make_adapter

from .conftest import TEST_KEY

MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5", "gemini": "gemini-2.5-flash"}
PROVIDERS = tuple(MODELS)


def body(provider: str, prompt: str, **extra: Any) -> dict[str, Any]:
    """A provider-native request body asking ``prompt``."""
    if provider == "openai":
        messages = [{"role": "user", "content": prompt}]
        return {"model": MODELS[provider], "messages": messages, "max_tokens": 64, **extra}
    if provider == "anthropic":
        messages = [{"role": "user", "content": prompt}]
        return {"model": MODELS[provider], "max_tokens": 64, "messages": messages, **extra}
    contents = [{"role": "user", "parts": [{"text": prompt}]}]
    return {"contents": contents, "generationConfig": {"maxOutputTokens": 64}, **extra}


def rejected_body(provider: str) -> dict[str, Any]:
    """A body the emulated model refuses for that item alone (not the whole batch)."""
    if provider == "openai":
        return body(provider, "too hot", temperature=5)
    if provider == "anthropic":
        return body(provider, "too hot", temperature=1.5)  # 2023-06-01 allows 0..1
    return {"contents": [{"role": "assistant", "parts": [{"text": "wrong role"}]}]}


def items(provider: str, n: int, prefix: str = "k") -> list[BatchItem]:
    return [BatchItem(f"{prefix}{i}", body(provider, f"hello {i}")) for i in range(n)]


def build(
    emulator: Emulator, provider: str, spool: Path, *, timeout_s: float = 10.0, **options: Any
) -> ProviderAdapter:
    return make_adapter(
        provider,
        base_url=emulator.url,
        api_key=TEST_KEY,
        timeout_s=timeout_s,
        spool_dir=spool,
        options=options,
    )


def set_faults(emulator: Emulator, *faults: dict[str, Any], **top: Any) -> None:
    assert emulator.ctx is not None
    emulator.ctx.faults = FaultSet.parse({"faults": list(faults), **top})


async def wait_ended(adapter: ProviderAdapter, batch_id: str) -> BatchStatus:
    """Poll until the batch leaves "running" (bounded: at time scale 0 that is one poll)."""
    for _ in range(20):
        status = await adapter.poll(batch_id)
        if status.state != "running":
            return status
    raise AssertionError(f"batch {batch_id} still running after 20 polls")


async def collect(adapter: ProviderAdapter, batch_id: str) -> dict[str, ItemResult]:
    return {r.key: r async for r in adapter.results(batch_id)}


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def adapter(
    emulator: Emulator, provider: str, tmp_path: Path
) -> AsyncIterator[ProviderAdapter]:
    made = build(emulator, provider, tmp_path / "spool")
    yield made
    await made.close()


# -- the common suite -------------------------------------------------------------------------


async def test_submit_poll_results(adapter: ProviderAdapter, provider: str, tmp_path: Path) -> None:
    submitted = await adapter.submit("tag-ok", MODELS[provider], items(provider, 3))
    status = await wait_ended(adapter, submitted.provider_batch_id)
    assert (status.state, status.expired, status.cancelled) == ("ended", False, False)
    if status.total is not None:
        assert status.total == 3 and status.done == 3 and status.failed == 0
    results = await collect(adapter, submitted.provider_batch_id)
    assert sorted(results) == ["k0", "k1", "k2"]
    for i in range(3):
        result = results[f"k{i}"]
        assert result.outcome == "succeeded" and result.error is None
        assert result.text is not None and result.text.endswith(f"Answer: hello {i}")
        assert result.finish_reason in {"stop", "end_turn", "STOP"}
        assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
        assert isinstance(result.response, dict)
    assert list((tmp_path / "spool").glob("*")) == []  # the spool file is gone after submit


async def test_item_failures_are_classified(
    adapter: ProviderAdapter, emulator: Emulator, provider: str
) -> None:
    set_faults(
        emulator,
        {"kind": "item_error", "provider": provider, "match": "slow down", "error": "rate_limit"},
        {"kind": "item_error", "provider": provider, "match": "overload", "error": "overloaded"},
        {"kind": "item_error", "provider": provider, "match": "broken", "error": "server"},
        {"kind": "item_error", "provider": provider, "match": "nonsense", "error": "invalid"},
    )
    batch = [
        BatchItem("ok", body(provider, "fine")),
        BatchItem("limited", body(provider, "slow down")),
        BatchItem("overloaded", body(provider, "overload")),
        BatchItem("server", body(provider, "broken")),
        BatchItem("invalid", body(provider, "nonsense")),
        BatchItem("rejected", rejected_body(provider)),
    ]
    submitted = await adapter.submit("tag-items", MODELS[provider], batch)
    await wait_ended(adapter, submitted.provider_batch_id)
    results = await collect(adapter, submitted.provider_batch_id)
    outcomes = {key: r.outcome for key, r in results.items()}
    assert outcomes == {
        "ok": "succeeded",
        "limited": "retry",
        "overloaded": "retry",
        "server": "retry",
        "invalid": "failed",
        "rejected": "failed",
    }
    for key in ("limited", "invalid", "rejected"):
        assert results[key].error is not None and results[key].error.message


async def test_rate_limit_item_error_once_then_retry_succeeds(
    adapter: ProviderAdapter, emulator: Emulator, provider: str
) -> None:
    fault = {"kind": "item_error", "provider": provider, "rate": 1.0, "error": "rate_limit"}
    set_faults(emulator, {**fault, "times": 1})
    first = await adapter.submit("tag-rl-1", MODELS[provider], items(provider, 1))
    await wait_ended(adapter, first.provider_batch_id)
    [result] = [r async for r in adapter.results(first.provider_batch_id)]
    assert result.outcome == "retry"
    again = await adapter.submit("tag-rl-2", MODELS[provider], items(provider, 1))
    await wait_ended(adapter, again.provider_batch_id)
    [result] = [r async for r in adapter.results(again.provider_batch_id)]
    assert result.outcome == "succeeded"


async def test_find_by_tag_after_submit(
    adapter: ProviderAdapter, provider: str, emulator: Emulator
) -> None:
    since = time.time()
    model = MODELS[provider]
    first = await adapter.submit("tag-find-a", model, items(provider, 2))
    second = await adapter.submit("tag-find-b", model, items(provider, 3))
    assert await adapter.find("tag-find-a", model, 2, since, ()) == first.provider_batch_id
    assert await adapter.find("tag-find-b", model, 3, since, ()) == second.provider_batch_id
    assert await adapter.find("tag-find-b", model, 3, since, {second.provider_batch_id}) is None
    if provider != "anthropic":  # unlabelled batches match on count, not tag
        assert await adapter.find("tag-unknown", model, 2, since, ()) is None
    assert await adapter.find("tag-find-a", model, 2, since + 3600, ()) is None


async def test_cancel(adapter: ProviderAdapter, provider: str) -> None:
    submitted = await adapter.submit("tag-cancel", MODELS[provider], items(provider, 2))
    await adapter.cancel(submitted.provider_batch_id)
    status = await wait_ended(adapter, submitted.provider_batch_id)
    assert status.state == "ended" and status.cancelled
    results = await collect(adapter, submitted.provider_batch_id)
    assert all(r.outcome == "canceled" for r in results.values())
    if provider != "gemini":  # Gemini shows no per-item trace of a cancelled batch
        assert sorted(results) == ["k0", "k1"]
    await adapter.cancel(submitted.provider_batch_id)  # already ended: not an error


async def test_expired_batch(adapter: ProviderAdapter, emulator: Emulator, provider: str) -> None:
    set_faults(emulator, {"kind": "expire", "provider": provider, "fraction": 0.5})
    submitted = await adapter.submit("tag-expire", MODELS[provider], items(provider, 4))
    status = await wait_ended(adapter, submitted.provider_batch_id)
    assert status.expired
    results = await collect(adapter, submitted.provider_batch_id)
    if provider == "gemini":  # an expired Gemini batch has no results: items go back to pending
        assert status.state == "failed" and results == {}
        return
    assert status.state == "ended"
    outcomes = sorted(r.outcome for r in results.values())
    assert outcomes == ["expired", "expired", "succeeded", "succeeded"]


async def test_batch_fail(adapter: ProviderAdapter, emulator: Emulator, provider: str) -> None:
    set_faults(emulator, {"kind": "batch_fail", "provider": provider})
    submitted = await adapter.submit("tag-fail", MODELS[provider], items(provider, 2))
    status = await wait_ended(adapter, submitted.provider_batch_id)
    if provider == "anthropic":  # no batch-level failure: every item errors instead
        results = await collect(adapter, submitted.provider_batch_id)
        assert status.state == "ended" and {r.outcome for r in results.values()} <= {
            "failed",
            "retry",
        }
        return
    assert status.state == "failed" and status.error


async def test_results_gone(emulator: Emulator, provider: str, tmp_path: Path) -> None:
    # Gemini keeps inline results on the batch itself; the fault concerns a responses file.
    options = {"inline_max_bytes": 0} if provider == "gemini" else {}
    adapter = build(emulator, provider, tmp_path, **options)
    set_faults(emulator, {"kind": "results_gone", "provider": provider})
    try:
        submitted = await adapter.submit("tag-gone", MODELS[provider], items(provider, 2))
        status = await wait_ended(adapter, submitted.provider_batch_id)
        assert status.state in {"ended", "gone"}
        with pytest.raises(ResultsGone):
            await collect(adapter, submitted.provider_batch_id)
    finally:
        await adapter.close()


async def test_unknown_batch(adapter: ProviderAdapter, provider: str) -> None:
    unknown = {
        "openai": "batch_doesnotexist",
        "anthropic": "msgbatch_doesnotexist",
        "gemini": "batches/doesnotexist",
    }[provider]
    status = await adapter.poll(unknown)
    assert status.state == "gone"
    with pytest.raises(ResultsGone):
        await collect(adapter, unknown)


CREATE_ROUTE = "batches.create"


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_create_http_errors_are_transient(
    adapter: ProviderAdapter, emulator: Emulator, provider: str, status: int
) -> None:
    fault = {"kind": "http", "provider": provider, "route": CREATE_ROUTE, "status": status}
    set_faults(emulator, {**fault, "retry_after": 7, "times": 1})
    with pytest.raises(TransientError) as caught:
        await adapter.submit("tag-http", MODELS[provider], items(provider, 1))
    assert caught.value.retry_after == 7.0
    assert TEST_KEY not in str(caught.value)
    # The fault fired once: the daemon's retry of the same call goes through.
    submitted = await adapter.submit("tag-http", MODELS[provider], items(provider, 1))
    assert (await wait_ended(adapter, submitted.provider_batch_id)).state == "ended"


async def test_poll_server_error_is_transient(
    adapter: ProviderAdapter, emulator: Emulator, provider: str
) -> None:
    submitted = await adapter.submit("tag-5xx", MODELS[provider], items(provider, 1))
    set_faults(emulator, {"kind": "http", "provider": provider, "route": "batches.get"})
    with pytest.raises(TransientError) as caught:
        await adapter.poll(submitted.provider_batch_id)
    assert caught.value.retry_after is None


async def test_wrong_key_is_auth_error(
    adapter: ProviderAdapter, emulator: Emulator, provider: str
) -> None:
    set_faults(emulator, auth={provider: "other-key"})
    with pytest.raises(AuthError) as caught:
        await adapter.submit("tag-auth", MODELS[provider], items(provider, 1))
    assert TEST_KEY not in str(caught.value) and "other-key" not in str(caught.value)
    with pytest.raises(AuthError):
        await adapter.poll("batches/x" if provider == "gemini" else "x")


async def test_create_timeout_is_unknown_outcome_then_found(
    emulator: Emulator, provider: str, tmp_path: Path
) -> None:
    """A create that times out may have happened: find() recovers the batch by its tag."""
    adapter = build(emulator, provider, tmp_path, timeout_s=0.3)
    fault = {"kind": "slow", "provider": provider, "route": CREATE_ROUTE, "delay_s": 1.0}
    set_faults(emulator, {**fault, "times": 1})
    since = time.time()
    try:
        with pytest.raises(UnknownOutcome):
            await adapter.submit("tag-slow", MODELS[provider], items(provider, 2))
        found = await adapter.find("tag-slow", MODELS[provider], 2, since, ())
        assert found is not None
        assert (await wait_ended(adapter, found)).state == "ended"
    finally:
        await adapter.close()


async def test_read_timeout_is_transient(emulator: Emulator, provider: str, tmp_path: Path) -> None:
    adapter = build(emulator, provider, tmp_path, timeout_s=0.3)
    try:
        submitted = await adapter.submit("tag-slow-read", MODELS[provider], items(provider, 1))
        fault = {"kind": "slow", "provider": provider, "route": "batches.get", "delay_s": 1.0}
        set_faults(emulator, {**fault, "times": 1})
        with pytest.raises(TransientError):
            await adapter.poll(submitted.provider_batch_id)
        assert (await wait_ended(adapter, submitted.provider_batch_id)).state == "ended"
    finally:
        await adapter.close()


async def test_many_items_stream_through(emulator: Emulator, provider: str, tmp_path: Path) -> None:
    """Results arrive line by line across stream chunks (Gemini: through a responses file)."""
    options = {"inline_max_bytes": 0} if provider == "gemini" else {}
    adapter = build(emulator, provider, tmp_path, **options)
    n = 1500
    try:
        submitted = await adapter.submit("tag-many", MODELS[provider], items(provider, n))
        await wait_ended(adapter, submitted.provider_batch_id)
        keys = set()
        async for result in adapter.results(submitted.provider_batch_id):
            assert result.outcome == "succeeded"
            keys.add(result.key)
        assert keys == {f"k{i}" for i in range(n)}
    finally:
        await adapter.close()


async def test_dropped_create_is_unknown_outcome(
    adapter: ProviderAdapter, emulator: Emulator, provider: str
) -> None:
    fault = {"kind": "drop", "provider": provider, "route": CREATE_ROUTE, "times": 1}
    set_faults(emulator, fault)
    with pytest.raises(UnknownOutcome):
        await adapter.submit("tag-drop", MODELS[provider], items(provider, 1))


async def test_dropped_read_is_transient(
    adapter: ProviderAdapter, emulator: Emulator, provider: str
) -> None:
    submitted = await adapter.submit("tag-drop-read", MODELS[provider], items(provider, 1))
    set_faults(emulator, {"kind": "drop", "provider": provider, "route": "batches.get", "times": 1})
    with pytest.raises(TransientError):
        await adapter.poll(submitted.provider_batch_id)
    assert (await wait_ended(adapter, submitted.provider_batch_id)).state == "ended"


async def test_unreachable_provider_is_transient(provider: str, tmp_path: Path) -> None:
    """Nothing listens: even a create is safe to retry, since nothing was sent."""
    server = web.AppRunner(web.Application())
    await server.setup()
    site = web.TCPSite(server, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await server.cleanup()  # the port is now closed
    adapter = make_adapter(
        provider,
        base_url=f"http://127.0.0.1:{port}",
        api_key=TEST_KEY,
        timeout_s=2.0,
        spool_dir=tmp_path,
        options={},
    )
    try:
        with pytest.raises(TransientError):
            await adapter.submit("tag-down", MODELS[provider], items(provider, 1))
        with pytest.raises(TransientError):
            await adapter.poll("batches/x" if provider == "gemini" else "x")
    finally:
        await adapter.close()


# -- OpenAI ---------------------------------------------------------------------------------


@pytest.fixture
async def openai_adapter(emulator: Emulator, tmp_path: Path) -> AsyncIterator[ProviderAdapter]:
    made = build(emulator, "openai", tmp_path / "spool")
    yield made
    await made.close()


async def test_openai_cleanup_deletes_all_files(
    openai_adapter: ProviderAdapter, emulator: Emulator, openai_client: Any
) -> None:
    import openai

    batch = [BatchItem("good", body("openai", "fine")), BatchItem("bad", rejected_body("openai"))]
    submitted = await openai_adapter.submit("tag-clean", MODELS["openai"], batch)
    await wait_ended(openai_adapter, submitted.provider_batch_id)
    remote = await openai_client.batches.retrieve(submitted.provider_batch_id)
    files = [submitted.input_file_id, remote.output_file_id, remote.error_file_id]
    assert all(files)
    assert remote.metadata == {"batchd_tag": "tag-clean"}
    await openai_adapter.cleanup(submitted.provider_batch_id, submitted.input_file_id)
    for file_id in files:
        with pytest.raises(openai.NotFoundError):
            await openai_client.files.retrieve(file_id)
    await openai_adapter.cleanup(submitted.provider_batch_id, submitted.input_file_id)  # again


async def test_openai_failed_create_deletes_the_upload(
    openai_adapter: ProviderAdapter, emulator: Emulator, openai_client: Any
) -> None:
    before = {f.id async for f in openai_client.files.list()}
    fault = {"kind": "http", "provider": "openai", "route": CREATE_ROUTE, "status": 400}
    set_faults(emulator, fault)
    with pytest.raises(PermanentError):
        await openai_adapter.submit("tag-400", MODELS["openai"], items("openai", 1))
    assert {f.id async for f in openai_client.files.list()} == before


async def test_openai_accepts_root_or_v1_url(emulator: Emulator, tmp_path: Path) -> None:
    for base in (emulator.url, emulator.url + "/v1", emulator.url + "/v1/"):
        adapter = make_adapter(
            "openai",
            base_url=base,
            api_key=TEST_KEY,
            timeout_s=5,
            spool_dir=tmp_path,
            options={},
        )
        submitted = await adapter.submit("tag-url", MODELS["openai"], items("openai", 1))
        assert (await wait_ended(adapter, submitted.provider_batch_id)).state == "ended"
        await adapter.close()


async def test_openai_oversized_batch_is_refused_before_upload(
    emulator: Emulator, tmp_path: Path
) -> None:
    adapter = build(emulator, "openai", tmp_path)
    adapter.limits = type(adapter.limits)(max_items=2, max_bytes=10_000)
    with pytest.raises(PermanentError):
        await adapter.submit("tag-big", MODELS["openai"], items("openai", 3))
    assert list(tmp_path.glob("*.jsonl")) == []
    await adapter.close()


# -- Anthropic --------------------------------------------------------------------------------


async def test_anthropic_find_needs_a_unique_candidate(emulator: Emulator, tmp_path: Path) -> None:
    adapter = build(emulator, "anthropic", tmp_path)
    model = MODELS["anthropic"]
    since = time.time()
    one = await adapter.submit("a", model, items("anthropic", 2))
    assert await adapter.find("a", model, 2, since, ()) == one.provider_batch_id
    two = await adapter.submit("b", model, items("anthropic", 2))
    assert await adapter.find("b", model, 2, since, ()) is None  # two candidates
    assert await adapter.find("b", model, 2, since, {one.provider_batch_id}) == (
        two.provider_batch_id
    )
    assert await adapter.find("c", model, 5, since, ()) is None
    await adapter.close()


async def test_anthropic_api_version_option(emulator: Emulator, tmp_path: Path) -> None:
    """With the SDK's own version (2026-10-21) temperature is refused per item."""
    model = MODELS["anthropic"]
    batch = [BatchItem("t", body("anthropic", "warm", temperature=0.5))]
    results = {}
    for version in ("2023-06-01", "2026-10-21"):
        adapter = build(emulator, "anthropic", tmp_path, api_version=version)
        submitted = await adapter.submit(version, model, batch)
        await wait_ended(adapter, submitted.provider_batch_id)
        [results[version]] = [r async for r in adapter.results(submitted.provider_batch_id)]
        await adapter.close()
    assert results["2023-06-01"].outcome == "succeeded"
    assert results["2026-10-21"].outcome == "failed"
    assert results["2026-10-21"].error is not None
    assert results["2026-10-21"].error.type == "invalid_request_error"


async def test_anthropic_overloaded_529_is_transient(emulator: Emulator, tmp_path: Path) -> None:
    adapter = build(emulator, "anthropic", tmp_path)
    fault = {"kind": "http", "provider": "anthropic", "route": "batches.get", "status": 529}
    set_faults(emulator, fault)
    with pytest.raises(TransientError):
        await adapter.poll("msgbatch_x")
    await adapter.close()


async def test_anthropic_cache_usage(emulator: Emulator, tmp_path: Path) -> None:
    adapter = build(emulator, "anthropic", tmp_path)
    system = [{"type": "text", "text": "long rules " * 400, "cache_control": {"type": "ephemeral"}}]
    batch = [
        BatchItem(f"c{i}", body("anthropic", f"question {i}", system=system)) for i in range(2)
    ]
    first = await adapter.submit("cache-1", MODELS["anthropic"], batch[:1])
    await wait_ended(adapter, first.provider_batch_id)
    second = await adapter.submit("cache-2", MODELS["anthropic"], batch[1:])
    await wait_ended(adapter, second.provider_batch_id)
    [written] = [r async for r in adapter.results(first.provider_batch_id)]
    [read] = [r async for r in adapter.results(second.provider_batch_id)]
    assert written.usage.cache_creation_input_tokens > 0
    assert read.usage.cached_input_tokens > 0
    assert read.usage.input_tokens >= read.usage.cached_input_tokens
    await adapter.close()


# -- Gemini -----------------------------------------------------------------------------------


@dataclass
class Captured:
    url: str
    bodies: list[dict[str, Any]]


@pytest.fixture
async def capture() -> AsyncIterator[Captured]:
    """A stand-in Gemini endpoint that records the create bodies it gets, verbatim."""
    bodies: list[dict[str, Any]] = []

    async def create(request: web.Request) -> web.Response:
        bodies.append(json.loads(await request.read()))
        meta = {"state": "BATCH_STATE_PENDING", "displayName": "x"}
        return web.json_response({"name": "batches/captured", "metadata": meta})

    app = web.Application()
    app.router.add_post("/{ver}/models/{model}", create)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield Captured(f"http://127.0.0.1:{port}", bodies)
    await runner.cleanup()


async def test_gemini_inline_request_goes_on_the_wire_verbatim(
    capture: Captured, tmp_path: Path
) -> None:
    request = {
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"text": "hello"}]},
            {"role": "user", "parts": [{"text": "list three colours"}]},
        ],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "generationConfig": {
            "temperature": 0.3,
            "topP": 0.9,
            "maxOutputTokens": 50,
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
            "responseSchema": {"type": "OBJECT", "properties": {"c": {"type": "STRING"}}},
            "thinkingConfig": {"thinkingBudget": 0},
        },
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
    }
    adapter = make_adapter(
        "gemini",
        base_url=capture.url,
        api_key=TEST_KEY,
        timeout_s=5,
        spool_dir=tmp_path,
        options={},
    )
    submitted = await adapter.submit("inline-tag", "gemini-2.5-flash", [BatchItem("k1", request)])
    await adapter.close()
    assert submitted.provider_batch_id == "batches/captured" and submitted.input_file_id is None
    assert capture.bodies == [
        {
            "batch": {
                "inputConfig": {
                    "requests": {"requests": [{"request": request, "metadata": {"key": "k1"}}]}
                },
                "displayName": "inline-tag",
            }
        }
    ]


@pytest.mark.parametrize("api_version", ["v1beta", "v1"])
async def test_gemini_file_input_and_cleanup(
    emulator: Emulator, tmp_path: Path, genai_client: Any, api_version: str
) -> None:
    from google.genai import errors

    adapter = build(emulator, "gemini", tmp_path, inline_max_bytes=0, api_version=api_version)
    submitted = await adapter.submit("file-tag", MODELS["gemini"], items("gemini", 3))
    assert submitted.input_file_id is not None and submitted.input_file_id.startswith("files/")
    status = await wait_ended(adapter, submitted.provider_batch_id)
    assert status.state == "ended" and status.total == 3
    results = await collect(adapter, submitted.provider_batch_id)
    assert sorted(results) == ["k0", "k1", "k2"]
    assert all(r.outcome == "succeeded" for r in results.values())
    job = await genai_client.aio.batches.get(name=submitted.provider_batch_id)
    assert job.display_name == "file-tag"
    responses_file = job.dest.file_name
    await adapter.cleanup(submitted.provider_batch_id, submitted.input_file_id)
    for name in (submitted.input_file_id, responses_file):
        with pytest.raises(errors.ClientError) as caught:
            await genai_client.aio.files.get(name=name)
        assert caught.value.code in {403, 404}  # Gemini says 403 for a file that is not there
    await adapter.close()


async def test_gemini_inline_is_chosen_below_the_threshold(
    emulator: Emulator, tmp_path: Path, genai_client: Any
) -> None:
    adapter = build(emulator, "gemini", tmp_path)
    submitted = await adapter.submit("inline", MODELS["gemini"], items("gemini", 2))
    assert submitted.input_file_id is None
    await wait_ended(adapter, submitted.provider_batch_id)
    job = await genai_client.aio.batches.get(name=submitted.provider_batch_id)
    assert job.dest.inlined_responses and job.dest.file_name is None
    await adapter.close()


def test_gemini_retry_delay_from_error_details() -> None:
    from adapters.gemini_errors import retry_delay_s

    info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31s"}
    assert retry_delay_s({"error": {"code": 429, "details": [info]}}) == 31.0
    assert retry_delay_s({"error": {"code": 429}}) is None
    assert retry_delay_s(None) is None


def test_gemini_inline_limit_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_adapter(
            "gemini",
            base_url="http://127.0.0.1:9",
            api_key=TEST_KEY,
            timeout_s=1,
            spool_dir=tmp_path,
            options={"inline_max_bytes": 25_000_000},
        )


# -- registry ---------------------------------------------------------------------------------


def test_registry_limits_and_validation(tmp_path: Path) -> None:
    assert PROVIDER_LIMITS["openai"].max_items == 50_000
    assert PROVIDER_LIMITS["anthropic"].max_items == 100_000
    common: dict[str, Any] = {"base_url": None, "timeout_s": 1.0, "spool_dir": tmp_path}
    with pytest.raises(ValueError):
        make_adapter("mistral", api_key="k", options={}, **common)
    with pytest.raises(ValueError):
        make_adapter("openai", api_key="k", options={"api_version": "x"}, **common)
    with pytest.raises(AuthError):
        make_adapter("anthropic", api_key=None, options={}, **common)


def test_registry_imports_sdks_lazily() -> None:
    code = (
        "import sys, adapters.registry as r\n"
        "assert not {'openai', 'anthropic', 'google.genai'} & set(sys.modules), sys.modules\n"
        "r.make_adapter('anthropic', base_url=None, api_key='k', timeout_s=1,"
        " spool_dir='.', options={})\n"
        "assert 'anthropic' in sys.modules\n"
        "assert not {'openai', 'google.genai'} & set(sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)
