"""The scheduler's facade: per-provider state, the one provider call, supervised tasks, planning.

It owns what the three stages share: each provider's adapter, account, pause and per-model
submit task; ``call`` (every provider call goes through it, under the configured timeout);
``spawn`` (every task the stages start is supervised); the backoff of units that failed with
an unexpected error; and ``plan``, which decides which model is due for a batch.

Containment: an unexpected error inside one unit of work (one batch's submission or
collection, one poll, one lookup, one model's submit loop) is contained by the stage that runs
it: logged once with its traceback, the unit's requests back to pending with a backoff and an
attempt counted (``failed`` with ``internal_error`` once out of attempts), and the daemon goes
on. What escapes a unit (the planner's own step, the state database failing) ends the task; it
is logged once with its traceback and ``monitor`` stops the daemon non-zero.

The stages are their own modules: ``submit.py`` (create calls), ``reconcile.py`` (batches
whose create call has no recorded outcome) and ``collect.py`` (polling and results);
``outcomes.py`` says what a result does to a request.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from loguru import logger

from adapters.base import AuthError, ProviderAdapter, TransientError, UnknownOutcome

from .budgets import Budgets
from .collect import Collector
from .config import Config
from .crashpoints import fault_point
from .outcomes import OutcomePolicy, RetryAt
from .reconcile import Reconciler
from .retry import backoff_s
from .sizing import Sizer
from .store import Store
from .store.planning import DueLane
from .submit import Submitter

T = TypeVar("T")


def account_of(provider: str, base_url: str | None, api_key: str | None) -> str:
    """Which account a batch belongs to, without the key itself."""
    digest = hashlib.sha256((api_key or "").encode()).hexdigest()[:12]
    return f"{provider}|{base_url or 'default'}|key:{digest}"


@dataclass
class ProviderState:
    adapter: ProviderAdapter
    account: str  # batches of another account are left alone (see reconcile.py)
    semaphore: asyncio.Semaphore  # create calls in flight at once
    paused_until: float = 0.0
    pause_reason: str = ""  # why it is paused (no API key, key refused), for status and --once
    last_auth_log: float = 0.0
    submit_failures: int = 0
    unit_failures: dict[str, int] = field(default_factory=dict)  # model -> unexpected errors
    model_retry_at: dict[str, float] = field(default_factory=dict)  # model -> submit loop waits
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # model -> its submitter
    other_accounts_check_at: float = 0.0  # when to look for other accounts' batches again


class TaskFailed(RuntimeError):
    """A supervised task died of an unexpected error (already logged with its traceback)."""


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
        self.policy = OutcomePolicy(
            max_attempts=cfg.max_attempts, keep_cancelled=cfg.on_external_cancel == "cancel"
        )
        self.stopping = False
        self.failure: TaskFailed | None = None  # the first supervised task that died
        self._tasks: dict[asyncio.Task[None], bool] = {}  # task -> let it finish at shutdown
        self._settled = asyncio.Event()  # a task died, or shutdown() has ended
        self.sizer = Sizer(self)
        self.budgets = Budgets(self)
        self.submitter = Submitter(self)
        self.reconciler = Reconciler(self)
        self.collector = Collector(self)

    # -- provider calls --------------------------------------------------------------------
    async def call(self, make: Callable[[], Awaitable[T]], *, mutating: bool = False) -> T:
        """One provider call under the configured timeout. A mutating call that timed out may
        have taken effect: that is an unknown outcome, never a plain failure."""
        try:
            return await asyncio.wait_for(make(), self.cfg.request_timeout_s)
        except TimeoutError:
            if mutating:
                raise UnknownOutcome("the call timed out; it may have taken effect") from None
            raise TransientError("the call timed out") from None

    async def ready(self, provider: str) -> None:
        """Before a provider's timed call: its adapter built (the SDK is imported at the first
        call, ``availability.LazyAdapter``), so the import never counts against the timeout."""
        load = getattr(self.providers[provider].adapter, "load", None)
        if load is not None:
            await load()

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        return backoff_s(
            attempt,
            base_s=self.cfg.retry_base_s,
            cap_s=self.cfg.retry_max_s,
            retry_after_s=retry_after,
            rng=self.rng,
        )

    def retry_at(self, attempt: int) -> float:
        """When attempt number ``attempt + 1`` of a request may run."""
        return time.time() + self.backoff(attempt)

    def batch_retry_at(self) -> RetryAt:
        """``retry_at`` with one draw per attempt number for one batch's results: the requests
        a batch sends back come due together, so they go out together (not one per batch)."""
        drawn: dict[int, float] = {}

        def at(attempt: int) -> float:
            if attempt not in drawn:
                drawn[attempt] = self.retry_at(attempt)
            return drawn[attempt]

        return at

    # -- units that failed with an unexpected error ----------------------------------------
    def unit_failed(self, provider: str, model: str) -> float:
        """One more unexpected error in a unit of ``model``: the backoff before its requests
        (or its submit loop) may run again, growing while the errors go on."""
        failures = self.providers[provider].unit_failures
        failures[model] = failures.get(model, 0) + 1
        return self.backoff(failures[model])

    def unit_ok(self, provider: str, model: str) -> None:
        self.providers[provider].unit_failures.pop(model, None)

    def hold_model(self, provider: str, model: str, delay_s: float) -> None:
        """The model's submit loop failed outside any batch: no loop for it for ``delay_s``."""
        self.providers[provider].model_retry_at[model] = time.time() + delay_s
        self.wake.set()

    # -- supervision -----------------------------------------------------------------------
    def spawn(
        self, coro: Coroutine[Any, Any, None], *, name: str, graceful: bool = False
    ) -> asyncio.Task[None] | None:
        """Start a supervised task. ``graceful``: a create call may be in flight in it, so
        shutdown lets it finish within the grace period. Once shutdown has begun, other tasks
        are not started (what they would do is redone at the next start)."""
        if self.stopping and not graceful:
            coro.close()
            return None
        task = asyncio.create_task(coro, name=name)
        self._tasks[task] = graceful
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """Never silent: a task that died is logged here, once, with its traceback, and
        ``monitor`` then stops the daemon (a supervisor such as systemd restarts it)."""
        self._tasks.pop(task, None)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        logger.bind(event="daemon.task_died", error_kind="internal_error").opt(
            exception=exc
        ).critical("task {} died of an unexpected error; batchd stops", task.get_name())
        if self.failure is None:
            self.failure = TaskFailed(f"task {task.get_name()} died: {exc!r}")
        self._settled.set()

    async def monitor(self) -> None:
        """Runs beside the app's loops until ``shutdown`` has ended; raises ``TaskFailed`` as
        soon as a supervised task dies, which ends the app's task group."""
        await self._settled.wait()
        if self.failure is not None:
            raise self.failure

    async def shutdown(self, grace_s: float) -> None:
        """Let create calls in flight finish (their outcome gets recorded), up to ``grace_s``;
        a batch cut off mid-call stays ``submitting`` and is reconciled at the next start.
        Every other task (lookups, waits) is cancelled at once. Safe to call twice."""
        self.stopping = True
        waiting = [t for t, graceful in self._tasks.items() if not graceful]
        for task in waiting:
            task.cancel()
        submits = [t for t, graceful in self._tasks.items() if graceful]
        if submits:
            _, pending = await asyncio.wait(submits, timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                logger.bind(event="shutdown.cut_off").warning(
                    "shutdown: the grace period ({:.0f}s) ran out; cut off: {}; a batch whose "
                    "create call was cut off stays submitting and is looked up at the next start",
                    grace_s,
                    ", ".join(sorted(t.get_name() for t in pending)),
                )
        await asyncio.gather(*waiting, *submits, return_exceptions=True)  # errors: _task_done
        self._settled.set()

    # -- pause -----------------------------------------------------------------------------
    def pause(self, provider: str, err: AuthError) -> None:
        """Authentication failed: the provider's requests wait, said once per pause period."""
        state = self.providers[provider]
        now = time.time()
        state.paused_until = now + self.cfg.auth_pause_s
        state.pause_reason = f"API key refused: {err}"
        self.wake.set()  # the loops (the guard publishing the providers' states) see it now
        if now - state.last_auth_log >= self.cfg.auth_pause_s or state.last_auth_log == 0:
            state.last_auth_log = now
            logger.bind(provider=provider, event="provider.paused", error_kind="auth_failed").error(
                "provider paused: authentication failed ({}); requests stay pending. Fix the API "
                "key in the environment and restart batchd; retrying in {:.1f}s",
                err,
                self.cfg.auth_pause_s,
            )

    def hold(self, provider: str, reason: str) -> None:
        """The provider cannot run at all until batchd is restarted (no API key): its
        requests wait, nothing is sent to it (``daemon/availability.py`` says so)."""
        state = self.providers[provider]
        state.paused_until = math.inf
        state.pause_reason = reason

    def reconfigure(self, cfg: Config) -> None:
        """A reloaded configuration (SIGHUP): the keys read at each use take effect now."""
        self.cfg = cfg
        self.policy = OutcomePolicy(
            max_attempts=cfg.max_attempts, keep_cancelled=cfg.on_external_cancel == "cancel"
        )

    def paused(self, provider: str) -> bool:
        return self.providers[provider].paused_until > time.time()

    # -- planning --------------------------------------------------------------------------
    async def plan(self) -> float | None:
        """Start a submit task for every model with a batch to claim now (``sizing.py``
        says which files may send and at what size; ``budgets.py`` whether the model's
        enqueued-token budget has room); returns when to look again (a linger deadline, a
        canary's wait, a retry's backoff), if sooner than the next wake-up."""
        fault_point("plan")
        now = time.time()
        wake_at: float | None = None
        by_model: dict[tuple[str, str], list[DueLane]] = {}
        for lane in await self.store.due_lanes(now):
            by_model.setdefault((lane.provider, lane.model), []).append(lane)
        for (provider, model), lanes in by_model.items():
            if self.stopping:
                break
            wake_at = _sooner_opt(wake_at, await self._plan_model(provider, model, lanes, now))
        for state in self.providers.values():
            if state.paused_until > now:
                wake_at = _sooner(wake_at, state.paused_until)
        due = await self.store.next_due_at()  # the next retry's backoff ends then
        if due is not None and due > now:
            wake_at = _sooner(wake_at, due)
        return wake_at

    async def _plan_model(
        self, provider: str, model: str, lanes: list[DueLane], now: float
    ) -> float | None:
        """Start the model's submit task if it has a batch to claim now; returns when to
        look at it again, if it says."""
        state = self.providers.get(provider)
        if state is None or self.paused(provider):
            return None
        if model in state.tasks and not state.tasks[model].done():
            return None
        held_until = state.model_retry_at.get(model, 0.0)
        if held_until > now:
            return held_until
        plan = await self.sizer.plan(provider, model, lanes)
        if plan.claim is None:
            return plan.wake_at
        if self.budgets.blocked(provider, model, await self.budgets.room(provider, model)):
            return plan.wake_at  # woken again when one of the model's batches ends
        task = self.spawn(
            self.submitter.run_model(provider, model),
            name=f"submit-{provider}-{model}",
            graceful=True,
        )
        if task is not None:
            state.tasks[model] = task
        return plan.wake_at

    # -- the other stages, as the app calls them -------------------------------------------
    async def poll_due(self, provider: str) -> float | None:
        """Poll the provider's due batches (``collect.py``); returns when to look again."""
        return await self.collector.poll_due(provider)

    def reconcile_in_background(self) -> list[asyncio.Task[None]]:
        """Look up the batches a previous run left in ``submitting`` (``reconcile.py``); the
        first pass's tasks, one per provider."""
        return self.reconciler.start()


def _sooner(current: float | None, candidate: float) -> float:
    return candidate if current is None else min(current, candidate)


def _sooner_opt(current: float | None, candidate: float | None) -> float | None:
    return current if candidate is None else _sooner(current, candidate)
