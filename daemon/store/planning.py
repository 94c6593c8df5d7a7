"""The store's planning side: the due book, lanes and canaries, what each model has proven,
and budgets. The due book (``due.py``) answers which requests are due per model and file, and
when the next comes due, from memory; the writes of ``db.py`` and ``jobs.py`` keep it (or drop
it with ``due_changed``).

A mixin of :class:`daemon.store.db.Store` (it runs the statements of ``queries.py`` through
the Store's connection helpers). What the rows mean is ``daemon/sizing.py``'s and
``daemon/budgets.py``'s to say; here they are only read and written.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..states import BATCH_OPEN, RequestStatus
from . import queries as q
from .base import StoreParts
from .due import MAX_AGE_S, DueBook

if TYPE_CHECKING:
    pass

# What a claim took, per file and bucket of the due book: (file, next_attempt_at, updated_at).
Taken = Counter[tuple[int, float, float]]

# Lane states (one model's requests of one file).
LANE_CANARY = "canary"  # its first batch (the canary) is due or out
LANE_PASSED = "passed"  # the canary ended well: the rest may go
LANE_FAILED = "failed"  # the canary failed for request-level reasons
# Batch roles.
ROLE_CANARY = "canary"
ROLE_PROBE = "probe"
CANARY_NOT_SENT = "canary_failed"  # the error type of a request a failed canary kept back


@dataclass(frozen=True)
class DueLane:
    provider: str
    model: str
    file_id: int
    n: int  # due requests
    oldest: float  # when the longest-waiting of them became due


@dataclass(frozen=True)
class LaneRow:
    file_id: int
    state: str
    canary_batch: int | None
    wait_until: float
    error: dict[str, Any] | None


@dataclass(frozen=True)
class Budget:
    limit_tokens: int
    source: str
    scale: float
    updated_at: float


def _open() -> str:
    return json.dumps(sorted(str(s) for s in BATCH_OPEN))


class PlanningStore(StoreParts):
    """Planning queries; mixed into Store, whose connection helpers they use."""

    _book: DueBook | None = None  # the due book (``due.py``); None: read it again

    if TYPE_CHECKING:
        _lock: asyncio.Lock

    # -- the due book (due.py) ---------------------------------------------------------------
    async def due_lanes(self, now: float) -> list[DueLane]:
        """Pending requests due by ``now``, per provider, model and file."""
        book = await self._due_book()
        return [DueLane(*lane, n, oldest) for lane, n, oldest in book.due(now)]

    async def due_lanes_of(self, provider: str, model: str, now: float) -> list[DueLane]:
        """The same, for one model."""
        book = await self._due_book()
        return [DueLane(*lane, n, oldest) for lane, n, oldest in book.due(now, provider, model)]

    async def next_due_at(self) -> float | None:
        """The earliest ``next_attempt_at`` of any pending request (None: none is pending)."""
        return (await self._due_book()).next_due_at()

    def due_changed(self) -> None:
        """A write moved requests into or out of pending (or changed when they are due) in a
        way the book cannot follow: it is read again from the database at its next use. Call
        it after the write's transaction has ended (committed or not)."""
        self._book = None

    async def _due_book(self) -> DueBook:
        """The due book, read again when dropped, when another connection wrote (``batchd
        cancel`` beside the daemon), or once it is ``MAX_AGE_S`` old. Read under the
        connection's lock, so no transaction of this store is half done while it reads."""
        book = self._book
        if book is not None and time.monotonic() - book.built_at < MAX_AGE_S:
            if int(await self._scalar(q.DATA_VERSION)) == book.version:
                return book
        async with self._lock:
            version = int(await self._scalar(q.DATA_VERSION))
            rows = await self._all(q.SELECT_PENDING_BUCKETS)
            book = DueBook.of_rows(rows, version=version, built_at=time.monotonic())
        self._book = book
        return book

    async def _book_stored(self, file_id: int, params: Sequence[Sequence[Any]], at: float) -> None:
        """Requests of ``file_id`` were stored at ``at`` (``params``: the values of
        ``queries.INSERT_REQUEST`` of each); the pending ones are due at once. Called after the
        insert committed. A canceled job's lines are canceled as they are stored; a job is
        canceled by another connection (``batchd cancel``), so a cancel after this check
        drops the book anyway (``PRAGMA data_version``)."""
        book = self._book
        if book is None:
            return
        pending = Counter((p[4], p[3]) for p in params if p[9] == RequestStatus.PENDING)
        if not pending:
            return
        canceled = await self._one(q.SELECT_FILE_CANCELED, (file_id,))
        if canceled is None or canceled[0]:  # canceled (or gone): none of them is pending
            return
        if self._book is not book:  # read again (or dropped) meanwhile: it has them, or not
            return
        for (provider, model), n in pending.items():
            if provider is not None and model is not None:
                book.add((str(provider), str(model), file_id), (0.0, at), n)

    def _book_taken(self, provider: str, model: str, taken: Taken) -> None:
        """A claim moved these requests out of pending."""
        book = self._book
        if book is None:
            return
        for (file_id, nat, upd), n in taken.items():
            if not book.take((provider, model, file_id), (nat, upd), n):
                self._book = None  # not what the book held: read it again
                return

    # -- lanes -----------------------------------------------------------------------------
    async def lanes(self, provider: str, model: str, files: Iterable[int]) -> dict[int, LaneRow]:
        params = (provider, model, json.dumps(sorted(set(files))))
        out = {}
        for r in await self._all(q.SELECT_LANES, params):
            error = json.loads(r["error"]) if r["error"] else None
            batch = r["canary_batch"]
            out[int(r["file_id"])] = LaneRow(
                int(r["file_id"]), str(r["state"]), batch, float(r["wait_until"]), error
            )
        return out

    async def canary_ended(
        self, batch_id: int, *, failed: dict[str, Any] | None, resend: bool = False
    ) -> list[tuple[int, str, str]]:
        """The canary batch ``batch_id`` ended: its lanes pass, fail with ``failed`` (the
        canary's error), or (``resend``: it never ran) wait for a new canary. Returns the
        (file, provider, model) of the lanes it was the canary of."""
        lanes = [
            (int(r[0]), str(r[1]), str(r[2]))
            for r in await self._all(q.SELECT_BATCH_LANES, (batch_id,))
        ]
        if not lanes:
            return []
        if resend:
            state, error = LANE_CANARY, None
        elif failed is not None:
            state, error = LANE_FAILED, json.dumps(failed, ensure_ascii=False)
        else:
            state, error = LANE_PASSED, None
        async with self.transaction() as db:
            await db.execute(q.END_LANE_CANARY, (state, error, None, batch_id))
        return lanes

    async def batch_failure(
        self, provider_batch_id: str, provider: str, model: str
    ) -> dict[str, Any] | None:
        """The most common error of the requests that failed in the provider's batch."""
        params = (provider_batch_id, provider, model, RequestStatus.FAILED)
        row = await self._one(q.SELECT_BATCH_FAILURE, params)
        return None if row is None else dict(json.loads(row[0]))

    async def fail_lane(
        self, file_id: int, provider: str, model: str, error: dict[str, Any]
    ) -> tuple[int, int, int]:
        """End the lane's pending requests: those never sent with ``error`` (its canary's),
        those sent already (a retryable error sent them back) with their own last error.
        Returns how many were never sent, their bodies' bytes, and how many were sent."""
        where = (file_id, provider, model)  # its pending requests
        text = json.dumps(error, ensure_ascii=False)
        async with self.transaction() as db:
            async with db.execute(q.SUM_LANE_PENDING, where) as cur:
                row = await cur.fetchone()
            params = (RequestStatus.FAILED, text, time.time(), *where)
            cur = await db.execute(q.END_LANE_RETRIES, params)
            sent = max(cur.rowcount, 0)
            await db.execute(q.FAIL_LANE_REQUESTS, params)
        if self._book is not None:
            self._book.drop_lane((provider, model, file_id))
        return (0, 0, sent) if row is None else (int(row[0]), int(row[1]), sent)

    async def failed_lanes(self, file_id: int) -> list[dict[str, Any]]:
        """The file's lanes whose canary failed: model, error, and the requests (and their
        bytes) it kept back."""
        params = (CANARY_NOT_SENT, CANARY_NOT_SENT, file_id, LANE_FAILED)
        out = []
        for r in await self._all(q.SELECT_FILE_LANES, params):
            out.append(
                {
                    "provider": r["provider"],
                    "model": r["model"],
                    "error": json.loads(r["error"]) if r["error"] else None,
                    "not_sent": int(r["not_sent"]),
                    "not_sent_bytes": int(r["not_sent_bytes"]),
                }
            )
        return out

    # -- what a model has proven -----------------------------------------------------------
    async def model_size(self, account: str, model: str) -> tuple[int, float] | None:
        """(proven size, when) of the model under ``account``, or None."""
        row = await self._one(q.SELECT_MODEL_SIZE, (account, model))
        return None if row is None else (int(row[0]), float(row[1]))

    async def note_good_batch(
        self, account: str, model: str, n_items: int, *, now: float, memory_s: float
    ) -> None:
        """A batch of ``n_items`` ended well: the model has proven that size (a record older
        than ``memory_s`` is replaced, not raised)."""
        params = (account, model, n_items, now, now - memory_s)
        async with self.transaction() as db:
            await db.execute(q.UPSERT_MODEL_SIZE, params)

    async def open_probe_at(self, account: str, model: str) -> float | None:
        """When the model's open probe batch was created, if one is open."""
        at = await self._scalar(q.SELECT_OPEN_PROBE, (account, model, ROLE_PROBE, _open()))
        return None if at is None else float(at)

    # -- budgets ---------------------------------------------------------------------------
    async def tokens_in_flight(self, account: str, model: str) -> tuple[int, int]:
        """(estimated tokens, batches) of the model's open batches under ``account``."""
        row = await self._one(q.SELECT_IN_FLIGHT, (account, model, _open()))
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    async def tokens_open_beside(self, account: str, model: str, batch_id: int, at: float) -> int:
        """Estimated tokens of the model's other batches that were open at ``at``."""
        value = await self._scalar(q.SELECT_OPEN_AT, (account, model, batch_id, at, at))
        return int(value or 0)

    async def budget(self, account: str, model: str) -> Budget | None:
        row = await self._one(q.SELECT_BUDGET, (account, model))
        if row is None:
            return None
        return Budget(int(row[0]), str(row[1]), float(row[2]), float(row[3]))

    async def set_budget(
        self, account: str, model: str, limit_tokens: int, source: str, scale: float = 1.0
    ) -> None:
        params = (account, model, limit_tokens, source, scale, time.time())
        async with self.transaction() as db:
            await db.execute(q.UPSERT_BUDGET, params)

    async def budgets_in_use(self) -> list[dict[str, Any]]:
        """Every known budget with the estimated tokens its model has in flight (status)."""
        rows = await self._all(q.REPORT_BUDGETS, (_open(),))
        return [dict(r) for r in rows]

    async def budget_use(self) -> list[tuple[str, str, int, int]]:
        """(provider, model, limit in use, estimated tokens in flight) of every known
        enqueued-token budget: what ``batchd status`` shows. The limit is the share of the
        provider's that batchd fills."""
        return [
            (
                str(b["account"]).split("|", 1)[0],
                str(b["model"]),
                int(b["limit_tokens"] * b["scale"]),
                int(b["in_flight"]),
            )
            for b in await self.budgets_in_use()
        ]
