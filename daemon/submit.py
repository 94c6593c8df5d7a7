"""Submission: one task per model claims batches of its due requests and creates them.

Every create call is preceded by an intent row (the batch row in ``submitting``, written with
the claim) and followed by a shielded record of its result. A create call whose outcome is
unknown (timeout, dropped connection) is never retried blindly: the batch is handed to the
reconciler, which looks it up at the provider by its tag. A refused create puts the requests
back to pending with a backoff (transient), pauses the provider (authentication), or fails
them (permanent).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING, Any

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
from .outcomes import refused_error

if TYPE_CHECKING:
    from .scheduler import Scheduler

CREATES_WINDOW_S = 3600.0  # creates_per_hour counts the creates of the last hour
RATE_WAIT_S = 60.0  # how long to wait once the hour's creates are used up


class Submitter:
    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched

    async def run_model(self, provider: str, model: str, size: int) -> None:
        """Claim and submit batches of ``model`` until none of its requests is due (or the
        provider pauses, or shutdown begins). At most ``size`` requests per batch."""
        sched = self.sched
        state = sched.providers[provider]
        while not sched.paused(provider) and not sched.stopping:
            if await self._rate_wait(provider, model):
                continue
            tag = "batchd-" + secrets.token_hex(8)
            claimed = await sched.store.claim_batch(
                provider,
                model,
                tag,
                state.account,
                max_items=size,
                max_bytes=state.adapter.limits.max_bytes,
                now=time.time(),
            )
            if claimed is None:
                return
            batch_id, rows = claimed
            async with state.semaphore:
                await self._submit(provider, model, batch_id, tag, rows)

    async def _rate_wait(self, provider: str, model: str) -> bool:
        """Wait a while (and say so) when the provider's creates of the last hour are used up."""
        limit = self.sched.cfg.providers[provider].creates_per_hour
        made = await self.sched.store.creates_since(provider, time.time() - CREATES_WINDOW_S)
        if made < limit:
            return False
        logger.bind(provider=provider, model=model).warning(
            "batch creation limit reached ({}/h); waiting", limit
        )
        await asyncio.sleep(RATE_WAIT_S)
        return True

    async def _submit(
        self, provider: str, model: str, batch_id: int, tag: str, rows: list[tuple[int, Any]]
    ) -> None:
        sched = self.sched
        adapter = sched.providers[provider].adapter
        log = logger.bind(provider=provider, model=model, batch=tag)
        fault_point("submit")
        items = [BatchItem(key=f"r{rid}", body=body) for rid, body in rows]
        items = await prepare_items(provider, model, items, sched.cfg, adapter)
        try:
            submitted = await sched.call(lambda: adapter.submit(tag, model, items), mutating=True)
        except UnknownOutcome as err:
            log.warning("batch create outcome unknown ({}); will look it up, not resubmit", err)
            sched.reconciler.look_again(batch_id)
            return
        except (TransientError, AuthError, PermanentError) as err:
            await asyncio.shield(self._submit_failed(provider, batch_id, err, len(items)))
            return
        sched.providers[provider].submit_failures = 0
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
        log.info(
            "batch submitted: {} requests as {} ({})", len(items), submitted.provider_batch_id, tag
        )
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
        log = logger.bind(provider=provider, batch=batch_id)
        if isinstance(err, AuthError):
            await sched.store.abort_batch(
                batch_id, str(err), next_attempt_at=0.0, count_attempt=False
            )
            sched.pause(provider, err)
            return
        if isinstance(err, PermanentError):
            log.error("batch create refused for good: {}; {} requests failed", err, n)
            await sched.store.fail_batch_requests(batch_id, refused_error(err))
            return
        state.submit_failures += 1
        delay = sched.backoff(state.submit_failures, getattr(err, "retry_after", None))
        log.warning("batch create failed ({}); retry scheduled in {:.1f}s", err, delay)
        await sched.store.abort_batch(
            batch_id, str(err), next_attempt_at=time.time() + delay, count_attempt=False
        )
