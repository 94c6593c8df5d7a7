"""The model rules that adaptation applies, each change recorded as a :class:`Note`.

:mod:`daemon.adapt` converts a request into a provider's shape; the rules here decide what a
model accepts, from its registry family (:class:`daemon.registry.ModelInfo`): sampling
parameters (ranges, defaults-only values, parameters refused together, the extra limits
while Claude's extended thinking is on), the output limit (a default where one is required,
the model's ceiling), stop sequences, reasoning efforts and Claude's extended thinking
(manual or adaptive, its budget). None of them names a model: the registry data does.

A note is *lossy* when it removes, clamps or changes something the user asked for; under
``on_unsupported = "reject"`` a line with a lossy note is refused instead of sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from adapters.facts import ANTHROPIC_DEFAULT_API_VERSION

from .registry import SAMPLING_PARAMS, ModelInfo, Range, Registry, default_registry

POLICIES = ("adapt", "reject")
LABELS = {"openai": "OpenAI", "anthropic": "Claude", "gemini": "Gemini"}
THINKING_ON = ("enabled", "adaptive")
# The APIs take output limits as 32-bit integers: a larger value is refused for every model.
API_INT_MAX = 2_147_483_647
_SAMPLING = frozenset(SAMPLING_PARAMS)


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


@dataclass(slots=True)
class Ctx:
    """One request being adapted: its model's family and the notes recorded so far."""

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


def is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def shown(value: Any) -> str:
    """A value as the user wrote it in JSON (``true``, not ``True``)."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


# ---------------------------------------------------------------------------------------------
# Reasoning effort


def effort(obj: Mapping[str, Any], ctx: Ctx) -> tuple[str | None, bool]:
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


# ---------------------------------------------------------------------------------------------
# Sampling parameters


def sampling(
    obj: Mapping[str, Any], ctx: Ctx, effort_: str | None, *, thinking_on: bool = False
) -> dict[str, Any]:
    """The sampling parameters of ``obj`` the model accepts (clamped into range), keyed by
    the unified names; a note for each one removed or clamped. Three passes: the model's own
    ranges, then (``thinking_on``) the limits of extended thinking, then the parameters the
    model refuses together."""
    if obj.keys().isdisjoint(_SAMPLING):
        return {}  # the usual request: none asked for, so none to keep, clamp or remove
    info = ctx.info
    refused: tuple[str, ...] = ()
    if ctx.provider == "anthropic":
        refused = ctx.policy.registry.unsupported_by_version(
            "anthropic", ctx.policy.anthropic_api_version
        )
    effort_bound = bool(info.sampling_efforts) and effort_ not in info.sampling_efforts
    table: Mapping[str, Range | bool] = {} if effort_bound else info.sampling
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
            kept[name] = _clamp(name, value, table[name], ctx, f"{ctx.label} range")
        elif name in info.defaults_only and _same(value, info.defaults_only[name]):
            kept[name] = value
        else:
            ctx.note(
                _removal(name, value, ctx, effort_, effort_bound), f"{name} removed", lossy=True
            )
    if thinking_on:
        _thinking_limits(kept, ctx)
    _exclusive(kept, ctx)
    return kept


def _removal(name: str, value: Any, ctx: Ctx, effort_: str | None, effort_bound: bool) -> str:
    info = ctx.info
    if effort_bound and name in info.sampling:
        allowed = " or ".join(info.sampling_efforts)
        return (
            f"{name} removed: {ctx.model} accepts it only with reasoning_effort {allowed} "
            f"(this request: {effort_})"
        )
    if name in info.defaults_only:
        default = shown(info.defaults_only[name])
        return f"{name} {shown(value)} removed: {ctx.model} accepts only the default ({default})"
    return f"{name} removed: {ctx.model} does not support it"


def _same(value: Any, default: Any) -> bool:
    return bool(value == default) and isinstance(value, bool) == isinstance(default, bool)


def _range_text(low: float | None, high: float | None) -> str:
    lo = "" if low is None else f"{low:g}"
    hi = "" if high is None else f"{high:g}"
    return f"{lo} to {hi}" if (low or 0) < 0 else f"{lo}-{hi}"


def _clamp(name: str, value: Any, spec: Range | bool, ctx: Ctx, what: str) -> Any:
    if isinstance(spec, bool):
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
        f"{name} {value} clamped to {bound} ({what} {_range_text(low, high)})",
        f"{name} clamped",
        lossy=True,
    )
    return bound


def _thinking_limits(kept: dict[str, Any], ctx: Ctx) -> None:
    """With Claude's extended thinking on: temperature only 1, top_p 0.95-1, no top_k (the
    family's ``thinking_defaults_only`` / ``thinking_sampling``)."""
    info = ctx.info
    for name in [n for n in SAMPLING_PARAMS if n in kept]:
        value = kept[name]
        if name in info.thinking_defaults_only:
            only = info.thinking_defaults_only[name]
            if _same(value, only):
                continue
            del kept[name]
            ctx.note(
                f"{name} {shown(value)} removed: with extended thinking {ctx.model} accepts "
                f"only {shown(only)}",
                f"{name} removed",
                lossy=True,
            )
        elif name in info.thinking_sampling:
            spec = info.thinking_sampling[name]
            kept[name] = _clamp(name, value, spec, ctx, f"{ctx.label} range with extended thinking")
        else:
            del kept[name]
            ctx.note(
                f"{name} removed: {ctx.model} does not accept it with extended thinking",
                f"{name} removed",
                lossy=True,
            )


def _exclusive(kept: dict[str, Any], ctx: Ctx) -> None:
    """Parameters the model refuses together: the first one the family lists is kept."""
    present = [name for name in ctx.info.sampling_exclusive if name in kept]
    for name in present[1:]:
        del kept[name]
        ctx.note(
            f"{name} removed: {ctx.model} does not accept {' and '.join(present)} together "
            f"({present[0]} kept)",
            f"{name} removed",
            lossy=True,
        )


# ---------------------------------------------------------------------------------------------
# Output limit and stop sequences


def output(obj: Mapping[str, Any], ctx: Ctx) -> tuple[str, int | None]:
    """(wire field, value) for the unified ``max_tokens``: a default where the model requires
    one, the model's ceiling where the request asks for more."""
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
    return info.output_field, ceiling(value, "max_tokens", ctx)


def ceiling(value: Any, name: str, ctx: Ctx) -> Any:
    """``value`` lowered to the model's output ceiling, or, for a model without a known
    ceiling, to the largest integer the providers' APIs accept (they refuse anything above
    2,147,483,647 whatever the model: Gemini the whole batch); recorded. Anything else is
    unchanged (a value that is not a whole number is the provider's to refuse)."""
    if not is_int(value):
        return value
    limit = ctx.info.output_max
    if limit is not None and value > limit:
        why = f"{ctx.model} writes at most {limit} output tokens"
    elif limit is None and value > API_INT_MAX:
        limit, why = API_INT_MAX, "the largest integer the API accepts"
    else:
        return value
    ctx.note(f"{name} {value} clamped to {limit} ({why})", "max_tokens clamped", lossy=True)
    return limit


def stop(obj: Mapping[str, Any], ctx: Ctx) -> list[str] | str | None:
    value = obj.get("stop")
    if value is None:
        return None
    if not ctx.info.stop:
        ctx.note(f"stop removed: {ctx.model} does not support it", "stop removed", lossy=True)
        return None
    return value if isinstance(value, str) else list(value)


# ---------------------------------------------------------------------------------------------
# Claude extended thinking (native Anthropic params)


def thinking(params: dict[str, Any], ctx: Ctx) -> bool:
    """Adapt ``params["thinking"]`` in place; whether thinking is on afterwards.

    A family with ``thinking = "adaptive"`` refuses manual thinking: ``{"type": "enabled",
    "budget_tokens": N}`` is sent as ``{"type": "adaptive"}``. Where manual thinking is
    accepted, ``budget_tokens`` is raised to the family's minimum and kept below
    ``max_tokens``: ``max_tokens`` is raised to ``budget_tokens + max_tokens`` (so the answer
    keeps the room the request gave it, thinking counting in ``max_tokens``), up to the
    output ceiling, and only if that is not enough is the budget lowered.
    """
    current = params.get("thinking")
    mode = ctx.info.thinking
    if not isinstance(current, Mapping) or mode is None:
        return False
    kind = current.get("type")
    if kind == "enabled" and mode == "adaptive":
        params["thinking"] = {"type": "adaptive"}
        ctx.note(
            f"thinking {json.dumps(dict(current))} sent as {{\"type\": \"adaptive\"}}: "
            f"{ctx.model} does not accept manual extended thinking (budget_tokens dropped)",
            "thinking → adaptive",
            lossy=True,
        )
        return True
    if kind == "enabled":
        _budget(params, dict(current), ctx)
    return kind in THINKING_ON


def _budget(params: dict[str, Any], current: dict[str, Any], ctx: Ctx) -> None:
    budget, max_tokens = current.get("budget_tokens"), params.get("max_tokens")
    if not is_int(budget) or not is_int(max_tokens):
        return  # malformed: the provider's to refuse, with its own words
    low = ctx.info.thinking_budget_min or 1
    if budget < low:
        ctx.note(
            f"thinking budget_tokens {budget} raised to {low} ({ctx.label}'s minimum)",
            "thinking budget raised",
            lossy=True,
        )
        budget = low
    if budget >= max_tokens:
        raised = min(budget + max_tokens, ctx.info.output_max or API_INT_MAX)
        if raised > max_tokens:
            ctx.note(
                f"max_tokens {max_tokens} raised to {raised}: with extended thinking max_tokens "
                f"counts the thinking and must exceed budget_tokens ({budget})",
                "max_tokens raised for thinking",
                lossy=True,
            )
            max_tokens = params["max_tokens"] = raised
    if budget >= max_tokens:
        ctx.note(
            f"thinking budget_tokens {budget} lowered to {max_tokens - 1}: it must stay below "
            f"max_tokens ({max_tokens})",
            "thinking budget lowered",
            lossy=True,
        )
        budget = max_tokens - 1
    if budget != current.get("budget_tokens"):
        params["thinking"] = {**current, "budget_tokens": budget}
