"""Every rule of adapters/emulator/rules.py, through the official async SDKs.

For each rule, the raw request that breaks it is refused exactly as the table says (status,
type, code, param, message), and the same request made compliant succeeds. The table is what a
conformance test pairs with the daemon's adaptations, so this test keeps it honest: a rule the
emulator stopped enforcing, or whose wording drifted, fails here.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors

from adapters.emulator import Emulator, FaultSet
from adapters.emulator.rules import (
    BATCH,
    CREATE,
    FILE_INPUT,
    ITEM,
    RULES,
    UPLOAD,
    Refusal,
    Rule,
)

from .conftest import TEST_KEY

CHAT = "/v1/chat/completions"


def _by(provider: str, *wheres: str) -> list[Any]:
    return [
        pytest.param(r, id=r.id) for r in RULES if r.provider == provider and r.where in wheres
    ]


def _configure(emulator: Emulator, rule: Rule) -> None:
    assert emulator.ctx is not None
    emulator.ctx.faults = FaultSet.parse(rule.settings)


def _message_matches(refusal: Refusal, message: str) -> bool:
    return message == refusal.message if refusal.exact else refusal.message in message


def test_the_table_is_well_formed() -> None:
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))
    assert {r.provider for r in RULES} == {"openai", "anthropic", "gemini"}
    for r in RULES:
        # Only a stateful rule (a quota on batches already pending) may break with the very
        # request that complies on its own.
        assert r.breaking != r.compliant or r.batches_before > 0, r.id
        assert re.fullmatch(r"[a-z0-9_.-]+", r.id), r.id
        FaultSet.parse(r.settings)  # the settings a rule needs are valid configuration


# -- OpenAI --------------------------------------------------------------------------------------


async def _openai_batch(client: openai.AsyncOpenAI, bodies: dict[str, Any]) -> Any:
    lines = [
        json.dumps({"custom_id": cid, "method": "POST", "url": CHAT, "body": body})
        for cid, body in bodies.items()
    ]
    upload = await client.files.create(
        file=("in.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch"
    )
    batch = await client.batches.create(
        input_file_id=upload.id, endpoint=CHAT, completion_window="24h"
    )
    return await client.batches.retrieve(batch.id)  # time scale 0: the first look ends it


async def _lines(client: openai.AsyncOpenAI, file_id: str | None) -> dict[str, Any]:
    if file_id is None:
        return {}
    text = (await client.files.content(file_id)).text
    return {row["custom_id"]: row for row in map(json.loads, text.splitlines())}


@pytest.mark.parametrize("rule", _by("openai", ITEM))
async def test_openai_item_rule(rule: Rule, emulator: Emulator, openai_client) -> None:
    _configure(emulator, rule)
    batch = await _openai_batch(
        openai_client, {"break": rule.breaking, "comply": rule.compliant}
    )
    assert batch.status == "completed", batch
    errors_ = await _lines(openai_client, batch.error_file_id)
    output = await _lines(openai_client, batch.output_file_id)
    assert set(errors_) == {"break"} and set(output) == {"comply"}, (errors_, output)
    response = errors_["break"]["response"]
    assert response["status_code"] == rule.refusal.status
    error = response["body"]["error"]
    assert _message_matches(rule.refusal, error["message"]), error
    assert (error["type"], error["code"], error["param"]) == (
        rule.refusal.type,
        rule.refusal.code,
        rule.refusal.param,
    )
    assert output["comply"]["response"]["status_code"] == 200


@pytest.mark.parametrize("rule", _by("openai", BATCH))
async def test_openai_batch_rule(rule: Rule, emulator: Emulator, openai_client) -> None:
    _configure(emulator, rule)
    refused = await _openai_batch(openai_client, {"break": rule.breaking})
    assert refused.status == "failed", refused
    (error,) = refused.errors.data
    assert error.code == rule.refusal.type
    assert _message_matches(rule.refusal, error.message), error
    accepted = await _openai_batch(openai_client, {"comply": rule.compliant})
    assert accepted.status == "completed", accepted
    assert accepted.request_counts.completed == 1


# -- Anthropic -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", _by("anthropic", ITEM))
async def test_anthropic_item_rule(rule: Rule, emulator: Emulator) -> None:
    _configure(emulator, rule)
    headers = {"anthropic-version": rule.anthropic_version} if rule.anthropic_version else {}
    async with anthropic.AsyncAnthropic(
        base_url=emulator.url, api_key=TEST_KEY, max_retries=0, default_headers=headers
    ) as client:
        batch = await client.messages.batches.create(
            requests=[
                {"custom_id": "break", "params": rule.breaking},
                {"custom_id": "comply", "params": rule.compliant},
            ]
        )
        assert (await client.messages.batches.retrieve(batch.id)).processing_status == "ended"
        got = {r.custom_id: r.result async for r in await client.messages.batches.results(batch.id)}
    assert got["break"].type == "errored", got["break"]
    error = got["break"].error.error
    assert error.type == rule.refusal.type
    assert _message_matches(rule.refusal, error.message), error.message
    assert got["comply"].type == "succeeded", got["comply"]


# -- Gemini --------------------------------------------------------------------------------------


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def sdk_inline(request: dict[str, Any]) -> dict[str, Any]:
    """A REST GenerateContentRequest as the SDK's inline request (config in snake_case)."""
    inline: dict[str, Any] = {"contents": request["contents"]}
    if "generationConfig" in request:
        inline["config"] = {_snake(k): v for k, v in request["generationConfig"].items()}
    return inline


def _gemini(emulator: Emulator) -> Any:
    return genai.Client(api_key=TEST_KEY, http_options={"base_url": emulator.url}).aio


@pytest.mark.parametrize("rule", _by("gemini", CREATE))
async def test_gemini_create_rule(rule: Rule, emulator: Emulator) -> None:
    _configure(emulator, rule)
    aio = _gemini(emulator)
    compliant = [sdk_inline(rule.compliant)] * rule.copies
    breaking = [sdk_inline(rule.breaking)] * rule.copies
    for _ in range(rule.batches_before):  # left pending: nobody looks at them
        await aio.batches.create(model=rule.model, src=compliant)
    with pytest.raises(errors.ClientError) as exc:
        await aio.batches.create(model=rule.model, src=breaking)
    assert exc.value.code == rule.refusal.status
    assert exc.value.status == rule.refusal.type
    assert _message_matches(rule.refusal, exc.value.message or ""), exc.value.message
    if rule.batches_before == 0:
        job = await aio.batches.create(model=rule.model, src=compliant)
        done = await aio.batches.get(name=job.name)
        assert done.state == genai.types.JobState.JOB_STATE_SUCCEEDED, done


async def _upload(aio: Any, mime: str) -> Any:
    line = {"key": "k", "request": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}}
    data = io.BytesIO((json.dumps(line) + "\n").encode())
    return await aio.files.upload(file=data, config={"mime_type": mime})


@pytest.mark.parametrize("rule", _by("gemini", UPLOAD))
async def test_gemini_upload_rule(rule: Rule, emulator: Emulator) -> None:
    aio = _gemini(emulator)
    with pytest.raises(errors.ClientError) as exc:
        await _upload(aio, rule.breaking["mime_type"])
    assert (exc.value.code, exc.value.status) == (rule.refusal.status, rule.refusal.type)
    assert _message_matches(rule.refusal, exc.value.message or ""), exc.value.message
    accepted = await _upload(aio, rule.compliant["mime_type"])
    assert accepted.mime_type == rule.compliant["mime_type"]


@pytest.mark.parametrize("rule", _by("gemini", FILE_INPUT))
async def test_gemini_file_input_rule(rule: Rule, emulator: Emulator) -> None:
    aio = _gemini(emulator)
    wrong = await _upload(aio, rule.breaking["mime_type"])
    with pytest.raises(errors.ClientError) as exc:
        await aio.batches.create(model=rule.model, src=wrong.name)
    assert (exc.value.code, exc.value.status) == (rule.refusal.status, rule.refusal.type)
    assert _message_matches(rule.refusal, exc.value.message or ""), exc.value.message
    right = await _upload(aio, rule.compliant["mime_type"])
    job = await aio.batches.create(model=rule.model, src=right.name)
    assert (await aio.batches.get(name=job.name)).state.name == "JOB_STATE_SUCCEEDED"


def test_every_rule_is_exercised() -> None:
    """Each ``where`` of the table has a test above; a new kind needs one."""
    assert {r.where for r in RULES} <= {ITEM, BATCH, CREATE, UPLOAD, FILE_INPUT}
    assert not [r for r in RULES if r.provider == "gemini" and r.where == ITEM]
    assert not [r for r in RULES if r.provider != "openai" and r.where == BATCH]


@pytest.mark.parametrize("accepts", [None, True, False])
async def test_gpt_5_5_stop_follows_the_setting(
    emulator: Emulator, openai_client, accepts: bool | None
) -> None:
    """Whether gpt-5.5 and later take ``stop`` is unconfirmed: a setting, refused by default."""
    config = {} if accepts is None else {"gpt_5_5_accepts_stop": accepts}
    assert emulator.ctx is not None
    emulator.ctx.faults = FaultSet.parse(config)
    chat = {"model": "gpt-5-chat-latest", "messages": [{"role": "user", "content": "hi"}]}
    for model in ("gpt-5.5", "gpt-5.10"):  # one model per batch
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stop": ["x"]}
        batch = await _openai_batch(openai_client, {"item": body})
        assert batch.status == "completed", batch
        output = await _lines(openai_client, batch.output_file_id)
        errors_ = await _lines(openai_client, batch.error_file_id)
        if not accepts:
            assert set(errors_) == {"item"} and not output, model
            error = errors_["item"]["response"]["body"]["error"]
            assert (error["code"], error["param"]) == ("unsupported_parameter", "stop")
        else:
            assert set(output) == {"item"} and not errors_, model
    chat_batch = await _openai_batch(openai_client, {"chat": chat | {"stop": ["x"]}})
    assert chat_batch.request_counts.completed == 1  # the -chat snapshots take stop
