"""Adapt a request to its model: convert it to the provider's shape, then apply the rules.

A unified line is first converted to the provider's standard shape, then the model's rules
(:mod:`daemon.adapt_rules`, from the registry's data) are applied; native OpenAI and
Anthropic lines get the same model rules, because the provider would refuse them otherwise.
Every change of meaning or position is recorded as a :class:`Note`, a short sentence the user
reads in the result's ``adaptations``. Renames into a provider's own vocabulary that change
nothing (``stop`` → ``stop_sequences``, ``assistant`` → ``model``, ``max_tokens`` →
``maxOutputTokens``) are not recorded; a rename with a different meaning
(``max_completion_tokens`` also counts reasoning tokens) is.

A note is *lossy* when it removes or clamps something the user asked for; under
``on_unsupported = "reject"`` a line with a lossy note is refused instead of sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import adapt_rules as rules
from .adapt_rules import API_INT_MAX, POLICIES, Ctx, Note, Policy
from .registry import SAMPLING_PARAMS, ModelInfo

__all__ = ["POLICIES", "Note", "Policy", "adapt_native", "adapt_unified"]

SYSTEM_ROLES = frozenset({"system", "developer"})
GEMINI_WIRE = {
    "temperature": "temperature",
    "top_p": "topP",
    "top_k": "topK",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "logprobs": "responseLogprobs",
}
OPENAI_OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens")
# The unified fields an OpenAI body takes as they are, in the order they are written.
_OPENAI_KEYS = ("max_tokens", "reasoning_effort", *SAMPLING_PARAMS, "stop")
_SAMPLING = frozenset(SAMPLING_PARAMS)
_PLAIN_OPENAI = frozenset({"model", "messages", "max_tokens"})
# A unified line of only these keys may need no rule at all (see _plain_openai).
_PLAIN_UNIFIED = frozenset({"custom_id", "metadata", "provider", *_PLAIN_OPENAI})


def adapt_unified(
    obj: Mapping[str, Any],
    model: str,
    provider: str,
    policy: Policy,
    info: ModelInfo | None = None,
) -> tuple[dict[str, Any], list[Note]]:
    """The provider-native body for a validated unified line, and what was changed.
    ``info``: the model's registry entry, when the caller has it (else it is looked up)."""
    if info is None:
        info = policy.registry.info(model, provider)
    if provider == "openai" and (plain := _plain_openai(obj, info)) is not None:
        return plain, []
    ctx = Ctx(model, provider, info, policy, [])
    body = _BUILDERS[provider](obj, ctx)
    return body, ctx.notes


def adapt_native(
    body: Mapping[str, Any],
    model: str,
    provider: str,
    policy: Policy,
    info: ModelInfo | None = None,
) -> tuple[dict[str, Any], list[Note]]:
    """A native OpenAI body or Anthropic params with the model's rules applied (``info``: as
    :func:`adapt_unified`)."""
    if info is None:
        info = policy.registry.info(model, provider)
    ctx = Ctx(model, provider, info, policy, [])
    out = dict(body)
    if provider == "openai":
        _openai_rules(out, ctx)
    else:
        _anthropic_native_rules(out, ctx)
    return out, ctx.notes


# ---------------------------------------------------------------------------------------------
# Shapes shared by the providers


def _as_list(stop: str | list[str]) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n\n".join(p.get("text", "") for p in content if isinstance(p, dict))


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _fold_into_user(messages: list[dict[str, Any]], texts: list[str], ctx: Ctx) -> None:
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


def _plain_openai(obj: Mapping[str, Any], info: ModelInfo) -> dict[str, Any] | None:
    """The usual line's body, for which no rule has anything to do: only ``model``,
    ``messages`` and a whole ``max_tokens`` within the model's ceiling, sent to a model that
    takes system messages and ``max_tokens`` as they are. Exactly what :func:`_to_openai`
    builds for such a line, without its rules; None for any other line (the rules decide)."""
    max_tokens = obj.get("max_tokens")
    if (
        type(max_tokens) is not int
        or info.system != "system"
        or info.output_field != "max_tokens"
        or not obj.keys() <= _PLAIN_UNIFIED
        or max_tokens > (API_INT_MAX if info.output_max is None else info.output_max)
    ):
        return None
    return {"model": obj["model"], "messages": list(obj["messages"]), "max_tokens": max_tokens}


def _to_openai(obj: Mapping[str, Any], ctx: Ctx) -> dict[str, Any]:
    # A rule never changes a message in place (a changed one is a new dict): the body shares
    # the line's message objects, in a list of its own.
    messages = list(obj["messages"])
    if "system" in obj:
        messages.insert(0, {"role": "system", "content": obj["system"]})
    body: dict[str, Any] = {"model": obj["model"], "messages": messages}
    for key in _OPENAI_KEYS:
        if key in obj:
            body[key] = obj[key]
    _openai_rules(body, ctx)
    return body


def _openai_rules(body: dict[str, Any], ctx: Ctx) -> None:
    """The model's rules on a Chat Completions body, in place (unified or native)."""
    _openai_system(body, ctx)
    if "max_tokens" in body:
        field_name, value = rules.output(body, ctx)
        if field_name == "max_tokens" or field_name in body:
            body["max_tokens"] = value
        else:
            del body["max_tokens"]
            body[field_name] = value
    if body.keys() <= _PLAIN_OPENAI:
        return  # no effort, sampling, logprobs or stop: the rules below have nothing to do
    if "max_completion_tokens" in body:
        body["max_completion_tokens"] = rules.ceiling(
            body["max_completion_tokens"], "max_completion_tokens", ctx
        )
    effort, keep = rules.effort(body, ctx)
    if "reasoning_effort" in body and not keep:
        del body["reasoning_effort"]
    kept = rules.sampling(body, ctx, effort)
    if not body.keys().isdisjoint(_SAMPLING):
        for name in SAMPLING_PARAMS:
            body.pop(name, None)
    if "top_logprobs" in body and "logprobs" not in kept:
        del body["top_logprobs"]
        ctx.note("top_logprobs removed: it needs logprobs", "top_logprobs removed", lossy=True)
    stop = rules.stop(body, ctx)
    body.pop("stop", None)
    _put_in_order(body, kept, stop)


def _put_in_order(body: dict[str, Any], kept: Mapping[str, Any], stop: Any) -> None:
    body.update(kept)
    if stop is not None:
        body["stop"] = stop


def _openai_system(body: dict[str, Any], ctx: Ctx) -> None:
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
    obj: Mapping[str, Any], target: str, ctx: Ctx
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


def _merge_turns(turns: list[dict[str, Any]], ctx: Ctx) -> list[dict[str, Any]]:
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


def _to_anthropic(obj: Mapping[str, Any], ctx: Ctx) -> dict[str, Any]:
    system, turns = _split_system(obj, "the top-level system field", ctx)
    messages = _merge_turns(turns, ctx)
    _, max_tokens = rules.output(obj, ctx)
    effort, _ = rules.effort(obj, ctx)
    kept = rules.sampling(obj, ctx, effort)
    stop = rules.stop(obj, ctx)
    body: dict[str, Any] = {"model": obj["model"], "max_tokens": max_tokens}
    if system:
        body["system"] = "\n\n".join(system)
    body["messages"] = messages
    if stop is not None:
        body["stop_sequences"] = _as_list(stop)
    body.update(kept)
    return body


def _anthropic_native_rules(params: dict[str, Any], ctx: Ctx) -> None:
    """Native Messages params: the output ceiling, extended thinking (manual or adaptive,
    its budget), then the sampling rules, with the thinking limits while it is on."""
    if "max_tokens" in params:
        params["max_tokens"] = rules.ceiling(params["max_tokens"], "max_tokens", ctx)
    thinking_on = rules.thinking(params, ctx)
    kept = rules.sampling(params, ctx, None, thinking_on=thinking_on)
    for name in SAMPLING_PARAMS:
        if name in params and name not in kept:
            del params[name]
    params.update(kept)


# ---------------------------------------------------------------------------------------------
# Gemini


def _to_gemini(obj: Mapping[str, Any], ctx: Ctx) -> dict[str, Any]:
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
    _, max_tokens = rules.output(obj, ctx)
    effort, _ = rules.effort(obj, ctx)
    kept = rules.sampling(obj, ctx, effort)
    stop = rules.stop(obj, ctx)
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
