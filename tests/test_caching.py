"""Prompt caching at submit time: which Claude system prompts get cache_control, with which
TTL, and the note each result gets from the provider's own counters."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from adapters.base import BatchItem, TransientError
from daemon.caching import (
    ASSUMED_LANES,
    cache_note,
    estimate_tokens,
    expected_cost,
    mark,
    plan_batch,
    plan_cache,
    prepare_items,
)
from daemon.config import Config
from daemon.registry import ModelInfo, default_registry

SONNET = "claude-sonnet-4-5"  # minimum cacheable prefix 1,024 tokens
LONG = "x" * 4 * 5000  # ~5,000 tokens
SHORT = "y" * 4 * 1000  # ~1,000 tokens: below Sonnet 4.5's minimum


def info(model: str) -> ModelInfo:
    found = default_registry().lookup(model)
    assert found is not None
    return found


def item(key: str, system: object = None, model: str = SONNET, **extra: object) -> BatchItem:
    body: dict[str, object] = {"model": model, "max_tokens": 5, "messages": []}
    if system is not None:
        body["system"] = system
    return BatchItem(key, body | extra)


def systems(items: list[BatchItem]) -> list[Any]:
    return [i.body.get("system") for i in items]


def marked(text: str, ttl: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": ttl}}]


def test_prefix_estimated_at_four_characters_a_token_with_tools() -> None:
    assert estimate_tokens({"system": "abcd" * 300}) == 300
    blocks = [{"type": "text", "text": "ab" * 100}, {"type": "text", "text": "cd" * 100}]
    assert estimate_tokens({"system": blocks}) == 100
    tools = [{"name": "t", "input_schema": {}}]
    assert estimate_tokens({"system": "abcd", "tools": tools}) == (4 + 33) // 4
    assert estimate_tokens({"messages": []}) == 0


@pytest.mark.parametrize(
    ("shared", "tokens", "priming", "ttl", "prime"),
    [
        (100, 5000, False, "5m", False),  # a big batch: the 5-minute TTL, cheaper writes
        (1000, 5000, False, "5m", False),
        (11, 5000, False, "5m", False),  # the smallest batch where caching is expected to pay
        (10, 5000, False, None, False),  # up to 8 may write: not expected to pay
        (2, 5000, False, None, False),
        (100, 1000, False, None, False),  # below the minimum: the provider would not cache
        (3, 5000, True, "1h", True),  # primed: one 1-hour write, then every request reads
        (2, 5000, True, None, False),  # 2.2 > 2: priming two requests does not pay
        (100, 1000, True, None, False),
    ],
)
def test_plan_marks_what_is_expected_to_pay(
    shared: int, tokens: int, priming: bool, ttl: str | None, prime: bool
) -> None:
    plan = plan_cache(shared, tokens, 1024, priming=priming, info=info(SONNET))
    assert (plan.ttl, plan.prime) == (ttl, prime)
    options = ("primed 1h",) if priming else ("5m", "1h")
    cheapest = min(("off", *options), key=lambda k: plan.costs[k])
    assert cheapest == ("off" if ttl is None else "primed 1h" if prime else ttl) or (
        tokens < 1024 and ttl is None
    )


def test_expected_costs_follow_the_documented_model() -> None:
    """w5 = 1.25, w1h = 2, r = 0.1; the first 8 requests write, the later ones read."""
    plan = plan_cache(100, 5000, 1024, info=info(SONNET))
    assert plan.costs == {"off": 100.0, "5m": 19.2, "1h": 25.2, "primed 1h": 12.0}
    assert expected_cost(ASSUMED_LANES, 1.25, 0.1) == ASSUMED_LANES * 1.25
    assert expected_cost(12, 1.25, 0.1) == pytest.approx(10.4)
    assert plan_cache(12, 5000, 1024).costs == plan_cache(12, 5000, 1024, info=info(SONNET)).costs
    text = plan.explain(SONNET)
    assert text.startswith("100 requests share a system prompt of ~5000 tokens: marked with the")
    assert "off 100.0, 5m 19.2, 1h 25.2, primed 1h 12.0" in text
    below = plan_cache(100, 1000, 1024).explain(SONNET)
    assert "below claude-sonnet-4-5's minimum cacheable prefix of 1024 tokens" in below


@pytest.mark.parametrize(
    ("model", "minimum"),
    [("claude-sonnet-4-5", 1024), ("claude-sonnet-4-6", 2048), ("claude-haiku-4-5", 4096)],
)
def test_the_minimum_comes_from_the_model(model: str, minimum: int) -> None:
    just_under = "z" * 4 * (minimum - 1)
    just_over = "z" * 4 * minimum
    for text, expected in ((just_under, None), (just_over, "5m")):
        items = [item(f"k{i}", text, model) for i in range(20)]
        plans = plan_batch(items, info(model))
        assert [p.ttl for p in plans.values()] == [expected]


def test_marking_by_plan() -> None:
    items = [item(f"a{i}", LONG) for i in range(20)]
    items += [item(f"b{i}", SHORT) for i in range(20)]
    items += [item("alone", LONG + "!"), item("none")]
    own = {"type": "ephemeral"}
    items += [item("own", LONG, cache_control=own)]
    out = mark(items, plan_batch(items, info(SONNET)))
    assert systems(out) == [
        *[marked(LONG, "5m")] * 20,
        *[SHORT] * 20,  # shared, but below the minimum
        LONG + "!",  # used once
        None,
        LONG,  # the user's own breakpoints are left alone
    ]
    assert [i.key for i in out] == [i.key for i in items]
    assert items[0].body["system"] == LONG  # the input is not mutated


def test_block_system_prompts_mark_their_last_block() -> None:
    blocks = [{"type": "text", "text": LONG}, {"type": "text", "text": "y"}]
    items = [item(f"k{i}", list(blocks)) for i in range(20)]
    out = mark(items, plan_batch(items, info(SONNET)))
    control = {"type": "ephemeral", "ttl": "5m"}
    assert out[0].body["system"] == [blocks[0], {**blocks[1], "cache_control": control}]


def anthropic_line(usage: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": "r1", "result": {"type": "succeeded", "message": {"usage": usage}}}


def test_cache_note_comes_from_the_provider_counters() -> None:
    body = item("a", LONG).body
    head = "system prompt shared in its batch marked for prompt caching: "
    hour = anthropic_line(
        {"cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 1200}}
    )
    usage = {"cache_creation_input_tokens": 1200, "cached_input_tokens": 0}
    assert cache_note("anthropic", body, usage, hour) == (
        head + "1200 tokens written to the cache (1h TTL)"
    )
    five = anthropic_line({"cache_creation": {"ephemeral_5m_input_tokens": 1200}})
    assert cache_note("anthropic", body, usage, five) == (
        head + "1200 tokens written to the cache (5m TTL)"
    )
    assert cache_note("anthropic", body, usage) == head + "1200 tokens written to the cache"
    read = {"cached_input_tokens": 1200}
    assert cache_note("anthropic", body, read) == head + "1200 tokens read from the cache"
    assert cache_note("anthropic", body, {"input_tokens": 9}) is None
    assert cache_note("openai", body, read) is None  # OpenAI caches on its own
    assert cache_note("anthropic", {**body, "cache_control": {}}, read) is None  # the user's own


class _FailingAdapter:
    """An adapter whose create call always fails: priming must not stop the batch."""

    name = "anthropic"

    def __init__(self) -> None:
        self.calls = 0

    async def submit(self, tag: str, model: str, items: list[BatchItem]) -> None:
        self.calls += 1
        raise TransientError("overloaded")


async def test_a_failed_primer_leaves_the_batch_marked_and_unprimed() -> None:
    cfg = replace(Config(), cache_priming=True, request_timeout_s=1.0)
    adapter = _FailingAdapter()
    items = [item(f"k{i}", LONG) for i in range(4)]
    out = await prepare_items("anthropic", SONNET, items, cfg, adapter)  # type: ignore[arg-type]
    assert adapter.calls == 1
    assert systems(out) == [marked(LONG, "1h")] * 4  # priming chose the 1-hour TTL
    off = replace(cfg, cache_priming=False)
    out = await prepare_items("anthropic", SONNET, items, off, adapter)  # type: ignore[arg-type]
    assert adapter.calls == 1  # priming off: no primer
    assert systems(out) == [LONG] * 4  # and 4 requests are too few to pay for a write each
    nothing = replace(cfg, prompt_cache="off")
    assert await prepare_items("anthropic", SONNET, items, nothing, adapter) == items  # type: ignore[arg-type]
    assert await prepare_items("openai", "gpt-4o", items, cfg, adapter) == items  # type: ignore[arg-type]
    assert adapter.calls == 1
