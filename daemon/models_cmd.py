"""``batchd models [MODEL] [--json] [--markdown]``: what each model family accepts and costs.

One description per family, built from the registry (:mod:`daemon.registry`, the packaged
``models.toml`` with the config's ``[models]`` tables over it): where the system prompt goes,
the sampling parameters with their ranges (or "not accepted"), stop sequences, the output
field with its default and ceiling, reasoning efforts, Claude's extended thinking, the
minimum cacheable prefix, and the prices with the date they were checked and their source.
The product's model limitations, in one command.

``--markdown`` prints the tables of the README's "Models" section; a test checks that the
README's block between ``<!-- models:begin -->`` and ``<!-- models:end -->`` is exactly this
text for the packaged registry, so the documentation cannot drift from the data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from adapters.facts import PROVIDERS

from .registry import (
    SAMPLING_PARAMS,
    ModelInfo,
    Range,
    Registry,
    add_model_hint,
    default_registry,
)

__all__ = ["default_registry", "describe", "render_markdown", "render_text", "run"]

SYSTEM_TEXT = {
    "system": "system message",
    "developer": "developer message",
    "top-level": "top-level `system` field",
    "fold-into-user": "folded into the first user message",
    "systemInstruction": "`systemInstruction`",
}
THINKING_TEXT = {
    "manual": "manual (`budget_tokens`) or adaptive, limits applied",
    "adaptive": "adaptive only (manual is sent as adaptive)",
}
PRICE_KEYS = (
    ("input", "input"),
    ("output", "output"),
    ("cached_input", "cache read"),
    ("cache_write_5m", "cache write 5m"),
    ("cache_write", "cache write 1h"),
)
BEGIN = "<!-- models:begin -->"
END = "<!-- models:end -->"


# ---------------------------------------------------------------------------------------------
# Data


def describe(info: ModelInfo) -> dict[str, Any]:
    """A family as plain data (the ``--json`` output)."""
    sampling: dict[str, Any] = {}
    for name in SAMPLING_PARAMS:
        spec = info.sampling.get(name)
        if spec is not None:
            sampling[name] = {"accepted": True, "range": _spec(spec)}
        elif name in info.defaults_only:
            sampling[name] = {"accepted": False, "only": info.defaults_only[name]}
        else:
            sampling[name] = {"accepted": False}
    thinking = None
    if info.thinking is not None:
        thinking = {
            "mode": info.thinking,
            "budget_tokens_min": info.thinking_budget_min,
            "sampling": {k: _spec(v) for k, v in info.thinking_sampling.items()},
            "only": dict(info.thinking_defaults_only),
        }
    p = info.prices
    return {
        "family": info.pattern if info.known else None,
        "provider": info.provider,
        "note": info.note,
        "system": info.system,
        "sampling": sampling,
        "sampling_exclusive": list(info.sampling_exclusive),
        "sampling_efforts": list(info.sampling_efforts),
        "stop": info.stop,
        "output": {
            "field": info.output_field,
            "default": info.output_default,
            "ceiling": info.output_max,
        },
        "reasoning_efforts": list(info.reasoning_efforts),
        "default_effort": info.default_effort,
        "thinking": thinking,
        "cache_min_tokens": info.cache_min_tokens,
        "prices": {
            **{key: getattr(p, key) for key, _ in PRICE_KEYS},
            "date": p.date,
            "source": p.source,
        },
        "batch_discount": info.batch_discount,
    }


def _spec(spec: Range | bool) -> list[float | None] | None:
    return None if isinstance(spec, bool) else list(spec)


def families(registry: Registry) -> list[ModelInfo]:
    """Every family, the provider defaults first, then the registry's order."""
    return [registry.defaults[p] for p in PROVIDERS] + list(registry.families.values())


# ---------------------------------------------------------------------------------------------
# Words


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _range(spec: Range | bool) -> str:
    if isinstance(spec, bool):
        return ""
    low, high = spec
    return f" {_num(low)} to {_num(high)}" if (low or 0) < 0 else f" {_num(low)}-{_num(high)}"


def _shown(value: Any) -> str:
    return json.dumps(value)


def sampling_text(info: ModelInfo) -> str:
    """The sampling parameters a family accepts, in one phrase."""
    accepted = [f"{n}{_range(info.sampling[n])}" for n in SAMPLING_PARAMS if n in info.sampling]
    only = [f"{n} {_shown(v)}" for n, v in info.defaults_only.items()]
    parts = [", ".join(accepted)] if accepted else ["none accepted"]
    if info.sampling_efforts and accepted:
        parts[0] += f" (only with reasoning_effort {' or '.join(info.sampling_efforts)})"
    if info.sampling_exclusive:
        parts.append(f"not {' and '.join(info.sampling_exclusive)} together")
    if only:
        parts.append("at the default only: " + ", ".join(only))
    return "; ".join(parts)


def not_accepted(info: ModelInfo) -> list[str]:
    """Parameters removed whatever their value."""
    return [n for n in SAMPLING_PARAMS if n not in info.sampling and n not in info.defaults_only]


def output_text(info: ModelInfo) -> str:
    default = f"default {info.output_default:,}" if info.output_default else "no default"
    ceiling = f"ceiling {info.output_max:,}" if info.output_max else "no known ceiling"
    return f"`{info.output_field}`, {default}, {ceiling}"


def efforts_text(info: ModelInfo) -> str:
    if not info.reasoning_efforts:
        return "not accepted"
    default = f" (default {info.default_effort})" if info.default_effort else ""
    return ", ".join(info.reasoning_efforts) + default


def thinking_text(info: ModelInfo, *, long: bool = False) -> str:
    if info.thinking is None:
        return "-"
    text = THINKING_TEXT[info.thinking]
    if long:
        limits = [f"{n} only {_shown(v)}" for n, v in info.thinking_defaults_only.items()]
        limits += [f"{n}{_range(s)}" for n, s in info.thinking_sampling.items()]
        text = text.replace("`", "")
        if info.thinking == "manual":
            text += f"; budget_tokens >= {info.thinking_budget_min} and < max_tokens"
        text += "; while on: " + ", ".join(limits) + ", no other sampling parameter"
    return text


def price_text(info: ModelInfo) -> str:
    p = info.prices
    known = [(label, getattr(p, key)) for key, label in PRICE_KEYS if getattr(p, key) is not None]
    if not known:
        return "unknown (cost is null)"
    figures = ", ".join(f"{label} {value:.4g}" for label, value in known)
    return f"{figures} USD per million tokens; checked {p.date}, {p.source}"


# ---------------------------------------------------------------------------------------------
# Output


def render_text(info: ModelInfo, model: str | None = None) -> str:
    """One family, as ``batchd models MODEL`` prints it."""
    if info.known:
        head = f"{model} -> family {info.pattern} ({info.provider})" if model else info.pattern
    else:
        head = f"{model}: not in the registry; {info.provider}'s standard format"
    rows = [
        ("provider", info.provider),
        ("system prompt", SYSTEM_TEXT[info.system].replace("`", "")),
        ("sampling", sampling_text(info)),
        ("not accepted", ", ".join(not_accepted(info)) or "-"),
        ("stop sequences", "accepted" if info.stop else "not accepted (removed)"),
        ("output limit", output_text(info).replace("`", "")),
        ("reasoning effort", efforts_text(info)),
        ("thinking", thinking_text(info, long=True)),
        ("cache prefix", f">= {info.cache_min_tokens} tokens" if info.cache_min_tokens else "-"),
        ("prices", price_text(info)),
        ("batch price", f"{info.batch_discount:.0%} of live"),
    ]
    if info.note:
        rows.append(("note", info.note))
    return "\n".join([head, *(f"  {k:<17} {v}" for k, v in rows)]) + "\n"


def _name(info: ModelInfo) -> str:
    return f"`{info.pattern}`" if info.known else f"any other {info.provider} model"


def render_markdown(registry: Registry) -> str:
    """The README's model tables (between the ``models:begin`` / ``models:end`` markers)."""
    rows = [
        "| family | system prompt | sampling | stop | output limit | reasoning effort "
        "| extended thinking, when asked for | min. cache prefix |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for info in families(registry):
        cache = f"{info.cache_min_tokens:,}" if info.cache_min_tokens else "-"
        sampling = sampling_text(info)
        if info.known and sampling == sampling_text(registry.defaults[info.provider]):
            sampling = "standard"
        rows.append(
            f"| {_name(info)} | {SYSTEM_TEXT[info.system]} | {sampling} "
            f"| {'yes' if info.stop else 'no'} | {output_text(info)} | {efforts_text(info)} "
            f"| {thinking_text(info)} | {cache} |"
        )
    prices = [
        "| family | input | output | cache read | cache write 5m | cache write 1h | checked "
        "| source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for info in families(registry):
        p = info.prices
        if p.input is None and p.output is None:
            continue
        figures = " | ".join(_num(getattr(p, key)) or "-" for key, _ in PRICE_KEYS)
        prices.append(f"| {_name(info)} | {figures} | {p.date} | {p.source} |")
    notes = [f"* `{i.pattern}`: {i.note}" for i in registry.families.values() if i.note]
    return "\n".join(
        [
            *rows,
            "",
            "\"standard\": the sampling parameters of any other model of the provider.",
            "",
            "Prices in USD per million tokens at live price (a batch pays "
            f"{registry.defaults['openai'].batch_discount:.0%}); a family not listed here has "
            "no price, so its cost is null.",
            "",
            *prices,
            "",
            *notes,
        ]
    ) + "\n"


def readme_block(text: str) -> str:
    """The generated part of a README: what lies between the two markers."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip("\n") + "\n"


def run(registry: Registry, routes: Mapping[str, str], model: str | None, *, as_json: bool) -> str:
    """The text ``batchd models`` prints; raises LookupError for a model nothing routes."""
    if model is None:
        infos: Iterable[ModelInfo] = families(registry)
        if as_json:
            return json.dumps([describe(i) for i in infos], indent=2) + "\n"
        return "\n".join(render_text(i) for i in infos)
    provider = registry.route(model, None, routes)
    if provider is None:
        hint = add_model_hint(model)
        raise LookupError(f"unknown model {model!r}: no provider is known for it; add {hint}")
    info = registry.info(model, provider)
    if as_json:
        return json.dumps({"model": model, **describe(info)}, indent=2) + "\n"
    return render_text(info, model)
