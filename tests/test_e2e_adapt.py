"""End to end: every adaptation rule through ``batchd run --once`` against the strict emulator.

The emulator enforces the providers' request rules from its own catalogue (never the
daemon's), so an unadapted request would come back failed. Here every line succeeds and its
result carries the adaptations the daemon recorded; under ``on_unsupported = "reject"`` the
lines that needed a removal or clamp come back invalid instead, and the rest still succeed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters.emulator import Emulator

from .daemon_harness import journal, read_results, run_once, write_jsonl

SYS = {"role": "system", "content": "Answer briefly."}


def msg(text: str, role: str = "user") -> dict[str, str]:
    return {"role": role, "content": text}


def line(cid: str, model: str, messages: list[dict[str, Any]] | None = None, **extra: Any):
    return {"custom_id": cid, "model": model, "messages": messages or [msg(f"q {cid}")], **extra}


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


async def test_every_rule_succeeds_against_the_strict_emulator(tmp_path: Path, emulator: Emulator):
    lines = [case[0] for case in CASES]
    write_jsonl(tmp_path / "inbox" / "rules.jsonl", lines)
    run = await run_once(tmp_path, emulator.url)
    assert run.returncode == 0, run.stderr[-3000:]
    results = read_results(tmp_path / "outbox" / "rules.results.jsonl")
    assert len(results) == len(CASES)
    for result, (src, expected, _) in zip(results, CASES, strict=True):
        assert result["custom_id"] == src["custom_id"]
        assert result["status"] == "succeeded", result
        assert result["adaptations"] == expected, result["custom_id"]
    providers = (await journal(emulator.url))["providers"]
    assert all(providers[p]["items_failed"] == 0 for p in ("openai", "anthropic", "gemini"))


async def test_reject_policy_turns_lossy_lines_invalid(tmp_path: Path, emulator: Emulator):
    lines = [case[0] for case in CASES]
    write_jsonl(tmp_path / "inbox" / "rules.jsonl", lines)
    run = await run_once(tmp_path, emulator.url, config_extra='on_unsupported = "reject"\n')
    assert run.returncode == 0, run.stderr[-3000:]
    results = read_results(tmp_path / "outbox" / "rules.results.jsonl")
    for result, (_, expected, lossy) in zip(results, CASES, strict=True):
        if lossy:
            assert result["status"] == "invalid", result
            reason = result["error"]["message"]
            lossy_notes = [n for n in expected if "removed" in n or "clamped" in n]
            assert all(note in reason for note in lossy_notes), (reason, lossy_notes)
            assert reason.endswith('(on_unsupported = "reject")')
        else:
            assert result["status"] == "succeeded", result
            assert result["adaptations"] == expected
    summary = json.loads((tmp_path / "outbox" / "rules.summary.json").read_text())
    assert summary["counts"]["invalid"] == sum(lossy for _, _, lossy in CASES)


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


@pytest.mark.parametrize("mode", ["auto", "off"])
async def test_claude_shared_system_prompt_is_cached(tmp_path: Path, emulator: Emulator, mode: str):
    system = "You are a meticulous translator. " * 200  # ~1,600 tokens, shared by every line
    lines = [line(f"c{i}", "claude-sonnet-4-5", system=system, max_tokens=50) for i in range(4)]
    lines.append(line("alone", "claude-sonnet-4-5", system="Different.", max_tokens=50))
    write_jsonl(tmp_path / "inbox" / "cache.jsonl", lines)
    run = await run_once(tmp_path, emulator.url, config_extra=f'prompt_cache = "{mode}"\n')
    assert run.returncode == 0, run.stderr[-3000:]
    results = read_results(tmp_path / "outbox" / "cache.results.jsonl")
    assert all(r["status"] == "succeeded" for r in results), results
    assert len({r["batch_ids"][0] for r in results}) == 1  # one batch
    shared = results[:4]
    written = [r["usage"]["cache_creation_input_tokens"] for r in shared]
    read = [r["usage"]["cached_input_tokens"] for r in shared]
    summary = json.loads((tmp_path / "outbox" / "cache.summary.json").read_text())
    if mode == "off":
        assert written == read == [0, 0, 0, 0]
        assert all(r["adaptations"] == [] for r in shared)
        return
    assert (
        sum(1 for w in written if w) == 1 and sum(1 for r in read if r) == 3
    )  # one write, 3 reads
    for r in shared:
        (note,) = r["adaptations"]
        assert note.startswith("system prompt shared in its batch marked for prompt caching")
        assert r["cost_usd"] is not None and r["cost_usd"] > 0
    assert results[4]["adaptations"] == [] and results[4]["usage"]["cached_input_tokens"] == 0
    assert summary["tokens"]["cache_creation_input_tokens"] == sum(written)
    assert summary["tokens"]["cached_input_tokens"] == sum(read)
    assert summary["cost_usd"] < summary["cost_usd_live"]
    assert summary["savings_usd"] == pytest.approx(summary["cost_usd_live"] - summary["cost_usd"])
    cache = summary["prompt_cache"]
    assert (cache["tokens_written"], cache["tokens_read"]) == (sum(written), sum(read))
    assert cache["paid_off"] is True and cache["net_savings_usd"] > 0  # 3 reads beat 1 write


async def test_cache_priming_warms_the_cache_before_the_batch(tmp_path: Path, emulator: Emulator):
    system = "You are a careful summariser of legal text. " * 150
    lines = [line(f"p{i}", "claude-haiku-4-5", system=system, max_tokens=30) for i in range(4)]
    write_jsonl(tmp_path / "inbox" / "prime.jsonl", lines)
    run = await run_once(tmp_path, emulator.url, config_extra="cache_priming = true\n")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "cache primed" in run.stderr
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
