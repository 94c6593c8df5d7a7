"""Cancelling a job in the running daemon: what ``batchd cancel`` asked for, applied.

``batchd cancel`` writes the intent (``files.cancel_requested_at``) and cancels the job's pending
requests itself (short transactions beside the daemon); the daemon notices the intent within a
second (:meth:`Canceller.step`, from the guard loop) and applies the rest. A daemon that was
not running applies it at its next start. The rules:

* **Nothing more is sent.** Pending requests end ``canceled`` (error ``job_canceled``). A
  request of the job that an outcome would send back to pending (a retry, an expired or
  cancelled item, a batch that failed or was never created) ends ``canceled`` instead, in the
  same transaction (``Store.record_results`` and ``Store.abort_batch``), and a line stored
  after the cancel (a file still being read) is canceled as it is inserted (in the same
  transaction, ``Store.add_request_rows``), so the planner never sees it pending.
* **Its own batches are cancelled at the provider**: a running batch that holds requests of
  canceled jobs only. The intent is written on the batch row before the call and the call's
  end after it; a cancel whose outcome is unknown is simply sent again (cancelling twice is
  harmless; an ended batch refuses it and that is not an error). A batch still being created
  is cancelled once its create has an outcome.
* **A shared batch keeps running** (it holds requests of other jobs), and so does a batch of
  another account or of a paused provider until it can be reached.
* **Nothing paid for is lost.** A cancelled batch still ends and is collected like any other:
  every answer it has (requests that ran before the cancel, and every answer of a shared batch)
  is recorded as ``succeeded`` (or ``failed``), and the job's results file is written once the
  last of its batches has ended. So a job in a shared batch finishes when that batch does.
* Idempotent: a second cancel changes nothing; a crash at any point is resumed from the rows.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from adapters.base import AdapterError, AuthError, PermanentError

from .outcomes import describe
from .states import BatchRowStatus, FileStatus, RequestStatus
from .store import Store, StoreVersionError, state_failure

if TYPE_CHECKING:
    from .scheduler import Scheduler

RECHECK_S = 1.0  # how often canceled jobs are looked at while some are not written yet
CANCEL_RETRY_S = 30.0  # a batch whose cancel failed (provider down, paused) is tried again


class Canceller:
    """Applies the cancels of jobs (``batchd cancel``) in the running daemon."""

    def __init__(self, sched: Scheduler, store: Store) -> None:
        self.sched = sched
        self.store = store
        self._files_of: dict[int, frozenset[int]] = {}  # open batch -> the jobs it holds
        self._retry_at: dict[int, float] = {}  # batch -> when its cancel may be sent again
        self._said: set[tuple[str, int, int]] = set()  # (what, batch, job) said once

    async def step(self) -> float | None:
        """Apply every outstanding cancel; returns when to look again (None: no cancel is
        outstanding, look again at the next wake-up)."""
        files = await self.store.canceling_files()
        if not files:
            self._files_of.clear()
            self._retry_at.clear()
            return None
        canceled = {int(f["id"]): f for f in files}
        woke = False
        for f in files:  # once; later re-queues of the job's requests end canceled in the store
            if f["cancel_applied_at"] is None and await self.store.cancel_pending(f["id"]):
                woke = True
        open_batches = await self.store.batches_in(
            BatchRowStatus.SUBMITTING, BatchRowStatus.SUBMITTED
        )
        live = {int(b["id"]) for b in open_batches}
        self._files_of = {k: v for k, v in self._files_of.items() if k in live}
        for batch in open_batches:
            holders = self._files_of.get(batch["id"])
            if holders is None:
                holders = self._files_of[batch["id"]] = frozenset(
                    await self.store.batch_files(batch["id"])
                )
            mine = holders & canceled.keys()
            if not mine:
                continue
            if not holders <= canceled.keys():
                self._say_shared(batch, mine, canceled)
            elif await self._cancel_batch(batch):
                woke = True
        for f in files:
            if f["cancel_applied_at"] is None and await self.store.mark_cancel_applied(f["id"]):
                await self._say_applied(f)
                woke = True  # it may have nothing left to wait for: the finisher writes it
        if woke:
            self.sched.wake.set()
        return time.time() + RECHECK_S

    async def _cancel_batch(self, batch: dict[str, Any]) -> bool:
        """Cancel one batch at its provider, once it can be reached; True once sent."""
        if batch["status"] != BatchRowStatus.SUBMITTED or batch["cancel_sent_at"] is not None:
            return False  # still being created (cancelled once it has an outcome), or done
        provider = batch["provider"]
        state = self.sched.providers.get(provider)
        now = time.time()
        if state is None or self.sched.paused(provider) or self._retry_at.get(batch["id"], 0) > now:
            return False
        log = batch_logger(batch)
        if batch["account"] != state.account:
            if ("account", batch["id"], 0) not in self._said:
                self._said.add(("account", batch["id"], 0))
                log.warning(
                    "batch of a canceled job belongs to another account; it is not cancelled "
                    "and keeps running there"
                )
            return False
        pid = batch["provider_batch_id"]
        await self.store.note_batch_cancel(batch["id"])  # the intent, before the call
        try:
            await self.sched.call(lambda: state.adapter.cancel(pid), mutating=True)
        except PermanentError as err:  # refused for good: it runs to its end
            log.warning("batch cancel refused ({}); it runs to its end", err)
            await self.store.mark_batch_cancel_sent(batch["id"], f"cancel refused: {err}")
            return True
        except AdapterError as err:  # unknown outcome, provider down, key refused: again later
            if isinstance(err, AuthError):
                self.sched.pause(provider, err)
            self._retry_at[batch["id"]] = now + CANCEL_RETRY_S
            log.warning(
                "batch cancel failed ({}); trying again in {:.0f}s", err, CANCEL_RETRY_S
            )
            return False
        except Exception as exc:  # a bug: contained to this batch, tried again later
            if state_failure(exc):
                raise
            self._retry_at[batch["id"]] = now + CANCEL_RETRY_S
            log.opt(exception=exc).error(
                "batch cancel failed with an unexpected error ({}); trying again in {:.0f}s",
                describe(exc),
                CANCEL_RETRY_S,
            )
            return False
        await self.store.mark_batch_cancel_sent(batch["id"])
        await self.store.poll_soon(batch["id"], self.sched.cfg.poll_initial_s)
        self._retry_at.pop(batch["id"], None)
        log.info(
            "batch cancel sent: {} of a canceled job; what already ran is kept",
            plural(batch["n_items"], "request"),
        )
        return True

    def _say_shared(
        self, batch: dict[str, Any], mine: frozenset[int], canceled: dict[int, dict[str, Any]]
    ) -> None:
        for file_id in sorted(mine):
            if ("shared", batch["id"], file_id) in self._said:
                continue
            self._said.add(("shared", batch["id"], file_id))
            job = canceled[file_id]
            batch_logger(batch).bind(file=job["name"], job=file_id).info(
                "batch is shared with other jobs: it keeps running; the canceled job's "
                "answers in it are kept and its results file is written when it ends"
            )

    async def _say_applied(self, job: dict[str, Any]) -> None:
        counts = await self.store.request_counts(job["id"])
        waiting = counts.get(RequestStatus.BATCHED, 0)
        logger.bind(file=job["name"], job=job["id"]).info(
            "job canceled: {} canceled, {} succeeded, {} still in batches at the providers{}",
            counts.get(RequestStatus.CANCELED, 0),
            counts.get(RequestStatus.SUCCEEDED, 0),
            waiting,
            "; its results are written once they end" if waiting else "",
        )


def plural(n: int, word: str) -> str:
    """``1 request``, ``2 requests``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def batch_logger(batch: dict[str, Any]) -> Any:
    """A logger bound to a batch row: provider, model, local tag and provider batch id."""
    return logger.bind(
        provider=batch["provider"],
        model=batch["model"],
        batch=batch["tag"],
        provider_batch_id=batch["provider_batch_id"],
    )


# -- ``batchd cancel`` -----------------------------------------------------------------------


async def request(db: Path, target: str) -> tuple[int, str]:
    """``batchd cancel TARGET``: the intent written, the job's pending requests canceled at
    once (so the daemon sends none of them, even before it notices); the rest (its batches at
    the providers, its results file) is applied by the running daemon, or at its next start.
    Returns (exit status, what to print)."""
    store = await Store(db).open_beside()
    try:
        jobs = await store.jobs_matching(target)
        if not jobs:
            return 1, f"no job named {target!r} and no job with that id (see batchd status --all)"
        open_jobs = [j for j in jobs if j["status"] != FileStatus.DONE]
        if len(open_jobs) > 1:
            ids = ", ".join(f"#{j['id']}" for j in open_jobs)
            return 1, f"{len(open_jobs)} unfinished jobs are named {target!r} ({ids}): give the id"
        if not open_jobs:
            job = jobs[-1]
            if job["cancel_requested_at"] is not None:
                return 0, f"job #{job['id']} {job['name']} was canceled and is finished"
            return 1, f"job #{job['id']} {job['name']} is already finished; nothing to cancel"
        job = open_jobs[0]
        first = await store.request_cancel(job["id"])
        canceled = await store.cancel_pending(job["id"])
        counts = await store.request_counts(job["id"])
    finally:
        await store.close()
    waiting = counts.get(RequestStatus.BATCHED, 0)
    head = "cancel requested" if first else "cancel was already requested"
    return 0, (
        f"job #{job['id']} {job['name']}: {head}; {canceled} pending requests canceled now, "
        f"{counts.get(RequestStatus.SUCCEEDED, 0)} succeeded are kept, {waiting} in batches "
        "at the providers (batches holding only this job are cancelled by the daemon; what "
        "already ran is kept); the results file is written when they end"
    )


def run_cancel(state_dir: Path, target: str) -> tuple[int, str]:
    """The command's body, run by ``cli.py``: (exit status, message)."""
    import asyncio
    import sqlite3

    from .startup import db_path

    db = db_path(state_dir)
    if not db.exists():
        return 1, f"no state database at {db} (batchd has not run on this folder)"
    try:
        return asyncio.run(request(db, target))
    except (sqlite3.Error, OSError, StoreVersionError) as exc:
        return 1, f"cannot write the state database {db}: {exc}"


__all__ = ["Canceller", "batch_logger", "request", "run_cancel"]
