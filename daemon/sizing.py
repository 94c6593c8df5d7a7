"""Adaptive batch sizing: a canary per model and file, then batches that grow as they succeed.

The policy (``batch_sizing = "adaptive"``, the default; ``"fixed"`` sends every batch at the
provider's ``batch_size``):

* **Canary.** The first batch of a model in a file (a *lane*) is a canary of the start size:
  the provider's ``batch_size`` (the product's 50 / 100 / 250), or, when the model has ended a
  batch well within ``canary_memory_s``, the largest size it has proven. The rest of the lane
  waits until the canary ends, at most ``canary_max_wait_s``; after that it goes out at the
  proven size (the product's size when nothing is proven yet) until the canary ends.
* **Canary failed.** When at least ``canary_failure_share`` of the canary's answered items
  failed for request-level reasons (invalid request, a model's refusal rules: the provider's
  permanent item errors), the rest of the lane is not sent: it ends ``failed`` with the
  canary's error (``canary_failure = "fail"``), waits for the operator (``"hold"``: change the
  key to ``"fail"`` or ``"send"`` and reload), or is sent anyway (``"send"``).
* **Growth.** Every batch that ends well proves its size for the model (per account). The
  next batch above the proven size is a *probe* of ten times it, capped by ``max_batch_size``
  (default: the provider's hard limit); while a probe is open the model's other batches wait
  (at most ``canary_max_wait_s``; then they go out at the proven size, no second probe), so a
  size is tried once before many batches of it go out. Once the proven size reaches the cap,
  batches go out at it with no waiting. The enqueued-token budget (``daemon/budgets.py``) and
  ``creates_per_hour`` bound them further. A batch counts as ended well when its verdict is
  "passed" and every item was answered; its size is remembered per account and model.
* **Crash safety.** Lanes, roles and proven sizes are rows (``daemon/store/planning.py``);
  a canary collected just before a crash gets its verdict at the next plan.

``decide`` is the pure policy; :class:`Sizer` reads what it needs from the store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loguru import logger

from .config import Config, adapt_policy
from .cost import estimate
from .packing import CHARS_PER_TOKEN, estimate_tokens
from .states import BatchRowStatus
from .store.planning import (
    CANARY_NOT_SENT,
    LANE_CANARY,
    LANE_FAILED,
    LANE_PASSED,
    ROLE_CANARY,
    ROLE_PROBE,
    DueLane,
    LaneRow,
    PlanningStore,
)
from .text import plural

if TYPE_CHECKING:
    from .scheduler import Scheduler

GROWTH = 10  # a batch that ended well allows the next one this many times larger


@dataclass(frozen=True)
class Settings:
    adaptive: bool
    base: int  # the provider's batch_size: a canary's size when nothing is proven
    max_size: int  # max_batch_size, within the provider's hard limit
    max_wait_s: float  # canary_max_wait_s
    on_failure: str  # canary_failure: fail, hold, send
    linger_s: float


@dataclass(frozen=True)
class Lane:
    """A file's due requests of the model, with its lane row (None: no batch of it yet)."""

    file_id: int
    due: int
    oldest: float
    row: LaneRow | None = None


@dataclass(frozen=True)
class Claim:
    files: tuple[int, ...]  # take requests of these files, in this order
    size: int
    role: str | None  # canary, probe, or None
    wait_until: float = 0.0  # a canary: the rest of its lanes wait until then at most


@dataclass(frozen=True)
class Plan:
    claim: Claim | None
    wake_at: float | None = None  # when a gate opens or a linger ends
    fail: tuple[tuple[int, dict[str, Any]], ...] = ()  # lanes to end with their canary's error


def start_size(proven: int, s: Settings) -> int:
    """A canary's size: the product's size, or what the model has proven (recently)."""
    return max(1, min(s.max_size, max(s.base, proven)))


def next_size(proven: int, s: Settings) -> int:
    """The size of the next probe: ``GROWTH`` times the proven size, within the bounds."""
    return max(1, min(s.max_size, max(s.base, proven * GROWTH))) if proven else start_size(0, s)


def sizes_for(n_requests: int, s: Settings) -> list[int]:
    """The batches ``n_requests`` of one model in one file become when every batch ends well
    and nothing else bounds them (no budget, no other file): the canary, the probes, then
    batches of the largest size. The README's worked example is computed with it."""
    sizes: list[int] = []
    proven, left = 0, n_requests
    while left > 0:
        size = start_size(0, s) if not sizes else max(next_size(proven, s), start_size(proven, s))
        take = min(size, left)
        sizes.append(take)
        left -= take
        proven = max(proven, take)
    return sizes


def decide(
    lanes: Sequence[Lane], proven: int, probe_until: float | None, s: Settings, now: float
) -> Plan:
    """What to claim next for one model (see the module docstring)."""
    if not lanes:
        return Plan(None)
    if not s.adaptive:
        return _linger([], lanes, s.base, None, s, now)  # no files named: oldest first
    new, open_, fail, wake = _sort_lanes(lanes, s, now)
    if new:
        size = start_size(proven, s)
        plan = _linger([x.file_id for x in new], new, size, ROLE_CANARY, s, now)
        claim = plan.claim and Claim(plan.claim.files, size, ROLE_CANARY, now + s.max_wait_s)
        return Plan(claim, _sooner_opt(wake, plan.wake_at), tuple(fail))
    if not open_:
        return Plan(None, wake, tuple(fail))
    bulk = start_size(proven, s)
    size = next_size(proven, s)
    role: str | None = ROLE_PROBE
    if probe_until is not None:  # a probe is open: wait for it, then go on at the proven size
        if now < probe_until:
            return Plan(None, _sooner(wake, probe_until), tuple(fail))
        size = bulk
    if size <= bulk:
        size, role = bulk, None
    plan = _linger([x.file_id for x in open_], open_, size, role, s, now)
    return Plan(plan.claim, _sooner_opt(wake, plan.wake_at), tuple(fail))


def _sort_lanes(
    lanes: Sequence[Lane], s: Settings, now: float
) -> tuple[list[Lane], list[Lane], list[tuple[int, dict[str, Any]]], float | None]:
    """The lanes that need a canary, those that may send, those to end with their canary's
    error, and when the first canary's wait ends."""
    wake: float | None = None
    fail: list[tuple[int, dict[str, Any]]] = []
    new: list[Lane] = []
    open_: list[Lane] = []
    for lane in sorted(lanes, key=lambda x: x.file_id):
        row = lane.row
        if row is None:
            new.append(lane)
        elif row.state == LANE_FAILED:
            if s.on_failure == "fail":
                fail.append((lane.file_id, row.error or {}))
            elif s.on_failure == "send":
                open_.append(lane)
        elif row.state == LANE_PASSED or now >= row.wait_until:
            open_.append(lane)
        elif row.canary_batch is None:
            new.append(lane)  # its canary never ran: a new one
        else:
            wake = _sooner(wake, row.wait_until)  # waiting for its canary
    return new, open_, fail, wake


def _linger(
    files: list[int], lanes: Sequence[Lane], size: int, role: str | None, s: Settings, now: float
) -> Plan:
    """A claim of ``size`` from ``files``, unless fewer are due and the linger runs."""
    due = sum(lane.due for lane in lanes)
    ready_at = min(lane.oldest for lane in lanes) + s.linger_s
    if due < size and ready_at > now:
        return Plan(None, ready_at)
    return Plan(Claim(tuple(files), size, role))


def _sooner(current: float | None, candidate: float) -> float:
    return candidate if current is None else min(current, candidate)


def _sooner_opt(current: float | None, candidate: float | None) -> float | None:
    return current if candidate is None else _sooner(current, candidate)


def canary_verdict(counts: dict[str, int], share: float) -> str:
    """How a canary ended, from its items' outcome counts: "failed" (request-level failures
    at ``share`` or above), "passed" (some answered, fewer failed), or "again" (nothing says
    either way: expired, cancelled, or only retryable errors)."""
    answered = sum(counts.values())
    failed = counts.get("failed", 0)
    if answered and failed and failed / answered >= share:
        return "failed"
    if counts.get("succeeded", 0):
        return "passed"
    return "again"


def not_sent_error(canary_error: dict[str, Any], n_canary: int, n_failed: int) -> dict[str, Any]:
    """The error of a request its lane's failed canary kept back."""
    return {
        "type": CANARY_NOT_SENT,
        "message": (
            f"not sent: the first batch of this model in this file (the canary, {n_canary} "
            f"requests) failed for {n_failed} of them with {canary_error.get('type')}: "
            f"{canary_error.get('message')}"
        ),
        "code": canary_error.get("code"),
        "canary_error": canary_error,
    }


@dataclass
class Sizer:
    """Reads the store for :func:`decide` and applies what it says besides the claim."""

    sched: Scheduler
    _checked: set[int] = field(default_factory=set)  # canary batches looked at this run

    def settings(self, provider: str) -> Settings:
        cfg: Config = self.sched.cfg
        pc = cfg.providers[provider]
        hard = self.sched.providers[provider].adapter.limits.max_items
        return Settings(
            adaptive=cfg.batch_sizing == "adaptive",
            base=min(pc.batch_size, hard),
            max_size=min(pc.max_batch_size or hard, hard),
            max_wait_s=cfg.canary_max_wait_s,
            on_failure=cfg.canary_failure,
            linger_s=cfg.batch_linger_s,
        )

    async def plan(self, provider: str, model: str, due: Iterable[DueLane]) -> Plan:
        """The next claim for ``model`` given its due lanes; lanes whose canary failed are
        ended here (``canary_failure = "fail"``)."""
        sched = self.sched
        store = sched.store
        account = sched.providers[provider].account
        s = self.settings(provider)
        now = time.time()
        due = list(due)
        rows = await store.lanes(provider, model, (d.file_id for d in due)) if s.adaptive else {}
        if await self._catch_up(rows.values()):
            rows = await store.lanes(provider, model, (d.file_id for d in due))
        lanes = [Lane(d.file_id, d.n, d.oldest, rows.get(d.file_id)) for d in due]
        proven, probe_until = 0, None
        if s.adaptive:
            known = await store.model_size(account, model)
            if known is not None and now - known[1] <= sched.cfg.canary_memory_s:
                proven = known[0]
            probe_at = await store.open_probe_at(account, model)
            if probe_at is not None:
                probe_until = probe_at + s.max_wait_s
        plan = decide(lanes, proven, probe_until, s, now)
        for file_id, error in plan.fail:
            await self._fail_lane(provider, model, file_id, error)
        return plan

    async def _catch_up(self, rows: Iterable[LaneRow]) -> bool:
        """A canary collected before a crash cut its verdict short: give it now (each canary
        is looked at once per run; True when one was). The verdict itself is idempotent."""
        caught = False
        for row in rows:
            batch_id = row.canary_batch
            if row.state != LANE_CANARY or batch_id is None or batch_id in self._checked:
                continue
            self._checked.add(batch_id)
            batch = await self.sched.store.batch(batch_id)
            if batch is not None and batch["status"] == BatchRowStatus.COLLECTED:
                await self.batch_ended(batch_id)
                caught = True
        return caught

    async def _fail_lane(
        self, provider: str, model: str, file_id: int, error: dict[str, Any]
    ) -> None:
        n, size_bytes, sent = await self.sched.store.fail_lane(file_id, provider, model, error)
        if n or sent:
            self.sched.wake.set()  # the file may be finished now
            logger.bind(provider=provider, model=model, file=file_id).error(
                "canary failed: {} requests of {} in file {} not sent ({}; about {:,} prompt "
                "tokens kept back){}",
                n,
                model,
                file_id,
                error.get("message"),
                size_bytes // CHARS_PER_TOKEN,
                f"; {plural(sent, 'request')} sent before and sent back by a retryable error "
                "end with that error"
                if sent
                else "",
            )

    async def batch_ended(self, batch_id: int) -> None:
        """A batch was collected: read how its items ended, then as ``batch_collected``."""
        store = self.sched.store
        row = await store.batch(batch_id)
        if row is None or row["provider"] not in self.sched.providers:
            return
        counts = {k: int(v) for k, v in json.loads(row["counts"] or "{}").items()}
        error = None
        if counts.get("failed") and row.get("role") == ROLE_CANARY:
            pid = str(row["provider_batch_id"])
            error = await store.batch_failure(pid, row["provider"], row["model"])
        await self.batch_collected(row, counts, error)

    async def batch_collected(
        self, row: dict[str, Any], counts: dict[str, int], error: dict[str, Any] | None
    ) -> None:
        """An ended batch: a good one proves its size; a canary passes or fails its lanes.
        ``error``: the most common request-level error among its items."""
        sched = self.sched
        cfg = sched.cfg
        n = int(row["n_items"])
        answered = sum(counts.values())
        failed = counts.get("failed", 0)
        verdict = canary_verdict(counts, cfg.canary_failure_share)
        if verdict == "passed" and answered >= n:
            await sched.store.note_good_batch(
                row["account"], row["model"], n, now=time.time(), memory_s=cfg.canary_memory_s
            )
        if row.get("role") != ROLE_CANARY:
            return
        log = logger.bind(provider=row["provider"], model=row["model"])
        if verdict == "failed":
            err = not_sent_error(error or {"type": "failed"}, n, failed)
            lanes = await sched.store.canary_ended(row["id"], failed=err)
            what = {"fail": "end failed", "hold": "wait for the operator", "send": "go out"}
            log.error(
                "canary failed: {} of {} requests of batch {} failed ({}: {}); the rest of its "
                "file(s) {} (canary_failure = {})",
                failed,
                n,
                row["provider_batch_id"],
                (error or {}).get("type"),
                (error or {}).get("message"),
                what.get(cfg.canary_failure, cfg.canary_failure),
                cfg.canary_failure,
            )
        else:
            again = verdict == "again"
            lanes = await sched.store.canary_ended(row["id"], failed=None, resend=again)
            if verdict == "passed" and lanes:
                log.info("canary passed: batch {} ({} requests)", row["provider_batch_id"], n)
        if lanes:
            sched.wake.set()


async def canaries_failed(store: PlanningStore, file_id: int, cfg: Config) -> list[dict[str, Any]]:
    """The file's summary entry: each model whose canary failed, the requests it kept back,
    their estimated prompt tokens and what those would have cost at batch prices (input
    side only: the money saved)."""
    out = []
    for lane in await store.failed_lanes(file_id):
        tokens = estimate_tokens(lane["not_sent_bytes"]) if lane["not_sent"] else 0
        info = adapt_policy(cfg).registry.info(lane["model"], lane["provider"])
        out.append(
            {
                "provider": lane["provider"],
                "model": lane["model"],
                "not_sent": lane["not_sent"],
                "prompt_tokens_not_sent": tokens,
                "input_usd_saved": estimate(tokens, info).batch_usd,
                "error": lane["error"],
            }
        )
    return out
