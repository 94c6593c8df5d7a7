"""``batchd check FILE``: what a file would become, without sending anything.

A way to try a file before spending anything on it: the file is parsed, validated and adapted
exactly as ingest would (same registry, routes and policy), and per model the report gives the
provider, the request count, how many batches it becomes (packed by :mod:`daemon.packing`, the
rule the scheduler's claim follows, under the same provider limits), the adaptations by kind,
estimated input tokens and their cost at batch and live price. Invalid lines are listed
with their reasons. Nothing touches the network or the state database.

Token estimates are characters / 4 over the prompt text (what the emulator also assumes);
the cost estimate covers input tokens only, since the answers' length is not known yet.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.base import ProviderLimits
from adapters.facts import PROVIDER_LIMITS

from . import names
from .config import Config, adapt_policy
from .cost import DIGITS, estimate
from .packing import CHARS_PER_TOKEN, BatchPacker
from .reading import iter_lines, sniff
from .registry import Registry
from .text import escape
from .validate import Invalid, Request

DEFAULT_MAX_INVALID = 20
_TEXT_KEYS = frozenset({"content", "text", "system"})


def prompt_chars(value: Any, key: str | None = None) -> int:
    """Characters of prompt text in a provider body (message contents, parts, system)."""
    if isinstance(value, str):
        return len(value) if key in _TEXT_KEYS else 0
    if isinstance(value, Mapping):
        return sum(prompt_chars(v, k) for k, v in value.items())
    if isinstance(value, list):
        return sum(prompt_chars(v, key) for v in value)
    return 0


@dataclass
class _Model:
    model: str
    provider: str
    batches: BatchPacker
    requests: int = 0
    chars: int = 0
    adaptations: Counter[str] = field(default_factory=Counter)


def check_file(
    path: Path | str,
    cfg: Config,
    *,
    max_invalid: int = DEFAULT_MAX_INVALID,
    limits: Mapping[str, ProviderLimits] = PROVIDER_LIMITS,
) -> dict[str, Any]:
    """The check report for one file (see the module docstring); ``ok`` is False when any
    line is invalid or the file cannot be read. ``limits`` are the providers' batch caps."""
    path = Path(path)
    report: dict[str, Any] = {"file": names.display(str(path)), "file_error": sniff(path)}
    if report["file_error"] is not None:
        return report | _unreadable()
    models: dict[tuple[str, str], _Model] = {}
    invalid: list[dict[str, Any]] = []
    n_invalid = 0
    policy = adapt_policy(cfg)
    lines = iter_lines(path, max_request_bytes=cfg.max_request_bytes, policy=policy)
    try:
        for item in lines:
            if isinstance(item, Invalid):
                n_invalid += 1
                if len(invalid) < max_invalid:
                    invalid.append(
                        {"line": item.line, "custom_id": item.custom_id, "reason": item.reason}
                    )
                continue
            _count(models, item, cfg, limits)
    except OSError as exc:  # as the daemon: a file that fails mid-read is a file error
        return report | {"file_error": f"read failed: {exc.strerror or exc}"} | _unreadable()
    rows = [_model_report(m, policy.registry) for m in models.values()]
    requests = sum(m.requests for m in models.values())
    return report | {
        "ok": n_invalid == 0,
        "lines": requests + n_invalid,
        "requests": requests,
        "invalid": n_invalid,
        "models": rows,
        "invalid_lines": invalid,
        "invalid_not_shown": n_invalid - len(invalid),
        "totals": _totals(rows),
    }


def _unreadable() -> dict[str, Any]:
    return {"ok": False, "lines": 0, "requests": 0, "invalid": 0, "models": []}


def _count(
    models: dict[tuple[str, str], _Model],
    item: Request,
    cfg: Config,
    limits: Mapping[str, ProviderLimits],
) -> None:
    key = (item.model, item.provider)
    entry = models.get(key)
    if entry is None:
        # The scheduler's claim: at most the configured batch size, within the provider's caps.
        cap = limits[item.provider]
        size = min(cfg.providers[item.provider].batch_size, cap.max_items)
        entry = models[key] = _Model(item.model, item.provider, BatchPacker(size, cap.max_bytes))
    entry.requests += 1
    entry.chars += prompt_chars(item.body)
    entry.batches.add(item.size_bytes)
    entry.adaptations.update(note.kind for note in item.adaptations)


def _model_report(entry: _Model, registry: Registry) -> dict[str, Any]:
    info = registry.info(entry.model, entry.provider)
    tokens = math.ceil(entry.chars / CHARS_PER_TOKEN)
    cost = estimate(tokens, info)
    return {
        "model": entry.model,
        "provider": entry.provider,
        "family": info.pattern if info.known else None,
        "requests": entry.requests,
        "batches": entry.batches.batches,
        "batch_size": entry.batches.max_items,
        "adaptations": dict(entry.adaptations.most_common()),
        "input_tokens_est": tokens,
        "cost_usd_est": cost.batch_usd,
        "cost_usd_live_est": cost.live_usd,
        "prices_date": info.prices.date,
    }


def _totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    rows = list(rows)
    priced = [r for r in rows if r["cost_usd_est"] is not None]
    return {
        "requests": sum(r["requests"] for r in rows),
        "batches": sum(r["batches"] for r in rows),
        "input_tokens_est": sum(r["input_tokens_est"] for r in rows),
        "cost_usd_est": round(sum(r["cost_usd_est"] for r in priced), DIGITS),
        "cost_usd_live_est": round(sum(r["cost_usd_live_est"] for r in priced), DIGITS),
        "unpriced_models": [r["model"] for r in rows if r["cost_usd_est"] is None],
    }


# ---------------------------------------------------------------------------------------------
# Human output


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.6f}"


def render(report: Mapping[str, Any]) -> str:
    """The report as text for a terminal (control characters from the file shown escaped)."""
    head = f"batchd check {escape(report['file'])}"
    if report.get("file_error"):
        return f"{head}: cannot be read: {report['file_error']}\n"
    out = [
        f"{head}: {report['lines']} lines, {report['requests']} requests, "
        f"{report['invalid']} invalid",
        "",
        f"{'MODEL':<28} {'PROVIDER':<10} {'REQUESTS':>8} {'BATCHES':>7} {'INPUT TOK~':>11} "
        f"{'BATCH $~':>13} {'LIVE $~':>13}",
    ]
    for m in report["models"]:
        out.append(
            f"{escape(m['model']):<28} {m['provider']:<10} {m['requests']:>8} {m['batches']:>7} "
            f"{m['input_tokens_est']:>11,} {_usd(m['cost_usd_est']):>13} "
            f"{_usd(m['cost_usd_live_est']):>13}"
        )
        if m["adaptations"]:
            kinds = ", ".join(f"{kind} ×{n}" for kind, n in m["adaptations"].items())
            out.append(f"    adaptations: {kinds}")
        if m["family"] is None:
            out.append("    not in the registry: the provider's standard format, no prices")
    t = report["totals"]
    out.append(
        f"{'TOTAL':<28} {'':<10} {t['requests']:>8} {t['batches']:>7} "
        f"{t['input_tokens_est']:>11,} {_usd(t['cost_usd_est']):>13} "
        f"{_usd(t['cost_usd_live_est']):>13}"
    )
    if t["unpriced_models"]:
        unpriced = ", ".join(escape(m) for m in t["unpriced_models"])
        out.append(f"    no prices for: {unpriced} (not in the totals)")
    per = CHARS_PER_TOKEN
    out.append(f"    (~ estimates: input tokens are characters / {per}; cost covers input only)")
    if report["invalid_lines"]:
        out += ["", "INVALID LINES"]
        out += [f"  {escape(x['reason'])}" for x in report["invalid_lines"]]
        if report["invalid_not_shown"]:
            out.append(f"  ... and {report['invalid_not_shown']} more invalid lines")
    return "\n".join(out) + "\n"
