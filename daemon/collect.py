"""Polling and collection: each provider's due batches are polled in rounds (``polling.py``
says when a batch is due and how a round reads the list); an ended batch's results are
streamed into the store (``results.py``).

Only the batches of the provider's current account are polled (see ``reconcile.py`` for the
others). A running batch is polled again later, less often as it ages; its row is written only
when its status changed. A batch that
failed or vanished whole puts its requests back to pending; an ended batch's results are
stored chunk by chunk under ``asyncio.shield`` (idempotently, so a collection cut short is
simply run again), and what each result does to its request is ``outcomes.py``'s to say. The
requests one batch sends back share one retry time (per attempt number), so they come due
together and go out together.

An unexpected error (a bug) is contained to its batch. While polling, the batch is polled again
later on its own backoff (a poll has no effect, so it can be repeated). While collecting, the
collection is tried again after a backoff, ``COLLECT_TRIES`` times in all (the results stored so
far are kept); then the batch is given up: its requests without a result go back to pending
with an attempt counted (they are sent again), or end ``failed`` with ``internal_error``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from loguru import logger

from adapters.base import AdapterError, AuthError, BatchStatus

from . import metrics
from .crashpoints import crash_point, fault_point
from .logs import Throttle, batch_log, call_error_kind, elapsed_since
from .outcomes import (
    batch_lost_error,
    describe,
    internal_error,
    missing_update,
)
from .polling import LIST_MIN, Entry, PollBook, listed_statuses, poll_interval_s
from .results import store_results
from .states import RequestStatus
from .store import state_failure
from .text import plural

if TYPE_CHECKING:
    from loguru import Logger

    from .scheduler import Scheduler

COLLECT_TRIES = 3  # collections of one ended batch that failed unexpectedly before giving up
# A running batch's progress line: when its counts move, else at its first poll and then at the
# first poll after this long (under poll_max_s's default 300 s: every 5 minutes at most apart).
PROGRESS_EVERY_S = 240.0
_PROGRESS = Throttle(PROGRESS_EVERY_S)  # by local tag


class Collector:
    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self._collect_failures: dict[int, int] = {}  # batch row -> failed collections so far
        self._books: dict[str, PollBook] = {}  # provider -> its batches' poll schedule

    def book(self, provider: str) -> PollBook:
        book = self._books.get(provider)
        if book is None:
            book = self._books[provider] = PollBook()
        return book

    async def poll_due(self, provider: str) -> float | None:
        """Poll the batches of ``provider`` that are due, in one round (``polling.py``);
        returns when the next one is due."""
        sched = self.sched
        state = sched.providers[provider]
        if sched.paused(provider):
            return state.paused_until
        say_again_at = await sched.reconciler.other_accounts(provider)
        book = self.book(provider)
        await book.refresh(sched.store, provider, state.account)
        due = book.due(time.time())
        if due:
            try:
                await sched.ready(provider)  # the SDK imported before the timed calls
            except Exception as exc:  # a broken install of one SDK: its provider waits
                if state_failure(exc):
                    raise
                logger.bind(provider=provider, event="provider.sdk_failed").opt(
                    exception=exc
                ).error(
                    "the {} SDK could not be loaded ({}); polling again in {:.0f}s",
                    provider,
                    describe(exc),
                    sched.cfg.auth_pause_s,
                )
                return time.time() + sched.cfg.auth_pause_s
            await self._round(provider, book, due)
        next_poll = book.next_at()
        if say_again_at is None:
            return next_poll
        return say_again_at if next_poll is None else min(next_poll, say_again_at)

    async def _round(self, provider: str, book: PollBook, due: list[int]) -> None:
        sched = self.sched
        listed = await listed_statuses(sched, provider, book, due) if len(due) >= LIST_MIN else {}
        if listed:
            metrics.note_poll(provider)
        if sched.paused(provider):
            return
        # Every batch the list showed is up to date: those that ended are collected now too.
        due_set = set(due)
        look = list(due)
        for row_id, entry in list(book.entries.items()):
            status = listed.get(entry.pid)
            if row_id in due_set or status is None:
                continue
            if status.state == "running":  # no change worth a write: checked again later
                self._reschedule(book, row_id, entry)
            else:
                look.append(row_id)
        rows = await sched.store.submitted_batches(look)
        for row_id in due_set.union(look) - {row["id"] for row in rows}:
            book.drop(row_id)  # collected or ended elsewhere
        for row in rows:
            if sched.paused(provider):
                return
            try:
                await self._poll_one(row, listed.get(row["provider_batch_id"]))
            except Exception as exc:  # contained to this batch; polled again on its backoff
                if state_failure(exc):
                    raise
                _log(row).bind(event="batch.poll_failed", error_kind="internal_error").opt(
                    exception=exc
                ).error(
                    "polling batch {} failed with an unexpected error ({}); will poll again",
                    row["provider_batch_id"],
                    describe(exc),
                )
                await self._poll_later(row)

    def _reschedule(self, book: PollBook, row_id: int, entry: Entry) -> None:
        now = time.time()
        interval = self._interval(now - entry.submitted_at)
        book.schedule(row_id, entry.pid, entry.submitted_at, now + interval, interval)

    def _interval(self, age_s: float) -> float:
        cfg = self.sched.cfg
        return poll_interval_s(
            age_s, initial_s=cfg.poll_initial_s, factor=cfg.poll_factor, max_s=cfg.poll_max_s
        )

    async def _poll_one(self, row: dict[str, Any], status: BatchStatus | None) -> None:
        """One batch's status (from the round's list, else retrieved) and what follows."""
        sched = self.sched
        provider = row["provider"]
        adapter = sched.providers[provider].adapter
        log = _log(row)
        if status is None:
            try:
                status = await sched.call(lambda: adapter.poll(row["provider_batch_id"]))
                metrics.note_poll(provider)
            except AuthError as err:
                sched.pause(provider, err)
                return
            except AdapterError as err:
                await self._poll_later(row, retry_after=_after(err))
                log.bind(event="batch.poll_failed", error_kind=call_error_kind(err)).warning(
                    "poll failed ({}); will poll again", err
                )
                return
        if status.state == "running":
            counts = {"total": status.total, "done": status.done, "failed": status.failed}
            old = row["counts"]
            changed = _dumps_counts(counts) != old
            if _PROGRESS.due(row["tag"]) or (changed and old is not None):
                log.bind(event="batch.progress", elapsed_s=elapsed_since(row["submitted_at"])).info(
                    "batch progress: {}/{} done ({}), {} failed; provider status {}",
                    status.done,
                    status.total,
                    f"{100 * (status.done or 0) / status.total:.0f}%" if status.total else "-",
                    status.failed,
                    status.provider_status,
                )
            if changed or status.provider_status != row["provider_status"]:
                await self._poll_later(row, status.provider_status, counts)
            else:
                await self._poll_later(row)
        elif status.state == "ended":
            self.book(provider).drop(row["id"])
            await self._collect(row, status)
        else:
            self.book(provider).drop(row["id"])
            await self._batch_lost(row, status)

    async def _poll_later(
        self,
        row: dict[str, Any],
        provider_status: str | None = None,
        counts: dict[str, Any] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        """Schedule the next poll by the batch's age; a provider's Retry-After is a floor.
        Given a new ``provider_status`` (the status changed) the row is updated too."""
        now = time.time()
        submitted_at = float(row["submitted_at"] or row["created_at"])
        interval = self._interval(now - submitted_at)
        at = now + max(interval, retry_after or 0.0)
        book = self.book(row["provider"])
        book.schedule(row["id"], row["provider_batch_id"], submitted_at, at, interval)
        if provider_status is not None:
            await self.sched.store.update_poll(
                row["id"],
                provider_status=provider_status,
                counts=counts,
                next_poll_at=at,
                poll_interval_s=interval,
            )

    async def _batch_lost(self, row: dict[str, Any], status: BatchStatus) -> None:
        sched = self.sched
        if await sched.budgets.batch_lost(row, status.error):  # an enqueued-token refusal
            return
        log = _log(row)
        _PROGRESS.forget(row["tag"])
        log.bind(event="batch.lost", error_kind=f"batch_{status.state}").warning(
            "batch {}: {}; its {} re-queued (or fail once out of attempts)",
            status.state,
            status.error or status.provider_status,
            plural(row["n_items"], "request is", "requests are"),
        )
        await sched.store.abort_batch(
            row["id"],
            status.error or status.state,
            next_attempt_at=sched.retry_at(1),
            count_attempt=True,
            max_attempts=sched.cfg.max_attempts,
            final_error=batch_lost_error(status),
        )
        sched.wake.set()

    # -- results ---------------------------------------------------------------------------
    async def _collect(self, row: dict[str, Any], status: BatchStatus) -> None:
        sched = self.sched
        log = _log(row)
        started = time.monotonic()
        try:
            fault_point("collect")
            stored = await self._collect_results(row, status, log)
        except Exception as exc:
            if state_failure(exc):
                raise
            await self._collect_failed(row, status, exc, log)
            return
        if not stored:
            return
        await sched.sizer.batch_ended(row["id"])  # a canary passes or fails; sizes grow
        metrics.note_collect(row["provider"], time.monotonic() - started)
        self._collect_failures.pop(row["id"], None)
        if not sched.cfg.keep_provider_files:
            await self._cleanup(row, log)
        sched.wake.set()

    async def _collect_results(
        self, row: dict[str, Any], status: BatchStatus, log: Logger
    ) -> bool:
        """Store an ended batch's results; False when fetching them failed (tried again at
        a later poll)."""
        sched = self.sched
        pid = row["provider_batch_id"]
        # A collection cut short (a crash) stored some results already (``before``): they
        # count too, or a canary's verdict would be read from the rest alone.
        outstanding, before = await sched.store.batch_rows(row["id"])
        retry_at = sched.batch_retry_at()  # one retry time per attempt number for the batch
        try:
            counts, gone = await store_results(sched, row, outstanding, retry_at, log)
            for state, n in before.items():
                outcome = _OUTCOME_OF.get(state, state)
                counts[outcome] = counts.get(outcome, 0) + n
        except AdapterError as err:
            if isinstance(err, AuthError):  # as for a poll: the provider pauses, loudly
                sched.pause(row["provider"], err)
            log.bind(event="batch.results_failed", error_kind=call_error_kind(err)).warning(
                "fetching results failed ({}); will try again", err
            )
            await self._poll_later(row, retry_after=_after(err))
            return False
        missing = [
            missing_update(rid, attempts, status, sched.policy, retry_at)
            for rid, attempts in outstanding.items()
        ]
        if missing:
            await asyncio.shield(sched.store.record_results(row["id"], missing))
            if not (gone or status.expired or status.cancelled):
                log.bind(event="batch.results_missing", error_kind="result_missing").error(
                    "results of batch {} are missing for {}; they are re-queued",
                    pid,
                    plural(len(missing), "request"),
                )
        await asyncio.shield(sched.store.mark_collected(row["id"], status.provider_status, counts))
        crash_point("after_results_stored")
        retries = counts.get("retry", 0) + counts.get("expired", 0) + len(missing)
        _PROGRESS.forget(row["tag"])
        log.bind(event="batch.ended", elapsed_s=elapsed_since(row["submitted_at"])).info(
            "batch ended: {} {}; {} without a result{}",
            status.provider_status,
            counts,
            plural(len(missing), "request"),
            f"; retry scheduled for up to {plural(retries, 'request')}" if retries else "",
        )
        return True

    async def _collect_failed(
        self, row: dict[str, Any], status: BatchStatus, exc: Exception, log: Logger
    ) -> None:
        """An unexpected error while collecting: try again after a backoff, ``COLLECT_TRIES``
        times in all; then give the batch up (its unanswered requests are sent again)."""
        sched = self.sched
        pid = row["provider_batch_id"]
        tries = self._collect_failures[row["id"]] = self._collect_failures.get(row["id"], 0) + 1
        if tries < COLLECT_TRIES:
            delay = sched.backoff(tries)
            log.bind(event="batch.collect_failed", error_kind="internal_error").opt(
                exception=exc
            ).error(
                "collecting batch {} failed with an unexpected error ({}); trying again in "
                "{:.1f}s ({} of {} tries)",
                pid,
                describe(exc),
                delay,
                tries,
                COLLECT_TRIES,
            )
            await self._poll_later(row, retry_after=delay)
            return
        self._collect_failures.pop(row["id"], None)
        delay = sched.unit_failed(row["provider"], row["model"])
        log.bind(event="batch.given_up", error_kind="internal_error").opt(exception=exc).error(
            "collecting batch {} failed with an unexpected error ({}) {} times; it is given "
            "up: its requests without a result go back to pending (sent again in {:.1f}s) or "
            "fail once out of attempts",
            pid,
            describe(exc),
            tries,
            delay,
        )
        await asyncio.shield(
            sched.store.abort_batch(
                row["id"],
                f"collection failed: {describe(exc)}",
                next_attempt_at=time.time() + delay,
                count_attempt=True,
                max_attempts=sched.cfg.max_attempts,
                final_error=internal_error(describe(exc)),
            )
        )
        sched.wake.set()

    async def _cleanup(self, row: dict[str, Any], log: Logger) -> None:
        """Delete the batch's files at the provider; a failure is said, never more."""
        adapter = self.sched.providers[row["provider"]].adapter
        pid = row["provider_batch_id"]
        try:
            await self.sched.call(lambda: adapter.cleanup(pid, row["input_file_id"]))
        except AdapterError as err:
            log.bind(event="batch.cleanup_failed", error_kind=call_error_kind(err)).warning(
                "cleanup of provider files failed: {}", err
            )
        except Exception as exc:
            if state_failure(exc):
                raise
            log.bind(event="batch.cleanup_failed", error_kind="internal_error").opt(
                exception=exc
            ).error("cleanup of provider files failed unexpectedly")


# A stored request's status as the outcome its batch's counts name (pending: sent again).
_OUTCOME_OF: dict[str, str] = {RequestStatus.PENDING: "retry"}


def _log(row: dict[str, Any]) -> Logger:
    return batch_log(row)


def _after(err: AdapterError) -> float | None:
    """The provider's Retry-After, when the error carries one."""
    retry_after: float | None = getattr(err, "retry_after", None)
    return retry_after


def _dumps_counts(counts: dict[str, Any]) -> str:
    return json.dumps(counts, separators=(",", ":"))
