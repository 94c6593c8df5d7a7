"""Adapt a request to its model: the registry's rules turned into body changes, each recorded.

A unified line is first converted to the provider's standard shape, then the model's rules
(from :mod:`daemon.registry`) are applied; native OpenAI and Anthropic lines get the same
model rules, because the provider would refuse them otherwise. Every change of meaning or
position is recorded as a :class:`Note`, a short sentence the user reads in the result's
``adaptations``. Renames into a provider's own vocabulary that change nothing (``stop`` →
``stop_sequences``, ``assistant`` → ``model``, ``max_tokens`` → ``maxOutputTokens``) are not
recorded; a rename with a different meaning (``max_completion_tokens`` also counts reasoning
tokens) is.

A note is *lossy* when it removes or clamps something the user asked for; under
``on_unsupported = "reject"`` a line with a lossy note is refused instead of sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.facts import ANTHROPIC_DEFAULT_API_VERSION

from .registry import SAMPLING_PARAMS, ModelInfo, Registry, default_registry

SYSTEM_ROLES = frozenset({"system", "developer"})
POLICIES = ("adapt", "reject")
LABELS = {"openai": "OpenAI", "anthropic": "Claude", "gemini": "Gemini"}
GEMINI_WIRE = {
    "temperature": "temperature",
    "top_p": "topP",
    "top_k": "topK",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "logprobs": "responseLogprobs",
}


class Note(str):
    """One adaptation: the sentence (it *is* the string, so it stores and compares as one),
    a ``kind`` for counting (``batchd check``) and whether it lost something (``lossy``)."""

    kind: str
    lossy: bool

    def __new__(cls, text: str, kind: str, lossy: bool = False) -> Note:
        note = super().__new__(cls, text)
        note.kind = kind
        note.lossy = lossy
        return note


@dataclass(frozen=True)
class Policy:
    """Everything adaptation depends on besides the request: built once from the config."""

    registry: Registry = field(default_factory=default_registry)
    routes: Mapping[str, str] = field(default_factory=dict)
    on_unsupported: str = "adapt"
    anthropic_api_version: str = ANTHROPIC_DEFAULT_API_VERSION

    @property
    def reject(self) -> bool:
        return self.on_unsupported == "reject"


@dataclass
class _Ctx:
    model: str
    provider: str
    info: ModelInfo
    policy: Policy
    notes: list[Note] = field(default_factory=list)

    def note(self, text: str, kind: str, *, lossy: bool = False) -> None:
        self.notes.append(Note(text, kind, lossy))

    @property
    def label(self) -> str:
        return LABELS[self.provider]


def adapt_unified(
    obj: Mapping[str, Any], model: str, provider: str, policy: Policy
) -> tuple[dict[str, Any], list[Note]]:
    """The provider-native body for a validated unified line, and what was changed."""
    ctx = _Ctx(model, provider, policy.registry.info(model, provider), policy)
    body = _BUILDERS[provider](obj, ctx)
    return body, ctx.notes


def adapt_native(
    body: Mapping[str, Any], model: str, provider: str, policy: Policy
) -> tuple[dict[str, Any], list[Note]]:
    """A native OpenAI body or Anthropic params with the model's rules applied."""
    ctx = _Ctx(model, provider, policy.registry.info(model, provider), policy)
    out = dict(body)
    if provider == "openai":
        _openai_rules(out, ctx)
    else:
        _anthropic_native_rules(out, ctx)
    return out, ctx.notes


# ---------------------------------------------------------------------------------------------
# Rules shared by the providers


def _effort(obj: Mapping[str, Any], ctx: _Ctx) -> tuple[str | None, bool]:
    """(the effective reasoning_effort, whether the request's value is kept)."""
    given = obj.get("reasoning_effort")
    accepted = ctx.info.reasoning_efforts
    if given is None:
        return ctx.info.default_effort, False
    if given in accepted:
        return str(given), True
    if accepted:
        allowed = ", ".join(accepted)
        ctx.note(
            f"reasoning_effort {given!r} removed: {ctx.model} accepts {allowed}",
            "reasoning_effort removed",
            lossy=True,
        )
    else:
        ctx.note(
            f"reasoning_effort removed: {ctx.model} does not support it",
            "reasoning_effort removed",
            lossy=True,
        )
    return ctx.info.default_effort, False


def _range_text(low: float | None, high: float | None) -> str:
    lo = "" if low is None else f"{low:g}"
    hi = "" if high is None else f"{high:g}"
    return f"{lo} to {hi}" if (low or 0) < 0 else f"{lo}-{hi}"


def _same(value: Any, default: Any) -> bool:
    return value == default and isinstance(value, bool) == isinstance(default, bool)


def _sampling(obj: Mapping[str, Any], ctx: _Ctx, effort: str | None) -> dict[str, Any]:
    """The sampling parameters of ``obj`` the model accepts (clamped into range); a note for
    each one removed or clamped. Keys are the unified names."""
    info = ctx.info
    refused = ()
    if ctx.provider == "anthropic":
        refused = ctx.policy.registry.unsupported_by_version(
            "anthropic", ctx.policy.anthropic_api_version
        )
    table = info.sampling
    effort_bound = bool(info.sampling_efforts) and effort not in info.sampling_efforts
    if effort_bound:
        table = {}
    kept: dict[str, Any] = {}
    for name in SAMPLING_PARAMS:
        if name not in obj:
            continue
        value = obj[name]
        if name in refused:
            version = ctx.policy.anthropic_api_version
            ctx.note(
                f"{name} removed: Anthropic API version {version} does not accept it",
                f"{name} removed",
                lossy=True,
            )
        elif name in table:
            kept[name] = _clamp(name, value, table[name], ctx)
        elif name in info.defaults_only and _same(value, info.defaults_only[name]):
            kept[name] = value
        else:
            ctx.note(
                _removal(name, value, ctx, effort, effort_bound), f"{name} removed", lossy=True
            )
    return kept


def _removal(name: str, value: Any, ctx: _Ctx, effort: str | None, effort_bound: bool) -> str:
    info = ctx.info
    if effort_bound and name in info.sampling:
        allowed = " or ".join(info.sampling_efforts)
        return (
            f"{name} removed: {ctx.model} accepts it only with reasoning_effort {allowed} "
            f"(this request: {effort})"
        )
    if name in info.defaults_only:
        default = _shown(info.defaults_only[name])
        return f"{name} {_shown(value)} removed: {ctx.model} accepts only the default ({default})"
    return f"{name} removed: {ctx.model} does not support it"


def _shown(value: Any) -> str:
    """A value as the user wrote it in JSON (``true``, not ``True``)."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _clamp(name: str, value: Any, spec: tuple[float | None, float | None] | bool, ctx: _Ctx) -> Any:
    if spec is True or isinstance(spec, bool):
        return value
    low, high = spec
    bound = None
    if low is not None and value < low:
        bound = low
    elif high is not None and value > high:
        bound = high
    if bound is None:
        return value
    ctx.note(
        f"{name} {value} clamped to {bound} ({ctx.label} range {_range_text(low, high)})",
        f"{name} clamped",
        lossy=True,
    )
    return bound


def _output(obj: Mapping[str, Any], ctx: _Ctx) -> tuple[str, int | None]:
    """(wire field, value) for the output limit; a default where the model requires one."""
    info = ctx.info
    value = obj.get("max_tokens")
    if value is None and info.output_default is not None:
        value = info.output_default
        ctx.note(f"max_tokens set to {value} ({ctx.label} requires it)", "max_tokens default")
    elif value is not None and info.output_field == "max_completion_tokens":
        ctx.note(
            f"max_tokens sent as max_completion_tokens ({ctx.model} counts reasoning tokens in it)",
            "max_tokens → max_completion_tokens",
        )
    return info.output_field, value


def _stop(obj: Mapping[str, Any], ctx: _Ctx) -> list[str] | str | None:
    stop = obj.get("stop")
    if stop is None:
        return None
    if not ctx.info.stop:
        ctx.note(f"stop removed: {ctx.model} does not support it", "stop removed", lossy=True)
        return None
    return stop


def _as_list(stop: str | list[str]) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n\n".join(p.get("text", "") for p in content if isinstance(p, dict))


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _fold_into_user(messages: list[dict[str, Any]], texts: list[str], ctx: _Ctx) -> None:
    """Put the system text in front of the first user message (a model without a system
    role still reads it as instructions); a new user message when there is none."""
    prefix = "\n\n".join(texts)
    for i, message in enumerate(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                folded: Any = f"{prefix}\n\n{content}"
            else:
                folded = [{"type": "text", "text": prefix}, *(content or [])]
            messages[i] = {**message, "content": folded}
            break
    else:
        messages.insert(0, {"role": "user", "content": prefix})
    ctx.note(
        f"system message folded into the first user message ({ctx.model} has no system role)",
        "system folded into user",
    )


# ---------------------------------------------------------------------------------------------
# OpenAI


def _to_openai(obj: Mapping[str, Any], ctx: _Ctx) -> dict[str, Any]:
    messages = [dict(m) for m in obj["messages"]]
    if "system" in obj:
        messages.insert(0, {"role": "system", "content": obj["system"]})
    body: dict[str, Any] = {"model": obj["model"], "messages": messages}
    for key in ("max_tokens", "reasoning_effort", *SAMPLING_PARAMS, "stop"):
        if key in obj:
            body[key] = obj[key]
    _openai_rules(body, ctx)
    return body


def _openai_rules(body: dict[str, Any], ctx: _Ctx) -> None:
    """The model's rules on a Chat Completions body, in place (unified or native)."""
    _openai_system(body, ctx)
    if "max_tokens" in body:
        field_name, value = _output(body, ctx)
        if field_name != "max_tokens" and field_name not in body:
            del body["max_tokens"]
            body[field_name] = value
    effort, keep = _effort(body, ctx)
    if "reasoning_effort" in body and not keep:
        del body["reasoning_effort"]
    kept = _sampling(body, ctx, effort)
    for name in SAMPLING_PARAMS:
        body.pop(name, None)
    if "top_logprobs" in body and "logprobs" not in kept:
        del body["top_logprobs"]
        ctx.note("top_logprobs removed: it needs logprobs", "top_logprobs removed", lossy=True)
    stop = _stop(body, ctx)
    body.pop("stop", None)
    _put_in_order(body, kept, stop)


def _put_in_order(body: dict[str, Any], kept: Mapping[str, Any], stop: Any) -> None:
    body.update(kept)
    if stop is not None:
        body["stop"] = stop


def _openai_system(body: dict[str, Any], ctx: _Ctx) -> None:
    mode = ctx.info.system
    messages = body["messages"]
    if mode == "system" or not any(
        isinstance(m, dict) and m.get("role") in SYSTEM_ROLES for m in messages
    ):
        return
    if mode == "developer":
        if any(m.get("role") == "system" for m in messages):
            body["messages"] = [
                {**m, "role": "developer"} if m.get("role") == "system" else m for m in messages
            ]
            ctx.note(
                f"system message sent as a developer message ({ctx.model} uses the developer role)",
                "system → developer",
            )
        return
    texts = [_text(m.get("content")) for m in messages if m.get("role") in SYSTEM_ROLES]
    rest = [m for m in messages if m.get("role") not in SYSTEM_ROLES]
    _fold_into_user(rest, texts, ctx)
    body["messages"] = rest


# ---------------------------------------------------------------------------------------------
# Anthropic


def _split_system(
    obj: Mapping[str, Any], target: str, ctx: _Ctx
) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, other messages) for a provider whose system prompt lives outside the
    messages, in ``target``."""
    system = [obj["system"]] if "system" in obj else []
    turns: list[dict[str, Any]] = []
    roles: list[str] = []
    for message in obj["messages"]:
        if message["role"] in SYSTEM_ROLES:
            system.append(_text(message["content"]))
            roles.append(message["role"])
        else:
            turns.append(message)
    if ctx.info.system == "fold-into-user" and system:
        _fold_into_user(turns, system, ctx)
        return [], turns
    if len(system) > 1:
        ctx.note(f"{len(system)} system messages joined into {target}", "system joined")
    elif roles:
        ctx.note(f"system message moved to {target}", "system moved")
    if "developer" in roles:
        ctx.note("developer messages treated as system messages", "developer → system")
    return system, turns


def _merge_turns(turns: list[dict[str, Any]], ctx: _Ctx) -> list[dict[str, Any]]:
    """Claude wants user/assistant turns to alternate: join runs of the same role."""
    merged: list[dict[str, Any]] = []
    for turn in turns:
        if merged and merged[-1]["role"] == turn["role"]:
            last = merged[-1]["content"]
            if isinstance(last, str) and isinstance(turn["content"], str):
                merged[-1]["content"] = f"{last}\n\n{turn['content']}"
            else:
                merged[-1]["content"] = _blocks(last) + _blocks(turn["content"])
        else:
            merged.append({"role": turn["role"], "content": turn["content"]})
    if len(merged) != len(turns):
        ctx.note(
            f"consecutive same-role messages merged ({len(turns)} messages → {len(merged)} "
            f"turn{'s' if len(merged) > 1 else ''})",
            "messages merged",
        )
    return merged


def _to_anthropic(obj: Mapping[str, Any], ctx: _Ctx) -> dict[str, Any]:
    system, turns = _split_system(obj, "the top-level system field", ctx)
    messages = _merge_turns(turns, ctx)
    _, max_tokens = _output(obj, ctx)
    effort, _ = _effort(obj, ctx)
    kept = _sampling(obj, ctx, effort)
    stop = _stop(obj, ctx)
    body: dict[str, Any] = {"model": obj["model"], "max_tokens": max_tokens}
    if system:
        body["system"] = "\n\n".join(system)
    body["messages"] = messages
    if stop is not None:
        body["stop_sequences"] = _as_list(stop)
    body.update(kept)
    return body


def _anthropic_native_rules(params: dict[str, Any], ctx: _Ctx) -> None:
    """Sampling ranges and the API version's refusals on native Messages params."""
    kept = _sampling(params, ctx, None)
    for name in SAMPLING_PARAMS:
        if name in params and name not in kept:
            del params[name]
    params.update(kept)


# ---------------------------------------------------------------------------------------------
# Gemini


def _to_gemini(obj: Mapping[str, Any], ctx: _Ctx) -> dict[str, Any]:
    system, turns = _split_system(obj, "systemInstruction", ctx)
    contents = [
        {
            "role": "model" if t["role"] == "assistant" else "user",
            "parts": [{"text": b["text"]} for b in _blocks(t["content"])],
        }
        for t in turns
    ]
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    _, max_tokens = _output(obj, ctx)
    effort, _ = _effort(obj, ctx)
    kept = _sampling(obj, ctx, effort)
    stop = _stop(obj, ctx)
    config: dict[str, Any] = {}
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    config.update({GEMINI_WIRE[name]: value for name, value in kept.items()})
    if stop is not None:
        config["stopSequences"] = _as_list(stop)
    if config:
        body["generationConfig"] = config
    return body


_BUILDERS = {"openai": _to_openai, "anthropic": _to_anthropic, "gemini": _to_gemini}
