"""Every adaptation rule, table-driven: the exact body sent and the notes recorded.

Each case is one JSONL line parsed by :func:`daemon.reading.iter_lines` (so validation, routing
and adaptation all run), under a policy; the assertion is on the provider-native body that
goes into the batch and on the ``adaptations`` the user reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon.adapt import Note, Policy, adapt_unified
from daemon.reading import iter_lines
from daemon.registry import Registry, default_registry
from daemon.validate import Invalid, Request

HI = [{"role": "user", "content": "hi"}]
V2026 = Policy(anthropic_api_version="2026-10-21")
REJECT = Policy(on_unsupported="reject")
MANUAL_2000 = {"type": "enabled", "budget_tokens": 2000}
MANUAL_8000 = {"type": "enabled", "budget_tokens": 8000}


def parse(tmp_path: Path, line: dict[str, Any], policy: Policy | None = None) -> Request | Invalid:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(line) + "\n")
    (result,) = iter_lines(path, policy=policy or Policy())
    return result


def unified(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": HI} | fields


# (id, line, policy, expected body, expected adaptations)
CASES: list[tuple[str, dict[str, Any], Policy | None, dict[str, Any], list[str]]] = [
    # -- the product spec ------------------------------------------------------------------
    (
        "o3-mini: temperature removed",
        unified("o3-mini", temperature=0.2),
        None,
        {"model": "o3-mini", "messages": HI},
        ["temperature removed: o3-mini does not support it"],
    ),
    (
        "o3-mini: even the default temperature is removed",
        unified("o3-mini", temperature=1, top_p=1),
        None,
        {"model": "o3-mini", "messages": HI},
        [
            "temperature removed: o3-mini does not support it",
            "top_p removed: o3-mini does not support it",
        ],
    ),
    (
        "o1-mini: system folded into the first user message",
        unified(
            "o1-mini", system="Be brief.", messages=[*HI, {"role": "assistant", "content": "x"}]
        ),
        None,
        {
            "model": "o1-mini",
            "messages": [
                {"role": "user", "content": "Be brief.\n\nhi"},
                {"role": "assistant", "content": "x"},
            ],
        },
        ["system message folded into the first user message (o1-mini has no system role)"],
    ),
    (
        "o1-preview: system and developer messages folded, parts kept",
        unified(
            "o1-preview",
            messages=[
                {"role": "system", "content": "S"},
                {"role": "developer", "content": "D"},
                {"role": "user", "content": [{"type": "text", "text": "q"}]},
            ],
        ),
        None,
        {
            "model": "o1-preview",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "S\n\nD"}, {"type": "text", "text": "q"}],
                }
            ],
        },
        ["system message folded into the first user message (o1-preview has no system role)"],
    ),
    (
        "Claude: top-level system, max_tokens 1024 by default, temperature kept in 0-1",
        unified(
            "claude-sonnet-4-5",
            messages=[{"role": "system", "content": "You are a translator."}, *HI],
            temperature=0.3,
        ),
        None,
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "system": "You are a translator.",
            "messages": HI,
            "temperature": 0.3,
        },
        [
            "system message moved to the top-level system field",
            "max_tokens set to 1024 (Claude requires it)",
        ],
    ),
    (
        "Claude: temperature above 1 clamped",
        unified("claude-haiku-4-5", temperature=1.4, max_tokens=50),
        None,
        {"model": "claude-haiku-4-5", "max_tokens": 50, "messages": HI, "temperature": 1.0},
        ["temperature 1.4 clamped to 1.0 (Claude range 0-1)"],
    ),
    (
        "everything else: the standard format, nothing recorded",
        unified("gpt-4o-mini", system="S", temperature=1.5, top_p=0.9, max_tokens=9, stop="x"),
        None,
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": "S"}, *HI],
            "max_tokens": 9,
            "temperature": 1.5,
            "top_p": 0.9,
            "stop": "x",
        },
        [],
    ),
    # -- OpenAI reasoning models -----------------------------------------------------------
    (
        "o1: max_completion_tokens, developer role, non-default sampling removed",
        unified(
            "o1",
            system="S",
            max_tokens=100,
            temperature=0.2,
            top_p=0.5,
            presence_penalty=0.5,
            frequency_penalty=0,
            logprobs=True,
        ),
        None,
        {
            "model": "o1",
            "messages": [{"role": "developer", "content": "S"}, *HI],
            "max_completion_tokens": 100,
            "frequency_penalty": 0,
        },
        [
            "system message sent as a developer message (o1 uses the developer role)",
            "max_tokens sent as max_completion_tokens (o1 counts reasoning tokens in it)",
            "temperature 0.2 removed: o1 accepts only the default (1)",
            "top_p 0.5 removed: o1 accepts only the default (1)",
            "presence_penalty 0.5 removed: o1 accepts only the default (0)",
            "logprobs true removed: o1 accepts only the default (false)",
        ],
    ),
    (
        "o1: the default temperature is kept",
        unified("o1", temperature=1, reasoning_effort="high"),
        None,
        {"model": "o1", "messages": HI, "reasoning_effort": "high", "temperature": 1},
        [],
    ),
    (
        "o3: stop removed",
        unified("o3", stop=["END"], max_tokens=20),
        None,
        {"model": "o3", "messages": HI, "max_completion_tokens": 20},
        [
            "max_tokens sent as max_completion_tokens (o3 counts reasoning tokens in it)",
            "stop removed: o3 does not support it",
        ],
    ),
    (
        "o4-mini: stop removed, developer role",
        unified("o4-mini", messages=[{"role": "system", "content": "S"}, *HI], stop="END"),
        None,
        {"model": "o4-mini", "messages": [{"role": "developer", "content": "S"}, *HI]},
        [
            "system message sent as a developer message (o4-mini uses the developer role)",
            "stop removed: o4-mini does not support it",
        ],
    ),
    (
        "gpt-5: only the default temperature; an effort it lacks removed",
        unified("gpt-5-mini", temperature=0.7, reasoning_effort="none"),
        None,
        {"model": "gpt-5-mini", "messages": HI},
        [
            "reasoning_effort 'none' removed: gpt-5-mini accepts minimal, low, medium, high",
            "temperature 0.7 removed: gpt-5-mini accepts only the default (1)",
        ],
    ),
    (
        "gpt-5-nano: penalties removed",
        unified("gpt-5-nano", frequency_penalty=1.0),
        None,
        {"model": "gpt-5-nano", "messages": HI},
        ["frequency_penalty 1.0 removed: gpt-5-nano accepts only the default (0)"],
    ),
    (
        "gpt-5.1: sampling kept while reasoning_effort is absent (none)",
        unified("gpt-5.1", temperature=0.7, top_p=0.9),
        None,
        {"model": "gpt-5.1", "messages": HI, "temperature": 0.7, "top_p": 0.9},
        [],
    ),
    (
        "gpt-5.1: sampling kept with reasoning_effort none",
        unified("gpt-5.1", temperature=0.7, reasoning_effort="none"),
        None,
        {"model": "gpt-5.1", "messages": HI, "reasoning_effort": "none", "temperature": 0.7},
        [],
    ),
    (
        "gpt-5.2: sampling removed with another reasoning_effort",
        unified("gpt-5.2", temperature=0.7, logprobs=True, reasoning_effort="high"),
        None,
        {"model": "gpt-5.2", "messages": HI, "reasoning_effort": "high"},
        [
            "temperature removed: gpt-5.2 accepts it only with reasoning_effort none "
            "(this request: high)",
            "logprobs removed: gpt-5.2 accepts it only with reasoning_effort none "
            "(this request: high)",
        ],
    ),
    (
        "gpt-4o: parameters OpenAI does not have are removed",
        unified("gpt-4o", top_k=5, reasoning_effort="low"),
        None,
        {"model": "gpt-4o", "messages": HI},
        [
            "reasoning_effort removed: gpt-4o does not support it",
            "top_k removed: gpt-4o does not support it",
        ],
    ),
    # -- Claude ----------------------------------------------------------------------------
    (
        "Claude: several system messages joined, same-role turns merged, stop_sequences",
        unified(
            "claude-opus-4-1",
            system="S0",
            messages=[
                {"role": "system", "content": "S1"},
                {"role": "user", "content": "a"},
                {"role": "user", "content": "b"},
                {"role": "assistant", "content": "c"},
                {"role": "developer", "content": "D"},
                {"role": "user", "content": [{"type": "text", "text": "d"}]},
                {"role": "user", "content": "e"},
            ],
            stop="END",
            max_tokens=10,
            top_k=40,
        ),
        None,
        {
            "model": "claude-opus-4-1",
            "max_tokens": 10,
            "system": "S0\n\nS1\n\nD",
            "messages": [
                {"role": "user", "content": "a\n\nb"},
                {"role": "assistant", "content": "c"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "d"}, {"type": "text", "text": "e"}],
                },
            ],
            "stop_sequences": ["END"],
            "top_k": 40,
        },
        [
            "3 system messages joined into the top-level system field",
            "developer messages treated as system messages",
            "consecutive same-role messages merged (5 messages → 3 turns)",
        ],
    ),
    (
        "Claude: OpenAI-only parameters removed",
        unified("claude-3-5-haiku-latest", max_tokens=5, presence_penalty=1, logprobs=False),
        None,
        {"model": "claude-3-5-haiku-latest", "max_tokens": 5, "messages": HI},
        [
            "presence_penalty removed: claude-3-5-haiku-latest does not support it",
            "logprobs removed: claude-3-5-haiku-latest does not support it",
        ],
    ),
    (
        "Claude under API version 2026-10-21: temperature, top_p, top_k removed",
        unified("claude-sonnet-4-5", max_tokens=5, temperature=0.5, top_p=0.9, top_k=3),
        V2026,
        {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HI},
        [
            "temperature removed: Anthropic API version 2026-10-21 does not accept it",
            "top_p removed: Anthropic API version 2026-10-21 does not accept it",
            "top_k removed: Anthropic API version 2026-10-21 does not accept it",
        ],
    ),
    # -- Gemini ----------------------------------------------------------------------------
    (
        "Gemini: systemInstruction, model role, maxOutputTokens, topP, stopSequences",
        unified(
            "gemini-2.5-flash",
            messages=[
                {"role": "system", "content": "S"},
                *HI,
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "b"},
            ],
            max_tokens=64,
            temperature=1.2,
            top_p=0.8,
            top_k=20,
            stop="END",
        ),
        None,
        {
            "contents": [
                {"role": "user", "parts": [{"text": "hi"}]},
                {"role": "model", "parts": [{"text": "a"}]},
                {"role": "user", "parts": [{"text": "b"}]},
            ],
            "systemInstruction": {"parts": [{"text": "S"}]},
            "generationConfig": {
                "maxOutputTokens": 64,
                "temperature": 1.2,
                "topP": 0.8,
                "topK": 20,
                "stopSequences": ["END"],
            },
        },
        ["system message moved to systemInstruction"],
    ),
    (
        "Gemini: penalties and logprobs removed",
        unified("gemini-2.0-flash", presence_penalty=0.5, logprobs=True),
        None,
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        [
            "presence_penalty removed: gemini-2.0-flash does not support it",
            "logprobs removed: gemini-2.0-flash does not support it",
        ],
    ),
    # -- native lines get the model's rules too ------------------------------------------
    (
        "native OpenAI line for o3-mini",
        {
            "custom_id": "n",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "o3-mini",
                "messages": [{"role": "system", "content": "S"}, *HI],
                "max_tokens": 7,
                "temperature": 0,
                "logprobs": True,
                "top_logprobs": 2,
                "response_format": {"type": "text"},
            },
        },
        None,
        {
            "model": "o3-mini",
            "messages": [{"role": "developer", "content": "S"}, *HI],
            "max_completion_tokens": 7,
            "response_format": {"type": "text"},
        },
        [
            "system message sent as a developer message (o3-mini uses the developer role)",
            "max_tokens sent as max_completion_tokens (o3-mini counts reasoning tokens in it)",
            "temperature removed: o3-mini does not support it",
            "logprobs removed: o3-mini does not support it",
            "top_logprobs removed: it needs logprobs",
        ],
    ),
    (
        "native Anthropic line: temperature clamped",
        {"params": {"model": "claude-opus-4-5", "max_tokens": 9, "messages": HI, "temperature": 2}},
        None,
        {"model": "claude-opus-4-5", "max_tokens": 9, "messages": HI, "temperature": 1.0},
        ["temperature 2 clamped to 1.0 (Claude range 0-1)"],
    ),
]


def native_claude(model: str, **params: Any) -> dict[str, Any]:
    return {"custom_id": "n", "params": {"model": model, "messages": HI} | params}


def native_openai(model: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": "n",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": HI} | body,
    }


def together(model: str) -> str:
    return (
        f"top_p removed: {model} does not accept temperature and top_p together "
        "(temperature kept)"
    )


# The model generations: stop on the gpt-5 family, Claude's sampling generations, extended
# thinking and output ceilings. Same shape as CASES.
GENERATIONS: list[tuple[str, dict[str, Any], Policy | None, dict[str, Any], list[str]]] = [
    *[
        (
            f"{model}: stop removed",
            unified(model, stop=["END"]),
            None,
            {"model": model, "messages": HI},
            [f"stop removed: {model} does not support it"],
        )
        for model in ("gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-5.1", "gpt-5.2", "gpt-5.4")
    ],
    (
        "a gpt-5.x newer than the registry follows the newest gpt-5.x rules",
        unified("gpt-5.7", stop="END", temperature=0.4),
        None,
        {"model": "gpt-5.7", "messages": HI, "temperature": 0.4},
        ["stop removed: gpt-5.7 does not support it"],
    ),
    (
        "gpt-5 chat variants keep stop (the standard format)",
        unified("gpt-5-chat-latest", stop="END"),
        None,
        {"model": "gpt-5-chat-latest", "messages": HI, "stop": "END"},
        [],
    ),
    *[
        (
            f"{model}: temperature and top_p together, top_p removed",
            unified(model, temperature=0.3, top_p=0.9, max_tokens=9),
            None,
            {"model": model, "max_tokens": 9, "messages": HI, "temperature": 0.3},
            [together(model)],
        )
        for model in (
            "claude-opus-4-1",
            "claude-opus-4-5",
            "claude-opus-4-6",
            "claude-sonnet-4-5",
            "claude-haiku-4-5",
        )
    ],
    (
        "Claude: top_p alone is kept where the pair is refused",
        unified("claude-haiku-4-5", top_p=0.9, max_tokens=9),
        None,
        {"model": "claude-haiku-4-5", "max_tokens": 9, "messages": HI, "top_p": 0.9},
        [],
    ),
    *[
        (
            f"{model}: temperature and top_p together are still accepted",
            unified(model, temperature=0.3, top_p=0.9, max_tokens=9),
            None,
            {"model": model, "max_tokens": 9, "messages": HI, "temperature": 0.3, "top_p": 0.9},
            [],
        )
        for model in ("claude-opus-4-0", "claude-sonnet-4-20250514", "claude-3-7-sonnet-latest")
    ],
    *[
        (
            f"{model}: no temperature (unless exactly 1), no top_p, no top_k",
            unified(model, temperature=0.5, top_p=0.9, top_k=5, max_tokens=9),
            None,
            {"model": model, "max_tokens": 9, "messages": HI},
            [
                f"temperature 0.5 removed: {model} accepts only the default (1)",
                f"top_p removed: {model} does not support it",
                f"top_k removed: {model} does not support it",
            ],
        )
        for model in ("claude-sonnet-4-6", "claude-opus-4-7", "claude-opus-4-8")
    ],
    (
        "Claude after Opus 4.6: temperature 1.0 is kept",
        unified("claude-opus-4-7", temperature=1.0, max_tokens=9),
        None,
        {"model": "claude-opus-4-7", "max_tokens": 9, "messages": HI, "temperature": 1.0},
        [],
    ),
    (
        "Claude after Opus 4.6: a temperature above 1 is removed, not clamped",
        unified("claude-sonnet-4-6", temperature=1.4, max_tokens=9),
        None,
        {"model": "claude-sonnet-4-6", "max_tokens": 9, "messages": HI},
        ["temperature 1.4 removed: claude-sonnet-4-6 accepts only the default (1)"],
    ),
    *[
        (
            f"{model} (newer than the registry) follows the newest Claude rules",
            unified(model, temperature=0.2, max_tokens=9),
            None,
            {"model": model, "max_tokens": 9, "messages": HI},
            [f"temperature 0.2 removed: {model} accepts only the default (1)"],
        )
        for model in ("claude-opus-4-9", "claude-sonnet-4-7", "claude-opus-5")
    ],
    # -- extended thinking (native Anthropic lines) --------------------------------------
    (
        "Opus 4.7: manual thinking sent as adaptive",
        native_claude(
            "claude-opus-4-7", max_tokens=4000, thinking={"type": "enabled", "budget_tokens": 2000}
        ),
        None,
        {
            "model": "claude-opus-4-7",
            "messages": HI,
            "max_tokens": 4000,
            "thinking": {"type": "adaptive"},
        },
        [
            'thinking {"type": "enabled", "budget_tokens": 2000} sent as {"type": "adaptive"}: '
            "claude-opus-4-7 does not accept manual extended thinking (budget_tokens dropped)"
        ],
    ),
    (
        "Opus 4.8: adaptive thinking is left alone",
        native_claude("claude-opus-4-8", max_tokens=4000, thinking={"type": "adaptive"}),
        None,
        {
            "model": "claude-opus-4-8",
            "messages": HI,
            "max_tokens": 4000,
            "thinking": {"type": "adaptive"},
        },
        [],
    ),
    (
        "thinking on: temperature only 1, no top_k, top_p 0.95-1",
        native_claude(
            "claude-opus-4-6",
            max_tokens=4000,
            thinking={"type": "enabled", "budget_tokens": 2000},
            temperature=0.5,
            top_p=0.5,
            top_k=10,
        ),
        None,
        {
            "model": "claude-opus-4-6",
            "messages": HI,
            "max_tokens": 4000,
            "thinking": {"type": "enabled", "budget_tokens": 2000},
            "top_p": 0.95,
        },
        [
            "temperature 0.5 removed: with extended thinking claude-opus-4-6 accepts only 1",
            "top_p 0.5 clamped to 0.95 (Claude range with extended thinking 0.95-1)",
            "top_k removed: claude-opus-4-6 does not accept it with extended thinking",
        ],
    ),
    (
        "thinking on: temperature 1 kept, then the pair rule drops top_p",
        native_claude(
            "claude-sonnet-4-5",
            max_tokens=4000,
            thinking={"type": "enabled", "budget_tokens": 2000},
            temperature=1,
            top_p=0.97,
        ),
        None,
        {
            "model": "claude-sonnet-4-5",
            "messages": HI,
            "max_tokens": 4000,
            "thinking": {"type": "enabled", "budget_tokens": 2000},
            "temperature": 1,
        },
        [together("claude-sonnet-4-5")],
    ),
    (
        "adaptive thinking limits sampling too",
        native_claude(
            "claude-opus-4-6", max_tokens=100, thinking={"type": "adaptive"}, temperature=0.3
        ),
        None,
        {
            "model": "claude-opus-4-6",
            "messages": HI,
            "max_tokens": 100,
            "thinking": {"type": "adaptive"},
        },
        ["temperature 0.3 removed: with extended thinking claude-opus-4-6 accepts only 1"],
    ),
    (
        "thinking disabled: the usual sampling rules",
        native_claude(
            "claude-opus-4-0", max_tokens=100, thinking={"type": "disabled"}, temperature=0.3
        ),
        None,
        {
            "model": "claude-opus-4-0",
            "messages": HI,
            "max_tokens": 100,
            "thinking": {"type": "disabled"},
            "temperature": 0.3,
        },
        [],
    ),
    (
        "thinking budget raised to 1024, max_tokens raised above it",
        native_claude(
            "claude-sonnet-4-6", max_tokens=500, thinking={"type": "enabled", "budget_tokens": 100}
        ),
        None,
        {
            "model": "claude-sonnet-4-6",
            "messages": HI,
            "max_tokens": 1524,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
        },
        [
            "thinking budget_tokens 100 raised to 1024 (Claude's minimum)",
            "max_tokens 500 raised to 1524: with extended thinking max_tokens counts the "
            "thinking and must exceed budget_tokens (1024)",
        ],
    ),
    (
        "thinking budget at the output ceiling: max_tokens clamped, then the budget lowered",
        native_claude(
            "claude-haiku-4-5",
            max_tokens=100_000,
            thinking={"type": "enabled", "budget_tokens": 70_000},
        ),
        None,
        {
            "model": "claude-haiku-4-5",
            "messages": HI,
            "max_tokens": 64000,
            "thinking": {"type": "enabled", "budget_tokens": 63999},
        },
        [
            "max_tokens 100000 clamped to 64000 (claude-haiku-4-5 writes at most 64000 output "
            "tokens)",
            "thinking budget_tokens 70000 lowered to 63999: it must stay below max_tokens (64000)",
        ],
    ),
    # -- output ceilings ------------------------------------------------------------------
    (
        "gpt-4o-mini: max_tokens clamped to 16384",
        unified("gpt-4o-mini", max_tokens=1_000_000),
        None,
        {"model": "gpt-4o-mini", "messages": HI, "max_tokens": 16384},
        ["max_tokens 1000000 clamped to 16384 (gpt-4o-mini writes at most 16384 output tokens)"],
    ),
    (
        "an absurd integer is clamped too",
        unified("gpt-4.1", max_tokens=10**20),
        None,
        {"model": "gpt-4.1", "messages": HI, "max_tokens": 32768},
        [
            f"max_tokens {10**20} clamped to 32768 (gpt-4.1 writes at most 32768 output tokens)",
        ],
    ),
    (
        "gpt-5: the ceiling applies to max_completion_tokens",
        unified("gpt-5", max_tokens=200_000),
        None,
        {"model": "gpt-5", "messages": HI, "max_completion_tokens": 128000},
        [
            "max_tokens sent as max_completion_tokens (gpt-5 counts reasoning tokens in it)",
            "max_tokens 200000 clamped to 128000 (gpt-5 writes at most 128000 output tokens)",
        ],
    ),
    (
        "native OpenAI max_completion_tokens clamped",
        native_openai("o3", max_completion_tokens=150_000),
        None,
        {"model": "o3", "messages": HI, "max_completion_tokens": 100000},
        [
            "max_completion_tokens 150000 clamped to 100000 (o3 writes at most 100000 output "
            "tokens)"
        ],
    ),
    (
        "Claude: max_tokens clamped to the model's ceiling",
        unified("claude-sonnet-4-5", max_tokens=200_000),
        None,
        {"model": "claude-sonnet-4-5", "max_tokens": 64000, "messages": HI},
        [
            "max_tokens 200000 clamped to 64000 (claude-sonnet-4-5 writes at most 64000 output "
            "tokens)"
        ],
    ),
    (
        "Claude 3 Haiku: 4096",
        native_claude("claude-3-haiku-20240307", max_tokens=8192),
        None,
        {"model": "claude-3-haiku-20240307", "messages": HI, "max_tokens": 4096},
        [
            "max_tokens 8192 clamped to 4096 (claude-3-haiku-20240307 writes at most 4096 output "
            "tokens)"
        ],
    ),
    (
        "no ceiling known: the provider decides",
        unified("gemini-2.5-pro", max_tokens=1_000_000),
        None,
        {
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {"maxOutputTokens": 1_000_000},
        },
        [],
    ),
    (
        "API version 2026-10-21 on a model without temperature: the version's rule first",
        unified("claude-opus-4-8", temperature=0.5, max_tokens=9),
        V2026,
        {"model": "claude-opus-4-8", "max_tokens": 9, "messages": HI},
        ["temperature removed: Anthropic API version 2026-10-21 does not accept it"],
    ),
]


@pytest.mark.parametrize(
    ("line", "policy", "body", "notes"),
    [case[1:] for case in CASES + GENERATIONS],
    ids=[case[0] for case in CASES + GENERATIONS],
)
def test_rule(
    tmp_path: Path,
    line: dict[str, Any],
    policy: Policy | None,
    body: dict[str, Any],
    notes: list[str],
) -> None:
    result = parse(tmp_path, line, policy)
    assert isinstance(result, Request), result
    assert result.body == body
    assert result.adaptations == notes
    assert json.dumps(result.adaptations) == json.dumps(notes)  # stored as plain strings


def test_gemini_temperature_clamped_to_0_2() -> None:
    """Line validation already keeps temperature within 0-2, so the Gemini clamp is a guard
    for bodies built otherwise; it is checked on the adapter directly."""
    body, notes = adapt_unified(
        {"model": "gemini-2.5-pro", "messages": HI, "temperature": 2.5},
        "gemini-2.5-pro",
        "gemini",
        Policy(),
    )
    assert body["generationConfig"] == {"temperature": 2.0}
    assert notes == ["temperature 2.5 clamped to 2.0 (Gemini range 0-2)"]


def test_notes_carry_a_kind_and_whether_they_lose_something(tmp_path: Path) -> None:
    result = parse(tmp_path, unified("o1-mini", system="S", temperature=0.5, max_tokens=3))
    assert isinstance(result, Request)
    assert [(n.kind, n.lossy) for n in result.adaptations] == [
        ("system folded into user", False),
        ("max_tokens → max_completion_tokens", False),
        ("temperature removed", True),
    ]
    assert all(isinstance(n, Note) for n in result.adaptations)


# ---------------------------------------------------------------------------------------------
# on_unsupported = "reject"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            unified("o3-mini", temperature=0.2),
            'line 1: temperature removed: o3-mini does not support it (on_unsupported = "reject")',
        ),
        (
            unified("claude-sonnet-4-5", temperature=1.4),
            'line 1: temperature 1.4 clamped to 1.0 (Claude range 0-1) (on_unsupported = "reject")',
        ),
        (
            unified("o3", stop="x", temperature=0.5),
            "line 1: temperature 0.5 removed: o3 accepts only the default (1); stop removed: o3 "
            'does not support it (on_unsupported = "reject")',
        ),
        (
            unified("gpt-5.2", stop="x"),
            'line 1: stop removed: gpt-5.2 does not support it (on_unsupported = "reject")',
        ),
        (
            unified("claude-opus-4-1", temperature=0.5, top_p=0.5),
            f'line 1: {together("claude-opus-4-1")} (on_unsupported = "reject")',
        ),
        (
            unified("claude-sonnet-4-6", temperature=0.5),
            "line 1: temperature 0.5 removed: claude-sonnet-4-6 accepts only the default (1) "
            '(on_unsupported = "reject")',
        ),
        (
            unified("gpt-4o", max_tokens=20_000),
            "line 1: max_tokens 20000 clamped to 16384 (gpt-4o writes at most 16384 output "
            'tokens) (on_unsupported = "reject")',
        ),
        (
            native_claude("claude-opus-4-8", max_tokens=9000, thinking=MANUAL_8000),
            'line 1: thinking {"type": "enabled", "budget_tokens": 8000} sent as {"type": '
            '"adaptive"}: claude-opus-4-8 does not accept manual extended thinking '
            '(budget_tokens dropped) (on_unsupported = "reject")',
        ),
        (
            native_claude("claude-opus-4-6", max_tokens=900, thinking=MANUAL_2000),
            "line 1: max_tokens 900 raised to 2900: with extended thinking max_tokens counts the "
            'thinking and must exceed budget_tokens (2000) (on_unsupported = "reject")',
        ),
    ],
)
def test_reject_policy_refuses_lossy_changes(
    tmp_path: Path, line: dict[str, Any], reason: str
) -> None:
    result = parse(tmp_path, line, REJECT)
    assert isinstance(result, Invalid)
    assert result.reason == reason
    model = line.get("model") or line["params"]["model"]
    assert result.model == model and result.provider is not None


def test_reject_policy_still_applies_lossless_changes(tmp_path: Path) -> None:
    result = parse(tmp_path, unified("o1-mini", system="S", max_tokens=5), REJECT)
    assert isinstance(result, Request)
    assert result.body["messages"] == [{"role": "user", "content": "S\n\nhi"}]
    assert result.body["max_completion_tokens"] == 5


# ---------------------------------------------------------------------------------------------
# Unknown models, routes and overrides


def test_unknown_model_says_how_to_add_it(tmp_path: Path) -> None:
    result = parse(tmp_path, unified("llama-3-70b"))
    assert isinstance(result, Invalid)
    assert '[models."llama-3-70b"]' in result.reason
    assert 'provider = "openai", "anthropic" or "gemini"' in result.reason


def test_routed_unknown_model_gets_the_provider_standard_format(tmp_path: Path) -> None:
    policy = Policy(routes={"my-tune*": "anthropic"})
    result = parse(tmp_path, unified("my-tune-1", temperature=1.5), policy)
    assert isinstance(result, Request)
    assert result.body == {
        "model": "my-tune-1",
        "max_tokens": 1024,
        "messages": HI,
        "temperature": 1.0,
    }
    line_routed = parse(tmp_path, unified("my-tune-1", provider="gemini"))
    assert isinstance(line_routed, Request) and line_routed.provider == "gemini"


def test_config_override_adds_a_model_with_its_rules(tmp_path: Path) -> None:
    registry = Registry.load(
        {"acme-reasoner*": {"provider": "openai", "extends": "o3*", "system": "fold-into-user"}}
    )
    result = parse(
        tmp_path, unified("acme-reasoner-2", system="S", stop="x"), Policy(registry=registry)
    )
    assert isinstance(result, Request)
    assert result.body == {
        "model": "acme-reasoner-2",
        "messages": [{"role": "user", "content": "S\n\nhi"}],
    }
    assert result.adaptations[-1] == "stop removed: acme-reasoner-2 does not support it"
    assert default_registry().lookup("acme-reasoner-2") is None  # the packaged one is untouched
