"""The store's methods for a batch's life: claiming its requests, its submission, its polls
and its results.

A mixin of :class:`daemon.store.db.Store` (``db.py`` keeps the connection, files and ingest);
the statements are in ``queries.py``. A claim writes the batch's intent row before any
provider call; the requests' results are stored only while they still wait on the batch, so a
collection cut short by a crash can be run again.
"""

from __future__ import annotations

import json
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ..packing import BatchPacker
from ..states import BATCH_OPEN, BatchRowStatus, RequestStatus
from . import queries as q
from .base import StoreParts, dumps, row_id, statuses_param
from .jobs import CANCELED_ERROR_JSON
from .planning import LANE_CANARY, LANE_FAILED, ROLE_CANARY, Taken
from .recording import record_chunk
from .rows import StoredItems

if TYPE_CHECKING:

    from ..outcomes import Answered, RequestUpdate

CLAIM_PAGE = 5000  # claimable rows read at a time (ids and sizes only)


class BatchRows(NamedTuple):
    """A batch's requests as its collection reads them."""

    outstanding: dict[int, int]  # request id -> attempts, of those still waiting on it
    recorded: dict[str, int]  # status -> how many have their result stored already


class BatchesMixin(StoreParts):
    """Claim, submission, polling and result methods of the Store."""

    if TYPE_CHECKING:  # provided by the planning mixin
        def _book_taken(self, provider: str, model: str, taken: Taken) -> None: ...

    # -- planning and submission -----------------------------------------------------------
    async def due_models(self, now: float) -> list[tuple[str, str, int, float]]:
        """(provider, model, due count, oldest ready time) of pending requests due by ``now``."""
        rows = await self._all(q.SELECT_DUE_MODELS, (now,))
        return [(r["provider"], r["model"], r["n"], r["oldest"]) for r in rows]


    async def claim_batch_items(
        self,
        provider: str,
        model: str,
        tag: str,
        account: str,
        **how: Any,
    ) -> tuple[int, StoredItems] | None:
        """Claim a batch (:meth:`_claim`), with its items left in the store: they are read
        back page by page as they are iterated (a batch of 50,000 requests is never all in
        memory), each body as its stored JSON text (``BatchItem.body_json``)."""
        claimed = await self._claim(provider, model, tag, account, **how)
        if claimed is None:
            return None
        batch_id, ids, sizes = claimed
        return batch_id, StoredItems(self.path, ids, sizes)

    async def _claim(
        self,
        provider: str,
        model: str,
        tag: str,
        account: str,
        *,
        max_items: int,
        max_bytes: int,
        now: float,
        files: Sequence[int] | None = None,
        max_tokens: int | None = None,
        tokens_strict: bool = False,
        role: str | None = None,
        canary_wait_until: float = 0.0,
    ) -> tuple[int, array[int], array[int]] | None:
        """Write the intent row of a batch and move its requests into it, atomically. The
        requests are taken in order while they fit (``daemon/packing.py``): those of
        ``files``, file after file (else every due request of the model, oldest first).
        ``max_tokens``: the batch's estimated prompt tokens stay within it; a first request
        above it is still taken alone unless ``tokens_strict`` (then nothing is). ``role``
        is the batch's sizing role; a canary opens a lane for each file it takes requests
        of (the rest of the file's requests of the model wait until ``canary_wait_until``
        at most). Only ids and sizes are read (8 bytes each), never the bodies."""
        taken: Taken = Counter()  # the due book's buckets it takes requests of
        async with self.transaction() as db:
            packer = BatchPacker(max_items=max_items, max_bytes=max_bytes, max_tokens=max_tokens)
            chosen = array("q")  # 8 bytes a request, not an int object and a list slot
            sizes = array("q")
            files_taken: list[int] = []  # the files it takes requests of
            tokens = 0  # their estimated prompt tokens
            full = False
            for file_id in [None] if files is None else files:
                if file_id is None:
                    sql = q.SELECT_CLAIMABLE_SIZES
                    params: tuple[Any, ...] = (provider, model, now)
                else:
                    sql = q.SELECT_CLAIMABLE_SIZES_IN_FILE
                    params = (provider, model, file_id, now)
                async with db.execute(sql, (*params, max_items - len(chosen))) as cur:
                    while not full and (rows := await cur.fetchmany(CLAIM_PAGE)):
                        for rid, size, fid, nat, upd in rows:
                            if packer.add(size) and chosen:
                                full = True  # the next request would open a second batch
                                break
                            if tokens_strict and max_tokens is not None:
                                if packer.tokens > max_tokens:
                                    return None  # not even the first request fits the budget
                            chosen.append(rid)
                            sizes.append(size)
                            taken[fid, nat, upd] += 1
                            tokens = packer.tokens  # the batch's: chosen is its requests
                            if file_id is not None and (
                                not files_taken or files_taken[-1] != file_id
                            ):
                                files_taken.append(file_id)
                if full or len(chosen) >= max_items:
                    break
            if not chosen:
                return None
            cur = await db.execute(
                q.INSERT_BATCH,
                (tag, provider, model, account, BatchRowStatus.SUBMITTING, len(chosen), now),
            )
            batch_id = row_id(cur)
            await db.execute(q.NOTE_BATCH_SIZING, (tokens, role, batch_id))
            if role == ROLE_CANARY:
                await db.executemany(
                    q.INSERT_LANE,
                    [
                        (f, provider, model, LANE_CANARY, batch_id, canary_wait_until)
                        for f in files_taken
                    ],
                )
            moved = (RequestStatus.BATCHED, batch_id, now, json.dumps(chosen.tolist()))
            await db.execute(q.BATCH_REQUESTS_LISTED, moved)
        self._book_taken(provider, model, taken)  # committed
        return batch_id, chosen, sizes

    async def mark_submitted(
        self,
        batch_id: int,
        provider_batch_id: str,
        input_file_id: str | None,
        *,
        poll_interval_s: float,
        now: float,
    ) -> None:
        """The batch was created at the provider as ``provider_batch_id``. Its requests'
        rows are not touched: each lists the batch's row id since its claim, read as this
        provider batch id from now on (``rows.BatchIdTexts``)."""
        async with self.transaction() as db:
            await db.execute(
                q.MARK_BATCH_SUBMITTED,
                (
                    BatchRowStatus.SUBMITTED,
                    provider_batch_id,
                    input_file_id,
                    now,
                    now + poll_interval_s,
                    poll_interval_s,
                    batch_id,
                ),
            )

    async def abort_batch(
        self,
        batch_id: int,
        error: str,
        *,
        next_attempt_at: float,
        count_attempt: bool,
        max_attempts: int | None = None,
        final_error: dict[str, Any] | None = None,
    ) -> None:
        """A batch that will not run (create refused, or it failed whole): its requests go back
        to pending, or end ``failed`` with ``final_error`` once they are out of attempts."""
        now = time.time()
        batched = RequestStatus.BATCHED
        async with self.transaction() as db:
            await db.execute(q.END_BATCH, (BatchRowStatus.ABORTED, error, now, batch_id))
            inc = 1 if count_attempt else 0
            params = (RequestStatus.CANCELED, CANCELED_ERROR_JSON, now, batch_id, batched)
            await db.execute(q.CANCEL_BATCH_REQUESTS, params)  # a canceled job's: not again
            if final_error is not None and max_attempts is not None:
                await db.execute(
                    q.FAIL_EXHAUSTED_REQUESTS,
                    (
                        RequestStatus.FAILED,
                        dumps(final_error),
                        inc,
                        now,
                        batch_id,
                        batched,
                        inc,
                        max_attempts,
                    ),
                )
            await db.execute(
                q.REQUEUE_BATCH_REQUESTS,
                (RequestStatus.PENDING, inc, next_attempt_at, now, batch_id, batched),
            )
            await db.execute(q.RELEASE_LANE_CANARY, (batch_id,))  # a canary: send a new one
        self.due_changed()  # requests back to pending

    async def fail_batch_requests(self, batch_id: int, error: dict[str, Any]) -> None:
        """A create call refused for good: every request of the batch ends ``failed``."""
        now = time.time()
        async with self.transaction() as db:
            await db.execute(
                q.END_BATCH, (BatchRowStatus.ABORTED, error.get("message"), now, batch_id)
            )
            await db.execute(
                q.FAIL_BATCH_REQUESTS,
                (RequestStatus.FAILED, dumps(error), now, batch_id, RequestStatus.BATCHED),
            )
            # A canary refused for good: the rest of its lanes would be refused the same way.
            await db.execute(q.FAIL_LANE_CANARY, (LANE_FAILED, dumps(error), batch_id))

    async def note_create_error(self, batch_id: int, error: str) -> None:
        """The create call of a batch still ``submitting`` raised an unexpected error: it may
        have taken effect, so the batch is reconciled; if it was never created, the error
        counts an attempt of its requests (``batch["error"]`` says so)."""
        async with self.transaction() as db:
            await db.execute(q.NOTE_CREATE_ERROR, (error, batch_id, BatchRowStatus.SUBMITTING))

    async def batches_in(self, *statuses: BatchRowStatus) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._all(q.SELECT_BATCHES_IN, (statuses_param(statuses),))]

    async def batch(self, batch_id: int) -> dict[str, Any] | None:
        row = await self._one(q.SELECT_BATCH, (batch_id,))
        return None if row is None else dict(row)

    async def submitting_batches(self, provider: str, account: str) -> list[dict[str, Any]]:
        """The account's batches whose create call may or may not have happened, oldest first."""
        params = (BatchRowStatus.SUBMITTING, provider, account)
        return [dict(r) for r in await self._all(q.SELECT_ACCOUNT_BATCHES, params)]

    async def other_account_batches(self, provider: str, account: str) -> list[dict[str, Any]]:
        """The open batches of ``provider`` that belong to an account other than ``account``
        (the key or base URL changed since they were created), oldest first."""
        params = (provider, account, statuses_param(BATCH_OPEN))
        return [dict(r) for r in await self._all(q.SELECT_OTHER_ACCOUNT_BATCHES, params)]

    async def adopt_batch(self, batch_id: int, account: str) -> None:
        """The batch belongs to ``account`` from now on (that account can see it)."""
        async with self.transaction() as db:
            await db.execute(q.ADOPT_BATCH, (account, batch_id))

    async def known_provider_ids(self, provider: str) -> set[str]:
        return {r[0] for r in await self._all(q.SELECT_KNOWN_PROVIDER_IDS, (provider,))}

    async def note_reconcile_attempt(self, batch_id: int) -> int:
        async with self.transaction() as db:
            await db.execute(q.COUNT_RECONCILE_ATTEMPT, (batch_id,))
        return int(await self._scalar(q.SELECT_RECONCILE_ATTEMPTS, (batch_id,)))

    async def creates_since(self, provider: str, since: float) -> int:
        params = (provider, since, BatchRowStatus.ABORTED)
        return int(await self._scalar(q.COUNT_CREATES_SINCE, params))

    # -- polling and results ---------------------------------------------------------------
    async def due_polls(self, provider: str, account: str, now: float) -> list[dict[str, Any]]:
        """The account's submitted batches whose next poll is due by ``now``."""
        params = (BatchRowStatus.SUBMITTED, provider, account, now)
        return [dict(r) for r in await self._all(q.SELECT_DUE_POLLS, params)]

    async def next_poll_at(self, provider: str, account: str) -> float | None:
        params = (BatchRowStatus.SUBMITTED, provider, account)
        due = await self._scalar(q.SELECT_NEXT_POLL_AT, params)
        return None if due is None else float(due)

    async def poll_book(
        self, provider: str, account: str, since: float
    ) -> list[tuple[int, str, float, float | None]]:
        """The account's submitted batches submitted at or after ``since``: (row id, provider
        batch id, submitted at, next poll at) each, for the poller's schedule in memory."""
        params = (BatchRowStatus.SUBMITTED, provider, account, since)
        return [
            (r[0], r[1], float(r[2] if r[2] is not None else r[3]), r[4])
            for r in await self._all(q.SELECT_POLL_BOOK, params)
        ]

    async def last_submitted_at(self, provider: str, account: str) -> float | None:
        """When the account's newest still-submitted batch was submitted (None: none is)."""
        params = (BatchRowStatus.SUBMITTED, provider, account)
        at = await self._scalar(q.SELECT_LAST_SUBMITTED_AT, params)
        return None if at is None else float(at)

    async def submitted_batches(self, ids: Iterable[int]) -> list[dict[str, Any]]:
        """The batches among ``ids`` that are still submitted, oldest first."""
        params = (BatchRowStatus.SUBMITTED, json.dumps(sorted(ids)))
        return [dict(r) for r in await self._all(q.SELECT_BATCHES_BY_ID, params)]

    async def update_poll(
        self,
        batch_id: int,
        *,
        provider_status: str,
        counts: dict[str, Any] | None,
        next_poll_at: float,
        poll_interval_s: float,
    ) -> None:
        async with self.transaction() as db:
            await db.execute(
                q.UPDATE_POLL,
                (provider_status, dumps(counts), next_poll_at, poll_interval_s, batch_id),
            )

    async def record_results(
        self,
        batch_id: int,
        updates: Sequence[RequestUpdate],
        answered: Sequence[Answered] = (),
    ) -> int:
        """Store a chunk of item results (each provider answer in the answers table): the
        ``updates``, and the usual succeeded items as ``outcomes.answered`` gives them (stored
        as their ``item_update`` would be). Only requests still in this batch are touched, so
        a collection interrupted by a crash can simply be run again (``recording.py``)."""
        counted = await record_chunk(self.transaction, batch_id, updates, answered)
        if counted.requeued:
            self.due_changed()  # requests back to pending
        return counted.results

    async def batch_rows(self, batch_id: int) -> BatchRows:
        """The batch's requests, in one read: those still waiting on it (id -> attempts) and
        how many have their result stored already, by status."""
        async with self.db.execute(q.SELECT_BATCH_ROWS, (batch_id,)) as cur:
            cur.row_factory = None  # plain tuples: a row object each costs more than the read
            rows = await cur.fetchall()
        outstanding: dict[int, int] = {}
        recorded: Counter[str] = Counter()
        batched = RequestStatus.BATCHED.value
        for rid, attempts, status in rows:
            if status == batched:
                outstanding[rid] = attempts
            else:
                recorded[status] += 1
        return BatchRows(outstanding, dict(recorded))

    async def batch_requests(self, batch_id: int) -> list[tuple[int, int]]:
        """(request id, attempts) of the requests still waiting on this batch."""
        rows = await self._all(q.SELECT_BATCH_REQUESTS, (batch_id, RequestStatus.BATCHED))
        return [(r[0], r[1]) for r in rows]

    async def mark_collected(
        self, batch_id: int, provider_status: str, counts: dict[str, Any] | None
    ) -> None:
        async with self.transaction() as db:
            await db.execute(
                q.MARK_BATCH_COLLECTED,
                (BatchRowStatus.COLLECTED, provider_status, dumps(counts), time.time(), batch_id),
            )

