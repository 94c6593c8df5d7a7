"""Cost per result and per file: registry prices, the batch discount, cache reads and writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.cost import (
    NO_COST,
    UNKNOWN,
    Cost,
    CostTotals,
    cache_savings,
    cache_writes,
    cost_of,
    estimate,
)
from daemon.outbox import SummaryBuilder, reserve_names, result_line, write_outputs
from daemon.registry import ModelInfo, Registry, default_registry


def info(model: str) -> ModelInfo | None:
    return default_registry().lookup(model)


def test_openai_cost_with_cached_tokens() -> None:
    # gpt-4o-mini: input 0.15, cached 0.075, output 0.60 per million; batch half price.
    usage = {"input_tokens": 1_000_000, "cached_input_tokens": 400_000, "output_tokens": 500_000}
    live = 0.6 * 0.15 + 0.4 * 0.075 + 0.5 * 0.60
    assert cost_of(usage, info("gpt-4o-mini")) == Cost(round(live / 2, 8), round(live, 8))


def test_anthropic_cost_with_cache_writes_and_reads() -> None:
    # claude-sonnet-4-5: input 3, cache read 0.30, 1h cache write 6, output 15.
    usage = {
        "input_tokens": 3000,  # normalised: includes the 1000 read and the 1500 written
        "cached_input_tokens": 1000,
        "cache_creation_input_tokens": 1500,
        "output_tokens": 200,
    }
    live = (500 * 3 + 1000 * 0.30 + 1500 * 6 + 200 * 15) / 1e6
    cost = cost_of(usage, info("claude-sonnet-4-5"))
    assert cost == Cost(round(live * 0.5, 8), round(live, 8))


def claude_line(five: int, hour: int) -> dict:
    """An Anthropic result line whose usage splits the cache writes by time to live."""
    creation = {"ephemeral_5m_input_tokens": five, "ephemeral_1h_input_tokens": hour}
    usage = {"cache_creation_input_tokens": five + hour, "cache_creation": creation}
    return {"custom_id": "r", "result": {"type": "succeeded", "message": {"usage": usage}}}


def test_cache_writes_priced_at_their_ttl() -> None:
    """claude-sonnet-4-5: a 5-minute write 3.75, a 1-hour write 6 per million; the provider's
    own split says which; writes it did not split are priced as 1-hour writes."""
    usage = {"input_tokens": 4000, "cache_creation_input_tokens": 4000, "output_tokens": 0}
    sonnet = info("claude-sonnet-4-5")
    five = cost_of(usage, sonnet, claude_line(4000, 0))
    hour = cost_of(usage, sonnet, claude_line(0, 4000))
    assert five.live_usd == round(4000 * 3.75 / 1e6, 8)
    assert hour.live_usd == round(4000 * 6 / 1e6, 8)
    assert cost_of(usage, sonnet) == hour  # no split: the dearer kind, never understated
    mixed = cost_of(usage, sonnet, claude_line(1000, 3000))
    assert mixed.live_usd == round((1000 * 3.75 + 3000 * 6) / 1e6, 8)
    assert cache_writes(usage, claude_line(1000, 3000)) == (1000, 3000, 0)
    assert cache_writes(usage, claude_line(1000, 0)) == (1000, 0, 3000)  # counters disagree
    assert cache_writes(usage, {"custom_id": "x", "response": {}}) == (0, 0, 4000)  # OpenAI


def test_paid_off_is_computed_from_what_was_charged() -> None:
    """8 lanes write at the 5-minute price, 92 requests read: the saving is the reads' discount
    minus the writes' surcharge, each write at its own TTL price."""
    sonnet = info("claude-sonnet-4-5")
    write = {"input_tokens": 5000, "cache_creation_input_tokens": 5000}
    read = {"input_tokens": 5000, "cached_input_tokens": 5000}
    saved_5m = cache_savings(write, sonnet, claude_line(5000, 0))
    saved_1h = cache_savings(write, sonnet, claude_line(0, 5000))
    assert saved_5m == round(-5000 * 0.75 / 1e6 / 2, 8)
    assert saved_1h == round(-5000 * 3 / 1e6 / 2, 8)
    saved_read = cache_savings(read, sonnet)
    assert saved_read == round(5000 * 2.7 / 1e6 / 2, 8)
    builder = SummaryBuilder()
    for usage, saved in [(write, saved_5m)] * 8 + [(read, saved_read)] * 92:
        line = result_line({"custom_id": "x", "status": "succeeded", "usage": usage})
        builder.add(line, 0, saved)
    cache = builder.build(file="f", job_id=1, started_at=None, ended_at=None)["prompt_cache"]
    assert cache["net_savings_usd"] == pytest.approx((92 * 5000 * 2.7 - 8 * 5000 * 0.75) / 2e6)
    assert cache["paid_off"] is True
    # Two requests that each wrote at the 1-hour price and nobody read: it did not pay.
    builder = SummaryBuilder()
    for _ in range(2):
        line = result_line({"custom_id": "x", "status": "succeeded", "usage": write})
        builder.add(line, 0, saved_1h)
    cache = builder.build(file="f", job_id=1, started_at=None, ended_at=None)["prompt_cache"]
    assert cache["paid_off"] is False


def test_missing_prices_give_null_never_a_guess() -> None:
    usage = {"input_tokens": 10, "output_tokens": 5}
    assert cost_of(usage, info("o1-preview")) == UNKNOWN  # family known, price not
    assert cost_of(usage, None) == UNKNOWN  # model unknown
    # Gemini cache-read prices are not in the registry: a cache hit makes the cost unknown...
    assert cost_of({**usage, "cached_input_tokens": 4}, info("gemini-2.5-flash")) == UNKNOWN
    # ... while the same request without one is priced.
    assert cost_of(usage, info("gemini-2.5-flash")).batch_usd == round(
        (10 * 0.30 + 5 * 2.50) / 1e6 / 2, 8
    )


def test_zero_tokens_cost_zero_whatever_the_price() -> None:
    assert cost_of(None, None) == NO_COST
    assert cost_of({"input_tokens": 0}, info("o1-preview")) == NO_COST


def test_config_prices_and_discount_override() -> None:
    registry = Registry.load(
        {"house-model": {"provider": "openai", "prices": {"input": 1, "output": 2}}}
    )
    cost = cost_of(
        {"input_tokens": 1_000_000, "output_tokens": 1_000_000}, registry.lookup("house-model")
    )
    assert cost == Cost(1.5, 3.0)


def test_estimate_prices_the_input_only() -> None:
    assert estimate(2_000_000, info("gpt-4.1")) == Cost(2.0, 4.0)
    assert estimate(100, None) == UNKNOWN


def test_totals_and_savings() -> None:
    totals = CostTotals()
    for cost in (Cost(1.0, 2.0), Cost(0.25, 0.5), UNKNOWN, NO_COST):
        totals.add(cost)
    assert totals.as_dict() == {
        "cost_usd": 1.25,
        "cost_usd_live": 2.5,
        "savings_usd": 1.25,
        "unpriced_requests": 1,
    }


def test_result_lines_and_summary_carry_costs_and_cache_counters(tmp_path: Path) -> None:
    usage = {
        "input_tokens": 100,
        "output_tokens": 10,
        "cached_input_tokens": 60,
        "cache_creation_input_tokens": 20,
    }
    rows = [
        {
            "custom_id": "a",
            "status": "succeeded",
            "usage": usage,
            "cost_usd": 0.5,
            "cost_usd_live": 1.0,
        },
        {
            "custom_id": "b",
            "status": "succeeded",
            "usage": usage,
            "cost_usd": None,
            "cost_usd_live": None,
        },
        {"custom_id": "c", "status": "invalid", "cost_usd": 0.0, "cost_usd_live": 0.0},
    ]
    targets = reserve_names(tmp_path, "f", 1)
    meta = {"file": "f.jsonl"}
    results, summary = write_outputs(tmp_path, "f", 1, rows, summary_meta=meta, targets=targets)
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert [x["cost_usd"] for x in lines] == [0.5, None, 0.0]
    assert lines[0]["usage"] == usage
    data = json.loads(summary.read_text())
    assert data["tokens"] == {
        "input_tokens": 200,
        "output_tokens": 20,
        "cached_input_tokens": 120,
        "cache_creation_input_tokens": 40,
    }
    assert (data["cost_usd"], data["cost_usd_live"], data["savings_usd"]) == (0.5, 1.0, 0.5)
    assert data["unpriced_requests"] == 1


def test_cache_savings_reads_minus_write_surcharge() -> None:
    sonnet = info("claude-sonnet-4-5")  # input 3, read 0.30, 1h write 6
    one_write = {"input_tokens": 1000, "cache_creation_input_tokens": 1000}
    three_reads = {"input_tokens": 3000, "cached_input_tokens": 3000}
    assert cache_savings(one_write, sonnet) == round(-1000 * 3 / 1e6 / 2, 8)
    assert cache_savings(three_reads, sonnet) == round(3000 * 2.7 / 1e6 / 2, 8)
    assert cache_savings({"input_tokens": 5}, sonnet) == 0.0
    assert cache_savings(three_reads, info("gemini-2.5-flash")) is None  # no cache price
    builder = SummaryBuilder()
    for usage, saved in ((one_write, -0.0015), (three_reads, 0.00405)):
        builder.add(
            result_line({"custom_id": "x", "status": "succeeded", "usage": usage}), 0, saved
        )
    cache = builder.build(file="f", job_id=1, started_at=None, ended_at=None)["prompt_cache"]
    assert cache == {
        "tokens_written": 1000,
        "tokens_read": 3000,
        "net_savings_usd": 0.00255,
        "paid_off": True,
    }


@pytest.mark.parametrize("status", ["failed", "expired"])
def test_results_without_tokens_are_not_unpriced(status: str) -> None:
    builder = SummaryBuilder()
    builder.add(result_line({"custom_id": "x", "status": status}))
    assert (
        builder.build(file="f", job_id=1, started_at=None, ended_at=None)["unpriced_requests"] == 0
    )
