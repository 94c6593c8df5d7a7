"""Submission and polling: per-model submit coroutines, per-provider poll coroutines.

Every provider side effect is preceded by an intent row (the batch row in ``submitting``) and
followed by a shielded record of its result. A create call whose outcome is unknown (timeout,
dropped connection) is never retried blindly: the batch is looked up at the provider by its
tag first. Timeouts, retries and logging live here, once, not in the adapters.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from loguru import logger

from adapters.base import (
    AdapterError,
    AuthError,
    BatchItem,
    BatchStatus,
    ItemResult,
    PermanentError,
    ProviderAdapter,
    ResultsGone,
    TransientError,
    UnknownOutcome,
)

from .caching import prepare_items
from .config import Config
from .crashpoints import crash_point
from .retry import backoff_s, next_poll_interval_s
from .store import Store

T = TypeVar("T")
RESULT_CHUNK = 500


def account_of(provider: str, base_url: str | None, api_key: str | None) -> str:
    """Which account a batch belongs to, without the key itself."""
    digest = hashlib.sha256((api_key or "").encode()).hexdigest()[:12]
    return f"{provider}|{base_url or 'default'}|key:{digest}"


@dataclass
class ProviderState:
    adapter: ProviderAdapter
    account: str
    semaphore: asyncio.Semaphore
    paused_until: float = 0.0
    last_auth_log: float = 0.0
    submit_failures: int = 0
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)


class Scheduler:
    def __init__(
        self,
        cfg: Config,
        store: Store,
        adapters: Mapping[str, ProviderAdapter],
        accounts: Mapping[str, str],
        wake: asyncio.Event,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.wake = wake
        self.rng = rng or random.Random()
        self.providers = {
            name: ProviderState(
                adapter=adapter,
                account=accounts[name],
                semaphore=asyncio.Semaphore(cfg.providers[name].max_concurrent_submits),
            )
            for name, adapter in adapters.items()
        }
        self._background: set[asyncio.Task[Any]] = set()
        self._failure: BaseException | None = None  # a background task died: re-raised by plan()
        self._lookups: dict[int, int] = {}  # batch row -> reconcile lookups that failed so far
        self.stopping = False

    # -- helpers ---------------------------------------------------------------------------
    async def _call(self, make: Callable[[], Awaitable[T]], *, mutating: bool = False) -> T:
        """One provider call under the configured timeout."""
        try:
            return await asyncio.wait_for(make(), self.cfg.request_timeout_s)
        except TimeoutError:
            if mutating:
                raise UnknownOutcome("the call timed out; it may have taken effect") from None
            raise TransientError("the call timed out") from None

    def _backoff(self, attempt: int, retry_after: float | None = None) -> float:
        return backoff_s(
            attempt,
            base_s=self.cfg.retry_base_s,
            cap_s=self.cfg.retry_max_s,
            retry_after_s=retry_after,
            rng=self.rng,
        )

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        """A background task that died of an unexpected error is not swallowed: plan() raises
        it in the supervised plan loop, which ends the process (systemd restarts it)."""
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()
            self.wake.set()

    def _pause(self, provider: str, err: AuthError) -> None:
        state = self.providers[provider]
        now = time.time()
        state.paused_until = now + self.cfg.auth_pause_s
        if now - state.last_auth_log >= self.cfg.auth_pause_s or state.last_auth_log == 0:
            state.last_auth_log = now
            logger.bind(provider=provider).error(
                "provider paused: authentication failed ({}); requests stay pending. Fix the API "
                "key in the environment and restart batchd; retrying in {:.1f}s",
                err,
                self.cfg.auth_pause_s,
            )

    def paused(self, provider: str) -> bool:
        return self.providers[provider].paused_until > time.time()

    async def shutdown(self, grace_s: float) -> None:
        """Let create calls in flight finish (their outcome gets recorded), up to ``grace_s``;
        a batch cut off mid-call stays ``submitting`` and is reconciled at the next start."""
        self.stopping = True
        background = list(self._background)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)  # before the store closes
        submits = [t for s in self.providers.values() for t in s.tasks.values() if not t.done()]
        if submits:
            _, pending = await asyncio.wait(submits, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # -- planning --------------------------------------------------------------------------
    async def plan(self) -> float | None:
        """Start a submit coroutine for every model with due requests; returns when to look
        again (a linger deadline), if sooner than the next wake-up."""
        if self._failure is not None:
            raise self._failure
        now = time.time()
        wake_at: float | None = None
        for provider, model, n, oldest in await self.store.due_models(now):
            state = self.providers.get(provider)
            if self.stopping:
                break
            if state is None or self.paused(provider):
                continue
            if model in state.tasks and not state.tasks[model].done():
                continue
            size = min(self.cfg.providers[provider].batch_size, state.adapter.limits.max_items)
            ready_at = oldest + self.cfg.batch_linger_s
            if n < size and ready_at > now:
                wake_at = ready_at if wake_at is None else min(wake_at, ready_at)
                continue
            state.tasks[model] = asyncio.create_task(
                self._submit_model(provider, model, size), name=f"submit-{provider}-{model}"
            )
        for state in self.providers.values():
            if state.paused_until > now:
                until = state.paused_until
                wake_at = until if wake_at is None else min(wake_at, until)
        due = await self.store.next_due_at()  # the next retry's backoff ends then
        if due is not None and due > now:
            wake_at = due if wake_at is None else min(wake_at, due)
        return wake_at

    async def _rate_wait(self, provider: str) -> float:
        limit = self.cfg.providers[provider].creates_per_hour
        made = await self.store.creates_since(provider, time.time() - 3600)
        return 0.0 if made < limit else 60.0

    async def _submit_model(self, provider: str, model: str, size: int) -> None:
        state = self.providers[provider]
        while not self.paused(provider) and not self.stopping:
            wait = await self._rate_wait(provider)
            if wait:
                logger.bind(provider=provider, model=model).warning(
                    "batch creation limit reached ({}/h); waiting",
                    self.cfg.providers[provider].creates_per_hour,
                )
                await asyncio.sleep(wait)
                continue
            tag = "batchd-" + secrets.token_hex(8)
            claimed = await self.store.claim_batch(
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

    async def _submit(
        self, provider: str, model: str, batch_id: int, tag: str, rows: list[tuple[int, Any]]
    ) -> None:
        state = self.providers[provider]
        log = logger.bind(provider=provider, model=model, batch=tag)
        items = [BatchItem(key=f"r{rid}", body=body) for rid, body in rows]
        items = await prepare_items(provider, model, items, self.cfg, state.adapter)
        try:
            submitted = await self._call(
                lambda: state.adapter.submit(tag, model, items), mutating=True
            )
        except UnknownOutcome as err:
            log.warning("batch create outcome unknown ({}); will look it up, not resubmit", err)
            self._spawn(self._reconcile_later(batch_id))
            return
        except (TransientError, AuthError, PermanentError) as err:
            await asyncio.shield(self._submit_failed(provider, batch_id, err, len(items)))
            return
        state.submit_failures = 0
        crash_point("after_create")
        await asyncio.shield(
            self.store.mark_submitted(
                batch_id,
                submitted.provider_batch_id,
                submitted.input_file_id,
                poll_interval_s=self.cfg.poll_initial_s,
                now=time.time(),
            )
        )
        log.info(
            "batch submitted: {} requests as {} ({})", len(items), submitted.provider_batch_id, tag
        )
        self.wake.set()

    async def _submit_failed(self, provider: str, batch_id: int, err: AdapterError, n: int) -> None:
        """Record a refused create; then wake the planner, whose last plan ran before the
        refusal and so does not know when the retry (or the pause) is due."""
        try:
            await self._record_submit_failure(provider, batch_id, err, n)
        finally:
            self.wake.set()

    async def _record_submit_failure(
        self, provider: str, batch_id: int, err: AdapterError, n: int
    ) -> None:
        state = self.providers[provider]
        log = logger.bind(provider=provider, batch=batch_id)
        if isinstance(err, AuthError):
            await self.store.abort_batch(
                batch_id, str(err), next_attempt_at=0.0, count_attempt=False
            )
            self._pause(provider, err)
            return
        if isinstance(err, PermanentError):
            log.error("batch create refused for good: {}; {} requests failed", err, n)
            await self.store.fail_batch_requests(
                batch_id, {"type": "batch_refused", "message": str(err), "code": None}
            )
            return
        state.submit_failures += 1
        delay = self._backoff(state.submit_failures, getattr(err, "retry_after", None))
        log.warning("batch create failed ({}); retry scheduled in {:.1f}s", err, delay)
        await self.store.abort_batch(
            batch_id, str(err), next_attempt_at=time.time() + delay, count_attempt=False
        )

    # -- reconciliation --------------------------------------------------------------------
    async def reconcile_all(self, provider: str | None = None) -> None:
        """At start-up: rows stuck in ``submitting`` are looked up, never blindly resubmitted."""
        for row in await self.store.batches_in("submitting"):
            if provider not in (None, row["provider"]) or self.stopping:
                continue
            if row["provider"] in self.providers:
                await self._reconcile(row)

    def reconcile_in_background(self) -> None:
        """reconcile_all() per provider, without holding up start-up: a provider that is slow
        or down must not keep the daemon from serving the others (a lookup may take a timeout).
        One provider's rows are looked up one after the other, oldest first."""
        for provider in self.providers:
            self._spawn(self.reconcile_all(provider))

    async def _reconcile_later(self, batch_id: int, delay_s: float | None = None) -> None:
        await asyncio.sleep(self.cfg.reconcile_after_s if delay_s is None else delay_s)
        rows = [r for r in await self.store.batches_in("submitting") if r["id"] == batch_id]
        if rows:
            await self._reconcile(rows[0])

    async def _reconcile(self, row: dict[str, Any]) -> None:
        provider = row["provider"]
        state = self.providers[provider]
        log = logger.bind(provider=provider, model=row["model"], batch=row["tag"])
        known = await self.store.known_provider_ids(provider)
        keys = [f"r{rid}" for rid, _ in await self.store.batch_requests(row["id"])]
        try:
            found = await self._call(
                lambda: state.adapter.find(
                    row["tag"], row["model"], row["n_items"], row["created_at"], known, keys
                )
            )
        except AdapterError as err:
            # Not an answer: the provider failed, or cannot tell yet (an unlabelled candidate
            # still running). Look again, backing off: that can take as long as a batch runs.
            failures = self._lookups[row["id"]] = self._lookups.get(row["id"], 0) + 1
            delay = max(self.cfg.reconcile_after_s, self._backoff(failures, _after(err)))
            log.warning("reconcile: no answer yet ({}); looking again in {:.1f}s", err, delay)
            self._spawn(self._reconcile_later(row["id"], delay))
            return
        self._lookups.pop(row["id"], None)
        if found is not None:
            await asyncio.shield(
                self.store.mark_submitted(
                    row["id"],
                    found,
                    None,
                    poll_interval_s=self.cfg.poll_initial_s,
                    now=time.time(),
                )
            )
            log.info("reconcile: batch {} found at the provider as {}", row["tag"], found)
            self.wake.set()
            return
        tries = await self.store.note_reconcile_attempt(row["id"])
        if tries < 2:
            self._spawn(self._reconcile_later(row["id"]))
            return
        log.warning(
            "reconcile: batch {} was never created; its requests go back to pending", row["tag"]
        )
        await self.store.abort_batch(
            row["id"], "never created at the provider", next_attempt_at=0.0, count_attempt=False
        )
        self.wake.set()

    # -- polling ---------------------------------------------------------------------------
    async def poll_due(self, provider: str) -> float | None:
        """Poll every batch of ``provider`` that is due; returns when the next one is due."""
        if self.paused(provider):
            return self.providers[provider].paused_until
        for row in await self.store.due_polls(provider, time.time()):
            await self._poll_one(row)
        return await self.store.next_poll_at(provider)

    async def _poll_one(self, row: dict[str, Any]) -> None:
        provider = row["provider"]
        adapter = self.providers[provider].adapter
        log = logger.bind(provider=provider, model=row["model"], batch=row["provider_batch_id"])
        try:
            status = await self._call(lambda: adapter.poll(row["provider_batch_id"]))
        except AuthError as err:
            self._pause(provider, err)
            return
        except AdapterError as err:
            await self._poll_later(
                row, None, str(row["provider_status"]), progressed=False, retry_after=_after(err)
            )
            log.warning("poll failed ({}); will poll again", err)
            return
        if status.state == "running":
            counts = {"total": status.total, "done": status.done, "failed": status.failed}
            old = row["counts"]
            progressed = old is not None and old != _dumps_counts(counts)
            if progressed:
                log.info("batch progress: {}/{} done", status.done, status.total)
            await self._poll_later(row, counts, status.provider_status, progressed=progressed)
        elif status.state == "ended":
            await self._collect(row, status)
        else:
            await self._batch_lost(row, status)

    async def _poll_later(
        self,
        row: dict[str, Any],
        counts: dict[str, Any] | None,
        provider_status: str,
        *,
        progressed: bool,
        retry_after: float | None = None,
    ) -> None:
        """Schedule the next poll by the batch's backoff; a provider's Retry-After is a floor."""
        interval = next_poll_interval_s(
            row["poll_interval_s"] or self.cfg.poll_initial_s,
            progressed=progressed,
            initial_s=self.cfg.poll_initial_s,
            factor=self.cfg.poll_factor,
            max_s=self.cfg.poll_max_s,
        )
        await self.store.update_poll(
            row["id"],
            provider_status=provider_status,
            counts=counts,
            next_poll_at=time.time() + max(interval, retry_after or 0.0),
            poll_interval_s=interval,
        )

    async def _batch_lost(self, row: dict[str, Any], status: BatchStatus) -> None:
        log = logger.bind(
            provider=row["provider"], model=row["model"], batch=row["provider_batch_id"]
        )
        log.warning(
            "batch {}: {} ({}); its requests are re-queued",
            status.state,
            status.error or status.provider_status,
            row["n_items"],
        )
        await self.store.abort_batch(
            row["id"],
            status.error or status.state,
            next_attempt_at=time.time() + self._backoff(1),
            count_attempt=True,
            max_attempts=self.cfg.max_attempts,
            final_error={
                "type": f"batch_{status.state}",
                "message": status.error or status.provider_status,
                "code": None,
            },
        )
        self.wake.set()

    # -- results ---------------------------------------------------------------------------
    async def _collect(self, row: dict[str, Any], status: BatchStatus) -> None:
        provider = row["provider"]
        adapter = self.providers[provider].adapter
        pid = row["provider_batch_id"]
        log = logger.bind(provider=provider, model=row["model"], batch=pid)
        outstanding = dict(await self.store.batch_requests(row["id"]))
        try:
            counts, gone = await self._store_results(row, outstanding, log)
        except AdapterError as err:
            if isinstance(err, AuthError):  # as for a poll: the provider pauses, loudly
                self._pause(provider, err)
            log.warning("fetching results failed ({}); will try again", err)
            await self._poll_later(
                row, None, status.provider_status, progressed=False, retry_after=_after(err)
            )
            return
        missing = [self._missing_update(rid, att, status) for rid, att in outstanding.items()]
        if missing:
            await asyncio.shield(self.store.record_results(row["id"], missing))
            if not (gone or status.expired or status.cancelled):
                log.error(
                    "results of batch {} are missing for {} requests; they are re-queued",
                    pid,
                    len(missing),
                )
        await asyncio.shield(self.store.mark_collected(row["id"], status.provider_status, counts))
        crash_point("after_results_stored")
        retries = counts.get("retry", 0) + counts.get("expired", 0) + len(missing)
        log.info(
            "batch ended: {} {}; {} requests without a result{}",
            status.provider_status,
            counts,
            len(missing),
            f"; retry scheduled for up to {retries}" if retries else "",
        )
        if not self.cfg.keep_provider_files:
            try:
                await self._call(lambda: adapter.cleanup(pid, row["input_file_id"]))
            except AdapterError as err:
                log.warning("cleanup of provider files failed: {}", err)
        self.wake.set()

    async def _store_results(
        self, row: dict[str, Any], outstanding: dict[int, int], log: Any
    ) -> tuple[dict[str, int], bool]:
        """Stream a batch's results into the store, chunk by chunk, taking each answered request
        out of ``outstanding``. Returns the outcome counts and whether the results were gone.
        A failure mid-stream keeps what was stored (storing is idempotent) and re-raises."""
        adapter = self.providers[row["provider"]].adapter
        pid = row["provider_batch_id"]
        chunk: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        gone = False
        try:
            async for item in adapter.results(pid):
                rid = _request_id(item.key)
                if rid not in outstanding:
                    continue
                chunk.append(self._update_for(rid, outstanding.pop(rid), item))
                counts[item.outcome] = counts.get(item.outcome, 0) + 1
                if len(chunk) >= RESULT_CHUNK:
                    await asyncio.shield(self.store.record_results(row["id"], chunk))
                    chunk = []
        except ResultsGone as err:
            gone = True
            log.error(
                "results of batch {} are gone ({}); {} requests re-queued",
                pid,
                err,
                len(outstanding),
            )
        finally:
            if chunk:
                await asyncio.shield(self.store.record_results(row["id"], chunk))
        return counts, gone

    def _update_for(self, rid: int, attempts: int, item: ItemResult) -> dict[str, Any]:
        result = {
            "text": item.text,
            "finish_reason": item.finish_reason,
            "usage": {
                "input_tokens": item.usage.input_tokens,
                "output_tokens": item.usage.output_tokens,
                "cached_input_tokens": item.usage.cached_input_tokens,
                "cache_creation_input_tokens": item.usage.cache_creation_input_tokens,
            },
            "response": item.response,
        }
        error = None
        if item.error is not None:
            error = {
                "type": item.error.type,
                "message": item.error.message,
                "code": item.error.code,
            }
        if item.outcome == "succeeded":
            return {
                "request_id": rid,
                "status": "succeeded",
                "attempts_inc": 1,
                "result": result,
                "error": None,
            }
        if item.outcome == "failed":
            return {
                "request_id": rid,
                "status": "failed",
                "attempts_inc": 1,
                "result": result,
                "error": error,
            }
        if item.outcome == "canceled" and self.cfg.on_external_cancel == "cancel":
            return {
                "request_id": rid,
                "status": "canceled",
                "attempts_inc": 1,
                "result": result,
                "error": error,
            }
        final = (
            "expired"
            if item.outcome == "expired"
            else ("canceled" if item.outcome == "canceled" else "failed")
        )
        return self._retry_or_final(rid, attempts, final, error, result)

    def _retry_or_final(
        self,
        rid: int,
        attempts: int,
        final: str,
        error: dict[str, Any] | None,
        result: dict[str, Any] | None,
    ) -> dict[str, Any]:
        if attempts + 1 >= self.cfg.max_attempts:
            return {
                "request_id": rid,
                "status": final,
                "attempts_inc": 1,
                "result": result,
                "error": error,
            }
        return {
            "request_id": rid,
            "status": "pending",
            "attempts_inc": 1,
            "result": None,
            "error": error,
            "next_attempt_at": time.time() + self._backoff(attempts + 1),
        }

    def _missing_update(self, rid: int, attempts: int, status: BatchStatus) -> dict[str, Any]:
        """An item the ended batch did not report (expired, cancelled, results gone)."""
        if status.expired:
            kind, final = "batch_expired", "expired"
        elif status.cancelled:
            kind, final = "batch_cancelled", "canceled"
            if self.cfg.on_external_cancel == "cancel":
                return {
                    "request_id": rid,
                    "status": "canceled",
                    "attempts_inc": 1,
                    "error": {"type": kind, "message": "the batch was cancelled", "code": None},
                }
        else:
            kind, final = "result_missing", "failed"
        error = {"type": kind, "message": f"no result for this request ({kind})", "code": None}
        return self._retry_or_final(rid, attempts, final, error, None)


def _after(err: AdapterError) -> float | None:
    """The provider's Retry-After, when the error carries one."""
    return getattr(err, "retry_after", None)


def _request_id(key: str) -> int:
    try:
        return int(key.removeprefix("r"))
    except ValueError:
        return -1


def _dumps_counts(counts: dict[str, Any]) -> str:
    return json.dumps(counts, separators=(",", ":"))
