"""Submission: one task per model claims batches of its due requests and creates them.

Every create call is preceded by an intent row (the batch row in ``submitting``, written with
the claim) and followed by a shielded record of its result. A create call whose outcome is
unknown (timeout, dropped connection) is never retried blindly: the batch is handed to the
reconciler, which looks it up at the provider by its tag. A refused create puts the requests
back to pending with a backoff (transient), pauses the provider (authentication), or fails
them (permanent); a refusal for the model's queue quota goes to ``budgets.py``. Which
requests a batch takes, and how many, is ``sizing.py``'s to say, cut to the budget's room.

An unexpected error (a bug) is contained to its batch, or to its model's loop. Before the
create call (building the items, prompt caching) nothing has reached the provider: the batch
is released, its requests back to pending with a backoff and an attempt counted (``failed``
with ``internal_error`` once out of attempts). From the create call on, the call may have taken
effect: the error is noted on the batch row and the batch is reconciled like any unknown
outcome. A create call that ended without a known outcome (unknown, or an unexpected error)
and was never created counts an attempt, with a backoff, so a create that always ends so
cannot loop for ever; a create cut short by a crash (nothing noted) does not. An error of the
state database is not contained (see ``scheduler.py``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from loguru import logger

from adapters.base import (
    AdapterError,
    AuthError,
    BatchItem,
    PermanentError,
    TransientError,
    UnknownOutcome,
)

from .caching import prepare_items
from .crashpoints import crash_point, fault_point
from .logs import batch_context, call_error_kind
from .outcomes import (
    CREATE_UNKNOWN,
    INTERNAL_ERROR,
    describe,
    internal_error,
    noted_create_error,
    refused_error,
)
from .store import state_failure
from .store.planning import DueLane
from .text import plural

if TYPE_CHECKING:
    from loguru import Logger

    from .scheduler import Scheduler

CREATES_WINDOW_S = 3600.0  # creates_per_hour counts the creates of the last hour
RATE_WAIT_S = 60.0  # how long to wait once the hour's creates are used up


def _oldest_first(due: Sequence[DueLane]) -> tuple[int, ...]:
    """The files of a claim that names none (fixed sizes): the file whose due requests have
    waited longest first. The claim reads each file's due requests in the due index's own
    order, so it stops after the batch's rows instead of sorting every due request."""
    return tuple(lane.file_id for lane in sorted(due, key=lambda x: (x.oldest, x.file_id)))


class Submitter:
    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched

    async def run_model(self, provider: str, model: str) -> None:
        """Claim and submit batches of ``model`` until none is due (or the provider pauses,
        or shutdown begins); each batch's files, size and role as ``sizing.py`` says, cut to
        the room its enqueued-token budget leaves (``budgets.py``). An unexpected error
        outside any one batch holds the model's loop for a backoff."""
        try:
            await self._run_model(provider, model)
        except Exception as exc:
            if state_failure(exc):
                raise
            delay = self.sched.unit_failed(provider, model)
            log = logger.bind(provider=provider, model=model, error_kind=INTERNAL_ERROR)
            log.bind(event="submit.loop_failed").opt(exception=exc).error(
                "the submit loop of {} failed with an unexpected error ({}); its requests stay "
                "pending, trying again in {:.1f}s",
                model,
                describe(exc),
                delay,
            )
            self.sched.hold_model(provider, model, delay)

    async def _run_model(self, provider: str, model: str) -> None:
        sched = self.sched
        state = sched.providers[provider]
        while not sched.paused(provider) and not sched.stopping:
            if await self._rate_wait(provider, model):
                continue
            due = await sched.store.due_lanes_of(provider, model, time.time())
            claim = (await sched.sizer.plan(provider, model, due)).claim
            if claim is None:
                return
            room = await sched.budgets.room(provider, model)
            if sched.budgets.blocked(provider, model, room):
                return
            tag = "batchd-" + secrets.token_hex(8)
            claimed = await sched.store.claim_batch_items(
                provider,
                model,
                tag,
                state.account,
                max_items=claim.size,
                max_bytes=state.adapter.limits.max_bytes,
                now=time.time(),
                files=claim.files or _oldest_first(due),
                max_tokens=room.left,
                tokens_strict=room.batches > 0,  # with none open, one request always goes
                role=claim.role,
                canary_wait_until=claim.wait_until,
            )
            if claimed is None:
                if room.left is not None:
                    sched.budgets.note_blocked(provider, model, room)
                return
            batch_id, rows = claimed
            async with state.semaphore:
                try:
                    with batch_context(provider, model, tag):  # every line names the batch
                        await self._submit(provider, model, batch_id, tag, rows)
                except Exception:  # a bug in the handling of its outcome: never left hanging
                    sched.reconciler.look_again(batch_id)  # (a no-op once it is not submitting)
                    raise

    async def _rate_wait(self, provider: str, model: str) -> bool:
        """Wait a while (and say so) when the provider's creates of the last hour are used up."""
        limit = self.sched.cfg.providers[provider].creates_per_hour
        made = await self.sched.store.creates_since(provider, time.time() - CREATES_WINDOW_S)
        if made < limit:
            return False
        logger.bind(provider=provider, model=model, event="submit.rate_limited").warning(
            "batch creation limit reached ({}/h); waiting {:.0f}s", limit, RATE_WAIT_S
        )
        await asyncio.sleep(RATE_WAIT_S)
        return True

    async def _submit(
        self, provider: str, model: str, batch_id: int, tag: str, rows: Sequence[BatchItem]
    ) -> None:
        sched = self.sched
        adapter = sched.providers[provider].adapter
        log = logger.bind(provider=provider, model=model, batch=tag)
        try:
            fault_point("submit")
            await sched.ready(provider)  # the SDK imported before the timed create call
            items = await prepare_items(provider, model, rows, sched.cfg, adapter)
        except Exception as exc:  # nothing reached the provider: safe to release
            if state_failure(exc):
                raise
            await asyncio.shield(self._release(provider, model, batch_id, exc, len(rows), log))
            return
        try:
            submitted = await sched.call(lambda: adapter.submit(tag, model, items), mutating=True)
            fault_point("create")
        except UnknownOutcome as err:
            log.bind(event="batch.create_unknown", error_kind=CREATE_UNKNOWN).warning(
                "batch create outcome unknown ({}); will look it up, not resubmit", err
            )
            noted = noted_create_error(CREATE_UNKNOWN, str(err))
            await asyncio.shield(sched.store.note_create_error(batch_id, noted))
            sched.reconciler.look_again(batch_id)
            return
        except (TransientError, AuthError, PermanentError) as err:
            await asyncio.shield(self._submit_failed(provider, batch_id, err, len(items)))
            return
        except Exception as exc:  # from the create call on, the outcome is unknown
            log.bind(event="batch.create_failed", error_kind=INTERNAL_ERROR).opt(
                exception=exc
            ).error(
                "batch create failed with an unexpected error ({}); it may have taken effect: "
                "will look it up, not resubmit",
                describe(exc),
            )
            noted = noted_create_error(INTERNAL_ERROR, describe(exc))
            await asyncio.shield(sched.store.note_create_error(batch_id, noted))
            sched.reconciler.look_again(batch_id)
            return
        sched.providers[provider].submit_failures = 0
        sched.unit_ok(provider, model)
        crash_point("after_create")
        await asyncio.shield(
            sched.store.mark_submitted(
                batch_id,
                submitted.provider_batch_id,
                submitted.input_file_id,
                poll_interval_s=sched.cfg.poll_initial_s,
                now=time.time(),
            )
        )
        log.bind(event="batch.submitted", provider_batch_id=submitted.provider_batch_id).info(
            "batch submitted: {} as {}", plural(len(items), "request"), submitted.provider_batch_id
        )
        sched.wake.set()

    async def _release(
        self, provider: str, model: str, batch_id: int, exc: Exception, n: int, log: Logger
    ) -> None:
        """A batch that failed with an unexpected error before its create call: its requests
        go back to pending after a backoff, an attempt counted (or end ``failed``)."""
        sched = self.sched
        delay = sched.unit_failed(provider, model)
        log.bind(event="batch.prepare_failed", error_kind=INTERNAL_ERROR).opt(exception=exc).error(
            "preparing a batch of {} failed with an unexpected error ({}); nothing was "
            "sent; they go back to pending (retry in {:.1f}s) or fail once out of attempts",
            plural(n, "request"),
            describe(exc),
            delay,
        )
        try:
            await sched.store.abort_batch(
                batch_id,
                describe(exc),
                next_attempt_at=time.time() + delay,
                count_attempt=True,
                max_attempts=sched.cfg.max_attempts,
                final_error=internal_error(describe(exc)),
            )
        finally:
            sched.wake.set()

    async def _submit_failed(self, provider: str, batch_id: int, err: AdapterError, n: int) -> None:
        """Record a refused create; then wake the planner, whose last plan ran before the
        refusal and so does not know when the retry (or the pause) is due."""
        try:
            await self._record_submit_failure(provider, batch_id, err, n)
        finally:
            self.sched.wake.set()

    async def _record_submit_failure(
        self, provider: str, batch_id: int, err: AdapterError, n: int
    ) -> None:
        sched = self.sched
        state = sched.providers[provider]
        log = logger.bind(provider=provider)  # the model and tag: batch_context
        if isinstance(err, AuthError):
            await sched.store.abort_batch(
                batch_id, str(err), next_attempt_at=0.0, count_attempt=False
            )
            sched.pause(provider, err)
            return
        if isinstance(err, PermanentError):
            log.bind(event="batch.refused", error_kind="batch_refused").error(
                "batch create refused for good: {}; {} failed", err, plural(n, "request")
            )
            await sched.store.fail_batch_requests(batch_id, refused_error(err))
            return
        if await sched.budgets.create_refused(batch_id, str(err)):
            return
        state.submit_failures += 1
        delay = sched.backoff(state.submit_failures, getattr(err, "retry_after", None))
        log.bind(event="batch.create_retry", error_kind=call_error_kind(err)).warning(
            "batch create failed ({}); retry scheduled in {:.1f}s", err, delay
        )
        await sched.store.abort_batch(
            batch_id, str(err), next_attempt_at=time.time() + delay, count_attempt=False
        )
