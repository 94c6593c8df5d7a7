"""Enqueued-token and concurrency quotas: stateful, fault-free, and clearing as batches end.

OpenAI fails a batch at validation with ``token_limit_exceeded`` (the limit printed in the
message) while the model's validating and in-progress batches plus the new one would exceed the
configured limit; Gemini refuses the create call with 429 RESOURCE_EXHAUSTED. Both clear once
earlier batches of the model end. Through the official async SDKs.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from google import genai
from google.genai import errors

from adapters.emulator import Emulator, FaultSet
from adapters.emulator.answers import estimate_tokens

from .conftest import TEST_KEY

CHAT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"
GEMINI = "gemini-2.5-flash"


def configure(emulator: Emulator, config: dict[str, Any]) -> None:
    assert emulator.ctx is not None
    emulator.ctx.faults = FaultSet.parse(config)


def counters(emulator: Emulator, provider: str) -> dict[str, int]:
    assert emulator.ctx is not None
    return emulator.ctx.journal.snapshot()["providers"][provider]


async def create(client: openai.AsyncOpenAI, prompts: list[str], model: str = MODEL) -> Any:
    """Upload one request per prompt and create the batch (nobody looks at it yet)."""
    lines = [
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": CHAT,
                "body": {"model": model, "messages": [{"role": "user", "content": p}]},
            }
        )
        for i, p in enumerate(prompts)
    ]
    upload = await client.files.create(
        file=("in.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch"
    )
    return await client.batches.create(
        input_file_id=upload.id, endpoint=CHAT, completion_window="24h"
    )


async def test_openai_token_limit_refuses_then_clears(emulator: Emulator, openai_client) -> None:
    configure(emulator, {"enqueued_token_limits": {MODEL: 2_000_000}})
    prompt = "y" * 4000  # 1,000 estimated tokens a request
    assert estimate_tokens(prompt) == 1000
    first = await create(openai_client, [prompt] * 1200)  # 1.2 M tokens, still validating
    second = await create(openai_client, [prompt] * 900)  # 1.2 M + 0.9 M > 2 M
    refused = await openai_client.batches.retrieve(second.id)
    assert refused.status == "failed"
    (error,) = refused.errors.data
    assert error.code == "token_limit_exceeded"
    assert error.message == (
        f"Enqueued token limit reached for {MODEL} in organization org-emulator. Limit: "
        "2,000,000 enqueued tokens. Please try again once some in_progress batches have been "
        "completed."
    )
    assert refused.request_counts.total == 0
    # The refusal is not the requests' fault: none of them was received or billed.
    stats = counters(emulator, "openai")
    assert stats["enqueued_limit_refusals"] == 1
    assert stats["batches_created"] == 1 and stats["items_received"] == 1200
    # Exactly at the limit is still accepted.
    fits = await create(openai_client, [prompt] * 800)
    # Once the earlier batches end, the same batch goes through.
    assert (await openai_client.batches.retrieve(first.id)).status == "completed"
    assert (await openai_client.batches.retrieve(fits.id)).status == "completed"
    again = await create(openai_client, [prompt] * 900)
    done = await openai_client.batches.retrieve(again.id)
    assert done.status == "completed" and done.request_counts.completed == 900
    assert counters(emulator, "openai")["enqueued_limit_refusals"] == 1


async def test_openai_token_limit_is_per_model_and_ignores_failed_batches(
    emulator: Emulator, openai_client
) -> None:
    configure(emulator, {"enqueued_token_limits": {"gpt-4o*": 500}})
    prompt = "z" * 1600  # 400 tokens
    held = await create(openai_client, [prompt], model="gpt-4o")
    other = await create(openai_client, [prompt], model="gpt-4.1")  # no limit for gpt-4.1
    mini = await create(openai_client, [prompt], model=MODEL)  # its own budget under the glob
    over = await create(openai_client, [prompt], model="gpt-4o")
    assert (await openai_client.batches.retrieve(over.id)).status == "failed"
    # A batch refused for the quota does not hold any of it.
    assert (await openai_client.batches.retrieve(held.id)).status == "completed"
    for batch in (other, mini):
        assert (await openai_client.batches.retrieve(batch.id)).status == "completed"
    after = await create(openai_client, [prompt], model="gpt-4o")
    assert (await openai_client.batches.retrieve(after.id)).status == "completed"


async def test_openai_token_limit_clears_with_time(tmp_path) -> None:
    """At a time scale above 0 a batch stops counting once its in-progress phase is over."""
    clock = {"t": 1_000_000.0}
    async with Emulator(time_scale=1, state_dir=tmp_path / "emu") as emu:
        assert emu.ctx is not None
        emu.ctx.now = lambda: clock["t"]  # a fake clock
        configure(emu, {"enqueued_token_limits": {MODEL: 1000}})
        async with openai.AsyncOpenAI(
            base_url=emu.url + "/v1", api_key=TEST_KEY, max_retries=0
        ) as client:
            first = await create(client, ["w" * 3200])  # 800 tokens
            clock["t"] += 3  # in progress
            refused = await create(client, ["w" * 3200])
            clock["t"] += 60  # the first one has finished, though nobody looked
            accepted = await create(client, ["w" * 3200])
            clock["t"] += 60
            assert (await client.batches.retrieve(refused.id)).status == "failed"
            assert (await client.batches.retrieve(accepted.id)).status == "completed"
            assert (await client.batches.retrieve(first.id)).status == "completed"


# -- Gemini --------------------------------------------------------------------------------------


def inline(text: str, n: int = 1) -> list[dict[str, Any]]:
    return [{"contents": [{"role": "user", "parts": [{"text": text}]}]} for _ in range(n)]


async def test_gemini_token_quota_refuses_at_create_then_clears(emulator: Emulator) -> None:
    configure(emulator, {"enqueued_token_limits": {GEMINI: 10_000}})
    aio = genai.Client(api_key=TEST_KEY, http_options={"base_url": emulator.url}).aio
    first = await aio.batches.create(model=GEMINI, src=inline("q" * 4000, 6))  # 6,000 tokens
    with pytest.raises(errors.ClientError) as exc:
        await aio.batches.create(model=GEMINI, src=inline("q" * 4000, 5))
    assert (exc.value.code, exc.value.status) == (429, "RESOURCE_EXHAUSTED")
    assert exc.value.message.startswith("You exceeded your current quota")
    help_ = exc.value.details["error"]["details"][0]
    assert help_["@type"] == "type.googleapis.com/google.rpc.Help"
    stats = counters(emulator, "gemini")
    assert stats["enqueued_limit_refusals"] == 1 and stats["batches_created"] == 1
    assert [j.name async for j in await aio.batches.list()] == [first.name]  # nothing created
    assert (await aio.batches.get(name=first.name)).state.name == "JOB_STATE_SUCCEEDED"
    second = await aio.batches.create(model=GEMINI, src=inline("q" * 4000, 5))
    assert (await aio.batches.get(name=second.name)).state.name == "JOB_STATE_SUCCEEDED"


async def test_gemini_concurrency_quota(emulator: Emulator) -> None:
    configure(emulator, {"concurrent_batch_limits": {GEMINI: 2}})
    aio = genai.Client(api_key=TEST_KEY, http_options={"base_url": emulator.url}).aio
    jobs = [await aio.batches.create(model=GEMINI, src=inline("hi")) for _ in range(2)]
    with pytest.raises(errors.ClientError) as exc:
        await aio.batches.create(model=GEMINI, src=inline("hi"))
    assert exc.value.code == 429
    await aio.batches.create(model="gemini-2.5-pro", src=inline("hi"))  # another model
    await aio.batches.cancel(name=jobs[0].name)  # ending one frees a place
    third = await aio.batches.create(model=GEMINI, src=inline("hi"))
    assert third.name
    assert counters(emulator, "gemini")["enqueued_limit_refusals"] == 1


# -- configuration -------------------------------------------------------------------------------


async def test_quotas_through_the_control_routes(emulator: Emulator) -> None:
    async with httpx.AsyncClient(base_url=emulator.url) as http:
        put = await http.put(
            "/_emulator/faults",
            json={"enqueued_token_limits": {MODEL: 5}, "cache_lanes": 2},
        )
        assert put.status_code == 200
        body = put.json()
        assert body["enqueued_token_limits"] == {MODEL: 5} and body["cache_lanes"] == 2
        added = await http.post(
            "/_emulator/faults", json={"concurrent_batch_limits": {GEMINI: 3}}
        )
        assert added.json()["enqueued_token_limits"] == {MODEL: 5}  # POST adds, keeps the rest
        assert added.json()["concurrent_batch_limits"] == {GEMINI: 3}
        assert added.json()["cache_lanes"] == 2
        for bad in (
            {"enqueued_token_limits": {MODEL: 0}},
            {"enqueued_token_limits": [MODEL]},
            {"cache_lanes": 0},
            {"gpt_5_5_accepts_stop": "yes"},
        ):
            assert (await http.put("/_emulator/faults", json=bad)).status_code == 400, bad
        cleared = (await http.delete("/_emulator/faults")).json()
        assert cleared["enqueued_token_limits"] == {} and cleared["cache_lanes"] == 4
