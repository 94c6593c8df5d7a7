"""End to end: every adaptation rule through ``batchd run --once`` against the strict emulator.

The emulator enforces the providers' request rules from its own catalogue (never the
daemon's), so an unadapted request would come back failed. Here every line succeeds and its
result carries the adaptations the daemon recorded; under ``on_unsupported = "reject"`` the
lines that needed a change that loses something (a removal, a clamp, a raised or lowered
limit, manual thinking sent as adaptive) come back invalid instead, and the rest still
succeed. The file mixes every model generation: the gpt-5 family's stop (gpt-5 to 5.5, the
-pro variants, and the -chat snapshots that keep it), Claude's temperature/top_p pairs (Opus
4.1-4.6, Sonnet 4.5, Haiku 4.5), Claude models without temperature (Sonnet 4.6, Opus 4.7, 4.8
and a later Opus), extended thinking (manual sent as adaptive, the limits while it is on, in
adaptive mode too), output ceilings of every family that has one, and the APIs' 32-bit bound
where no ceiling is known (Gemini included). tests/test_conformance.py pairs each rule of the
emulator with the daemon's adaptation request by request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters.emulator import Emulator

from .daemon_harness import journal, read_results, run_once, write_jsonl

SYS = {"role": "system", "content": "Answer briefly."}
LOSSY_WORDS = ("removed", "clamped", "raised", "lowered", 'sent as {"type": "adaptive"}')


def msg(text: str, role: str = "user") -> dict[str, str]:
    return {"role": role, "content": text}


def line(cid: str, model: str, messages: list[dict[str, Any]] | None = None, **extra: Any):
    return {"custom_id": cid, "model": model, "messages": messages or [msg(f"q {cid}")], **extra}


def native_claude(cid: str, model: str, **params: Any) -> dict[str, Any]:
    return {"custom_id": cid, "params": {"model": model, "messages": [msg("q")], **params}}


def together(model: str) -> str:
    return (
        f"top_p removed: {model} does not accept temperature and top_p together "
        "(temperature kept)"
    )


def ceiling(name: str, value: int, limit: int, model: str) -> str:
    return f"{name} {value} clamped to {limit} ({model} writes at most {limit} output tokens)"


# (line, adaptations under "adapt", lossy: refused under "reject")
CASES: list[tuple[dict[str, Any], list[str], bool]] = [
    (
        line("o3-mini-temp", "o3-mini", temperature=0.2, max_tokens=500),
        [
            "max_tokens sent as max_completion_tokens (o3-mini counts reasoning tokens in it)",
            "temperature removed: o3-mini does not support it",
        ],
        True,
    ),
    (
        line("o1-mini-system", "o1-mini", system="Answer briefly."),
        ["system message folded into the first user message (o1-mini has no system role)"],
        False,
    ),
    (
        line("o1-preview-system", "o1-preview", [SYS, msg("q")]),
        ["system message folded into the first user message (o1-preview has no system role)"],
        False,
    ),
    (
        line("o1-sampling", "o1", [SYS, msg("q")], temperature=0.2, top_p=0.5, logprobs=True),
        [
            "system message sent as a developer message (o1 uses the developer role)",
            "temperature 0.2 removed: o1 accepts only the default (1)",
            "top_p 0.5 removed: o1 accepts only the default (1)",
            "logprobs true removed: o1 accepts only the default (false)",
        ],
        True,
    ),
    (
        line("o3-stop", "o3", stop=["END"]),
        ["stop removed: o3 does not support it"],
        True,
    ),
    (
        line("o4-mini-stop", "o4-mini", stop="END", max_tokens=800),
        [
            "max_tokens sent as max_completion_tokens (o4-mini counts reasoning tokens in it)",
            "stop removed: o4-mini does not support it",
        ],
        True,
    ),
    (
        line("gpt-5-mini-sampling", "gpt-5-mini", temperature=0.7, reasoning_effort="none"),
        [
            "reasoning_effort 'none' removed: gpt-5-mini accepts minimal, low, medium, high",
            "temperature 0.7 removed: gpt-5-mini accepts only the default (1)",
        ],
        True,
    ),
    (line("gpt-5.1-sampling-kept", "gpt-5.1", temperature=0.7, top_p=0.9), [], False),
    (
        line("gpt-5.1-effort-high", "gpt-5.1", temperature=0.7, reasoning_effort="high"),
        [
            "temperature removed: gpt-5.1 accepts it only with reasoning_effort none "
            "(this request: high)"
        ],
        True,
    ),
    (
        line("gpt-4o-mini-top-k", "gpt-4o-mini", top_k=5),
        ["top_k removed: gpt-4o-mini does not support it"],
        True,
    ),
    (
        line(
            "claude-everything",
            "claude-sonnet-4-5",
            [SYS, msg("a"), {"role": "developer", "content": "Be polite."}, msg("b")],
            stop="END",
            temperature=1.4,
        ),
        [
            "2 system messages joined into the top-level system field",
            "developer messages treated as system messages",
            "consecutive same-role messages merged (2 messages → 1 turn)",
            "max_tokens set to 1024 (Claude requires it)",
            "temperature 1.4 clamped to 1.0 (Claude range 0-1)",
        ],
        True,
    ),
    (
        line("claude-penalty", "claude-haiku-4-5", max_tokens=50, presence_penalty=0.5),
        ["presence_penalty removed: claude-haiku-4-5 does not support it"],
        True,
    ),
    (
        line(
            "gemini-everything",
            "gemini-2.5-flash",
            [SYS, msg("a"), msg("b", "assistant"), msg("c")],
            max_tokens=64,
            top_p=0.8,
            stop="END",
            logprobs=True,
        ),
        [
            "system message moved to systemInstruction",
            "logprobs removed: gemini-2.5-flash does not support it",
        ],
        True,
    ),
    (
        {
            "custom_id": "native-openai",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "o3-mini",
                "messages": [msg("q")],
                "max_tokens": 500,
                "temperature": 0,
            },
        },
        [
            "max_tokens sent as max_completion_tokens (o3-mini counts reasoning tokens in it)",
            "temperature removed: o3-mini does not support it",
        ],
        True,
    ),
    (
        {
            "custom_id": "native-anthropic",
            "params": {
                "model": "claude-haiku-4-5",
                "max_tokens": 40,
                "messages": [msg("q")],
                "temperature": 1.5,
            },
        },
        ["temperature 1.5 clamped to 1.0 (Claude range 0-1)"],
        True,
    ),
]


# The model generations (same shape as CASES).
GENERATIONS: list[tuple[dict[str, Any], list[str], bool]] = [
    *[
        (
            line(f"{model}-stop", model, stop="END"),
            [f"stop removed: {model} does not support it"],
            True,
        )
        # gpt-5.5 and later: accepting stop again is unconfirmed, so removed by default (and
        # refused by the emulator by default); gpt-5.4-pro: a later -pro variant.
        for model in (
            "gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-5-pro", "gpt-5.1", "gpt-5.2", "gpt-5.4",
            "gpt-5.5", "gpt-5.4-pro",
        )
    ],
    (line("gpt-5-chat-stop", "gpt-5-chat-latest", stop="END"), [], False),
    (line("gpt-5.4-chat-stop", "gpt-5.4-chat-latest", stop="END", temperature=0.3), [], False),
    (
        line("gpt-5.4-pro-sampling", "gpt-5.4-pro", temperature=0.7),
        ["temperature 0.7 removed: gpt-5.4-pro accepts only the default (1)"],
        True,
    ),
    *[
        (
            line(f"{model}-ceiling", model, max_tokens=asked),
            [ceiling("max_tokens", asked, limit, model)],
            True,
        )
        for model, asked, limit in (
            ("gpt-4o", 20_000, 16384),
            ("chatgpt-4o-latest", 20_000, 16384),
            ("gpt-4.1", 40_000, 32768),
            ("claude-3-opus-20240229", 5_000, 4096),
            ("claude-3-5-haiku-20241022", 10_000, 8192),
            ("claude-3-7-sonnet-20250219", 100_000, 64000),
            ("claude-opus-4-0", 40_000, 32000),
            ("claude-sonnet-4-0", 100_000, 64000),
        )
    ],
    (
        line("gpt-5-ceiling", "gpt-5", max_tokens=200_000),
        [
            "max_tokens sent as max_completion_tokens (gpt-5 counts reasoning tokens in it)",
            ceiling("max_tokens", 200_000, 128_000, "gpt-5"),
        ],
        True,
    ),
    *[
        # No known ceiling: only the APIs' 32-bit bound (Gemini would refuse the whole batch).
        (
            line(f"{model}-absurd", model, max_tokens=10**20),
            [f"max_tokens {10**20} clamped to 2147483647 (the largest integer the API accepts)"],
            True,
        )
        for model in ("claude-opus-4-7", "gemini-2.5-flash")
    ],
    (
        line("gpt-4o-mini-ceiling", "gpt-4o-mini", max_tokens=1_000_000),
        [ceiling("max_tokens", 1_000_000, 16384, "gpt-4o-mini")],
        True,
    ),
    (
        line("gpt-4o-mini-absurd", "gpt-4o-mini", max_tokens=10**20),
        [ceiling("max_tokens", 10**20, 16384, "gpt-4o-mini")],
        True,
    ),
    (
        {
            "custom_id": "o3-native-ceiling",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "o3", "messages": [msg("q")], "max_completion_tokens": 150_000},
        },
        [ceiling("max_completion_tokens", 150_000, 100_000, "o3")],
        True,
    ),
    *[
        (
            line(f"{model}-pair", model, max_tokens=50, temperature=0.4, top_p=0.9),
            [together(model)],
            True,
        )
        for model in (
            "claude-opus-4-1", "claude-opus-4-5", "claude-opus-4-6", "claude-sonnet-4-5",
            "claude-haiku-4-5",
        )
    ],
    (
        line("sonnet-4-0-pair", "claude-sonnet-4-0", max_tokens=50, temperature=0.4, top_p=0.9),
        [],
        False,
    ),
    *[
        (
            line(f"{model}-sampling", model, max_tokens=50, temperature=0.4, top_p=0.9, top_k=5),
            [
                f"temperature 0.4 removed: {model} accepts only the default (1)",
                f"top_p removed: {model} does not support it",
                f"top_k removed: {model} does not support it",
            ],
            True,
        )
        for model in ("claude-sonnet-4-6", "claude-opus-4-7", "claude-opus-4-8")
    ],
    (line("opus-4-8-temp-1", "claude-opus-4-8", max_tokens=50, temperature=1.0), [], False),
    (
        # A later Opus 4.x than the registry lists: the newest Opus rules.
        line("opus-4-9-temp", "claude-opus-4-9", max_tokens=50, temperature=0.3),
        ["temperature 0.3 removed: claude-opus-4-9 accepts only the default (1)"],
        True,
    ),
    (
        line("sonnet-4-5-ceiling", "claude-sonnet-4-5", max_tokens=200_000),
        [ceiling("max_tokens", 200_000, 64_000, "claude-sonnet-4-5")],
        True,
    ),
    (
        native_claude(
            "opus-4-7-manual-thinking",
            "claude-opus-4-7",
            max_tokens=4000,
            thinking={"type": "enabled", "budget_tokens": 2000},
            temperature=0.5,
        ),
        [
            'thinking {"type": "enabled", "budget_tokens": 2000} sent as {"type": "adaptive"}: '
            "claude-opus-4-7 does not accept manual extended thinking (budget_tokens dropped)",
            "temperature 0.5 removed: claude-opus-4-7 accepts only the default (1)",
        ],
        True,
    ),
    (
        native_claude(
            "opus-4-8-manual-thinking",
            "claude-opus-4-8",
            max_tokens=3000,
            thinking={"type": "enabled", "budget_tokens": 1500},
        ),
        [
            'thinking {"type": "enabled", "budget_tokens": 1500} sent as {"type": "adaptive"}: '
            "claude-opus-4-8 does not accept manual extended thinking (budget_tokens dropped)",
        ],
        True,
    ),
    (
        native_claude(
            "opus-4-6-adaptive",
            "claude-opus-4-6",
            max_tokens=800,
            thinking={"type": "adaptive"},
            temperature=0.5,
            top_k=5,
        ),
        [
            "temperature 0.5 removed: with extended thinking claude-opus-4-6 accepts only 1",
            "top_k removed: claude-opus-4-6 does not accept it with extended thinking",
        ],
        True,
    ),
    (
        native_claude(
            "opus-4-6-thinking",
            "claude-opus-4-6",
            max_tokens=800,
            thinking={"type": "enabled", "budget_tokens": 500},
            temperature=0.5,
            top_p=0.5,
            top_k=5,
        ),
        [
            "thinking budget_tokens 500 raised to 1024 (Claude's minimum)",
            "max_tokens 800 raised to 1824: with extended thinking max_tokens counts the "
            "thinking and must exceed budget_tokens (1024)",
            "temperature 0.5 removed: with extended thinking claude-opus-4-6 accepts only 1",
            "top_p 0.5 clamped to 0.95 (Claude range with extended thinking 0.95-1)",
            "top_k removed: claude-opus-4-6 does not accept it with extended thinking",
        ],
        True,
    ),
    (
        native_claude(
            "sonnet-4-6-thinking",
            "claude-sonnet-4-6",
            max_tokens=3000,
            thinking={"type": "enabled", "budget_tokens": 2000},
        ),
        [],
        False,
    ),
    (
        native_claude(
            "haiku-4-5-native-ceiling",
            "claude-haiku-4-5",
            max_tokens=100_000,
            temperature=0.2,
            top_p=0.5,
        ),
        [ceiling("max_tokens", 100_000, 64_000, "claude-haiku-4-5"), together("claude-haiku-4-5")],
        True,
    ),
]
ALL = CASES + GENERATIONS


def lossy_notes(notes: list[str]) -> list[str]:
    return [n for n in notes if any(word in n for word in LOSSY_WORDS)]


async def test_every_rule_succeeds_against_the_strict_emulator(tmp_path: Path, emulator: Emulator):
    lines = [case[0] for case in ALL]
    write_jsonl(tmp_path / "inbox" / "rules.jsonl", lines)
    run = await run_once(tmp_path, emulator.url)
    assert run.returncode == 0, run.stderr[-3000:]
    results = read_results(tmp_path / "outbox" / "rules.results.jsonl")
    assert len(results) == len(ALL)
    for result, (src, expected, lossy) in zip(results, ALL, strict=True):
        assert bool(lossy_notes(expected)) == lossy, src  # the table is consistent
        assert result["custom_id"] == src["custom_id"]
        assert result["status"] == "succeeded", result
        assert result["adaptations"] == expected, result["custom_id"]
    providers = (await journal(emulator.url))["providers"]
    assert all(providers[p]["items_failed"] == 0 for p in ("openai", "anthropic", "gemini"))


async def test_reject_policy_turns_lossy_lines_invalid(tmp_path: Path, emulator: Emulator):
    lines = [case[0] for case in ALL]
    write_jsonl(tmp_path / "inbox" / "rules.jsonl", lines)
    run = await run_once(tmp_path, emulator.url, config_extra='on_unsupported = "reject"\n')
    assert run.returncode == 0, run.stderr[-3000:]
    results = read_results(tmp_path / "outbox" / "rules.results.jsonl")
    assert len(results) == len(ALL)
    for result, (_, expected, lossy) in zip(results, ALL, strict=True):
        if lossy:
            assert result["status"] == "invalid", result
            reason = result["error"]["message"]
            assert reason == f'line {result["line"]}: ' + "; ".join(lossy_notes(expected)) + (
                ' (on_unsupported = "reject")'
            )
        else:
            assert result["status"] == "succeeded", result
            assert result["adaptations"] == expected
    summary = json.loads((tmp_path / "outbox" / "rules.summary.json").read_text())
    assert summary["counts"]["invalid"] == sum(lossy for _, _, lossy in ALL)


async def test_anthropic_api_version_2026_removes_sampling(tmp_path: Path, emulator: Emulator):
    lines = [
        line("t", "claude-sonnet-4-5", max_tokens=30, temperature=0.5, top_p=0.9, top_k=5),
        {
            "custom_id": "n",
            "params": {
                "model": "claude-haiku-4-5",
                "max_tokens": 9,
                "messages": [msg("q")],
                "temperature": 0.3,
            },
        },
    ]
    write_jsonl(tmp_path / "inbox" / "v.jsonl", lines)
    extra = '[providers.anthropic]\napi_version = "2026-10-21"\n'
    run = await run_once(tmp_path, emulator.url, config_extra=extra)
    assert run.returncode == 0, run.stderr[-3000:]
    first, second = read_results(tmp_path / "outbox" / "v.results.jsonl")
    assert first["status"] == second["status"] == "succeeded", (first, second)
    assert first["adaptations"] == [
        f"{p} removed: Anthropic API version 2026-10-21 does not accept it"
        for p in ("temperature", "top_p", "top_k")
    ]
    assert second["adaptations"] == [
        "temperature removed: Anthropic API version 2026-10-21 does not accept it"
    ]


def charged_saving(results: list[dict[str, Any]]) -> float:
    """What caching saved on claude-sonnet-4-5 from the counters (batch half price): reads at
    0.30 instead of 3, 5-minute writes at 3.75 instead of 3 per million."""
    reads = sum(r["usage"]["cached_input_tokens"] for r in results)
    writes = sum(r["usage"]["cache_creation_input_tokens"] for r in results)
    return (reads * 2.7 - writes * 0.75) / 1e6 / 2


@pytest.mark.parametrize("mode", ["auto", "off"])
async def test_claude_shared_system_prompt_is_cached(tmp_path: Path, emulator: Emulator, mode: str):
    """24 requests share a ~3,000-token prompt (Sonnet 4.5 caches from 1,024): worth caching,
    with the 5-minute TTL. However many of them run before the first write lands (the
    emulator's lanes), every one either writes or reads, and the summary's saving is what the
    counters say was charged."""
    system = "You are a meticulous translator. " * 360  # ~3,000 tokens at 4 characters each
    lines = [line(f"c{i}", "claude-sonnet-4-5", system=system, max_tokens=50) for i in range(24)]
    lines.append(line("alone", "claude-sonnet-4-5", system="Different.", max_tokens=50))
    write_jsonl(tmp_path / "inbox" / "cache.jsonl", lines)
    run = await run_once(tmp_path, emulator.url, config_extra=f'prompt_cache = "{mode}"\n')
    assert run.returncode == 0, run.stderr[-3000:]
    results = read_results(tmp_path / "outbox" / "cache.results.jsonl")
    assert all(r["status"] == "succeeded" for r in results), results
    assert len({r["batch_ids"][0] for r in results}) == 1  # one batch
    shared = results[:24]
    written = [r["usage"]["cache_creation_input_tokens"] for r in shared]
    read = [r["usage"]["cached_input_tokens"] for r in shared]
    summary = json.loads((tmp_path / "outbox" / "cache.summary.json").read_text())
    if mode == "off":
        assert written == read == [0] * 24
        assert all(r["adaptations"] == [] for r in shared)
        assert summary["prompt_cache"]["paid_off"] is None
        return
    assert "24 requests share a system prompt of ~2970 tokens: marked with the 5m TTL" in run.stderr
    assert all(bool(w) != bool(r) for w, r in zip(written, read, strict=True))
    assert sum(1 for w in written if w) >= 1 and sum(1 for r in read if r) >= 1
    head = "system prompt shared in its batch marked for prompt caching: "
    for r, w, rd in zip(shared, written, read, strict=True):
        (note,) = r["adaptations"]
        wrote = f"{w} tokens written to the cache (5m TTL)"
        assert note == head + (wrote if w else f"{rd} tokens read from the cache")
        assert r["cost_usd"] is not None and r["cost_usd"] > 0
    assert results[24]["adaptations"] == [] and results[24]["usage"]["cached_input_tokens"] == 0
    assert summary["tokens"]["cache_creation_input_tokens"] == sum(written)
    assert summary["tokens"]["cached_input_tokens"] == sum(read)
    cache = summary["prompt_cache"]
    assert (cache["tokens_written"], cache["tokens_read"]) == (sum(written), sum(read))
    assert cache["net_savings_usd"] == pytest.approx(charged_saving(shared), abs=1e-7)
    assert cache["paid_off"] is (cache["net_savings_usd"] > 0)


async def test_prompt_below_the_minimum_is_not_marked(tmp_path: Path, emulator: Emulator):
    """~700 tokens is below Sonnet 4.5's minimum cacheable prefix (1,024): nothing would be
    cached, so nothing is marked and nothing is claimed."""
    system = "You are a meticulous translator. " * 85
    lines = [line(f"s{i}", "claude-sonnet-4-5", system=system, max_tokens=20) for i in range(24)]
    write_jsonl(tmp_path / "inbox" / "short.jsonl", lines)
    run = await run_once(tmp_path, emulator.url)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "below claude-sonnet-4-5's minimum cacheable prefix of 1024 tokens" in run.stderr
    results = read_results(tmp_path / "outbox" / "short.results.jsonl")
    assert all(r["status"] == "succeeded" and r["adaptations"] == [] for r in results), results
    assert all(r["usage"]["cache_creation_input_tokens"] == 0 for r in results)
    assert all(r["usage"]["cached_input_tokens"] == 0 for r in results)


async def test_cache_priming_warms_the_cache_before_the_batch(tmp_path: Path, emulator: Emulator):
    """Priming writes the prefix once at the 1-hour TTL; every request of the batch reads."""
    system = "You are a careful summariser of legal text. " * 450  # ~4,950 tokens
    lines = [line(f"p{i}", "claude-haiku-4-5", system=system, max_tokens=30) for i in range(4)]
    write_jsonl(tmp_path / "inbox" / "prime.jsonl", lines)
    run = await run_once(tmp_path, emulator.url, config_extra="cache_priming = true\n")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "marked with the 1h TTL, primed first" in run.stderr
    assert "cache primed" in run.stderr and "its cost is in no file's summary" in run.stderr
    results = read_results(tmp_path / "outbox" / "prime.results.jsonl")
    assert [r["custom_id"] for r in results] == [f"p{i}" for i in range(4)]  # no primer line
    assert all(r["status"] == "succeeded" for r in results), results
    # The primer wrote the cache, so every request of the batch reads it.
    assert all(r["usage"]["cached_input_tokens"] > 0 for r in results)
    assert all(r["usage"]["cache_creation_input_tokens"] == 0 for r in results)
    assert all(r["adaptations"][0].endswith("tokens read from the cache") for r in results)
    summary = json.loads((tmp_path / "outbox" / "prime.summary.json").read_text())
    assert summary["prompt_cache"]["paid_off"] is True
    anthropic = (await journal(emulator.url))["providers"]["anthropic"]
    assert anthropic["batches_created"] == 2  # the primer, then the batch
    assert anthropic["duplicate_items"] == 0
