"""Every adaptation rule of issue #4, table-driven: the exact body sent and the notes recorded.

Each case is one JSONL line parsed by :func:`daemon.lines.iter_lines` (so validation, routing
and adaptation all run), under a policy; the assertion is on the provider-native body that
goes into the batch and on the ``adaptations`` the user reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon.adapt import Note, Policy, adapt_unified
from daemon.lines import Invalid, Request, iter_lines
from daemon.registry import Registry, default_registry

HI = [{"role": "user", "content": "hi"}]
V2026 = Policy(anthropic_api_version="2026-10-21")
REJECT = Policy(on_unsupported="reject")


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


@pytest.mark.parametrize(
    ("line", "policy", "body", "notes"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
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
    ],
)
def test_reject_policy_refuses_lossy_changes(
    tmp_path: Path, line: dict[str, Any], reason: str
) -> None:
    result = parse(tmp_path, line, REJECT)
    assert isinstance(result, Invalid)
    assert result.reason == reason
    assert result.model == line["model"] and result.provider is not None


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
