"""The Gemini emulator, driven through the official google-genai SDK (async client).

Raw HTTP is used only where the SDK cannot show the wire (operation JSON for the OpenAPI checks,
upload protocol errors, requests the SDK's own types would refuse to build).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google import genai
from google.genai import _api_client, errors, types

from adapters.emulator import Emulator
from adapters.emulator.answers import answer_text
from adapters.emulator.faults import FaultSet
from tests.conftest import SPECS, TEST_KEY, require_specs

MODEL = "gemini-2.5-flash"
SPEC_FILE = "gemini-v1beta-openapi.tryAGI-be52b85.json"


# -- helpers ---------------------------------------------------------------------------------------


def make_client(emulator: Emulator, key: str = TEST_KEY, **http: Any) -> genai.client.AsyncClient:
    return genai.Client(api_key=key, http_options={"base_url": emulator.url, **http}).aio


@pytest.fixture
def aio(emulator: Emulator) -> genai.client.AsyncClient:
    return make_client(emulator)


@pytest.fixture(params=["v1", "v1beta"])
def versioned(request: pytest.FixtureRequest, emulator: Emulator) -> genai.client.AsyncClient:
    """The SDK on each API version the emulator serves (3.x defaults to v1)."""
    return make_client(emulator, api_version=request.param)


def request_body(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


def line(key: str, text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"key": key, "request": request_body(text, **extra)}


def jsonl(lines: list[Any]) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()


async def upload(aio: Any, lines: list[Any], **config: Any) -> types.File:
    data = io.BytesIO(jsonl(lines))
    return await aio.files.upload(file=data, config={"mime_type": "jsonl", **config})


async def raw(
    emulator: Emulator,
    method: str,
    path: str,
    *,
    body: Any = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    key: str | None = TEST_KEY,
) -> tuple[int, Any, Any]:
    """One plain HTTP call: (status, headers, parsed JSON body or None)."""
    hdrs = {"x-goog-api-key": key} if key else {}
    hdrs.update(headers or {})
    url = path if path.startswith("http") else emulator.url + path
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, json=body, data=data, headers=hdrs) as resp,
    ):
        content = await resp.read()
        return resp.status, resp.headers, json.loads(content) if content else None


def gemini_counters(emulator: Emulator) -> dict[str, int]:
    assert emulator.ctx is not None
    return emulator.ctx.journal.snapshot()["providers"]["gemini"]


def set_faults(emulator: Emulator, config: dict[str, Any]) -> None:
    assert emulator.ctx is not None
    emulator.ctx.faults = FaultSet.parse(config)


async def ended(aio: Any, name: str) -> types.BatchJob:
    """Poll once: at time scale 0 the first look after creation ends the batch."""
    job = await aio.batches.get(name=name)
    assert job.done
    return job


# -- OpenAPI validation --------------------------------------------------------------------------


def _convert(node: Any) -> Any:
    """OpenAPI 3.0 -> JSON Schema: ``nullable`` becomes a null type; objects with declared
    properties refuse undeclared ones, so a misspelt field fails the check."""
    if isinstance(node, list):
        return [_convert(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _convert(v) for k, v in node.items()}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


class Spec:
    def __init__(self, doc: dict[str, Any]) -> None:
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        resource = Resource.from_contents(_convert(doc), default_specification=DRAFT202012)
        self._registry = Registry().with_resource("urn:gemini", resource)
        self._cls = Draft202012Validator
        self._validators: dict[str, Any] = {}

    def validate(self, schema: str, instance: Any) -> None:
        validator = self._validators.get(schema)
        if validator is None:
            ref = {"$ref": f"urn:gemini#/components/schemas/{schema}"}
            validator = self._validators[schema] = self._cls(ref, registry=self._registry)
        problems = [
            f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)
        ]
        assert not problems, f"{schema}: {problems}"

    def validate_operation(self, op: dict[str, Any]) -> None:
        """An Operation, with its metadata and response checked as the batch types."""
        self.validate("Operation", op)
        meta = {k: v for k, v in op["metadata"].items() if k != "@type"}
        self.validate("GenerateContentBatch", meta)
        if "response" in op:
            self.validate(
                "GenerateContentBatchOutput",
                {k: v for k, v in op["response"].items() if k != "@type"},
            )


@pytest.fixture(scope="session")
def spec() -> Spec:
    require_specs(SPEC_FILE)
    return Spec(json.loads((SPECS / SPEC_FILE).read_text(encoding="utf-8")))


# -- files -----------------------------------------------------------------------------------------


async def test_upload_get_and_file_fields(versioned: Any, emulator: Emulator, spec: Spec) -> None:
    content = jsonl([line("a")])
    f = await versioned.files.upload(
        file=io.BytesIO(content), config={"mime_type": "jsonl", "display_name": "my input"}
    )
    assert f.name and f.name.startswith("files/") and len(f.name) <= 46
    assert f.display_name == "my input" and f.mime_type == "jsonl"
    assert f.size_bytes == len(content)
    assert f.state == types.FileState.ACTIVE and f.source == types.FileSource.UPLOADED
    assert f.download_uri is None
    hex_digest = hashlib.sha256(content).hexdigest()
    assert base64.b64decode(f.sha256_hash or "").decode() == hex_digest
    assert f.create_time and f.expiration_time
    assert (f.expiration_time - f.create_time).total_seconds() == 48 * 3600
    again = await versioned.files.get(name=f.name)
    assert again.name == f.name and again.size_bytes == len(content)
    status, _, body = await raw(emulator, "GET", f"/v1beta/{f.name}")
    assert status == 200 and body["sizeBytes"] == str(len(content))
    spec.validate("File", body)


async def test_upload_in_many_chunks(
    aio: Any, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_api_client, "CHUNK_SIZE", 16)
    lines = [line(f"k{i}") for i in range(3)]
    f = await upload(aio, lines)
    assert f.size_bytes == len(jsonl(lines))
    assert emulator.ctx is not None
    chunks = [c for c in emulator.ctx.journal.calls if c["route"] == "upload"]
    assert len(chunks) == -(-len(jsonl(lines)) // 16)
    assert all(c["status"] == 200 for c in chunks)


async def test_upload_start_body_in_camel_case_and_custom_name(
    aio: Any, emulator: Emulator
) -> None:
    headers = {
        "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": "3",
        "X-Goog-Upload-Header-Content-Type": "text/plain",
    }
    body = {"file": {"displayName": "camel", "mimeType": "text/plain", "name": "files/my-file"}}
    status, hdrs, _ = await raw(emulator, "POST", "/upload/v1/files", body=body, headers=headers)
    assert status == 200 and hdrs["X-Goog-Upload-Status"] == "active"
    url = hdrs["X-Goog-Upload-URL"]
    assert url.startswith(emulator.url + "/upload/v1/files?upload_id=")
    chunk = {"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"}
    status, hdrs, body = await raw(emulator, "POST", url, data=b"abc", headers=chunk, key=None)
    assert status == 200 and hdrs["X-Goog-Upload-Status"] == "final"
    assert body["file"]["name"] == "files/my-file" and body["file"]["displayName"] == "camel"
    got = await aio.files.get(name="files/my-file")
    assert got.mime_type == "text/plain" and got.size_bytes == 3
    with pytest.raises(errors.ClientError) as exc:
        await aio.files.upload(
            file=io.BytesIO(b"x"), config={"mime_type": "text/plain", "name": "my-file"}
        )
    assert exc.value.code == 409 and exc.value.status == "ALREADY_EXISTS"
    with pytest.raises(errors.ClientError) as exc:
        await aio.files.upload(file=io.BytesIO(b"x"), config={"mime_type": "a/b", "name": "-bad"})
    assert exc.value.code == 400 and "Invalid file name" in (exc.value.message or "")


async def _start_upload(emulator: Emulator, size: int) -> str:
    headers = {
        "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": str(size),
        "X-Goog-Upload-Header-Content-Type": "jsonl",
    }
    status, hdrs, _ = await raw(emulator, "POST", "/upload/v1beta/files", body={}, headers=headers)
    assert status == 200
    return hdrs["X-Goog-Upload-URL"]


async def test_upload_protocol_errors(emulator: Emulator) -> None:
    def cmd(command: str, offset: int) -> dict[str, str]:
        return {"X-Goog-Upload-Command": command, "X-Goog-Upload-Offset": str(offset)}

    url = await _start_upload(emulator, 6)
    status, hdrs, _ = await raw(emulator, "POST", url, data=b"abc", headers=cmd("upload", 0))
    assert status == 200 and hdrs["X-Goog-Upload-Status"] == "active"
    # A chunk at the wrong offset is refused; the session stays usable.
    status, hdrs, body = await raw(emulator, "POST", url, data=b"def", headers=cmd("upload", 1))
    assert status == 400 and hdrs["X-Goog-Upload-Status"] == "active"
    assert body["error"]["status"] == "INVALID_ARGUMENT" and "Offset" in body["error"]["message"]
    status, hdrs, _ = await raw(emulator, "POST", url, headers={"X-Goog-Upload-Command": "query"})
    assert status == 200 and hdrs["X-Goog-Upload-Size-Received"] == "3"
    # Finalizing with fewer bytes than declared fails the upload for good.
    status, hdrs, body = await raw(
        emulator, "POST", url, data=b"d", headers=cmd("upload, finalize", 3)
    )
    assert status == 400 and hdrs["X-Goog-Upload-Status"] == "final"
    assert "declared 6" in body["error"]["message"]
    status, _, body = await raw(emulator, "POST", url, data=b"x", headers=cmd("upload", 4))
    assert status == 404 and body["error"]["status"] == "NOT_FOUND"
    # More bytes than declared.
    url = await _start_upload(emulator, 2)
    status, hdrs, _ = await raw(emulator, "POST", url, data=b"abc", headers=cmd("upload", 0))
    assert status == 400 and hdrs["X-Goog-Upload-Status"] == "final"
    # The start call needs the resumable protocol, and its body is parsed strictly.
    status, _, body = await raw(emulator, "POST", "/upload/v1beta/files", body={})
    assert status == 400 and "resumable" in body["error"]["message"]
    headers = {"X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start"}
    status, _, body = await raw(
        emulator, "POST", "/upload/v1/files", body={"file": {"colour": 1}}, headers=headers
    )
    assert status == 400
    assert body["error"]["message"] == (
        "Invalid JSON payload received. Unknown name \"colour\" at 'file': Cannot find field."
    )


async def test_upload_chunk_fault_is_retried_by_the_sdk(
    aio: Any, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk answered without x-goog-upload-status is re-sent by the SDK itself."""
    monkeypatch.setattr(_api_client, "INITIAL_RETRY_DELAY", 0)
    set_faults(
        emulator, {"faults": [{"kind": "http", "route": "upload", "status": 503, "times": 1}]}
    )
    f = await upload(aio, [line("a")])
    assert f.state == types.FileState.ACTIVE
    assert emulator.ctx is not None
    statuses = [c["status"] for c in emulator.ctx.journal.calls if c["route"] == "upload"]
    assert statuses == [503, 200]


async def test_files_list_pagination_and_delete(aio: Any, emulator: Emulator, spec: Spec) -> None:
    names = [(await upload(aio, [line(str(i))], display_name=f"f{i}")).name for i in range(3)]
    pager = await aio.files.list(config={"page_size": 2})
    assert pager.page_size == 2 and len(pager.page) == 2
    listed = [f.name async for f in pager]
    assert listed == list(reversed(names))  # newest first
    status, _, body = await raw(emulator, "GET", "/v1/files?pageSize=2")
    assert status == 200 and len(body["files"]) == 2 and body["nextPageToken"]
    spec.validate("ListFilesResponse", body)
    status, _, body = await raw(
        emulator, "GET", f"/v1/files?pageSize=2&pageToken={body['nextPageToken']}"
    )
    assert [f["name"] for f in body["files"]] == [names[0]] and "nextPageToken" not in body
    status, _, body = await raw(emulator, "GET", "/v1/files?pageToken=%25%25")
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"

    status, _, body = await raw(emulator, "DELETE", f"/v1/{names[1]}")
    assert status == 200 and body == {}
    await aio.files.delete(name=names[0])
    for name in names[:2]:
        with pytest.raises(errors.ClientError) as exc:
            await aio.files.get(name=name)
        assert exc.value.code == 403 and exc.value.status == "PERMISSION_DENIED"
        assert "or it may not exist" in (exc.value.message or "")
    assert [f.name async for f in await aio.files.list()] == [names[2]]


async def test_uploaded_files_cannot_be_downloaded(aio: Any, emulator: Emulator) -> None:
    f = await upload(aio, [line("a")])
    with pytest.raises(errors.ClientError) as exc:
        await aio.files.download(file=f.name)
    assert exc.value.code == 400 and "Only generated files" in (exc.value.message or "")
    with pytest.raises(ValueError, match="uploaded files can't be downloaded"):
        await aio.files.download(file=f)  # the SDK refuses by itself: no download_uri
    status, _, _ = await raw(emulator, "GET", f"/v1/{f.name}:download")
    assert status == 400  # alt=media missing


async def test_files_expire_after_48_hours(aio: Any, emulator: Emulator) -> None:
    f = await upload(aio, [line("a")])
    assert emulator.ctx is not None
    real_now = emulator.ctx.now
    emulator.ctx.now = lambda: real_now() + 48 * 3600 + 1  # type: ignore[method-assign]
    with pytest.raises(errors.ClientError) as exc:
        await aio.files.get(name=f.name)
    assert exc.value.code == 403
    assert [x async for x in await aio.files.list()] == []
    with pytest.raises(errors.ClientError):
        await aio.batches.create(model=MODEL, src=f.name)


# -- batches: the happy paths ----------------------------------------------------------------------


async def test_file_batch_end_to_end(versioned: Any, emulator: Emulator, spec: Spec) -> None:
    lines = [
        line("plain", "hello"),
        line("short", "a long prompt text", generationConfig={"maxOutputTokens": 3}),
        line("stop", "stop here", generation_config={"stop_sequences": ["here"]}),
        line("bad-role")
        | {"request": {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}},
    ]
    f = await upload(versioned, lines)
    job = await versioned.batches.create(model=MODEL, src=f.name, config={"display_name": "dn"})
    assert job.name and job.name.startswith("batches/")
    assert job.state == types.JobState.JOB_STATE_PENDING and job.display_name == "dn"
    assert job.model == f"models/{MODEL}" and job.dest is None
    job = await ended(versioned, job.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED and job.end_time
    assert job.dest and job.dest.file_name == f"files/batch-{job.name.split('/')[1]}"
    out = await versioned.files.get(name=job.dest.file_name)
    assert out.source == types.FileSource.GENERATED and out.download_uri
    content = await versioned.files.download(file=out)
    # The docs' spelling of the download URL serves the same bytes.
    assert out.download_uri and "/download/" in out.download_uri
    headers = {"x-goog-api-key": TEST_KEY}
    async with (
        aiohttp.ClientSession() as session,
        session.get(out.download_uri, headers=headers) as r,
    ):
        assert r.status == 200 and await r.read() == content
    results = [json.loads(x) for x in content.decode().splitlines()]
    assert [r["key"] for r in results] == ["plain", "short", "stop", "bad-role"]
    plain = results[0]["response"]
    assert plain["candidates"][0]["content"] == {
        "parts": [{"text": answer_text(MODEL, "hello")}],
        "role": "model",
    }
    assert plain["candidates"][0]["finishReason"] == "STOP"
    usage = plain["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    short = results[1]["response"]
    assert short["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert short["usageMetadata"]["candidatesTokenCount"] == 3
    stop_text = results[2]["response"]["candidates"][0]["content"]["parts"][0]["text"]
    assert stop_text == answer_text(MODEL, "stop here").split("here")[0]
    assert results[3]["error"] == {"code": 400, "message": "Please use a valid role: user, model."}
    for r in results:
        if "response" in r:
            spec.validate("GenerateContentResponse", r["response"])
        else:
            spec.validate("Status", r["error"])
    counters = gemini_counters(emulator)
    assert counters["items_received"] == 4
    assert counters["items_succeeded"] == 3 and counters["items_failed"] == 1


async def test_operation_wire_shape(aio: Any, emulator: Emulator, spec: Spec) -> None:
    f = await upload(aio, [line("a"), line("b")])
    body = {"batch": {"inputConfig": {"fileName": f.name}, "displayName": "raw"}}
    status, hdrs, op = await raw(
        emulator, "POST", f"/v1beta/models/{MODEL}:batchGenerateContent", body=body
    )
    assert status == 200 and hdrs["x-request-id"]
    assert "done" not in op and "response" not in op
    meta = op["metadata"]
    assert meta["@type"].endswith("GenerateContentBatch") and meta["state"] == "BATCH_STATE_PENDING"
    assert meta["batchStats"] == {"requestCount": "2", "pendingRequestCount": "2"}
    assert meta["inputConfig"] == {"fileName": f.name} and meta["name"] == op["name"]
    spec.validate_operation(op)
    status, _, op = await raw(emulator, "GET", f"/v1beta/{op['name']}")
    assert status == 200 and op["done"] is True
    meta = op["metadata"]
    assert meta["state"] == "BATCH_STATE_SUCCEEDED" and meta["endTime"]
    assert meta["batchStats"] == {"requestCount": "2", "successfulRequestCount": "2"}
    assert meta["output"] == {"responsesFile": f"files/batch-{op['name'].split('/')[1]}"}
    assert op["response"]["@type"].endswith("GenerateContentBatchOutput")
    assert op["response"]["responsesFile"] == meta["output"]["responsesFile"]
    spec.validate_operation(op)


async def test_inline_batch(versioned: Any, emulator: Emulator, spec: Spec) -> None:
    src = [
        {
            "contents": [{"parts": [{"text": "first"}], "role": "user"}],
            "metadata": {"key": "k1"},
            "config": {
                "system_instruction": "be brief",
                "temperature": 0.3,
                "max_output_tokens": 50,
            },
        },
        {
            "contents": [
                {"parts": [{"text": "q1"}], "role": "user"},
                {"parts": [{"text": "a1"}], "role": "model"},
                {"parts": [{"text": "second"}], "role": "user"},
            ],
            "metadata": {"key": "k2"},
        },
        {"contents": "third", "metadata": {"key": "k3"}, "model": "gemini-2.0-flash"},
    ]
    job = await versioned.batches.create(model=MODEL, src=src)
    job = await ended(versioned, job.name)
    assert job.dest and job.dest.inlined_responses
    responses = job.dest.inlined_responses
    assert [r.metadata for r in responses] == [{"key": "k1"}, {"key": "k2"}, {"key": "k3"}]
    assert responses[0].response and responses[0].response.text == answer_text(MODEL, "first")
    assert responses[1].response and responses[1].response.text == answer_text(MODEL, "second")
    assert responses[2].response is None and responses[2].error
    assert responses[2].error.code == 400 and "does not match" in (responses[2].error.message or "")
    _, _, op = await raw(emulator, "GET", f"/v1/{job.name}")
    assert "inputConfig" not in op["metadata"]
    assert op["response"]["inlinedResponses"] == op["metadata"]["output"]["inlinedResponses"]
    spec.validate_operation(op)


async def test_implicit_caching(aio: Any) -> None:
    system = "You are a careful assistant. " * 200  # > 1024 estimated tokens
    src = [
        {"contents": f"question {i}", "config": {"system_instruction": system}} for i in range(2)
    ] + [{"contents": "short system", "config": {"system_instruction": "brief"}}] * 2
    job = await ended(aio, (await aio.batches.create(model=MODEL, src=src)).name)
    assert job.dest and job.dest.inlined_responses
    usage = [r.response.usage_metadata for r in job.dest.inlined_responses if r.response]
    assert usage[0] and usage[0].cached_content_token_count is None
    assert usage[1] and usage[1].cached_content_token_count == len(system) // 4
    assert usage[1].prompt_token_count and usage[1].prompt_token_count > len(system) // 4
    assert all(u and u.cached_content_token_count is None for u in usage[2:])


async def test_list_batches_pagination(aio: Any, emulator: Emulator, spec: Spec) -> None:
    names = [
        (await aio.batches.create(model=MODEL, src=[{"contents": str(i)}])).name for i in range(3)
    ]
    pager = await aio.batches.list(config={"page_size": 2})
    assert len(pager.page) == 2
    jobs = [j async for j in pager]
    assert [j.name for j in jobs] == list(reversed(names))
    assert all(j.state == types.JobState.JOB_STATE_SUCCEEDED for j in jobs)
    status, _, body = await raw(emulator, "GET", "/v1beta/batches?pageSize=2")
    assert status == 200 and len(body["operations"]) == 2 and body["nextPageToken"]
    spec.validate("ListOperationsResponse", body)
    for op in body["operations"]:
        spec.validate_operation(op)


# -- batches: validation ---------------------------------------------------------------------------


ITEM_RULES: list[tuple[dict[str, Any], str]] = [
    (request_body(generationConfig={"temperature": 2.5}), "temperature must be in the range"),
    (request_body(generation_config={"top_p": 1.5}), "top_p must be in the range"),
    (request_body(generationConfig={"maxOutputTokens": 0}), "max_output_tokens must be positive"),
    (request_body(generationConfig={"stopSequences": list("abcdef")}), "at most 5"),
    ({"contents": []}, "contents is not specified"),
    ({"contents": [{"role": "user", "parts": []}]}, "contents.parts must not be empty"),
    ({"contents": [{"role": "user", "parts": [{}]}]}, "required oneof field 'data'"),
    (request_body(systemInstruction={"parts": []}), "contents.parts must not be empty"),
    ({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, "valid role: user, model"),
    (request_body(temprature=1), "Unknown name \"temprature\" at 'request': Cannot find field."),
    (
        request_body(generationConfig={"topk": 3}),
        "Unknown name \"topk\" at 'request.generation_config'",
    ),
    (
        request_body(generationConfig={"temperature": "hot"}),
        "Invalid value at 'request.generation_config.temperature' (TYPE_FLOAT), \"hot\"",
    ),
]


async def test_item_rules_in_file_input(aio: Any, emulator: Emulator) -> None:
    lines: list[Any] = [{"key": f"r{i}", "request": req} for i, (req, _) in enumerate(ITEM_RULES)]
    lines.append("{not json")
    lines.append({"key": "ok", "request": request_body(generation_config={"temperature": 2})})
    job = await aio.batches.create(model=MODEL, src=(await upload(aio, lines)).name)
    job = await ended(aio, job.name)
    assert job.dest and job.dest.file_name
    results = [
        json.loads(x) for x in (await aio.files.download(file=job.dest.file_name)).splitlines()
    ]
    assert len(results) == len(lines)
    for i, (_, expected) in enumerate(ITEM_RULES):
        assert results[i]["key"] == f"r{i}"
        assert results[i]["error"]["code"] == 400
        assert expected in results[i]["error"]["message"], (i, results[i])
    assert "Invalid JSON payload received" in results[-2]["error"]["message"]
    assert "key" not in results[-2]
    assert results[-1]["key"] == "ok" and "response" in results[-1]
    assert gemini_counters(emulator)["items_failed"] == len(ITEM_RULES) + 1


async def test_inline_parse_errors_fail_the_create_call(aio: Any, emulator: Emulator) -> None:
    """The whole create body is one proto message: a bad inline field rejects the batch."""
    path = f"/v1beta/models/{MODEL}:batchGenerateContent"
    bad = {"requests": {"requests": [{"request": request_body(foo=1)}]}}
    status, _, body = await raw(emulator, "POST", path, body={"batch": {"inputConfig": bad}})
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    assert body["error"]["message"] == (
        'Invalid JSON payload received. Unknown name "foo" at '
        "'batch.input_config.requests.requests[0].request': Cannot find field."
    )
    assert body["error"]["details"][0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    wrong_type = {"requests": {"requests": [{"request": {"contents": "hi"}}]}}
    status, _, body = await raw(
        emulator, "POST", path, body={"batch": {"input_config": wrong_type}}
    )
    assert (
        status == 400
        and "Invalid value at 'batch.input_config.requests.requests[0]"
        in (body["error"]["message"])
    )
    snake = {
        "requests": {
            "requests": [
                {
                    "request": {
                        "contents": [{"parts": [{"text": "x"}]}],
                        "generation_config": {"top_k": "3"},
                    }
                }
            ]
        }
    }
    status, _, op = await raw(emulator, "POST", path, body={"batch": {"input_config": snake}})
    assert status == 200 and op["metadata"]["state"] == "BATCH_STATE_PENDING"
    assert gemini_counters(emulator)["batches_created"] == 1


async def test_create_errors(aio: Any, emulator: Emulator) -> None:
    with pytest.raises(errors.ClientError) as exc:
        await aio.batches.create(model="gemini-0-nonexistent", src=[{"contents": "x"}])
    assert exc.value.code == 404 and exc.value.status == "NOT_FOUND"
    assert "models/gemini-0-nonexistent is not found" in (exc.value.message or "")
    with pytest.raises(errors.ClientError) as exc:
        await aio.batches.create(model=MODEL, src="files/doesnotexist")
    assert exc.value.code == 403 and exc.value.status == "PERMISSION_DENIED"
    empty = await aio.files.upload(file=io.BytesIO(b"\n"), config={"mime_type": "jsonl"})
    with pytest.raises(errors.ClientError) as exc:
        await aio.batches.create(model=MODEL, src=empty.name)
    assert exc.value.code == 400 and "no requests" in (exc.value.message or "")
    path = f"/v1/models/{MODEL}:batchGenerateContent"
    for batch in (
        {"inputConfig": {}},
        {"inputConfig": {"fileName": empty.name, "requests": {"requests": []}}},
        {"inputConfig": {"requests": {"requests": []}}},
    ):
        status, _, body = await raw(emulator, "POST", path, body={"batch": batch})
        assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT", batch
    assert gemini_counters(emulator)["batches_created"] == 0


@pytest.mark.parametrize(("char", "escaped"), [("字", 6), ("😀", 12)], ids=["cjk", "emoji"])
async def test_inline_limit_is_measured_on_the_wire(
    aio: Any, emulator: Emulator, char: str, escaped: int
) -> None:
    """The SDK escapes non-ASCII text (6 bytes a CJK character, 12 an emoji): the 20,000,000-byte
    limit applies to those bytes, not to the compact UTF-8, which is 2-3 times smaller."""

    def src(n: int) -> list[dict[str, Any]]:
        return [{"contents": char * n, "config": {"max_output_tokens": 4}} for _ in range(4)]

    def create_size() -> int:
        assert emulator.ctx is not None
        call = emulator.ctx.journal.calls[-1]
        assert call["route"] == "batches.create"
        return int(call["bytes"])

    probe_chars = 10
    await aio.batches.create(model=MODEL, src=src(probe_chars))
    probe = create_size()
    per_char = 4 * escaped  # one more character in each of the 4 requests
    under = probe_chars + (20_000_000 - probe) // per_char
    job = await aio.batches.create(model=MODEL, src=src(under))
    assert 20_000_000 - per_char < create_size() <= 20_000_000  # just under the limit
    utf8 = 4 * len((char * under).encode())
    assert utf8 < 0.6 * 20_000_000  # what a compact UTF-8 measure would have seen
    done = await aio.batches.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED
    assert len(done.dest.inlined_responses) == 4
    with pytest.raises(errors.ClientError) as exc:
        await aio.batches.create(model=MODEL, src=src(under + 1))  # just over
    assert create_size() > 20_000_000
    assert (exc.value.code, exc.value.status) == (400, "INVALID_ARGUMENT")
    assert exc.value.message == "Request payload size exceeds the limit: 20000000 bytes."
    assert gemini_counters(emulator)["batches_created"] == 2


async def test_inline_request_over_20_mb_is_refused(aio: Any, emulator: Emulator) -> None:
    big = "x" * 20_000_000  # "20 MB" is decimal: the limit is 20,000,000 bytes on the wire
    with pytest.raises(errors.ClientError) as exc:
        await aio.batches.create(model=MODEL, src=[{"contents": big}])
    assert exc.value.code == 400
    assert exc.value.message == "Request payload size exceeds the limit: 20000000 bytes."
    assert gemini_counters(emulator)["batches_created"] == 0


# -- batches: cancel, delete -----------------------------------------------------------------------


async def test_cancel_before_running(aio: Any, emulator: Emulator) -> None:
    job = await aio.batches.create(model=MODEL, src=[{"contents": "a"}, {"contents": "b"}])
    assert await aio.batches.cancel(name=job.name) is None
    job = await aio.batches.get(name=job.name)
    assert job.state == types.JobState.JOB_STATE_CANCELLED and job.done and job.dest is None
    counters = gemini_counters(emulator)
    assert counters["items_retryable"] == 2 and counters["items_succeeded"] == 0
    with pytest.raises(errors.ClientError) as exc:
        await aio.batches.cancel(name=job.name)
    assert exc.value.code == 400 and exc.value.status == "FAILED_PRECONDITION"
    with pytest.raises(errors.ClientError) as exc:
        await aio.batches.cancel(name="batches/nosuchbatch")
    assert exc.value.code == 404


async def test_cancel_mid_run_keeps_finished_results(aio: Any, emulator: Emulator) -> None:
    """At time scale 1 with a fake clock: RUNNING, then cancelled with the first items done."""
    ctx = emulator.ctx
    assert ctx is not None
    clock = [ctx.now()]
    ctx.now = lambda: clock[0]  # type: ignore[method-assign]
    ctx.time_scale = 1.0
    src = [{"contents": f"q{i}", "metadata": {"key": str(i)}} for i in range(4)]
    job = await aio.batches.create(model=MODEL, src=src)
    assert (await aio.batches.get(name=job.name)).state == types.JobState.JOB_STATE_PENDING
    span = ctx.timing.in_progress_base_s + ctx.timing.per_item_s * 4
    clock[0] += ctx.timing.validating_s + 0.6 * span
    assert (await aio.batches.get(name=job.name)).state == types.JobState.JOB_STATE_RUNNING
    await aio.batches.cancel(name=job.name)
    job = await aio.batches.get(name=job.name)
    assert job.state == types.JobState.JOB_STATE_CANCELLED
    assert job.dest and job.dest.inlined_responses
    assert [r.metadata for r in job.dest.inlined_responses] == [{"key": "0"}, {"key": "1"}]
    counters = gemini_counters(emulator)
    assert counters["items_succeeded"] == 2 and counters["items_retryable"] == 2


async def test_batch_timing_ends_on_its_own(aio: Any, emulator: Emulator) -> None:
    ctx = emulator.ctx
    assert ctx is not None
    clock = [ctx.now()]
    ctx.now = lambda: clock[0]  # type: ignore[method-assign]
    ctx.time_scale = 1.0
    job = await aio.batches.create(model=MODEL, src=[{"contents": "a"}])
    clock[0] += 60
    job = await aio.batches.get(name=job.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    with pytest.raises(errors.ClientError) as exc:
        await aio.batches.cancel(name=job.name)
    assert exc.value.status == "FAILED_PRECONDITION"


async def test_delete_batch(aio: Any, emulator: Emulator) -> None:
    jobs = [await aio.batches.create(model=MODEL, src=[{"contents": str(i)}]) for i in range(3)]
    deleted = await aio.batches.delete(name=jobs[0].name)
    assert isinstance(deleted, types.DeleteResourceJob)
    status, _, body = await raw(emulator, "DELETE", f"/v1beta/{jobs[1].name}:delete")
    assert (status, body) == (200, {})
    status, _, body = await raw(emulator, "POST", f"/v1/{jobs[2].name}:delete")
    assert (status, body) == (200, {})
    for job in jobs:
        with pytest.raises(errors.ClientError) as exc:
            await aio.batches.get(name=job.name)
        assert exc.value.code == 404 and exc.value.status == "NOT_FOUND"
    assert [j async for j in await aio.batches.list()] == []


# -- faults ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "code", "text", "journal"),
    [
        ("rate_limit", 429, "Resource has been exhausted", "items_retryable"),
        ("overloaded", 503, "The model is overloaded", "items_retryable"),
        ("server", 500, "An internal error has occurred", "items_retryable"),
        ("invalid", 400, "Request contains an invalid argument", "items_failed"),
    ],
)
async def test_item_error_faults(
    aio: Any, emulator: Emulator, kind: str, code: int, text: str, journal: str
) -> None:
    set_faults(emulator, {"faults": [{"kind": "item_error", "error": kind, "match": "unlucky"}]})
    src = [{"contents": "lucky"}, {"contents": "unlucky"}]
    job = await ended(aio, (await aio.batches.create(model=MODEL, src=src)).name)
    assert job.dest and job.dest.inlined_responses
    ok, failed = job.dest.inlined_responses
    assert ok.response and ok.error is None
    assert failed.response is None and failed.error and failed.error.code == code
    assert text in (failed.error.message or "")
    counters = gemini_counters(emulator)
    assert counters[journal] == 1 and counters["items_succeeded"] == 1
    # Sending both again: the failed one is a retry only if its failure was retryable.
    set_faults(emulator, {})
    await ended(aio, (await aio.batches.create(model=MODEL, src=src)).name)
    expected_duplicates = 1 if journal == "items_retryable" else 2
    assert gemini_counters(emulator)["duplicate_items"] == expected_duplicates


async def test_batch_fail_fault(aio: Any, emulator: Emulator, spec: Spec) -> None:
    set_faults(emulator, {"faults": [{"kind": "batch_fail", "provider": "gemini"}]})
    job = await ended(aio, (await aio.batches.create(model=MODEL, src=[{"contents": "a"}])).name)
    assert job.state == types.JobState.JOB_STATE_FAILED and job.dest is None
    _, _, op = await raw(emulator, "GET", f"/v1/{job.name}")
    assert op["done"] is True and op["error"]["code"] == 13 and op["error"]["message"]
    assert "response" not in op and "output" not in op["metadata"]
    spec.validate_operation(op)
    assert gemini_counters(emulator)["items_retryable"] == 1


async def test_expire_fault_returns_no_results(aio: Any, emulator: Emulator) -> None:
    set_faults(emulator, {"faults": [{"kind": "expire", "fraction": 0.5}]})
    f = await upload(aio, [line("a"), line("b")])
    job = await ended(aio, (await aio.batches.create(model=MODEL, src=f.name)).name)
    assert job.state == types.JobState.JOB_STATE_EXPIRED and job.dest is None
    counters = gemini_counters(emulator)
    assert counters["items_retryable"] == 2 and counters["items_succeeded"] == 0


async def test_results_gone_fault(aio: Any, emulator: Emulator) -> None:
    set_faults(emulator, {"faults": [{"kind": "results_gone", "provider": "gemini"}]})
    f = await upload(aio, [line("a")])
    job = await ended(aio, (await aio.batches.create(model=MODEL, src=f.name)).name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    assert job.dest and job.dest.file_name
    for call in (
        aio.files.get(name=job.dest.file_name),
        aio.files.download(file=job.dest.file_name),
    ):
        with pytest.raises(errors.ClientError) as exc:
            await call
        assert exc.value.code == 403 and exc.value.status == "PERMISSION_DENIED"
    inline = await ended(aio, (await aio.batches.create(model=MODEL, src=[{"contents": "a"}])).name)
    assert inline.state == types.JobState.JOB_STATE_SUCCEEDED and inline.dest is None
    assert gemini_counters(emulator)["items_succeeded"] == 2  # they ran (and were billed)


async def test_http_fault_429_with_retry_after(aio: Any, emulator: Emulator) -> None:
    fault = {"kind": "http", "route": "batches.create", "status": 429, "retry_after": 3}
    set_faults(emulator, {"faults": [fault | {"times": 1}]})
    with pytest.raises(errors.ClientError) as exc:
        await aio.batches.create(model=MODEL, src=[{"contents": "a"}])
    assert exc.value.code == 429 and exc.value.status == "RESOURCE_EXHAUSTED"
    assert exc.value.response.headers["retry-after"] == "3"
    assert exc.value.details["error"]["details"][0]["retryDelay"] == "3s"
    assert gemini_counters(emulator)["batches_created"] == 0
    job = await aio.batches.create(model=MODEL, src=[{"contents": "a"}])  # fault used up
    assert job.state == types.JobState.JOB_STATE_PENDING


@pytest.mark.parametrize(
    ("route", "status", "grpc"),
    [
        ("batches.get", 500, "INTERNAL"),
        ("files.list", 503, "UNAVAILABLE"),
        ("batches.get", 529, "UNAVAILABLE"),
    ],
)
async def test_http_fault_5xx(
    aio: Any, emulator: Emulator, route: str, status: int, grpc: str
) -> None:
    set_faults(emulator, {"faults": [{"kind": "http", "route": route, "status": status}]})
    call = aio.batches.get(name="batches/x") if route == "batches.get" else aio.files.list()
    with pytest.raises(errors.ServerError) as exc:
        await call
    assert exc.value.code == status and exc.value.status == grpc


async def test_slow_fault_times_out(aio: Any, emulator: Emulator) -> None:
    set_faults(emulator, {"faults": [{"kind": "slow", "route": "batches.list", "delay_s": 2}]})
    with pytest.raises(TimeoutError):
        await aio.batches.list(config={"http_options": {"timeout": 200}})  # milliseconds


async def test_drop_fault_breaks_the_connection(emulator: Emulator) -> None:
    set_faults(emulator, {"faults": [{"kind": "drop", "route": "batches.list"}]})
    client = make_client(emulator, retry_options={"attempts": 1})  # no silent aiohttp retry
    with pytest.raises(aiohttp.ClientPayloadError):
        await client.batches.list()


async def test_auth(emulator: Emulator) -> None:
    set_faults(emulator, {"auth": {"gemini": TEST_KEY}})
    with pytest.raises(errors.ClientError) as exc:
        await make_client(emulator, key="wrong-key").batches.list()
    assert exc.value.code == 401 and exc.value.status == "UNAUTHENTICATED"
    assert exc.value.message == "API key not valid. Please pass a valid API key."
    assert [j async for j in await make_client(emulator).batches.list()] == []
    status, _, _ = await raw(emulator, "GET", f"/v1beta/batches?key={TEST_KEY}", key=None)
    assert status == 200
    status, _, body = await raw(emulator, "GET", "/v1beta/files", key=None)
    assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED"


# -- persistence -----------------------------------------------------------------------------------


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with Emulator(time_scale=0, state_dir=state) as first:
        aio = make_client(first)
        f = await upload(aio, [line("a", "persist me")])
        done = await ended(aio, (await aio.batches.create(model=MODEL, src=f.name)).name)
        pending = await aio.batches.create(model=MODEL, src=[{"contents": "later"}])
    async with Emulator(time_scale=0, state_dir=state) as second:
        aio = make_client(second)
        assert (await aio.files.get(name=f.name)).size_bytes == f.size_bytes
        job = await aio.batches.get(name=done.name)
        assert job.state == types.JobState.JOB_STATE_SUCCEEDED and job.dest
        content = await aio.files.download(file=job.dest.file_name or "")
        assert answer_text(MODEL, "persist me") in content.decode()
        later = await ended(aio, pending.name)
        assert later.dest and later.dest.inlined_responses
        assert later.dest.inlined_responses[0].response
        assert later.dest.inlined_responses[0].response.text == answer_text(MODEL, "later")
