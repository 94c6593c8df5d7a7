"""The Anthropic emulator, driven through the official ``anthropic`` SDK (async client).

Every route is exercised through the SDK; raw HTTP is used only where the SDK cannot send
the request under test (a missing API key, a body over the count limit). JSON answers are
validated against Anthropic's OpenAPI spec in ../shared/specs when it is present.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types.messages import (
    DeletedMessageBatch,
    MessageBatch,
    MessageBatchCanceledResult,
    MessageBatchErroredResult,
    MessageBatchExpiredResult,
    MessageBatchSucceededResult,
)

from adapters.emulator import Emulator, FaultSet
from adapters.emulator import anthropic_api as api
from adapters.emulator.answers import estimate_tokens
from tests.conftest import SPECS, TEST_KEY, require_specs

SPEC_FILE = SPECS / "anthropic-openapi.tryAGI-ebea3ea.json"
SPEC_URI = "urn:anthropic-openapi"
MODEL = "claude-sonnet-4-5"
VERSION_2023 = {"anthropic-version": "2023-06-01"}

Check = Callable[[str, Any], None]


# -- helpers -------------------------------------------------------------------------------


@pytest.fixture
async def anthropic_client(emulator: Emulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """The conftest client, closed at the end of the test (no unclosed-transport noise)."""
    async with anthropic.AsyncAnthropic(
        base_url=emulator.url, api_key=TEST_KEY, max_retries=0
    ) as client:
        yield client


def sdk(emulator: Emulator, key: str = TEST_KEY, **headers: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=emulator.url, api_key=key, max_retries=0, default_headers=headers
    )


@pytest.fixture(scope="session")
def spec() -> Check:
    """Validate a JSON value against a component schema of Anthropic's OpenAPI 3.1 spec.

    The spec is loaded once per session; validators are cached per schema. OpenAPI 3.1 is
    JSON Schema 2020-12 and this spec types its nullable fields as ``anyOf [..., null]``, so
    instances are validated as sent, nulls included (stricter than dropping them).
    """
    require_specs(SPEC_FILE.name)
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    document = json.loads(SPEC_FILE.read_text(encoding="utf-8"))
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry = Registry().with_resource(SPEC_URI, resource)
    validators: dict[str, Draft202012Validator] = {}

    def check(schema: str, instance: Any) -> None:
        if schema not in validators:
            validators[schema] = Draft202012Validator(
                {"$ref": f"{SPEC_URI}#/components/schemas/{schema}"},
                registry=registry,
                format_checker=Draft202012Validator.FORMAT_CHECKER,
            )
        errors = [e.message for e in validators[schema].iter_errors(instance)]
        assert not errors, f"{schema}: {errors}"

    return check


def req(custom_id: str, text: str = "hello there", **params: Any) -> dict[str, Any]:
    body = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": text}]}
    return {"custom_id": custom_id, "params": body | params}


async def ended(client: anthropic.AsyncAnthropic, batch_id: str) -> MessageBatch:
    """Poll a batch until it ends (bounded: at time scale 0 the first poll ends it)."""
    for _ in range(3):
        batch = await client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
    raise AssertionError(f"{batch_id} did not end: {batch}")


async def results(client: anthropic.AsyncAnthropic, batch_id: str) -> dict[str, Any]:
    return {r.custom_id: r.result async for r in await client.messages.batches.results(batch_id)}


async def run(client: anthropic.AsyncAnthropic, requests: list[dict[str, Any]]) -> dict[str, Any]:
    batch = await client.messages.batches.create(requests=requests)
    await ended(client, batch.id)
    return await results(client, batch.id)


def journal(emulator: Emulator) -> dict[str, Any]:
    return emulator.ctx.journal.snapshot()["providers"]["anthropic"]


def raw_headers(**extra: str) -> dict[str, str]:
    return {"x-api-key": TEST_KEY, "anthropic-version": "2026-10-21", **extra}


def errored_with(result: Any, kind: str, message: str | None = None) -> None:
    assert isinstance(result, MessageBatchErroredResult), result
    assert result.error.type == "error"
    assert result.error.error.type == kind
    assert result.error.request_id and result.error.request_id.startswith("req_")
    if message is not None:
        assert result.error.error.message == message


# -- lifecycle -----------------------------------------------------------------------------


async def test_create_retrieve_and_results(emulator, anthropic_client, spec) -> None:
    raw = await anthropic_client.messages.batches.with_raw_response.create(
        requests=[req("a", "first question"), req("b", "second", system="be brief")]
    )
    spec("MessageBatch", await raw.json())
    assert raw.headers["request-id"].startswith("req_")
    created = await raw.parse()
    assert isinstance(created, MessageBatch)
    assert created.id.startswith("msgbatch_")
    assert created.type == "message_batch"
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == 2
    assert created.request_counts.succeeded == 0
    assert created.results_url is None and created.ended_at is None
    assert created.expires_at - created.created_at == timedelta(hours=24)

    raw = await anthropic_client.messages.batches.with_raw_response.retrieve(created.id)
    spec("MessageBatch", await raw.json())
    batch = await raw.parse()
    assert batch.processing_status == "ended"
    assert batch.ended_at is not None and batch.archived_at is None
    assert batch.request_counts.model_dump() == {
        "processing": 0,
        "succeeded": 2,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert batch.results_url == f"{emulator.url}/v1/messages/batches/{batch.id}/results"

    got = await results(anthropic_client, batch.id)
    assert set(got) == {"a", "b"}
    first = got["a"]
    assert isinstance(first, MessageBatchSucceededResult)
    message = first.message
    assert message.id.startswith("msg_") and message.role == "assistant"
    assert message.model == MODEL
    assert message.content[0].type == "text"
    assert message.content[0].text == f"[{MODEL}] Answer: first question"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    usage = message.usage
    assert usage.service_tier == "batch"
    assert usage.input_tokens == estimate_tokens("first question")
    assert usage.output_tokens == estimate_tokens(message.content[0].text)
    assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0
    assert got["b"].message.usage.input_tokens == estimate_tokens("be brief\nsecond")

    counters = journal(emulator)
    assert counters["batches_created"] == 1
    assert counters["items_received"] == 2 and counters["items_succeeded"] == 2


async def test_results_file_is_jsonl_matching_the_spec(emulator, anthropic_client, spec) -> None:
    emulator.ctx.faults = FaultSet.parse(
        {
            "faults": [
                {"kind": "expire", "provider": "anthropic", "fraction": 0.5, "times": 1},
                {"kind": "item_error", "provider": "anthropic", "error": "server", "match": "boom"},
            ]
        }
    )
    requests = [req(f"r{i}", "boom" if i == 1 else f"q{i}") for i in range(40)]
    batch = await anthropic_client.messages.batches.create(requests=requests)
    other = await anthropic_client.messages.batches.create(requests=[req("c1"), req("c2")])
    await anthropic_client.messages.batches.cancel(other.id)
    kinds: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=10) as http:
        for batch_id in (batch.id, other.id):
            done = await ended(anthropic_client, batch_id)
            response = await http.get(done.results_url, headers=raw_headers())
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("application/x-jsonl")
            assert response.headers["request-id"].startswith("req_")
            text = response.text
            assert text.endswith("\n") and "\n\n" not in text
            lines = [json.loads(line) for line in text.splitlines()]
            for line in lines:
                spec("MessageBatchIndividualResponse", line)
                kinds[line["result"]["type"]] = kinds.get(line["result"]["type"], 0) + 1
            if batch_id == batch.id:
                order = [line["custom_id"] for line in lines]
                assert sorted(order) == sorted(r["custom_id"] for r in requests)
                assert order != [r["custom_id"] for r in requests]  # match by custom_id
    assert kinds == {"succeeded": 19, "errored": 1, "expired": 20, "canceled": 2}


async def test_stop_reasons(anthropic_client) -> None:
    got = await run(
        anthropic_client,
        [
            req("short", "a long question that will not fit", max_tokens=3),
            req("stop", "one two three", stop_sequences=["two", "zzz"]),
        ],
    )
    short = got["short"].message
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 3
    assert short.content[0].text == f"[{MODEL}] Answer: a long question"[:12]
    stop = got["stop"].message
    assert stop.stop_reason == "stop_sequence" and stop.stop_sequence == "two"
    assert stop.content[0].text == f"[{MODEL}] Answer: one "


# -- list ----------------------------------------------------------------------------------


async def test_list_pagination(anthropic_client, spec) -> None:
    ids = [
        (await anthropic_client.messages.batches.create(requests=[req("x")])).id for _ in range(5)
    ]
    newest_first = list(reversed(ids))

    raw = await anthropic_client.messages.batches.with_raw_response.list(limit=2)
    spec("ListResponse_MessageBatch_", await raw.json())
    page = await raw.parse()
    assert [b.id for b in page.data] == newest_first[:2]
    assert page.has_more is True
    assert (page.first_id, page.last_id) == (newest_first[0], newest_first[1])
    assert all(b.processing_status == "ended" for b in page.data)  # listing looks at them

    walked = [b.id async for b in anthropic_client.messages.batches.list(limit=2)]
    assert walked == newest_first

    after = await anthropic_client.messages.batches.list(limit=2, after_id=newest_first[3])
    assert [b.id for b in after.data] == newest_first[4:] and after.has_more is False
    before = await anthropic_client.messages.batches.list(limit=2, before_id=newest_first[4])
    assert [b.id for b in before.data] == newest_first[2:4] and before.has_more is True
    backwards = [
        b.id
        async for b in anthropic_client.messages.batches.list(limit=2, before_id=newest_first[4])
    ]
    assert backwards == newest_first[2:4] + newest_first[0:2]

    for bad, message in (
        (0, "limit: Input should be greater than or equal to 1"),
        (1001, "limit: Input should be less than or equal to 1000"),
    ):
        with pytest.raises(anthropic.BadRequestError) as caught:
            await anthropic_client.messages.batches.list(limit=bad)
        assert caught.value.api_message == message
    with pytest.raises(anthropic.BadRequestError):
        await anthropic_client.messages.batches.list(after_id=ids[0], before_id=ids[1])


async def test_list_default_limit_is_20(anthropic_client) -> None:
    for _ in range(21):
        await anthropic_client.messages.batches.create(requests=[req("x")])
    page = await anthropic_client.messages.batches.list()
    assert len(page.data) == 20 and page.has_more is True
    full = await anthropic_client.messages.batches.list(limit=1000)
    assert len(full.data) == 21 and full.has_more is False


# -- cancel and delete ---------------------------------------------------------------------


async def test_cancel_before_anything_ran(emulator, anthropic_client, spec) -> None:
    batch = await anthropic_client.messages.batches.create(requests=[req("a"), req("b")])
    raw = await anthropic_client.messages.batches.with_raw_response.cancel(batch.id)
    spec("MessageBatch", await raw.json())
    canceling = await raw.parse()
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    assert canceling.request_counts.processing == 2
    again = await anthropic_client.messages.batches.cancel(batch.id)
    assert again.processing_status == "canceling"
    assert again.cancel_initiated_at == canceling.cancel_initiated_at

    done = await ended(anthropic_client, batch.id)
    assert done.request_counts.canceled == 2 and done.request_counts.processing == 0
    got = await results(anthropic_client, batch.id)
    assert all(isinstance(r, MessageBatchCanceledResult) for r in got.values())
    assert journal(emulator)["items_retryable"] == 2

    with pytest.raises(anthropic.BadRequestError) as caught:
        await anthropic_client.messages.batches.cancel(batch.id)
    assert caught.value.type == "invalid_request_error"


async def test_delete_only_after_processing_ended(anthropic_client, spec) -> None:
    batch = await anthropic_client.messages.batches.create(requests=[req("a")])
    with pytest.raises(anthropic.BadRequestError) as caught:
        await anthropic_client.messages.batches.delete(batch.id)
    assert "cannot be deleted" in caught.value.api_message
    spec("ErrorResponse", caught.value.body)

    done = await ended(anthropic_client, batch.id)
    raw = await anthropic_client.messages.batches.with_raw_response.delete(batch.id)
    spec("DeleteMessageBatchResponse", await raw.json())
    deleted = await raw.parse()
    assert isinstance(deleted, DeletedMessageBatch)
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")

    with pytest.raises(anthropic.NotFoundError) as caught:
        await anthropic_client.messages.batches.retrieve(batch.id)
    assert caught.value.type == "not_found_error"
    for call in (
        anthropic_client.messages.batches.cancel,
        anthropic_client.messages.batches.delete,
        anthropic_client.messages.batches.results,
    ):
        with pytest.raises(anthropic.NotFoundError):
            await call(batch.id)
    async with httpx.AsyncClient() as http:
        response = await http.get(done.results_url, headers=raw_headers())
    assert response.status_code == 404


async def test_timing_cancel_mid_run_and_retention(tmp_path: Path) -> None:
    """At time scale 1 on a fake clock: phases, a cancel half-way, then the 29-day archive."""
    clock = {"t": 1_000_000.0}
    async with (
        Emulator(time_scale=1.0, state_dir=tmp_path / "emu") as emu,
        sdk(emu) as client,
    ):
        emu.ctx.now = lambda: clock["t"]
        batch = await client.messages.batches.create(requests=[req(f"r{i}") for i in range(10)])
        quick = await client.messages.batches.create(requests=[req("q")])
        timing = emu.ctx.timing
        span = timing.in_progress_base_s + 10 * timing.per_item_s
        clock["t"] += timing.validating_s + span * 0.55  # 5 of the 10 requests have run
        assert (await client.messages.batches.retrieve(batch.id)).processing_status == "in_progress"
        with pytest.raises(anthropic.AnthropicError, match="No `results_url`"):
            await client.messages.batches.results(batch.id)
        async with httpx.AsyncClient() as http:
            early = await http.get(
                f"{emu.url}/v1/messages/batches/{batch.id}/results", headers=raw_headers()
            )
        assert early.status_code == 400

        canceling = await client.messages.batches.cancel(batch.id)
        assert canceling.processing_status == "canceling"
        clock["t"] += timing.finalizing_s / 2
        assert (await client.messages.batches.retrieve(batch.id)).processing_status == "canceling"
        clock["t"] += timing.finalizing_s
        done = await client.messages.batches.retrieve(batch.id)
        assert done.processing_status == "ended"
        assert (done.request_counts.succeeded, done.request_counts.canceled) == (5, 5)
        assert (await client.messages.batches.retrieve(quick.id)).processing_status != "ended"
        clock["t"] += timing.finalizing_s + span
        assert (await client.messages.batches.retrieve(quick.id)).processing_status == "ended"

        clock["t"] += api.RESULTS_KEPT_S
        archived = await client.messages.batches.retrieve(batch.id)
        assert archived.archived_at is not None
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.batches.results(batch.id)


# -- the create call's own refusals --------------------------------------------------------

PATTERN = "^[a-zA-Z0-9_-]{1,64}$"


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        (
            [req("ok"), req("bad id!")],
            f"requests.1.custom_id: String should match pattern '{PATTERN}'",
        ),
        ([req("x" * 65)], "requests.0.custom_id: String should have at most 64 characters"),
        ([req("")], "requests.0.custom_id: String should have at least 1 character"),
        ([], "requests: List should have at least 1 item after validation, not 0"),
        ([{"custom_id": "a"}], "requests.0.params: Field required"),
        (
            ["nope"],
            "requests.0: Input should be a valid dictionary or object to extract fields from",
        ),
        ([req("a") | {"extra": 1}], "requests.0.extra: Extra inputs are not permitted"),
    ],
)
async def test_create_refused_as_a_whole(
    emulator, anthropic_client, spec, requests, message
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await anthropic_client.messages.batches.create(requests=requests)
    assert caught.value.status_code == 400
    assert caught.value.type == "invalid_request_error"
    assert caught.value.api_message == message
    assert caught.value.request_id.startswith("req_")
    spec("ErrorResponse", caught.value.body)
    assert journal(emulator)["batches_created"] == 0


async def test_duplicate_custom_ids_refused(emulator, anthropic_client) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await anthropic_client.messages.batches.create(requests=[req("a"), req("b"), req("a")])
    assert caught.value.api_message.startswith("requests.2.custom_id: Duplicate custom_id 'a'")
    assert journal(emulator)["batches_created"] == 0


async def test_more_than_100000_requests_refused(emulator) -> None:
    body = json.dumps({"requests": [0] * 100_001})  # the count is checked before the items
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{emulator.url}/v1/messages/batches", content=body, headers=raw_headers()
        )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "requests: List should have at most 100000 items after validation, not 100001"
    )


async def test_body_over_the_size_limit_is_413(emulator, anthropic_client, monkeypatch) -> None:
    monkeypatch.setattr(api, "MAX_BATCH_BYTES", 4_000)
    with pytest.raises(anthropic.ContentTooLargeError) as caught:
        await anthropic_client.messages.batches.create(requests=[req("big", "x" * 5_000)])
    assert caught.value.status_code == 413 and caught.value.type == "request_too_large"
    assert journal(emulator)["batches_created"] == 0


# -- headers: version and auth -------------------------------------------------------------


async def test_anthropic_version_header(emulator, anthropic_client, spec) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await anthropic_client.messages.batches.list(
            extra_headers={"anthropic-version": anthropic.omit}
        )
    assert caught.value.api_message == "anthropic-version: header is required"
    spec("ErrorResponse", caught.value.body)
    odd = anthropic_client.with_options(default_headers={"anthropic-version": "2020-01-01"})
    with pytest.raises(anthropic.BadRequestError) as caught:
        await odd.messages.batches.create(requests=[req("a")])
    assert caught.value.api_message == 'anthropic-version: "2020-01-01" is not a valid version'
    assert journal(emulator)["batches_created"] == 0


async def test_auth_bearer_and_x_api_key(emulator, spec) -> None:
    emulator.ctx.faults = FaultSet.parse({"auth": {"anthropic": "right-key"}})

    async with sdk(emulator, "right-key") as bearer:
        assert (await bearer.messages.batches.list()).data == []
    only_x = sdk(emulator, "unused", Authorization=anthropic.omit, **{"X-Api-Key": "right-key"})
    async with only_x:
        assert (await only_x.messages.batches.list()).data == []
    async with sdk(emulator, "wrong", **{"X-Api-Key": "right-key"}) as x_wins:
        assert (await x_wins.messages.batches.list()).data == []
    async with sdk(emulator, "right-key", **{"X-Api-Key": "wrong"}) as x_loses:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await x_loses.messages.batches.list()
    assert caught.value.type == "authentication_error"
    assert caught.value.api_message == "invalid x-api-key"
    spec("ErrorResponse", caught.value.body)
    async with sdk(emulator, "wrong") as wrong:
        with pytest.raises(anthropic.AuthenticationError):
            await wrong.messages.batches.create(requests=[req("a")])
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{emulator.url}/v1/messages/batches", headers={"anthropic-version": "2023-06-01"}
        )
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "x-api-key header is required"
    assert journal(emulator)["faults_auth"] == 2


# -- per-request validation ----------------------------------------------------------------

USER = [{"role": "user", "content": "hi"}]
DROP = object()  # a key left out of the request
ITEM_CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"temperature": 1.0}, "invalid_request_error", "temperature: Extra inputs are not permitted"),
    ({"top_p": 0.9}, "invalid_request_error", "top_p: Extra inputs are not permitted"),
    ({"top_k": 5}, "invalid_request_error", "top_k: Extra inputs are not permitted"),
    ({"foo": 1}, "invalid_request_error", "foo: Extra inputs are not permitted"),
    ({"max_tokens": DROP}, "invalid_request_error", "max_tokens: Field required"),
    ({"model": DROP}, "invalid_request_error", "model: Field required"),
    ({"max_tokens": None}, "invalid_request_error", "max_tokens: Input should be a valid integer"),
    (
        {"max_tokens": 0},
        "invalid_request_error",
        "max_tokens: Input should be greater than or equal to 1",
    ),
    (
        {"max_tokens": 1.5},
        "invalid_request_error",
        "max_tokens: Input should be a valid integer, got a number with a fractional part",
    ),
    ({"model": "claude-nonexistent-9"}, "not_found_error", "model: claude-nonexistent-9"),
    ({"messages": []}, "invalid_request_error", "messages: at least one message is required"),
    (
        {"messages": [{"role": "assistant", "content": "hi"}]},
        "invalid_request_error",
        'messages: first message must use the "user" role',
    ),
    (
        {"messages": [{"role": "bot", "content": "hi"}]},
        "invalid_request_error",
        "messages.0.role: Input should be 'user' or 'assistant'",
    ),
    (
        {"messages": [*USER, {"role": "system", "content": "be terse"}]},
        "invalid_request_error",
        "role 'system' is not supported on this model",
    ),
    (
        {"model": "claude-opus-4-8", "messages": [{"role": "system", "content": "x"}, *USER]},
        "invalid_request_error",
        'messages: first message must use the "user" role',
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
        "invalid_request_error",
        "messages: text content blocks must be non-empty",
    ),
    (
        {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]},
        "invalid_request_error",
        "messages.0: all messages must have non-empty content except for the optional final "
        "assistant message",
    ),
    ({"system": 5}, "invalid_request_error", "system: Input should be a valid string"),
    (
        {"system": [{"type": "image", "text": "x"}]},
        "invalid_request_error",
        "system.0.type: Input should be 'text'",
    ),
    (
        {"stop_sequences": "END"},
        "invalid_request_error",
        "stop_sequences: Input should be a valid list",
    ),
    ({"stream": True}, "invalid_request_error", "stream: Input should be False"),
    (
        {"model": "claude-3-haiku-20240307", "max_tokens": 5000},
        "invalid_request_error",
        "max_tokens: 5000 > 4096, which is the maximum allowed number of output tokens for "
        "claude-3-haiku-20240307",
    ),
    (
        {"thinking": {"type": "enabled", "budget_tokens": 2000}, "max_tokens": 1500},
        "invalid_request_error",
        "`max_tokens` must be greater than `thinking.budget_tokens`.",
    ),
    (
        {
            "system": [
                {"type": "text", "text": f"s{i}", "cache_control": {"type": "ephemeral"}}
                for i in range(5)
            ]
        },
        "invalid_request_error",
        "A maximum of 4 blocks with cache_control may be provided. Found 5.",
    ),
    (
        {"cache_control": {"type": "persistent"}},
        "invalid_request_error",
        "cache_control.type: Input should be 'ephemeral'",
    ),
]
ACCEPTED_CASES: list[dict[str, Any]] = [
    {"model": "claude-opus-4-8", "messages": [*USER, {"role": "system", "content": "terse"}]},
    {"system": [{"type": "text", "text": "be brief"}], "metadata": {"user_id": "u1"}},
    {"messages": [*USER, {"role": "assistant", "content": ""}]},
    {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2000},
]


async def test_each_request_is_validated_on_its_own(emulator, anthropic_client) -> None:
    bad = [req(f"bad{i}", **change) for i, (change, _, _) in enumerate(ITEM_CASES)]
    for item in bad:
        item["params"] = {k: v for k, v in item["params"].items() if v is not DROP}
    good = [req(f"good{i}", **change) for i, change in enumerate(ACCEPTED_CASES)]
    got = await run(anthropic_client, bad + good)
    for i, (_, kind, message) in enumerate(ITEM_CASES):
        errored_with(got[f"bad{i}"], kind, message)
    for i in range(len(ACCEPTED_CASES)):
        assert isinstance(got[f"good{i}"], MessageBatchSucceededResult), got[f"good{i}"]
    counters = journal(emulator)
    assert counters["items_failed"] == len(ITEM_CASES)
    assert counters["items_succeeded"] == len(ACCEPTED_CASES)


async def test_version_2023_allows_sampling_within_range(emulator) -> None:
    async with sdk(emulator, **VERSION_2023) as client:
        got = await run(
            client,
            [
                # Sonnet 4 still takes all three together (Sonnet 4.5 takes one of the first two).
                req("ok", model="claude-sonnet-4-0", temperature=0.5, top_p=0.9, top_k=10),
                req("hot", temperature=1.5),
                req("p", top_p=1.2),
                req("k", top_k=-1),
                req("cold", temperature=-0.1),
            ],
        )
    assert isinstance(got["ok"], MessageBatchSucceededResult)
    errored_with(
        got["hot"], "invalid_request_error", "temperature: Input should be less than or equal to 1"
    )
    errored_with(
        got["p"], "invalid_request_error", "top_p: Input should be less than or equal to 1"
    )
    errored_with(
        got["k"], "invalid_request_error", "top_k: Input should be greater than or equal to 0"
    )
    errored_with(
        got["cold"],
        "invalid_request_error",
        "temperature: Input should be greater than or equal to 0",
    )


# -- prompt caching ------------------------------------------------------------------------


async def test_cache_counters_across_items_and_batches(emulator, anthropic_client) -> None:
    """The accounting with one lane (requests one after another): one write, then reads."""
    emulator.ctx.faults = FaultSet.parse({"cache_lanes": 1})
    shared = "S" * 4400  # 1,100 tokens: above Sonnet 4.5's 1,024-token minimum
    cached_system = [{"type": "text", "text": shared, "cache_control": {"type": "ephemeral"}}]
    prefix = estimate_tokens(shared)
    total = estimate_tokens(shared + "\nhello there")
    got = await run(
        anthropic_client,
        [
            req("first", system=cached_system),
            req("again", system=cached_system),
            req("auto", system=cached_system, cache_control={"type": "ephemeral"}),
            req(
                "hour",
                system=[
                    {
                        "type": "text",
                        "text": "T" * 4400,
                        "cache_control": {"type": "ephemeral", "ttl": "1h"},
                    }
                ],
            ),
            # Haiku 4.5 caches from 4,096 tokens: the same 1,100-token prefix is not cacheable.
            req("other-model", model="claude-haiku-4-5", system=cached_system),
        ],
    )
    first = got["first"].message.usage
    assert (first.cache_creation_input_tokens, first.cache_read_input_tokens) == (prefix, 0)
    assert first.input_tokens == total - prefix
    assert first.cache_creation.ephemeral_5m_input_tokens == prefix
    again = got["again"].message.usage
    assert (again.cache_creation_input_tokens, again.cache_read_input_tokens) == (0, prefix)
    assert again.input_tokens == total - prefix
    auto = got["auto"].message.usage  # top-level cache_control marks the last block too
    assert (auto.cache_read_input_tokens, auto.cache_creation_input_tokens) == (
        prefix,
        total - prefix,
    )
    assert auto.input_tokens == 0
    hour = got["hour"].message.usage
    assert hour.cache_creation.ephemeral_1h_input_tokens == prefix
    assert hour.cache_creation.ephemeral_5m_input_tokens == 0
    other = got["other-model"].message.usage
    assert (other.cache_creation_input_tokens, other.cache_read_input_tokens) == (0, 0)
    assert other.input_tokens == total

    later = await run(anthropic_client, [req("later", "different question", system=cached_system)])
    usage = later["later"].message.usage
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (prefix, 0)


# -- faults --------------------------------------------------------------------------------


async def test_http_429_with_retry_after(emulator, anthropic_client, spec) -> None:
    emulator.ctx.faults = FaultSet.parse(
        {
            "faults": [
                {
                    "kind": "http",
                    "provider": "anthropic",
                    "route": "batches.create",
                    "status": 429,
                    "retry_after": 7,
                    "times": 1,
                }
            ]
        }
    )
    with pytest.raises(anthropic.RateLimitError) as caught:
        await anthropic_client.messages.batches.create(requests=[req("a")])
    err = caught.value
    assert err.status_code == 429 and err.type == "rate_limit_error"
    assert err.response.headers["retry-after"] == "7"
    assert err.request_id.startswith("req_")
    spec("ErrorResponse", err.body)
    assert journal(emulator)["batches_created"] == 0
    await anthropic_client.messages.batches.create(requests=[req("a")])  # times: 1
    assert journal(emulator)["faults_http_429"] == 1


ROUTE_CALLS = {
    "batches.create": lambda c, ids: c.messages.batches.create(requests=[req("z")]),
    "batches.get": lambda c, ids: c.messages.batches.retrieve(ids["ended"]),
    "batches.list": lambda c, ids: c.messages.batches.list(),
    "batches.cancel": lambda c, ids: c.messages.batches.cancel(ids["running"]),
    "batches.delete": lambda c, ids: c.messages.batches.delete(ids["ended"]),
    "batches.results": lambda c, ids: c.messages.batches.results(ids["ended"]),
}


@pytest.mark.parametrize("route", sorted(ROUTE_CALLS))
@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, anthropic.InternalServerError),
        (503, anthropic.ServiceUnavailableError),
        (529, anthropic.OverloadedError),
    ],
)
async def test_http_5xx_on_every_route(
    emulator, anthropic_client, route, status, error, spec
) -> None:
    ids = {"ended": (await anthropic_client.messages.batches.create(requests=[req("a")])).id}
    await ended(anthropic_client, ids["ended"])
    ids["running"] = (await anthropic_client.messages.batches.create(requests=[req("b")])).id
    async with httpx.AsyncClient() as http:
        fault = {"kind": "http", "provider": "anthropic", "route": route, "status": status}
        answer = await http.post(
            f"{emulator.url}/_emulator/faults", json={"faults": [fault | {"times": 1}]}
        )
        assert answer.status_code == 200
    with pytest.raises(error) as caught:
        await ROUTE_CALLS[route](anthropic_client, ids)
    assert caught.value.status_code == status
    spec("ErrorResponse", caught.value.body)
    if status == 529:
        assert caught.value.type == "overloaded_error"


async def test_slow_answer_times_out(emulator, anthropic_client) -> None:
    emulator.ctx.faults = FaultSet.parse(
        {
            "faults": [
                {"kind": "slow", "provider": "anthropic", "route": "batches.list", "delay_s": 1.0}
            ]
        }
    )
    with pytest.raises(anthropic.APITimeoutError):
        await anthropic_client.with_options(timeout=0.2).messages.batches.list()


async def test_dropped_connection(emulator, anthropic_client) -> None:
    batch = await anthropic_client.messages.batches.create(requests=[req("a")])
    emulator.ctx.faults = FaultSet.parse(
        {"faults": [{"kind": "drop", "provider": "anthropic", "route": "batches.get", "times": 1}]}
    )
    with pytest.raises(anthropic.APIConnectionError):
        await anthropic_client.messages.batches.retrieve(batch.id)
    assert (await ended(anthropic_client, batch.id)).request_counts.succeeded == 1


@pytest.mark.parametrize(
    ("error", "kind", "status"),
    [
        ("rate_limit", "rate_limit_error", "items_retryable"),
        ("overloaded", "overloaded_error", "items_retryable"),
        ("server", "api_error", "items_retryable"),
        ("invalid", "invalid_request_error", "items_failed"),
    ],
)
async def test_injected_item_errors(emulator, anthropic_client, error, kind, status) -> None:
    emulator.ctx.faults = FaultSet.parse(
        {
            "faults": [
                {"kind": "item_error", "provider": "anthropic", "error": error, "match": "hit-me"}
            ]
        }
    )
    got = await run(anthropic_client, [req("hit", "hit-me please"), req("miss", "leave me")])
    errored_with(got["hit"], kind)
    assert isinstance(got["miss"], MessageBatchSucceededResult)
    counters = journal(emulator)
    assert counters[status] == 1 and counters["items_succeeded"] == 1


async def test_batch_fail_errors_every_request(emulator, anthropic_client) -> None:
    emulator.ctx.faults = FaultSet.parse(
        {"faults": [{"kind": "batch_fail", "provider": "anthropic", "model": "claude-sonnet-*"}]}
    )
    batch = await anthropic_client.messages.batches.create(requests=[req("a"), req("b")])
    done = await ended(anthropic_client, batch.id)
    assert done.request_counts.errored == 2
    for result in (await results(anthropic_client, batch.id)).values():
        errored_with(result, "api_error", "Internal server error")
    assert journal(emulator)["items_retryable"] == 2


async def test_expire_leaves_a_fraction_done(emulator, anthropic_client) -> None:
    emulator.ctx.faults = FaultSet.parse(
        {"faults": [{"kind": "expire", "provider": "anthropic", "fraction": 0.5}]}
    )
    batch = await anthropic_client.messages.batches.create(
        requests=[req(f"r{i}") for i in range(4)]
    )
    done = await ended(anthropic_client, batch.id)
    assert (done.request_counts.succeeded, done.request_counts.expired) == (2, 2)
    got = await results(anthropic_client, batch.id)
    assert [type(got[f"r{i}"]) for i in range(4)] == [
        MessageBatchSucceededResult,
        MessageBatchSucceededResult,
        MessageBatchExpiredResult,
        MessageBatchExpiredResult,
    ]
    counters = journal(emulator)
    assert (counters["items_succeeded"], counters["items_retryable"]) == (2, 2)


async def test_results_gone(emulator, anthropic_client) -> None:
    emulator.ctx.faults = FaultSet.parse(
        {"faults": [{"kind": "results_gone", "provider": "anthropic"}]}
    )
    batch = await anthropic_client.messages.batches.create(requests=[req("a")])
    done = await ended(anthropic_client, batch.id)
    assert done.archived_at is not None and done.results_url is not None
    with pytest.raises(anthropic.NotFoundError) as caught:
        await anthropic_client.messages.batches.results(batch.id)
    assert caught.value.type == "not_found_error"


# -- journal and persistence ---------------------------------------------------------------


async def test_journal_counts_paid_duplicates_only(emulator, anthropic_client) -> None:
    await run(anthropic_client, [req("a", "same")])
    canceled = await anthropic_client.messages.batches.create(requests=[req("b", "retry me")])
    await anthropic_client.messages.batches.cancel(canceled.id)
    await ended(anthropic_client, canceled.id)
    await anthropic_client.messages.batches.create(
        requests=[req("a2", "same"), req("b2", "retry me")]
    )
    assert journal(emulator)["duplicate_items"] == 1


async def test_state_dir_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cached = [{"type": "text", "text": "P" * 4400, "cache_control": {"type": "ephemeral"}}]
    async with Emulator(time_scale=0, state_dir=state) as emu, sdk(emu) as client:
        batch = await client.messages.batches.create(requests=[req("a", system=cached), req("b")])
        before = await ended(client, batch.id)
        first = await results(client, batch.id)
    async with Emulator(time_scale=0, state_dir=state) as emu, sdk(emu) as client:
        after = await client.messages.batches.retrieve(batch.id)
        assert after.processing_status == "ended"
        assert after.request_counts == before.request_counts
        assert after.results_url.startswith(emu.url)
        assert await results(client, batch.id) == first
        assert [b.id async for b in client.messages.batches.list()] == [batch.id]
        again = await run(client, [req("c", system=cached)])
        assert again["c"].message.usage.cache_read_input_tokens == estimate_tokens("P" * 4400)
        assert journal(emu)["items_received"] == 3


async def test_beta_resource_reaches_the_same_routes(anthropic_client) -> None:
    """``client.beta.messages.batches`` adds ``?beta=true`` and an ``anthropic-beta`` header."""
    beta = anthropic_client.beta.messages.batches
    batch = await beta.create(requests=[req("a", "beta question")])
    assert batch.processing_status == "in_progress"
    done = await beta.retrieve(batch.id)
    assert done.processing_status == "ended" and done.request_counts.succeeded == 1
    got = {r.custom_id: r.result async for r in await beta.results(batch.id)}
    assert got["a"].message.content[0].text == f"[{MODEL}] Answer: beta question"
    assert [b.id async for b in beta.list()] == [batch.id]
    assert (await beta.delete(batch.id)).type == "message_batch_deleted"
