"""Anthropic prompt caching that tells the truth: lanes, minimum prefix, TTL and its pricing split.

A batch's requests run in concurrent lanes, so the first request of every lane writes the cache
before any can read it; a prefix below the model's minimum is neither written nor read; entries
expire after their TTL unless read; the usage splits writes into 5-minute and 1-hour ones.
Through the official async SDK.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from adapters.emulator import Emulator, FaultSet
from adapters.emulator.answers import estimate_tokens

from .conftest import TEST_KEY

SONNET = "claude-sonnet-4-5"


def configure(emulator: Emulator, config: dict[str, Any]) -> None:
    assert emulator.ctx is not None
    emulator.ctx.faults = FaultSet.parse(config)


def cached_system(tokens: int, ttl: str | None = None, char: str = "S") -> list[dict[str, Any]]:
    control: dict[str, Any] = {"type": "ephemeral"}
    if ttl:
        control["ttl"] = ttl
    return [{"type": "text", "text": char * (tokens * 4), "cache_control": control}]


def request(cid: str, model: str = SONNET, **params: Any) -> dict[str, Any]:
    body = {
        "model": model,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": f"question {cid}"}],
    }
    return {"custom_id": cid, "params": body | params}


async def run(emulator: Emulator, requests: list[dict[str, Any]]) -> dict[str, Any]:
    """custom_id -> usage of a batch's succeeded results."""
    async with anthropic.AsyncAnthropic(
        base_url=emulator.url, api_key=TEST_KEY, max_retries=0
    ) as client:
        batch = await client.messages.batches.create(requests=requests)
        assert (await client.messages.batches.retrieve(batch.id)).processing_status == "ended"
        stream = await client.messages.batches.results(batch.id)
        results = {r.custom_id: r.result async for r in stream}
    assert all(r.type == "succeeded" for r in results.values()), results
    return {cid: r.message.usage for cid, r in results.items()}


def totals(usages: dict[str, Any]) -> tuple[int, int, int]:
    """(requests that wrote, tokens written, tokens read)."""
    writes = sum(1 for u in usages.values() if u.cache_creation_input_tokens)
    written = sum(u.cache_creation_input_tokens for u in usages.values())
    read = sum(u.cache_read_input_tokens for u in usages.values())
    return writes, written, read


@pytest.mark.parametrize("lanes", [None, 1, 8])
async def test_lanes_make_early_requests_miss(emulator: Emulator, lanes: int | None) -> None:
    """100 requests sharing a 5,000-token system prompt: one write per lane, reads after."""
    if lanes is not None:
        configure(emulator, {"cache_lanes": lanes})
    expected_lanes = lanes or 4  # the default
    system = cached_system(5000)
    usages = await run(emulator, [request(f"r{i}", system=system) for i in range(100)])
    assert totals(usages) == (expected_lanes, expected_lanes * 5000, (100 - expected_lanes) * 5000)
    # Request i runs in lane i % lanes at step i // lanes: the first step of each lane writes.
    for i in range(100):
        usage = usages[f"r{i}"]
        wrote = i < expected_lanes
        assert (usage.cache_creation_input_tokens > 0) is wrote, i
        assert (usage.cache_read_input_tokens > 0) is not wrote, i
        assert usage.input_tokens == estimate_tokens("S" * 20000 + f"\nquestion r{i}") - 5000


@pytest.mark.parametrize(
    ("model", "minimum"),
    [
        ("claude-sonnet-4-5", 1024),
        ("claude-opus-4-1", 1024),
        ("claude-3-7-sonnet-latest", 1024),
        ("claude-sonnet-4-6", 2048),
        ("claude-3-5-haiku-latest", 2048),
        ("claude-haiku-4-5", 4096),
        ("claude-opus-4-5", 4096),
        ("claude-opus-4-6", 4096),
        ("claude-opus-4-7", 4096),  # not published: taken like Opus 4.6
        ("claude-opus-4-8", 4096),
    ],
)
async def test_minimum_cacheable_prefix(emulator: Emulator, model: str, minimum: int) -> None:
    configure(emulator, {"cache_lanes": 1})
    below = cached_system(minimum - 10, char="B")
    at = cached_system(minimum, char="A")
    usages = await run(
        emulator,
        [
            request("below-1", model, system=below),
            request("below-2", model, system=below),
            request("at-1", model, system=at),
            request("at-2", model, system=at),
        ],
    )
    for cid in ("below-1", "below-2"):  # runs normally, full price, no error
        u = usages[cid]
        assert (u.cache_creation_input_tokens, u.cache_read_input_tokens) == (0, 0), cid
        assert u.input_tokens == estimate_tokens("B" * (minimum - 10) * 4 + f"\nquestion {cid}")
    assert (usages["at-1"].cache_creation_input_tokens, usages["at-1"].cache_read_input_tokens) == (
        minimum,
        0,
    )
    assert (usages["at-2"].cache_creation_input_tokens, usages["at-2"].cache_read_input_tokens) == (
        0,
        minimum,
    )


async def test_ttl_split_and_expiry(emulator: Emulator) -> None:
    assert emulator.ctx is not None
    clock = {"t": 1_000_000.0}
    emulator.ctx.now = lambda: clock["t"]  # a fake clock (the time scale is 0)
    configure(emulator, {"cache_lanes": 1})
    five = cached_system(2000, char="F")
    hour = cached_system(2000, "1h", char="H")
    first = await run(emulator, [request("5m", system=five), request("1h", system=hour)])
    assert first["5m"].cache_creation.ephemeral_5m_input_tokens == 2000
    assert first["5m"].cache_creation.ephemeral_1h_input_tokens == 0
    assert first["1h"].cache_creation.ephemeral_1h_input_tokens == 2000
    assert first["1h"].cache_creation.ephemeral_5m_input_tokens == 0

    clock["t"] += 240  # within 5 minutes: both read, and reading refreshes the 5-minute entry
    again = await run(emulator, [request("5m", system=five), request("1h", system=hour)])
    assert again["5m"].cache_read_input_tokens == again["1h"].cache_read_input_tokens == 2000

    clock["t"] += 290  # 8.8 minutes after the write, 4.8 after the read: still there
    usages = await run(emulator, [request("5m", system=five)])
    assert usages["5m"].cache_read_input_tokens == 2000

    clock["t"] += 301  # more than 5 minutes without a read: the 5-minute entry is gone
    later = await run(emulator, [request("5m", system=five), request("1h", system=hour)])
    assert later["5m"].cache_read_input_tokens == 0
    assert later["5m"].cache_creation.ephemeral_5m_input_tokens == 2000
    assert later["1h"].cache_read_input_tokens == 2000  # the hour has not passed

    clock["t"] += 3601
    last = await run(emulator, [request("1h", system=hour)])
    assert last["1h"].cache_read_input_tokens == 0
    assert last["1h"].cache_creation.ephemeral_1h_input_tokens == 2000


async def test_mixed_ttls_split_the_write(emulator: Emulator) -> None:
    """A 1-hour breakpoint before a 5-minute one: each part is written at its own TTL."""
    configure(emulator, {"cache_lanes": 1})
    system = [
        {"type": "text", "text": "L" * 8000, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": "M" * 8000, "cache_control": {"type": "ephemeral"}},
    ]
    usages = await run(emulator, [request("a", system=system), request("b", system=system)])
    first_part = estimate_tokens("L" * 8000)
    whole = estimate_tokens("L" * 8000 + "\n" + "M" * 8000)
    created = usages["a"].cache_creation
    assert created.ephemeral_1h_input_tokens == first_part
    assert created.ephemeral_5m_input_tokens == whole - first_part
    assert usages["a"].cache_creation_input_tokens == whole
    assert usages["b"].cache_read_input_tokens == whole


async def test_priming_batch_warms_the_next_one(emulator: Emulator) -> None:
    """The vendor's advice: one request first, then the batch reads from its first step."""
    system = cached_system(5000, "1h")
    primer = await run(emulator, [request("primer", system=system)])
    assert primer["primer"].cache_creation_input_tokens == 5000
    usages = await run(emulator, [request(f"r{i}", system=system) for i in range(20)])
    assert totals(usages) == (0, 0, 20 * 5000)
