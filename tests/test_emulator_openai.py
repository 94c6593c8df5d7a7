"""The OpenAI emulator, driven through the official ``openai`` SDK (async client).

Every route is exercised through the SDK; JSON answers are checked against OpenAI's OpenAPI
spec; batch timing is driven by a fake clock (never by sleeping).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from adapters.emulator import Emulator, FaultSet
from adapters.emulator import openai_input as items_mod
from adapters.emulator.answers import estimate_tokens

from .conftest import SPECS, TEST_KEY, require_specs, specs_missing

CHAT = "/v1/chat/completions"

# -- OpenAPI spec validation ------------------------------------------------------------------

MAIN_SPEC = "openai-openapi.yaml"
LINES_SPEC = "openai-openapi.manual_spec-2025-04-29.yaml"  # last one with BatchRequestOutput


def _relax(node: Any, memo: dict[int, Any]) -> Any:
    """OpenAPI -> JSON Schema: 3.0 ``nullable`` as a null branch, and null optional fields.

    The real API sends ``null`` for optional fields it has no value for, where the spec says
    "absent"; a null optional field is therefore accepted as if it were absent. ``memo`` maps
    nodes already converted (YAML aliases share nodes) to their conversion.
    """
    if isinstance(node, list):
        return [_relax(x, memo) for x in node]
    if not isinstance(node, dict):
        return node
    if id(node) in memo:
        return memo[id(node)]
    out = {k: _relax(v, memo) for k, v in node.items()}
    if isinstance(out.get("properties"), dict):
        required = set(out.get("required", []))
        out["properties"] = {
            k: v if k in required else {"anyOf": [v, {"type": "null"}]}
            for k, v in out["properties"].items()
        }
    if out.pop("nullable", False):
        out = {"anyOf": [out, {"type": "null"}]}
    memo[id(node)] = out
    return out


class Spec:
    """Validators for component schemas of the two OpenAI spec files (built once)."""

    def __init__(self, folder: Path) -> None:
        resources = []
        for uri, name in (("urn:openai", MAIN_SPEC), ("urn:openai-lines", LINES_SPEC)):
            with open(folder / name, encoding="utf-8") as fh:
                doc = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            doc = {"components": {"schemas": _relax(doc["components"]["schemas"], {})}}
            resources.append((uri, Resource.from_contents(doc, DRAFT202012)))
        self._registry = Registry().with_resources(resources)
        self._validators: dict[str, Draft202012Validator] = {}

    def check(self, schema: str, data: Any) -> None:
        uri = "urn:openai-lines" if schema == "BatchRequestOutput" else "urn:openai"
        validator = self._validators.get(schema)
        if validator is None:
            ref = {"$ref": f"{uri}#/components/schemas/{schema}"}
            validator = self._validators[schema] = Draft202012Validator(
                ref, registry=self._registry
            )
        validator.validate(data)


class _NoSpec:
    """Stands in for :class:`Spec` when the spec files are absent (behaviour tests still run)."""

    def check(self, schema: str, data: Any) -> None:
        pass


@pytest.fixture(scope="session")
def loaded_spec() -> Spec | None:
    if specs_missing(MAIN_SPEC, LINES_SPEC):  # fails under CI
        return None
    return Spec(SPECS)


@pytest.fixture
def spec(loaded_spec: Spec | None) -> Spec | _NoSpec:
    """Spec checks inside behaviour tests; no-ops without the specs (see real_spec)."""
    return loaded_spec or _NoSpec()


@pytest.fixture
def real_spec(loaded_spec: Spec | None) -> Spec:
    require_specs(MAIN_SPEC, LINES_SPEC)
    assert loaded_spec is not None
    return loaded_spec


# -- helpers ----------------------------------------------------------------------------------


def line(custom_id: str, body: dict[str, Any], url: str = CHAT) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def chat(text: str, model: str = "gpt-4o-mini", **params: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **params}


def jsonl(lines: list[Any]) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()


async def upload(client: openai.AsyncOpenAI, lines: list[Any], name: str = "in.jsonl") -> str:
    return (await client.files.create(file=(name, jsonl(lines)), purpose="batch")).id


async def create(client: openai.AsyncOpenAI, lines: list[Any], **kw: Any) -> Any:
    file_id = await upload(client, lines)
    return await client.batches.create(
        input_file_id=file_id, endpoint=CHAT, completion_window="24h", **kw
    )


async def run(client: openai.AsyncOpenAI, lines: list[Any], **kw: Any) -> Any:
    """Create a batch and poll it once (at time scale 0 that ends it)."""
    return await client.batches.retrieve((await create(client, lines, **kw)).id)


async def results(client: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    content = await client.files.content(file_id)
    return [json.loads(x) for x in content.text.splitlines()]


async def only_result(client: openai.AsyncOpenAI, body: dict[str, Any]) -> dict[str, Any]:
    """Run a one-item batch and return its single result line (output or error file)."""
    batch = await run(client, [line("only", body)])
    assert batch.status == "completed"
    found = await results(client, batch.output_file_id) + await results(client, batch.error_file_id)
    assert len(found) == 1
    return found[0]


def journal(emulator: Emulator) -> dict[str, int]:
    assert emulator.ctx is not None
    return emulator.ctx.journal.snapshot()["providers"]["openai"]


def set_faults(emulator: Emulator, config: dict[str, Any]) -> None:
    assert emulator.ctx is not None
    emulator.ctx.faults = FaultSet.parse(config)


class Clock:
    """The emulator's notion of now, moved by the test (time scale 1)."""

    def __init__(self, emulator: Emulator) -> None:
        assert emulator.ctx is not None
        self.t = 1_800_000_000.0
        emulator.ctx.time_scale = 1.0
        emulator.ctx.now = lambda: self.t  # type: ignore[method-assign]

    def advance(self, seconds: float) -> None:
        self.t += seconds


# -- files ------------------------------------------------------------------------------------


async def test_file_upload_get_content_delete(openai_client, spec) -> None:
    data = jsonl([line("a", chat("hi"))])
    raw = await openai_client.files.with_raw_response.create(
        file=("in.jsonl", data), purpose="batch"
    )
    spec.check("OpenAIFile", raw.http_response.json())
    created = raw.parse()
    assert isinstance(created, openai.types.FileObject)
    assert (created.filename, created.purpose, created.bytes) == ("in.jsonl", "batch", len(data))
    assert created.expires_at == created.created_at + 30 * 86_400
    assert raw.request_id and raw.request_id.startswith("req_")

    got = await openai_client.files.retrieve(created.id)
    assert got.id == created.id and got.status == "processed"
    assert (await openai_client.files.content(created.id)).content == data

    raw_del = await openai_client.files.with_raw_response.delete(created.id)
    spec.check("DeleteFileResponse", raw_del.http_response.json())
    assert raw_del.parse().deleted is True
    with pytest.raises(openai.NotFoundError) as info:
        await openai_client.files.retrieve(created.id)
    assert info.value.message.endswith(f"No such File object: {created.id}")
    assert info.value.type == "invalid_request_error" and info.value.param == "id"
    spec.check("ErrorResponse", info.value.response.json())
    with pytest.raises(openai.NotFoundError):
        await openai_client.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        await openai_client.files.delete(created.id)


async def test_upload_rules(openai_client) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await openai_client.files.create(file=("in.csv", b"a,b\n"), purpose="batch")
    assert info.value.body["message"] == "Invalid file format for Batch API. Must be .jsonl"
    other = await openai_client.files.create(file=("notes.txt", b"x"), purpose="user_data")
    assert other.purpose == "user_data" and other.expires_at is None
    with pytest.raises(openai.BadRequestError) as info:
        await openai_client.files.create(file=("in.jsonl", b""), purpose="nope")  # type: ignore[arg-type]
    assert info.value.body["message"].startswith("'nope' is not one of [")
    with pytest.raises(openai.BadRequestError) as info:
        await openai_client.files.create(
            file=("in.jsonl", b""),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 60},
        )
    assert info.value.code == "integer_below_min_value"
    assert info.value.param == "expires_after.seconds"
    kept = await openai_client.files.create(
        file=("in.jsonl", b""),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 7200},
    )
    assert kept.expires_at == kept.created_at + 7200


async def test_file_list_pagination_order_and_purpose(openai_client, spec) -> None:
    ids = []
    for i in range(5):
        purpose = "batch" if i % 2 == 0 else "user_data"
        name = f"f{i}.jsonl" if purpose == "batch" else f"f{i}.txt"
        ids.append((await openai_client.files.create(file=(name, b"{}"), purpose=purpose)).id)

    raw = await openai_client.files.with_raw_response.list(limit=2)
    body = raw.http_response.json()
    spec.check("ListFilesResponse", body)
    assert [f["id"] for f in body["data"]] == ids[::-1][:2]
    assert body["has_more"] is True
    assert (body["first_id"], body["last_id"]) == (ids[4], ids[3])

    everything = [f.id async for f in openai_client.files.list(limit=2)]
    assert everything == ids[::-1]
    ascending = [f.id async for f in openai_client.files.list(limit=2, order="asc")]
    assert ascending == ids
    batch_only = [f.id async for f in openai_client.files.list(purpose="batch", limit=1)]
    assert batch_only == [ids[4], ids[2], ids[0]]
    with pytest.raises(openai.BadRequestError) as info:
        await openai_client.files.list(limit=0)
    assert info.value.code == "integer_below_min_value"


# -- batches: the happy path ------------------------------------------------------------------


async def test_batch_completes_with_outputs(openai_client, emulator, spec) -> None:
    lines = [line(f"r{i}", chat(f"question {i}", max_tokens=50)) for i in range(3)]
    raw = await openai_client.batches.with_raw_response.create(
        input_file_id=await upload(openai_client, lines),
        endpoint=CHAT,
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    spec.check("Batch", raw.http_response.json())
    created = raw.parse()
    assert isinstance(created, openai.types.Batch)
    assert created.status == "validating"
    assert created.request_counts is not None and created.request_counts.total == 0
    assert created.expires_at == created.created_at + 86_400
    assert created.output_file_id is None and created.in_progress_at is None

    raw = await openai_client.batches.with_raw_response.retrieve(created.id)
    spec.check("Batch", raw.http_response.json())
    batch = raw.parse()
    assert batch.status == "completed"
    assert batch.metadata == {"job": "nightly"} and batch.model == "gpt-4o-mini"
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 3, "completed": 3, "failed": 0}
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    assert batch.error_file_id is None and batch.errors is None

    out_file = await openai_client.files.retrieve(batch.output_file_id)
    assert out_file.purpose == "batch_output"
    assert out_file.filename == f"{batch.id}_output.jsonl"
    outputs = await results(openai_client, batch.output_file_id)
    assert [o["custom_id"] for o in outputs] == ["r0", "r1", "r2"]
    total_in = total_out = 0
    for i, out in enumerate(outputs):
        spec.check("BatchRequestOutput", out)
        spec.check("CreateChatCompletionResponse", out["response"]["body"])
        assert out["id"].startswith("batch_req_") and out["error"] is None
        assert out["response"]["status_code"] == 200
        completion = openai.types.chat.ChatCompletion.model_validate(out["response"]["body"])
        assert completion.choices[0].message.content == f"[gpt-4o-mini] Answer: question {i}"
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None
        total_in += completion.usage.prompt_tokens
        total_out += completion.usage.completion_tokens
    assert batch.usage is not None
    assert (batch.usage.input_tokens, batch.usage.output_tokens) == (total_in, total_out)
    assert batch.usage.total_tokens == total_in + total_out

    counts = journal(emulator)
    assert counts["items_received"] == 3 and counts["items_succeeded"] == 3
    assert counts["duplicate_items"] == 0


async def test_batch_phases_and_timestamps_follow_the_clock(openai_client, emulator) -> None:
    clock = Clock(emulator)
    created = await create(openai_client, [line("a", chat("x")), line("b", chat("y"))])
    assert (await openai_client.batches.retrieve(created.id)).status == "validating"
    clock.advance(3)
    running = await openai_client.batches.retrieve(created.id)
    assert running.status == "in_progress"
    assert running.in_progress_at == created.created_at + 2
    assert running.request_counts is not None and running.request_counts.total == 2
    assert running.output_file_id is None
    clock.advance(5)
    assert (await openai_client.batches.retrieve(created.id)).status == "finalizing"
    clock.advance(5)
    done = await openai_client.batches.retrieve(created.id)
    assert done.status == "completed"
    assert done.finalizing_at is not None and done.completed_at is not None
    assert done.in_progress_at < done.finalizing_at < done.completed_at  # type: ignore[operator]


async def test_batch_list_pagination_newest_first(openai_client, spec) -> None:
    ids = [(await create(openai_client, [line("a", chat(str(i)))])).id for i in range(3)]
    raw = await openai_client.batches.with_raw_response.list(limit=2)
    body = raw.http_response.json()
    spec.check("ListBatchesResponse", body)
    assert [b["id"] for b in body["data"]] == [ids[2], ids[1]]
    assert body["has_more"] is True and body["last_id"] == ids[1]
    assert {b["status"] for b in body["data"]} == {"completed"}
    second = await openai_client.batches.list(limit=2, after=ids[1])
    assert [b.id for b in second.data] == [ids[0]] and second.has_more is False
    assert [b.id async for b in openai_client.batches.list(limit=1)] == ids[::-1]
    with pytest.raises(openai.BadRequestError) as info:
        await openai_client.batches.list(limit=101)
    assert info.value.code == "integer_above_max_value" and info.value.param == "limit"


async def test_missing_batch_is_404(openai_client, spec) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await openai_client.batches.retrieve("batch_missing")
    assert info.value.body["message"] == "No batch found with id 'batch_missing'."
    spec.check("ErrorResponse", info.value.response.json())
    with pytest.raises(openai.NotFoundError):
        await openai_client.batches.cancel("batch_missing")


async def test_input_file_deleted_after_create_still_runs(openai_client) -> None:
    created = await create(openai_client, [line("a", chat("kept"))])
    await openai_client.files.delete(created.input_file_id)
    batch = await openai_client.batches.retrieve(created.id)
    assert batch.status == "completed"
    assert len(await results(openai_client, batch.output_file_id)) == 1


async def test_output_file_can_be_deleted(openai_client) -> None:
    batch = await run(openai_client, [line("a", chat("x"))])
    deleted = await openai_client.files.delete(batch.output_file_id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        await openai_client.files.content(batch.output_file_id)
    again = await openai_client.batches.retrieve(batch.id)
    assert again.output_file_id == batch.output_file_id


async def test_output_expires_after_sets_result_file_expiry(openai_client) -> None:
    batch = await run(
        openai_client,
        [line("a", chat("x"))],
        output_expires_after={"anchor": "created_at", "seconds": 3600},
    )
    out = await openai_client.files.retrieve(batch.output_file_id)
    assert out.expires_at == out.created_at + 3600


# -- batches: create-time refusals ------------------------------------------------------------

CREATE_REFUSALS = [
    ({"completion_window": "48h"}, "invalid_value", "Invalid value: '48h'."),
    ({"endpoint": "/v1/nothing"}, "invalid_value", "Invalid value: '/v1/nothing'."),
    ({"endpoint": "/v1/embeddings"}, "unsupported_value", "The batchd emulator does not"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "object_above_max_properties", ""),
    ({"metadata": {"k" * 65: "v"}}, "string_above_max_length", ""),
    ({"metadata": {"k": "v" * 513}}, "string_above_max_length", ""),
    ({"extra_body": {"priority": 1}}, None, "Unrecognized request argument supplied: priority"),
]


@pytest.mark.parametrize(("override", "code", "start"), CREATE_REFUSALS)
async def test_create_refusals(openai_client, spec, override, code, start) -> None:
    file_id = await upload(openai_client, [line("a", chat("x"))])
    kw = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h", **override}
    with pytest.raises(openai.BadRequestError) as info:
        await openai_client.batches.create(**kw)
    assert info.value.code == code
    assert info.value.body["message"].startswith(start)
    spec.check("ErrorResponse", info.value.response.json())


async def test_create_needs_an_existing_batch_purpose_file(openai_client, emulator) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await openai_client.batches.create(
            input_file_id="file-nope", endpoint=CHAT, completion_window="24h"
        )
    assert info.value.param == "input_file_id"
    other = await openai_client.files.create(file=("x.jsonl", b"{}"), purpose="user_data")
    with pytest.raises(openai.BadRequestError) as info:
        await openai_client.batches.create(
            input_file_id=other.id, endpoint=CHAT, completion_window="24h"
        )
    assert "purpose 'batch'" in info.value.body["message"]
    assert journal(emulator)["batches_created"] == 0


# -- batches: input files the validator fails -------------------------------------------------

GOOD = line("ok", chat("fine"))
INPUT_FAILURES = [
    (["{not json"], "invalid_json_line", 1, "This line is not parseable as valid JSON."),
    ([GOOD, line("ok", chat("again"))], "duplicate_custom_id", 2, None),
    ([GOOD, line("e", chat("x"), url="/v1/embeddings")], "url_mismatch", 2, None),
    ([GOOD, line("m", chat("x", model="gpt-4.1"))], "model_mismatch", 2, None),
    ([{**GOOD, "method": "GET"}], "invalid_request", 1, "Invalid value: 'GET'."),
    ([{"custom_id": "x", "url": CHAT, "body": {}}], "invalid_request", 1, None),
    ([{**GOOD, "body": "text"}], "invalid_request", 1, None),
    (["[1, 2]"], "invalid_request", 1, None),
    ([], "empty_file", None, None),
]


@pytest.mark.parametrize(("lines", "code", "line_no", "message"), INPUT_FAILURES)
async def test_invalid_input_fails_the_batch(
    openai_client, emulator, spec, lines, code, line_no, message
) -> None:
    raw = await openai_client.batches.with_raw_response.retrieve(
        (await create(openai_client, lines)).id
    )
    spec.check("Batch", raw.http_response.json())
    batch = raw.parse()
    assert batch.status == "failed"
    assert batch.failed_at is not None and batch.in_progress_at is None
    assert batch.output_file_id is None and batch.error_file_id is None
    assert batch.errors is not None and batch.errors.object == "list"
    error = batch.errors.data[0]
    assert (error.code, error.line) == (code, line_no)
    if message:
        assert error.message.startswith(message)
    assert journal(emulator)["items_received"] == 0


async def test_too_many_requests_and_too_large(openai_client, monkeypatch) -> None:
    monkeypatch.setattr(items_mod, "MAX_REQUESTS", 2)
    batch = await run(openai_client, [line(str(i), chat("x")) for i in range(3)])
    assert batch.errors.data[0].code == "too_many_tasks"  # type: ignore[union-attr]
    monkeypatch.setattr(items_mod, "MAX_INPUT_BYTES", 10)
    batch = await run(openai_client, [line("a", chat("x"))])
    assert batch.errors.data[0].code == "file_too_large"  # type: ignore[union-attr]


# -- per-item rules ---------------------------------------------------------------------------

SYSTEM_FIRST = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
ITEM_REFUSALS = [
    ({"messages": SYSTEM_FIRST}, 400, None, "you must provide a model parameter"),
    (chat("x", model="gpt-nope"), 404, "model_not_found", "The model `gpt-nope` does not exist"),
    (
        {"model": "o1-mini", "messages": SYSTEM_FIRST},
        400,
        "unsupported_value",
        "Unsupported value: 'messages[0].role' does not support 'system' with this model.",
    ),
    (
        {"model": "o1-preview", "messages": [{"role": "developer", "content": "x"}]},
        400,
        "unsupported_value",
        "Unsupported value: 'messages[0].role' does not support 'developer' with this model.",
    ),
    (
        chat("x", model="o3-mini", max_tokens=10),
        400,
        "unsupported_parameter",
        "Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
    ),
    (
        chat("x", model="o3-mini", temperature=1),
        400,
        "unsupported_parameter",
        "Unsupported parameter: 'temperature' is not supported with this model.",
    ),
    (
        chat("x", model="o1", temperature=0.2),
        400,
        "unsupported_value",
        "Unsupported value: 'temperature' does not support 0.2 with this model. "
        "Only the default (1) value is supported.",
    ),
    (chat("x", model="o4-mini", top_p=0.5), 400, "unsupported_value", "Unsupported value:"),
    (chat("x", model="gpt-5", logprobs=True), 400, "unsupported_value", "Unsupported value:"),
    (
        chat("x", model="gpt-5.1", reasoning_effort="low", temperature=0.2),
        400,
        "unsupported_value",
        "Unsupported value: 'temperature' does not support 0.2",
    ),
    (
        chat("x", model="o3", stop=["\n"]),
        400,
        "unsupported_parameter",
        "Unsupported parameter: 'stop' is not supported with this model.",
    ),
    (
        chat("x", model="gpt-4o", reasoning_effort="low"),
        400,
        "unsupported_parameter",
        "Unsupported parameter: 'reasoning_effort'",
    ),
    (
        chat("x", model="gpt-5", reasoning_effort="none"),
        400,
        "unsupported_value",
        "Unsupported value: 'reasoning_effort' does not support 'none' with this model.",
    ),
    (
        chat("x", temperature=2.5),
        400,
        "decimal_above_max_value",
        "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, "
        "but got 2.5 instead.",
    ),
    (chat("x", presence_penalty=-3), 400, "decimal_below_min_value", "Invalid 'presence_pen"),
    (chat("x", top_logprobs=21), 400, "integer_above_max_value", "Invalid 'top_logprobs'"),
    (chat("x", temperature="hot"), 400, "invalid_type", "Invalid type for 'temperature'"),
    (chat("x", stop=["a", "b", "c", "d", "e"]), 400, "array_above_max_length", "Invalid 'stop'"),
    ({"model": "gpt-4o", "messages": []}, 400, "empty_array", "Invalid 'messages': empty array."),
    ({"model": "gpt-4o"}, 400, "missing_required_parameter", "Missing required parameter: 'mes"),
    (
        {"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]},
        400,
        "invalid_value",
        "Invalid value: 'robot'. Supported values are: 'system', 'assistant', 'user', "
        "'function', 'tool', and 'developer'.",
    ),
    (
        {"model": "gpt-4o", "messages": [{"role": "user"}]},
        400,
        "missing_required_parameter",
        "Missing required parameter: 'messages[0].content'.",
    ),
    (chat("x", frobnicate=True), 400, None, "Unrecognized request argument supplied: frobnicate"),
    (
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
            ],
        },
        400,
        None,
        "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
        "message with 'tool_calls'.",
    ),
    (
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function"}]},
                {"role": "user", "content": "y"},
            ],
        },
        400,
        None,
        "An assistant message with 'tool_calls' must be followed by tool messages",
    ),
    (
        chat("x", response_format={"type": "json_object"}),
        400,
        None,
        "'messages' must contain the word 'json' in some form",
    ),
    (chat("x", stream=True), 400, "invalid_value", "Streaming is not supported"),
]


@pytest.mark.parametrize(("body", "status", "code", "message"), ITEM_REFUSALS)
async def test_item_refusals(openai_client, emulator, spec, body, status, code, message) -> None:
    result = await only_result(openai_client, body)
    spec.check("BatchRequestOutput", result)
    assert result["error"] is None
    assert result["response"]["status_code"] == status
    spec.check("ErrorResponse", result["response"]["body"])
    error = result["response"]["body"]["error"]
    assert error["type"] == "invalid_request_error"
    assert (error["code"], error["message"][: len(message)]) == (code, message)
    assert journal(emulator)["items_failed"] == 1


ITEM_ACCEPTED = [
    chat("x", model="o1", temperature=1),
    chat("x", model="gpt-5.1", temperature=0.2, top_p=0.5),
    chat("x", model="gpt-5.1", reasoning_effort="none", logprobs=True, top_logprobs=2),
    chat("x", model="gpt-5-chat-latest", temperature=0.2),
    chat("x", model="o3-mini", reasoning_effort="high", max_completion_tokens=500),
    chat("x", model="gpt-4o", temperature=0, stop="\n", seed=1, user="u", n=1),
    {
        "model": "gpt-4o",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
            {"role": "user", "content": "what is 6*7"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function"}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        "tools": [{"type": "function", "function": {"name": "calc"}}],
    },
    chat("reply in json", response_format={"type": "json_object"}),
]


@pytest.mark.parametrize("body", ITEM_ACCEPTED)
async def test_item_accepted(openai_client, spec, body) -> None:
    result = await only_result(openai_client, body)
    assert result["response"]["status_code"] == 200, result
    spec.check("CreateChatCompletionResponse", result["response"]["body"])


async def test_answers_limits_and_stops(openai_client) -> None:
    cut = await only_result(openai_client, chat("a long question here", max_tokens=3))
    choice = cut["response"]["body"]["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == "[gpt-4o-mini] Answer: a long question here"[:12]
    assert cut["response"]["body"]["usage"]["completion_tokens"] == 3

    stopped = await only_result(openai_client, chat("one. two", stop=["."]))
    choice = stopped["response"]["body"]["choices"][0]
    assert (choice["finish_reason"], choice["message"]["content"]) == (
        "stop",
        "[gpt-4o-mini] Answer: one",
    )

    two = await only_result(openai_client, chat("hi", n=2, logprobs=True, top_logprobs=1))
    body = two["response"]["body"]
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["choices"][0]["logprobs"]["content"][0]["top_logprobs"]


async def test_reasoning_tokens_and_max_completion_tokens(openai_client) -> None:
    roomy = await only_result(openai_client, chat("why", model="o3-mini"))
    usage = roomy["response"]["body"]["usage"]
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning > 0 and usage["completion_tokens"] > reasoning

    tight = await only_result(openai_client, chat("why", model="o3-mini", max_completion_tokens=3))
    body = tight["response"]["body"]
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == ""
    assert body["usage"]["completion_tokens"] == 3
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3

    no_effort = await only_result(openai_client, chat("why", model="gpt-5.1"))
    details = no_effort["response"]["body"]["usage"]["completion_tokens_details"]
    assert details["reasoning_tokens"] == 0


async def test_prompt_caching_counts_repeated_long_prefixes(openai_client) -> None:
    system = {"role": "system", "content": "policy " * 800}  # ~1400 tokens
    prefix_tokens = estimate_tokens(system["content"])

    def ask(cid: str, text: str) -> dict[str, Any]:
        return line(
            cid, {"model": "gpt-4o", "messages": [system, {"role": "user", "content": text}]}
        )

    batch = await run(
        openai_client, [ask("a", "one"), ask("b", "two"), line("c", chat("short", model="gpt-4o"))]
    )
    outputs = {o["custom_id"]: o for o in await results(openai_client, batch.output_file_id)}

    def cached(o: dict[str, Any]) -> int:
        return o["response"]["body"]["usage"]["prompt_tokens_details"]["cached_tokens"]

    expected = prefix_tokens // 128 * 128
    assert (cached(outputs["a"]), cached(outputs["b"]), cached(outputs["c"])) == (0, expected, 0)
    assert batch.usage.input_tokens_details.cached_tokens == expected  # type: ignore[union-attr]
    again = await run(openai_client, [ask("z", "three")])
    assert cached((await results(openai_client, again.output_file_id))[0]) == expected


# -- cancel -----------------------------------------------------------------------------------


async def test_cancel_before_anything_ran(openai_client, emulator, spec) -> None:
    created = await create(openai_client, [line("a", chat("x")), line("b", chat("y"))])
    raw = await openai_client.batches.with_raw_response.cancel(created.id)
    spec.check("Batch", raw.http_response.json())
    cancelling = raw.parse()
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    assert (await openai_client.batches.cancel(created.id)).status == "cancelling"

    batch = await openai_client.batches.retrieve(created.id)
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    assert batch.output_file_id is None
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 2, "completed": 0, "failed": 2}
    errors = await results(openai_client, batch.error_file_id)
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert all(e["response"] is None for e in errors)
    with pytest.raises(openai.BadRequestError) as info:
        await openai_client.batches.cancel(created.id)
    assert "cancelled" in info.value.body["message"]
    assert journal(emulator)["items_retryable"] == 2


async def test_cancel_after_completion_is_refused(openai_client) -> None:
    batch = await run(openai_client, [line("a", chat("x"))])
    with pytest.raises(openai.BadRequestError) as info:
        await openai_client.batches.cancel(batch.id)
    assert info.value.body["message"] == "Cannot cancel a batch with status 'completed'."


async def test_cancel_midway_keeps_finished_results(openai_client, emulator) -> None:
    clock = Clock(emulator)
    assert emulator.ctx is not None
    emulator.ctx.timing = type(emulator.ctx.timing)(per_item_s=0.0, in_progress_base_s=10.0)
    lines = [line(f"r{i}", chat(str(i))) for i in range(10)]
    created = await create(openai_client, lines)
    clock.advance(2 + 5)  # validating 2 s, then half of the 10 s in progress
    cancelling = await openai_client.batches.cancel(created.id)
    assert cancelling.status == "cancelling" and cancelling.in_progress_at is not None
    assert cancelling.request_counts is not None and cancelling.request_counts.total == 10
    assert (await openai_client.batches.retrieve(created.id)).status == "cancelling"
    clock.advance(5)
    batch = await openai_client.batches.retrieve(created.id)
    assert batch.status == "cancelled"
    outputs = await results(openai_client, batch.output_file_id)
    errors = await results(openai_client, batch.error_file_id)
    assert [o["custom_id"] for o in outputs] == [f"r{i}" for i in range(5)]
    assert [e["custom_id"] for e in errors] == [f"r{i}" for i in range(5, 10)]
    assert journal(emulator)["items_succeeded"] == 5


# -- faults -----------------------------------------------------------------------------------


async def test_expire_fault_keeps_finished_lines(openai_client, emulator, spec) -> None:
    set_faults(emulator, {"faults": [{"kind": "expire", "provider": "openai", "fraction": 0.5}]})
    batch = await run(openai_client, [line(f"r{i}", chat(str(i))) for i in range(4)])
    assert batch.status == "expired" and batch.expired_at is not None
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 4, "completed": 2, "failed": 2}
    assert len(await results(openai_client, batch.output_file_id)) == 2
    for err in await results(openai_client, batch.error_file_id):
        spec.check("BatchRequestOutput", err)
        assert err["response"] is None
        assert err["error"] == {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired.",
        }
    counts = journal(emulator)
    assert (counts["items_succeeded"], counts["items_retryable"]) == (2, 2)


async def test_batch_fail_fault(openai_client, emulator) -> None:
    set_faults(emulator, {"faults": [{"kind": "batch_fail", "provider": "openai"}]})
    batch = await run(openai_client, [line("a", chat("x")), line("b", chat("y"))])
    assert batch.status == "failed" and batch.failed_at is not None
    assert batch.errors is not None
    assert batch.errors.data[0].code == "token_limit_exceeded"
    assert "gpt-4o-mini" in batch.errors.data[0].message
    assert journal(emulator)["items_retryable"] == 2


async def test_results_gone_fault(openai_client, emulator) -> None:
    set_faults(emulator, {"faults": [{"kind": "results_gone", "provider": "openai"}]})
    batch = await run(openai_client, [line("a", chat("x")), line("b", {"model": "gpt-4o-mini"})])
    assert batch.status == "completed"
    assert batch.output_file_id and batch.error_file_id
    for file_id in (batch.output_file_id, batch.error_file_id):
        with pytest.raises(openai.NotFoundError):
            await openai_client.files.content(file_id)
        with pytest.raises(openai.NotFoundError):
            await openai_client.files.retrieve(file_id)
    listed = [f.id async for f in openai_client.files.list()]
    assert batch.output_file_id not in listed


ITEM_FAULTS = [
    ("rate_limit", 429, "tokens", "rate_limit_exceeded", "Rate limit reached for gpt-4o-mini"),
    ("overloaded", 503, "server_error", None, "The engine is currently overloaded"),
    ("server", 500, "server_error", None, "The server had an error"),
    ("invalid", 400, "invalid_request_error", "context_length_exceeded", "This model's maximum"),
]


@pytest.mark.parametrize(("kind", "status", "etype", "code", "message"), ITEM_FAULTS)
async def test_item_error_faults(
    openai_client, emulator, spec, kind, status, etype, code, message
) -> None:
    fault = {"kind": "item_error", "provider": "openai", "error": kind, "match": "victim"}
    set_faults(emulator, {"faults": [fault]})
    batch = await run(openai_client, [line("a", chat("fine")), line("b", chat("victim"))])
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 1)
    (err,) = await results(openai_client, batch.error_file_id)
    spec.check("BatchRequestOutput", err)
    assert err["custom_id"] == "b" and err["response"]["status_code"] == status
    body = err["response"]["body"]["error"]
    assert (body["type"], body["code"]) == (etype, code)
    assert body["message"].startswith(message)
    counts = journal(emulator)
    assert counts["items_retryable" if status != 400 else "items_failed"] == 1


async def test_http_429_with_retry_after(openai_client, emulator, spec) -> None:
    set_faults(
        emulator,
        {
            "faults": [
                {
                    "kind": "http",
                    "provider": "openai",
                    "route": "batches.create",
                    "status": 429,
                    "retry_after": 3,
                    "times": 1,
                }
            ]
        },
    )
    file_id = await upload(openai_client, [line("a", chat("x"))])
    with pytest.raises(openai.RateLimitError) as info:
        await openai_client.batches.create(
            input_file_id=file_id, endpoint=CHAT, completion_window="24h"
        )
    assert info.value.response.headers["retry-after"] == "3"
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.request_id and info.value.request_id.startswith("req_")
    spec.check("ErrorResponse", info.value.response.json())
    batch = await openai_client.batches.create(
        input_file_id=file_id, endpoint=CHAT, completion_window="24h"
    )
    assert batch.status == "validating"


def _route_calls(
    client: openai.AsyncOpenAI, file_id: str, batch_id: str, output_id: str
) -> dict[str, Callable[[], Any]]:
    return {
        "files.create": lambda: client.files.create(file=("x.jsonl", b"{}"), purpose="batch"),
        "files.list": lambda: client.files.list(),
        "files.get": lambda: client.files.retrieve(file_id),
        "files.content": lambda: client.files.content(file_id),
        "batches.results": lambda: client.files.content(output_id),
        "files.delete": lambda: client.files.delete(file_id),
        "batches.create": lambda: client.batches.create(
            input_file_id=file_id, endpoint=CHAT, completion_window="24h"
        ),
        "batches.list": lambda: client.batches.list(),
        "batches.get": lambda: client.batches.retrieve(batch_id),
        "batches.cancel": lambda: client.batches.cancel(batch_id),
    }


@pytest.mark.parametrize("status", [500, 503])
async def test_http_5xx_on_every_route(openai_client, emulator, status) -> None:
    done = await run(openai_client, [line("a", chat("x"))])
    file_id = await upload(openai_client, [line("a", chat("x"))])
    calls = _route_calls(openai_client, file_id, done.id, done.output_file_id)
    for route, call in calls.items():
        fault = {"kind": "http", "provider": "openai", "route": route, "status": status}
        set_faults(emulator, {"faults": [fault]})
        with pytest.raises(openai.InternalServerError) as info:
            await call()
        assert info.value.status_code == status, route
        assert info.value.type == "server_error"
    set_faults(emulator, {})
    assert journal(emulator)[f"faults_http_{status}"] == len(calls)


async def test_slow_fault_times_the_sdk_out(openai_client, emulator) -> None:
    fault = {"kind": "slow", "provider": "openai", "route": "batches.list", "delay_s": 2.0}
    set_faults(emulator, {"faults": [fault]})
    with pytest.raises(openai.APITimeoutError):
        await openai_client.with_options(timeout=0.2).batches.list()


async def test_drop_fault_is_a_connection_error(openai_client, emulator) -> None:
    file_id = await upload(openai_client, [line("a", chat("x"))])
    set_faults(
        emulator,
        {"faults": [{"kind": "drop", "provider": "openai", "route": "files.get", "times": 1}]},
    )
    with pytest.raises(openai.APIConnectionError):
        await openai_client.files.retrieve(file_id)
    assert (await openai_client.files.retrieve(file_id)).id == file_id


async def test_faults_through_the_control_endpoint(openai_client, emulator) -> None:
    config = {
        "faults": [{"kind": "http", "provider": "openai", "route": "files.list", "status": 429}]
    }
    async with httpx.AsyncClient(base_url=emulator.url) as http:
        assert (await http.post("/_emulator/faults", json=config)).status_code == 200
    with pytest.raises(openai.RateLimitError):
        await openai_client.files.list()


async def test_wrong_and_missing_api_key(openai_client, emulator, spec) -> None:
    set_faults(emulator, {"auth": {"openai": TEST_KEY}})
    assert (await openai_client.batches.list()).data == []
    wrong = openai_client.with_options(api_key="sk-wrong")
    with pytest.raises(openai.AuthenticationError) as info:
        await wrong.batches.list()
    assert info.value.code == "invalid_api_key"
    spec.check("ErrorResponse", info.value.response.json())
    async with httpx.AsyncClient(base_url=emulator.url) as http:
        anonymous = await http.get("/v1/batches")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["message"].startswith("You didn't provide an API key.")


async def test_unknown_url_is_openai_404(emulator) -> None:
    async with httpx.AsyncClient(base_url=emulator.url) as http:
        answer = await http.get("/v1/nothing/here", headers={"Authorization": "Bearer x"})
    assert answer.status_code == 404
    assert answer.json()["error"]["message"] == "Invalid URL (GET /v1/nothing/here)"


# -- persistence ------------------------------------------------------------------------------


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"

    def client_for(emu: Emulator) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=emu.url + "/v1", api_key=TEST_KEY, max_retries=0)

    async with Emulator(time_scale=0, state_dir=state) as first:
        created = await create(client_for(first), [line("a", chat("persist me"))])
    async with Emulator(time_scale=0, state_dir=state) as second:
        client = client_for(second)
        batch = await client.batches.retrieve(created.id)
        assert batch.status == "completed"
        (out,) = await results(client, batch.output_file_id)
        content = out["response"]["body"]["choices"][0]["message"]["content"]
        assert content == "[gpt-4o-mini] Answer: persist me"
        assert (await client.files.retrieve(created.input_file_id)).purpose == "batch"


def test_spec_checks_really_reject(real_spec) -> None:
    """The spec is there and validation bites (a relaxation must not let anything through)."""
    spec = real_spec
    spec.check("Batch", {**BATCH_MINIMAL, "failed_at": None})
    for broken in (
        {k: v for k, v in BATCH_MINIMAL.items() if k != "id"},
        {**BATCH_MINIMAL, "status": "done"},
        {**BATCH_MINIMAL, "request_counts": {"total": 1}},
    ):
        with pytest.raises(ValidationError):
            spec.check("Batch", broken)
    with pytest.raises(ValidationError):
        spec.check("BatchRequestOutput", {"id": "x", "custom_id": "y", "response": 3})
    with pytest.raises(ValidationError):
        spec.check("ErrorResponse", {"error": {"message": "m", "type": "t"}})


BATCH_MINIMAL = {
    "id": "batch_1",
    "object": "batch",
    "endpoint": CHAT,
    "input_file_id": "file-1",
    "completion_window": "24h",
    "status": "completed",
    "created_at": 1,
}
