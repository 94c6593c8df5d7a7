"""``batchd status``: the daemon, each provider's state, files, batches and errors.

It reads the state database read-only (``Store.open_read_only``: no migration, no journal-mode
switch, no write), so it works beside a running daemon and for a user who may read but not
write the state folder. Whether a daemon runs comes from its lock (``startup.lock_holder``);
each provider's state (running / paused: reason / no key) from what the daemon last
published (``availability.read_snapshot``), with the requests waiting for it from the database.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from adapters.facts import PROVIDERS

from .availability import read_snapshot
from .logs import escape
from .startup import db_path, lock_holder
from .store import Store, StoreError


class StatusError(RuntimeError):
    """The state database cannot be read; the message says why."""


def _fmt_age(ts: float | None) -> str:
    if ts is None:
        return "-"
    s = int(time.time() - ts)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def collect(state_dir: Path) -> dict[str, Any]:
    """The status report; raises StatusError when the database cannot be read."""
    db = db_path(state_dir)
    if not db.exists():
        raise StatusError(f"no state database at {db} (batchd has not run on this folder)")

    async def read() -> tuple[dict[str, Any], dict[str, int]]:
        store = await Store(db).open_read_only()
        try:
            return await store.status_report(), await store.waiting_by_provider()
        finally:
            await store.close()

    try:
        report, waiting = asyncio.run(read())
    except (sqlite3.Error, StoreError, OSError) as exc:
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
            "waiting": waiting.get(name, 0),
        }
    daemon = {"running": running, "pid": pid, "states_at": snapshot and snapshot.get("updated_at")}
    return {"daemon": daemon, "providers": providers, **report}


def render(report: dict[str, Any]) -> str:
    daemon = report["daemon"]
    out = ["DAEMON"]
    if daemon["running"]:
        out.append(f"  running (PID {daemon['pid'] or 'unknown'})")
    else:
        out.append("  not running (provider states below are the last known)")
    out.append("PROVIDERS")
    for name, view in report["providers"].items():
        state = view["state"]
        if view["reason"]:
            state = f"{state}: {view['reason']}"
        if view["until"]:
            state += f" (until {time.strftime('%H:%M:%S', time.localtime(view['until']))})"
        out.append(f"  {name:<10} {state}  waiting={view['waiting']}")
    out.append("FILES")
    for f in report["files"]:
        counts = " ".join(f"{k}={v}" for k, v in sorted(f["counts"].items()))
        err = f"  error: {escape(f['error'])}" if f["error"] else ""
        name = escape(f["name"])  # a newline in a name must not forge a line of the report
        out.append(f"  #{f['id']} {name} [{f['status']}] lines={f['lines']} {counts}{err}")
    out.append("BATCHES")
    for b in report["batches"]:
        out.append(
            f"  #{b['id']} {b['provider']} {escape(b['model'])} {b['provider_batch_id'] or '-'} "
            f"[{b['status']}/{b['provider_status'] or '-'}] n={b['n_items']} "
            f"age={_fmt_age(b['created_at'])}"
        )
    out.append("ERRORS")
    out.extend(f"  {e['type']}: {e['n']}" for e in report["errors"])
    return "\n".join(out) + "\n"


def as_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2) + "\n"


__all__ = ["StatusError", "as_json", "collect", "render"]
