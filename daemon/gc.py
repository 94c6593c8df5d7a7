"""Retention: what batchd deletes, and the warning before a provider deletes results.

* **Files**: a finished job's outbox files (results and summary) and its archived input in
  ``processed/`` are deleted ``retention_days`` after the job finished (0 keeps them for ever).
  Only the paths recorded on the job's row are touched: nothing else in those folders.
* **Rows**: a finished job's row and its requests (every prompt and answer) are deleted
  ``state_retention_days`` after it finished (0 keeps them for ever); while its files are kept,
  so is its row (files are only ever deleted through their row, so none is left untracked).
  Ended batches no request points at go too. The freed pages are then given back to the file
  system (incremental vacuum; a database created before batchd did that is rewritten by a full
  ``VACUUM`` when ``batchd gc`` runs with no daemon).
* Jobs not finished are never touched.
* **Provider retention**: a batch not collected yet that gets within a day of the provider
  deleting its results (``adapters/facts.py`` ``RESULTS_KEPT_DAYS``) is logged as an error,
  once per batch per run, and again while it stays so (every hour).

``batchd gc`` runs it now (beside a running daemon too: its transactions are short); the
daemon runs it an hour after it starts, then daily (:class:`Retention`, from the guard loop).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from adapters.facts import RESULTS_KEPT_DAYS

from .config import Config
from .store import Store, StoreVersionError, state_failure

if TYPE_CHECKING:
    from .scheduler import Scheduler

DAY_S = 86400.0
GC_EVERY_S = DAY_S
FIRST_GC_AFTER_S = 3600.0  # after a start: not in the middle of start-up recovery
EXPIRY_CHECK_EVERY_S = 3600.0
EXPIRY_MARGIN_S = DAY_S  # warn this long before a provider deletes the results


@dataclass
class GcReport:
    files_removed: int = 0
    bytes_removed: int = 0
    jobs_forgotten: int = 0
    requests_forgotten: int = 0
    batches_forgotten: int = 0
    bytes_reclaimed: int = 0
    vacuumed: bool = False
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        text = (
            f"{self.files_removed} files removed ({self.bytes_removed} bytes), "
            f"{self.jobs_forgotten} finished jobs forgotten ({self.requests_forgotten} "
            f"requests), {self.batches_forgotten} ended batches forgotten, "
            f"{self.bytes_reclaimed} bytes of database given back"
        )
        if self.vacuumed:
            text += " (database rewritten by VACUUM)"
        if self.problems:
            text += f"; {len(self.problems)} problems: " + "; ".join(self.problems[:5])
        return text


def _remove(path_text: str | None, report: GcReport) -> bool:
    """Delete one recorded file; True when it is gone (or was already)."""
    if not path_text:
        return True
    path = Path(path_text)
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return True
    except OSError as exc:
        report.problems.append(f"cannot remove {path}: {exc}")
        return False
    report.files_removed += 1
    report.bytes_removed += size
    return True


async def collect_garbage(
    cfg: Config, store: Store, *, now: float | None = None, may_vacuum: bool = False
) -> GcReport:
    """One retention pass; ``may_vacuum``: no daemon runs, a full VACUUM is allowed."""
    now = time.time() if now is None else now
    report = GcReport()
    if cfg.retention_days > 0:
        cutoff = now - cfg.retention_days * DAY_S
        while jobs := await store.outputs_to_remove(cutoff):
            progressed = False
            for job in jobs:
                paths = (job["results_path"], job["summary_path"], job["archived_path"])
                if all([_remove(p, report) for p in paths]):
                    await store.mark_outputs_removed(job["id"])
                    progressed = True
            if not progressed:
                break  # every one refused (logged in problems): tried again next time
    if cfg.state_retention_days > 0:
        cutoff = now - cfg.state_retention_days * DAY_S
        kept_files = cfg.retention_days > 0  # rows of jobs whose files are kept stay
        while jobs := await store.jobs_to_forget(cutoff, outputs_gone=kept_files):
            for job in jobs:
                report.requests_forgotten += await store.forget_job(job["id"])
                report.jobs_forgotten += 1
        report.batches_forgotten = await store.forget_old_batches(cutoff)
    mode, free = await store.free_space()
    small_pages = await store.has_small_pages()  # made before 16 KiB pages
    if mode == 2 and not (may_vacuum and small_pages):
        report.bytes_reclaimed = await store.reclaim(max_pages=1 << 30)
    elif may_vacuum and (free > 0 or small_pages):
        await store.vacuum()
        report.vacuumed = True
        report.bytes_reclaimed = free
    return report


def expiring_batches(
    batches: list[dict[str, Any]], now: float
) -> list[tuple[dict[str, Any], float]]:
    """Batches not collected yet whose results the provider deletes within a day: (batch,
    seconds left, negative when the deadline has passed)."""
    out = []
    for b in batches:
        days = RESULTS_KEPT_DAYS.get(b["provider"])
        created = b.get("submitted_at") or b.get("created_at")
        if days is None or created is None:
            continue
        left = float(created) + days * DAY_S - now
        if left <= EXPIRY_MARGIN_S:
            out.append((b, left))
    return out


class Retention:
    """The daemon's side: a retention pass daily, the provider-expiry check hourly."""

    def __init__(self, sched: Scheduler, store: Store) -> None:
        self.sched = sched
        self.store = store
        now = time.time()
        self._gc_at = now + FIRST_GC_AFTER_S
        self._expiry_at = now
        self._running: asyncio.Task[None] | None = None

    async def step(self) -> None:
        now = time.time()
        if now >= self._expiry_at:
            self._expiry_at = now + EXPIRY_CHECK_EVERY_S
            for batch, left in expiring_batches(await self.store.open_batches(), now):
                logger.bind(
                    provider=batch["provider"], model=batch["model"], batch=batch["tag"],
                    provider_batch_id=batch["provider_batch_id"],
                ).error(
                    "RESULTS AT RISK: the provider deletes this batch's results {}; batchd "
                    "has not collected them yet (is the provider paused, or the key of "
                    "another account?)",
                    f"in {left / 3600:.1f} h" if left > 0 else "about now (the deadline passed)",
                )  # fmt: skip
        if now >= self._gc_at and (self._running is None or self._running.done()):
            self._gc_at = now + GC_EVERY_S
            self._running = self.sched.spawn(self._gc(), name="retention")

    async def _gc(self) -> None:
        """Contained: an unexpected error is logged with its traceback and retention is tried
        again the next day; only the state database failing ends the daemon."""
        try:
            report = await collect_garbage(self.sched.cfg, self.store)
        except Exception as exc:
            if state_failure(exc):
                raise
            logger.opt(exception=exc).error(
                "retention failed with an unexpected error ({}); tried again in a day", exc
            )
            return
        if report.problems:
            logger.warning("retention: {}", report.line())
        else:
            logger.info("retention: {}", report.line())


def run_gc(cfg: Config) -> tuple[int, str]:
    """``batchd gc``: one retention pass now. Exit 0, or 1 when the database cannot be
    written or some files could not be removed."""
    from .startup import db_path, lock_holder

    db = db_path(cfg.state_dir)
    if not db.exists():
        return 1, f"batchd gc: no state database at {db} (batchd has not run on this folder)\n"
    running, _pid = lock_holder(cfg.state_dir)

    async def go() -> GcReport:
        store = await Store(db).open_beside()
        try:
            return await collect_garbage(cfg, store, may_vacuum=not running)
        finally:
            await store.close()

    try:
        report = asyncio.run(go())
    except (sqlite3.Error, OSError, StoreVersionError) as exc:
        return 1, f"batchd gc: cannot write the state database {db}: {exc}\n"
    return (1 if report.problems else 0), f"retention: {report.line()}\n"


__all__ = ["GcReport", "Retention", "collect_garbage", "expiring_batches", "run_gc"]
