"""Reconciliation: batches whose create call has no recorded outcome, and other accounts' batches.

A batch row left in ``submitting`` (the process died mid-create, or the call's outcome was
unknown) is looked up at the provider by its tag, never blindly resubmitted: found, it is
recorded as submitted; not found twice (some time apart), its requests go back to pending (an
attempt counted, with a backoff, when the create call ended in this process, unknown or with an
unexpected error; not when a crash cut it short). A provider that cannot answer yet, or a
lookup that fails unexpectedly, is asked again, backing off.

Only the batches of the provider's current account (its base URL and a digest of its key) are
polled, collected and looked up. An open batch of another account (the key or base URL changed
since it was created) is adopted only when the provider shows it to the configured account (a
key rotated within the same organisation); the others are left alone, neither requeued nor
resubmitted (they may still run under their own account: that would pay twice). They wait until
that account is configured again, said loudly at start-up and every ``auth_pause_s``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from loguru import logger

from adapters.base import AdapterError, AuthError

from .logs import batch_log, call_error_kind
from .outcomes import create_error
from .states import BatchRowStatus
from .store import state_failure

if TYPE_CHECKING:
    from loguru import Logger

    from .scheduler import Scheduler

NOT_FOUND_TIMES = 2  # lookups that found nothing before a batch counts as never created


class Reconciler:
    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self._lookups: dict[int, int] = {}  # batch row -> lookups that failed so far

    def start(self) -> list[asyncio.Task[None]]:
        """Reconcile every provider's rows in the background, without holding up start-up:
        a provider that is slow or down must not keep the daemon from serving the others (a
        lookup may take a timeout). One provider's rows are looked up one after the other,
        oldest first. Returns the tasks (systemd readiness waits for them)."""
        tasks = []
        for provider in self.sched.providers:
            task = self.sched.spawn(self.reconcile_all(provider), name=f"reconcile-{provider}")
            if task is not None:
                tasks.append(task)
        return tasks

    async def reconcile_all(self, provider: str) -> None:
        """Look up each of the provider's (current account's) batches left in ``submitting``."""
        sched = self.sched
        account = sched.providers[provider].account
        for row in await sched.store.submitting_batches(provider, account):
            if sched.stopping:
                return
            await self._reconcile(row)

    def look_again(self, batch_id: int, delay_s: float | None = None) -> None:
        """Look the batch up after ``delay_s`` (default ``reconcile_after_s``), in the
        background."""
        self.sched.spawn(self._later(batch_id, delay_s), name=f"reconcile-batch-{batch_id}")

    async def _later(self, batch_id: int, delay_s: float | None) -> None:
        sched = self.sched
        await asyncio.sleep(sched.cfg.reconcile_after_s if delay_s is None else delay_s)
        row = await sched.store.batch(batch_id)
        if row is not None and row["status"] == BatchRowStatus.SUBMITTING:
            await self._reconcile(row)

    async def _reconcile(self, row: dict[str, Any]) -> None:
        sched = self.sched
        provider = row["provider"]
        adapter = sched.providers[provider].adapter
        log = batch_log(row)
        known = await sched.store.known_provider_ids(provider)
        keys = [f"r{rid}" for rid, _ in await sched.store.batch_requests(row["id"])]
        try:
            await sched.ready(provider)  # the SDK imported before the timed lookup
            found = await sched.call(
                lambda: adapter.find(
                    row["tag"], row["model"], row["n_items"], row["created_at"], known, keys
                )
            )
        except AdapterError as err:
            # Not an answer: the provider failed, or cannot tell yet (an unlabelled candidate
            # still running). Look again, backing off: that can take as long as a batch runs.
            self._no_answer(row, err, log)
            return
        except Exception as exc:  # a bug in the lookup: no answer either, said with its trace
            if state_failure(exc):
                raise
            log.bind(event="reconcile.lookup_failed", error_kind="internal_error").opt(
                exception=exc
            ).error("reconcile: the lookup failed unexpectedly")
            self._no_answer(row, exc, log)
            return
        self._lookups.pop(row["id"], None)
        if found is not None:
            record = sched.store.mark_submitted(
                row["id"], found, None, poll_interval_s=sched.cfg.poll_initial_s, now=time.time()
            )
            await asyncio.shield(record)
            log.bind(event="reconcile.found", provider_batch_id=found).info(
                "reconcile: batch {} found at the provider as {}", row["tag"], found
            )
            sched.wake.set()
            return
        tries = await sched.store.note_reconcile_attempt(row["id"])
        if tries < NOT_FOUND_TIMES:
            self.look_again(row["id"])
            return
        await asyncio.shield(self._never_created(row, log))
        sched.wake.set()

    def _no_answer(self, row: dict[str, Any], err: Exception, log: Logger) -> None:
        sched = self.sched
        failures = self._lookups[row["id"]] = self._lookups.get(row["id"], 0) + 1
        retry_after = getattr(err, "retry_after", None)
        delay = max(sched.cfg.reconcile_after_s, sched.backoff(failures, retry_after))
        log.bind(event="reconcile.no_answer", error_kind=call_error_kind(err)).warning(
            "reconcile: no answer yet ({}); looking again in {:.1f}s", err, delay
        )
        self.look_again(row["id"], delay)

    async def _never_created(self, row: dict[str, Any], log: Logger) -> None:
        """The batch is not at the provider: its requests go back to pending. When its create
        call had ended in this process without a known outcome (noted on the row: unknown, or
        an unexpected error), that counts an attempt and backs off (a create that always ends
        so must not loop for ever); a create cut short by a crash does not."""
        sched = self.sched
        if not row["error"]:
            log.bind(event="reconcile.never_created").warning(
                "reconcile: batch {} was never created; its requests go back to pending",
                row["tag"],
            )
            await sched.store.abort_batch(
                row["id"],
                "never created at the provider",
                next_attempt_at=0.0,
                count_attempt=False,
            )
            return
        delay = sched.unit_failed(row["provider"], row["model"])
        kind = create_error(row["error"])["type"]
        log.bind(event="reconcile.never_created", error_kind=kind).warning(
            "reconcile: batch {} was never created (its create call: {}); its requests "
            "go back to pending (retry in {:.1f}s) or fail once out of attempts",
            row["tag"],
            row["error"],
            delay,
        )
        await sched.store.abort_batch(
            row["id"],
            row["error"],
            next_attempt_at=time.time() + delay,
            count_attempt=True,
            max_attempts=sched.cfg.max_attempts,
            final_error=create_error(row["error"]),
        )

    async def other_accounts(self, provider: str) -> float | None:
        """Batches of another account: adopt those the configured account can see at the
        provider, and say (loudly) how many others are left alone; at start-up, then every
        ``auth_pause_s`` while any remain. Returns when to look again."""
        sched = self.sched
        state = sched.providers[provider]
        now = time.time()
        if state.other_accounts_check_at > now:
            return state.other_accounts_check_at
        left = 0
        for row in await sched.store.other_account_batches(provider, state.account):
            if sched.stopping or sched.paused(provider):
                left += 1
            elif not await self._adopted(row):
                left += 1
        if not left:  # the account does not change while batchd runs: none will appear
            state.other_accounts_check_at = float("inf")
            return None
        logger.bind(provider=provider, event="reconcile.other_account").error(
            "open {} batches that belong to another account: {} (the API key or base URL "
            "changed since they were created); the configured account cannot see them, so they "
            "are left alone, neither polled nor resubmitted, until that account is configured "
            "again; looking again in {:.0f}s",
            provider,
            left,
            sched.cfg.auth_pause_s,
        )
        state.other_accounts_check_at = now + sched.cfg.auth_pause_s
        return state.other_accounts_check_at

    async def _adopted(self, row: dict[str, Any]) -> bool:
        """Adopt a submitted batch of another account when the configured account can see it
        at the provider (a key rotated within the same organisation, the same service under
        another URL). Anything else (not found, an error, no provider id yet) leaves it alone:
        it may run under its own account, so requeueing it could pay twice."""
        sched = self.sched
        provider, pid = row["provider"], row["provider_batch_id"]
        state = sched.providers[provider]
        if row["status"] != BatchRowStatus.SUBMITTED or pid is None:
            return False
        try:
            await sched.ready(provider)
            status = await sched.call(lambda: state.adapter.poll(pid))
        except AuthError as err:
            sched.pause(provider, err)
            return False
        except AdapterError:
            return False
        except Exception as exc:  # a bug in the poll: left alone, as for any other error
            if state_failure(exc):
                raise
            batch_log(row).bind(event="reconcile.adopt_failed", error_kind="internal_error").opt(
                exception=exc
            ).error(
                "polling another account's batch failed unexpectedly; it is left alone"
            )
            return False
        if status.state == "gone":
            return False
        await sched.store.adopt_batch(row["id"], state.account)
        sched.collector.book(provider).forget()  # an older batch joins the account's book
        batch_log(row).bind(event="reconcile.adopted").info(
            "batch {} was created under another API key or base URL; the configured account "
            "can see it, so it is polled from now on",
            pid,
        )
        return True
