"""``batchd status``: the daemon, each provider's state, the work in hand, and its history.

It reads the state database read-only and synchronously (``store.reader.StatusReader``: no
migration, no journal-mode switch, no write, no event loop), so it works beside a running daemon
and for a user who may read but not write the state folder; it imports neither asyncio nor
aiosqlite, to start quickly. Whether a daemon runs comes from its lock
(``startup.lock_holder``); each provider's state (running / paused: reason / no key) from what
the daemon last published (``availability.read_snapshot``), with the requests waiting for it
from the database.

The text view shows active work by default (jobs not finished: % done, cost so far, an ETA
estimate, canceled or not; open batches; what is in flight per model; disk usage); ``--all``
adds the history (the latest 200 jobs and batches, all-time error kinds). ``--watch`` draws it
again every ``--interval`` seconds (``--count`` times, or until interrupted).

The JSON view is stable: the keys ``daemon``, ``providers``, ``files`` (the latest 200 jobs,
finished or not), ``batches`` (the latest 200) and ``errors`` (all-time) keep their meaning
whatever the flags; ``active`` (the jobs not finished, with their progress), ``in_flight`` and
``disk`` were added beside them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.facts import PROVIDERS

from .availability import read_snapshot
from .config import Config, adapt_policy
from .cost import CostTotals, cost_of
from .packing import CHARS_PER_TOKEN
from .startup import db_path, lock_holder
from .states import REQUEST_FINAL
from .store.reader import StateUnreadable, StatusReader
from .text import escape

CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear the screen: --watch redraws in place


class StatusError(RuntimeError):
    """The state database cannot be read; the message says why."""


def _fmt_age(ts: float | None) -> str:
    if ts is None:
        return "-"
    return _fmt_span(time.time() - ts)


def _fmt_span(seconds: float) -> str:
    s = max(0, int(seconds))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def folder_bytes(folder: Path) -> int | None:
    """Bytes of the regular files under ``folder`` (None when it cannot be read)."""
    if not folder.is_dir():
        return None
    total, todo = 0, [folder]
    while todo:
        try:
            with os.scandir(todo.pop()) as entries:
                for e in entries:
                    if e.is_dir(follow_symlinks=False):
                        todo.append(Path(e.path))
                    elif e.is_file(follow_symlinks=False):
                        total += e.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total


def progress(job: dict[str, Any], now: float) -> dict[str, Any]:
    """A job's % done (final requests of its lines) and an ETA estimate (the time it took for
    what is done, extended to the rest: rough, since batches end in steps)."""
    counts: dict[str, int] = job["counts"]
    total = sum(counts.values())
    done = sum(n for s, n in counts.items() if s in REQUEST_FINAL)
    percent = round(100.0 * done / total, 1) if total else None
    started = job.get("ingested_at") or job["created_at"]
    eta = None
    if total and 0 < done < total and job["status"] == "active":
        elapsed = max(0.0, now - float(started))
        eta = round(elapsed * (total - done) / done, 1)
    return {"done": done, "total": total, "percent_done": percent, "eta_s": eta}


def _read(cfg: Config) -> dict[str, Any]:
    with StatusReader(db_path(cfg.state_dir)) as reader:
        report = reader.recent()
        report["waiting"] = reader.waiting_by_provider()
        if not reader.migrated():  # the daemon has not migrated it
            report.update(
                active=[], open_batches=[], usage=[], in_flight=[], active_errors=[], budgets=[]
            )
            return report
        active = reader.open_jobs()
        ids = [j["id"] for j in active]
        report["active"] = active
        report["usage"] = reader.jobs_usage(ids)
        report["active_errors"] = reader.jobs_errors(ids)
        report["open_batches"] = reader.open_batches()
        report["in_flight"] = reader.in_flight()
        report["budgets"] = reader.budgets()
        return report


def collect(cfg: Config) -> dict[str, Any]:
    """The status report; raises StatusError when the database cannot be read."""
    state_dir = cfg.state_dir
    db = db_path(state_dir)
    if not db.exists():
        raise StatusError(f"no state database at {db} (batchd has not run on this folder)")
    try:
        raw = _read(cfg)
    except (sqlite3.Error, StateUnreadable, OSError) as exc:
        raise StatusError(f"cannot read the state database {db}: {exc}") from None
    running, pid = lock_holder(state_dir)
    snapshot = read_snapshot(state_dir)
    published = snapshot["providers"] if snapshot else {}
    providers = {}
    for name in PROVIDERS:
        view = published.get(name) if isinstance(published.get(name), dict) else None
        providers[name] = {
            "state": view.get("state", "unknown") if view else "unknown",
            "reason": view.get("reason", "") if view else "",
            "until": view.get("until") if view else None,
            "waiting": raw["waiting"].get(name, 0),
        }
    daemon = {"running": running, "pid": pid, "states_at": snapshot and snapshot.get("updated_at")}
    return {
        "daemon": daemon,
        "providers": providers,
        "files": raw["files"],
        "batches": raw["batches"],
        "errors": raw["errors"],
        "active": _active(cfg, raw),
        "active_errors": raw["active_errors"],
        "open_batches": raw["open_batches"],
        "in_flight": [
            {**m, "estimated_input_tokens": int(m["bytes"] or 0) // CHARS_PER_TOKEN}
            for m in raw["in_flight"]
        ],
        "budgets": raw.get("budgets", []),
        "disk": {
            "state": folder_bytes(cfg.state_dir),
            "outbox": folder_bytes(cfg.outbox),
            "processed": folder_bytes(cfg.processed),
        },
    }


def _active(cfg: Config, raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The jobs not finished, each with its progress and cost so far (the usage of its
    answers so far under the registry's prices: an estimate until its summary is written)."""
    now = time.time()
    costs: dict[int, CostTotals] = {}
    registry = adapt_policy(cfg).registry
    for u in raw["usage"]:
        info = registry.info(u["model"], u["provider"]) if u["model"] and u["provider"] else None
        costs.setdefault(u["file_id"], CostTotals()).add(cost_of(u, info))
    out = []
    for job in raw["active"]:
        totals = costs.get(job["id"], CostTotals())
        out.append(
            {
                "id": job["id"],
                "name": job["name"],
                "status": job["status"],
                "lines": job["lines"],
                "counts": job["counts"],
                "created_at": job["created_at"],
                "canceled": job["cancel_requested_at"] is not None,
                **progress(job, now),
                "cost_usd": round(totals.batch, 6),
                "unpriced_requests": totals.unpriced,
                "error": job["error"],
            }
        )
    return out


def _provider_lines(report: dict[str, Any]) -> list[str]:
    out = []
    for name, view in report["providers"].items():
        state = view["state"]
        if view["reason"]:
            state = f"{state}: {view['reason']}"
        if view["until"]:
            state += f" (until {time.strftime('%H:%M:%S', time.localtime(view['until']))})"
        out.append(f"  {name:<10} {state}  waiting={view['waiting']}")
    return out


def _job_line(j: dict[str, Any]) -> str:
    name = escape(j["name"])  # a newline in a name must not forge a line of the report
    if j["percent_done"] is None:
        done = "ingesting" if j["status"] in ("claimed", "ingesting") else "-"
    else:
        done = f"{j['percent_done']:.1f}% ({j['done']}/{j['total']})"
    cost = f"${j['cost_usd']:.4f}" + ("+" if j["unpriced_requests"] else "")
    eta = f"~{_fmt_span(j['eta_s'])}" if j["eta_s"] is not None else "-"
    tail = "  CANCELED (finishing)" if j["canceled"] else ""
    err = f"  error: {escape(j['error'])}" if j["error"] else ""
    return f"  #{j['id']} {name} [{j['status']}] {done} cost so far {cost} ETA {eta}{tail}{err}"


def render(report: dict[str, Any], *, show_all: bool = False) -> str:
    daemon = report["daemon"]
    out = ["DAEMON"]
    if daemon["running"]:
        out.append(f"  running (PID {daemon['pid'] or 'unknown'})")
    else:
        out.append("  not running (provider states below are the last known)")
    out.append("PROVIDERS")
    out.extend(_provider_lines(report))
    out.append("ACTIVE JOBS")
    out.extend(_job_line(j) for j in report["active"])
    if not report["active"]:
        out.append("  none")
    out.append("IN FLIGHT (budgets in use, per model)")
    for m in report["in_flight"]:
        out.append(
            f"  {m['provider']} {escape(m['model'])}: {m['batches']} batches, "
            f"{m['requests']} requests, ~{m['estimated_input_tokens']:,} input tokens"
        )
    if not report["in_flight"]:
        out.append("  none")
    out.append("ENQUEUED-TOKEN BUDGETS (learned or configured limits)")
    for g in report.get("budgets", []):
        share = 100.0 * g["in_use"] / g["limit"] if g["limit"] else 0.0
        out.append(
            f"  {g['provider']} {escape(g['model'])}: {g['in_use']:,} of {g['limit']:,} "
            f"tokens in use ({share:.0f}%)"
        )
    if not report.get("budgets"):
        out.append("  none known")
    out.append("OPEN BATCHES")
    out.extend(_batch_line(b, "submitted_at") for b in report["open_batches"])
    if not report["open_batches"]:
        out.append("  none")
    out.append("DISK")
    out.append(
        "  "
        + "  ".join(
            f"{k} {'-' if v is None else _fmt_bytes(v)}" for k, v in report["disk"].items()
        )
    )
    errors = report["errors"] if show_all else report["active_errors"]
    out.append("ERRORS" + ("" if show_all else " (active jobs)"))
    out.extend(f"  {e['type']}: {e['n']}" for e in errors)
    if show_all:
        out.append("ALL JOBS (latest 200)")
        for f in report["files"]:
            counts = " ".join(f"{k}={v}" for k, v in sorted(f["counts"].items()))
            err = f"  error: {escape(f['error'])}" if f["error"] else ""
            name = escape(f["name"])
            out.append(f"  #{f['id']} {name} [{f['status']}] lines={f['lines']} {counts}{err}")
        out.append("ALL BATCHES (latest 200)")
        out.extend(_batch_line(b, "created_at") for b in report["batches"])
    return "\n".join(out) + "\n"


def _batch_line(b: dict[str, Any], since: str) -> str:
    return (
        f"  #{b['id']} {b['provider']} {escape(b['model'])} {b['provider_batch_id'] or '-'} "
        f"[{b['status']}/{b['provider_status'] or '-'}] n={b['n_items']} "
        f"age={_fmt_age(b.get(since) or b.get('created_at'))}"
    )


def as_json(report: dict[str, Any], *, indent: int | None = 2) -> str:
    return json.dumps(report, indent=indent) + "\n"


def watch(
    draw: Callable[[], str],
    emit: Callable[[str], None],
    *,
    interval_s: float,
    count: int | None,
    before: str = "",
    between: str = "",
) -> None:
    """Draw the report every ``interval_s`` seconds, ``count`` times (None: until
    interrupted); ``before`` each drawing (a terminal: clear it), ``between`` two."""
    shown = 0
    while count is None or shown < count:
        emit(("" if shown == 0 else between) + before + draw())
        shown += 1
        if count is None or shown < count:
            time.sleep(interval_s)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run(cfg: Config, *, as_json_view: bool, show_all: bool, watch_view: bool,
        interval_s: float, count: int | None, emit: Callable[[str], None]) -> int:  # fmt: skip
    """``batchd status``: exit 0, or 1 when the database cannot be read."""

    def draw() -> str:
        report = collect(cfg)
        if as_json_view:
            return as_json(report, indent=None if watch_view else 2)
        return render(report, show_all=show_all)

    try:
        if not watch_view:
            emit(draw())
            return 0
        try:
            terminal = sys.stdout.isatty() and not as_json_view
            # Written directly: a reader that goes away (BrokenPipeError) ends the watch, and
            # the command ends quietly (cli.main).
            watch(draw, _write, interval_s=interval_s, count=count,
                  before=CLEAR if terminal else "",
                  between="" if terminal or as_json_view else "\n")  # fmt: skip
        except KeyboardInterrupt:
            emit("\n")
    except StatusError as exc:
        print(f"batchd status: {exc}", file=sys.stderr)
        return 1
    return 0


__all__ = ["StatusError", "as_json", "collect", "folder_bytes", "progress", "render", "run"]
