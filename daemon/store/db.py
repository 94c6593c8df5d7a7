"""The store's connection and its intent-named methods; the statements are in ``queries.py``.

State lives in rows, so a restart remembers everything: which file is at which stage, which
request is in which batch, how many attempts it has had and when it may be tried again, and
which provider batch a local batch became. One aiosqlite connection (one thread); multi-
statement writes are serialised with ``BEGIN IMMEDIATE`` under an asyncio lock. WAL mode, so
``batchd status`` can read while the daemon writes.

Every statement is a named constant of ``queries.py`` (used here as ``q.NAME``); statuses are
passed as parameters (the ``StrEnum`` members of ``daemon/states.py``), except those that
choose a partial index, which ``queries.py`` spells in the SQL text.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import time
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiosqlite

from adapters.base import BatchItem
from adapters.jsontext import RawJSON, compact, loads

from ..packing import BatchPacker
from ..states import BATCH_OPEN, BatchRowStatus, FileStatus, RequestStatus
from . import queries as q
from .jobs import CANCELED_ERROR_JSON, JobsMixin
from .planning import LANE_CANARY, LANE_FAILED, ROLE_CANARY, PlanningStore, Taken
from .schema import MIGRATIONS

if TYPE_CHECKING:
    from ..outcomes import RequestUpdate

CLAIM_PAGE = 5000  # claimable rows read at a time (ids and sizes only)


class StoreError(RuntimeError):
    pass


def state_failure(exc: BaseException) -> bool:
    """An error of the state database itself (disk full, locked, corrupt, closed): no unit of
    work can be contained without it, so it ends the process (a supervisor restarts it)."""
    return isinstance(exc, StoreError | sqlite3.OperationalError) or type(exc) in (
        sqlite3.DatabaseError,
        sqlite3.InternalError,
    )


def _dumps(value: Any) -> str | None:
    return None if value is None else compact(value)


def _answer_text(answer: Any) -> str:
    """A provider's answer as stored: its own text when the adapter kept it, else encoded."""
    return answer.text if isinstance(answer, RawJSON) else compact(answer)


# One request as stored: the values of INSERT_REQUEST after file_id and before updated_at
# (line, custom_id, model, provider, body, size_bytes, metadata, adaptations, status, error),
# the JSON ones as text. Only plain text and numbers: the garbage collector stops tracking such
# a tuple, so thousands of them waiting to be stored cost it nothing.
RequestRow = tuple[
    int, str, str | None, str | None, str | None, int, str | None, str | None, str, str | None
]


def request_row(r: Mapping[str, Any]) -> RequestRow:
    """A request given as a dict (the columns by name, JSON values as Python values; ``body_json``
    when the body's text is known already) as a :data:`RequestRow`."""
    return (
        r["line"],
        r["custom_id"],
        r.get("model"),
        r.get("provider"),
        r.get("body_json") or _dumps(r.get("body")),
        r.get("size_bytes", 0),
        _dumps(r.get("metadata")),
        _dumps(r.get("adaptations") or []),
        str(r["status"]),
        _dumps(r.get("error")),
    )


def _canceled(params: tuple[Any, ...]) -> tuple[Any, ...]:
    """INSERT_REQUEST's values of a pending line, as a line of a canceled job."""
    return (*params[:9], str(RequestStatus.CANCELED), CANCELED_ERROR_JSON, params[11])


def _statuses(statuses: Iterable[str]) -> str:
    """A set of statuses as one JSON parameter (for ``IN (SELECT value FROM json_each(?))``)."""
    return json.dumps(sorted(str(s) for s in statuses))


def _row_id(cur: aiosqlite.Cursor) -> int:
    if cur.lastrowid is None:
        raise StoreError("an INSERT reported no row id")
    return cur.lastrowid


RETRIED = "retried"  # a job's request that a batch sent back and a later batch ran


class Store(PlanningStore, JobsMixin):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------
    async def open(self) -> Store:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with suppress(FileExistsError):  # an empty file is an empty database, owner-only
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, q.DB_FILE_MODE))
        new = self.path.stat().st_size == 0  # nothing written to an existing file before checks
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        self._db.row_factory = aiosqlite.Row
        for pragma in (*(q.NEW_DB_PRAGMAS if new else ()), *q.PRAGMAS):
            await self._db.execute(pragma)
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise
        return self

    async def quick_check(self) -> list[str]:
        """SQLite's own consistency check of the whole file: [] when sound, else the problems
        it found (the first few)."""
        rows = await self._all(q.QUICK_CHECK)
        problems = [str(r[0]) for r in rows]
        return [] if problems == ["ok"] else problems[:5]

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    async def _migrate(self) -> None:
        version = await self.schema_version()
        if version > len(MIGRATIONS):
            raise StoreError(
                f"database {self.path} is at schema {version}, newer than this batchd "
                f"({len(MIGRATIONS)}); upgrade batchd"
            )
        for number in range(version + 1, len(MIGRATIONS) + 1):
            async with self.transaction():
                await self._apply(number)

    async def _apply(self, number: int) -> None:
        # A statement ends with ";" at the end of a line (a trigger's body keeps its own ";"
        # inside a line).
        for statement in re.split(r";[ \t]*\n", MIGRATIONS[number - 1]):
            if statement.strip():
                await self.db.execute(statement)
        await self.db.execute(q.SET_SCHEMA_VERSION.format(version=int(number)))

    async def schema_version(self) -> int:
        return int(await self._scalar(q.GET_SCHEMA_VERSION))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self.db.execute(q.BEGIN)
            try:
                yield self.db
            except BaseException:
                await self.db.execute(q.ROLLBACK)
                raise
            else:
                await self.db.execute(q.COMMIT)

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self.db.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self.db.execute(sql, params) as cur:
            return await cur.fetchone()

    async def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of a statement that always returns one row (an aggregate, or a
        row known to exist)."""
        row = await self._one(sql, params)
        if row is None:
            raise StoreError(f"no row from: {sql}")
        return row[0]

    # -- files -----------------------------------------------------------------------------
    async def claim_file(self, name: str, inbox_path: str, work_path: str, size: int) -> int:
        """The intent row for a file about to be moved out of the inbox."""
        async with self.transaction() as db:
            cur = await db.execute(
                q.INSERT_FILE,
                (name, inbox_path, work_path, size, FileStatus.CLAIMED, time.time()),
            )
            return _row_id(cur)

    async def set_file_status(self, file_id: int, status: FileStatus, **fields: Any) -> None:
        bad = set(fields) - q.FILE_FIELDS
        if bad:
            raise StoreError(f"unknown file field(s) {bad}")
        sql = q.UPDATE_FILE.format(fields="".join(f", {name} = ?" for name in fields))
        async with self.transaction() as db:
            await db.execute(sql, (status, *fields.values(), file_id))

    async def files_in(self, *statuses: FileStatus) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._all(q.SELECT_FILES_IN, (_statuses(statuses),))]

    async def file(self, file_id: int) -> dict[str, Any] | None:
        row = await self._one(q.SELECT_FILE, (file_id,))
        return None if row is None else dict(row)

    async def forget_requests(self, file_id: int) -> None:
        """Drop a half-ingested file's requests (ingest starts again from its first line)."""
        async with self.transaction() as db:
            await db.execute(q.DELETE_FILE_REQUESTS, (file_id,))
        self.due_changed()

    async def add_requests(self, file_id: int, rows: Iterable[dict[str, Any]]) -> None:
        await self.add_request_rows(file_id, [request_row(r) for r in rows])

    async def add_request_rows(self, file_id: int, rows: Iterable[RequestRow]) -> None:
        """Store requests given as :data:`RequestRow` tuples (what ingest writes in its worker
        thread), in one transaction."""
        now = time.time()
        params = [(file_id, *row, now) for row in rows]
        async with self.transaction() as db:
            if await self._one(q.SELECT_CANCELED_FILE, (file_id,)) is not None:
                # Its job was canceled while the file was being read: these lines end
                # canceled as they are stored, so the planner never sees them pending (one
                # check in the write transaction, where a trigger cost ~4 µs on every row).
                params = [_canceled(p) if p[9] == RequestStatus.PENDING else p for p in params]
            await db.executemany(q.INSERT_REQUEST, params)
        await self._book_stored(file_id, params, now)

    async def finished_files(self) -> list[dict[str, Any]]:
        """Active files none of whose requests is still open."""
        rows = await self._all(q.SELECT_FINISHED_FILES, (FileStatus.ACTIVE,))
        return [dict(r) for r in rows]

    async def file_batches(self, file_id: int) -> list[dict[str, Any]]:
        """The batches the job's requests went through; ``counts``: the job's own requests in
        each, by final status (``retried``: sent again in a later batch)."""
        counts: dict[str, dict[str, int]] = {}
        for r in await self._all(q.SELECT_FILE_BATCH_COUNTS, (file_id, RETRIED)):
            counts.setdefault(str(r["pbid"]), {})[str(r["k"])] = int(r["n"])
        if not counts:
            return []
        rows = await self._all(q.SELECT_BATCHES_NAMED, (json.dumps(sorted(counts)),))
        return [{**dict(r), "counts": counts[str(r["id"])]} for r in rows]

    async def note_ingest_start(self, file_id: int) -> int:
        """Count one more ingest pass of the file, before it runs; returns the count."""
        async with self.transaction() as db:
            async with db.execute(q.COUNT_INGEST_START, (file_id,)) as cur:
                row = await cur.fetchone()
        return 0 if row is None else int(row[0])

    async def note_ingest_ended(self, file_id: int, read_bytes: int | None = None) -> None:
        """A pass ended without a crash; ``read_bytes``: how far the work copy was read."""
        async with self.transaction() as db:
            await db.execute(q.UNCOUNT_INGEST_START, (file_id,))
            if read_bytes is not None:
                await db.execute(q.SET_READ_BYTES, (read_bytes, file_id))

    async def last_stored_line(self, file_id: int) -> int:
        """The last line of the file already stored (0: none): a resumed ingest goes on after
        it instead of storing (and maybe sending) the earlier lines a second time."""
        row = await self._one(q.SELECT_LAST_STORED_LINE, (file_id,))
        return 0 if row is None else int(row[0])

    async def known_work_names(self, names: Iterable[str]) -> set[str]:
        """Which of ``names`` (of files in the work folder) some file row holds as its work
        copy. Names, not whole paths: the same folder may be spelled another way next run."""
        wanted = set(names)
        rows = await self._all(q.SELECT_WORK_PATHS_NAMED, (json.dumps(sorted(wanted)),))
        return {Path(r[0]).name for r in rows} & wanted

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
            batch_id = _row_id(cur)
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
            await db.execute(
                q.NOTE_PROVIDER_BATCH_ID, (provider_batch_id, batch_id, RequestStatus.BATCHED)
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
                        _dumps(final_error),
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
                (RequestStatus.FAILED, _dumps(error), now, batch_id, RequestStatus.BATCHED),
            )
            # A canary refused for good: the rest of its lanes would be refused the same way.
            await db.execute(q.FAIL_LANE_CANARY, (LANE_FAILED, _dumps(error), batch_id))

    async def note_create_error(self, batch_id: int, error: str) -> None:
        """The create call of a batch still ``submitting`` raised an unexpected error: it may
        have taken effect, so the batch is reconciled; if it was never created, the error
        counts an attempt of its requests (``batch["error"]`` says so)."""
        async with self.transaction() as db:
            await db.execute(q.NOTE_CREATE_ERROR, (error, batch_id, BatchRowStatus.SUBMITTING))

    async def batches_in(self, *statuses: BatchRowStatus) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._all(q.SELECT_BATCHES_IN, (_statuses(statuses),))]

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
        params = (provider, account, _statuses(BATCH_OPEN))
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
                (provider_status, _dumps(counts), next_poll_at, poll_interval_s, batch_id),
            )

    async def record_results(self, batch_id: int, updates: Sequence[RequestUpdate]) -> int:
        """Store a chunk of item results (each provider answer in the answers table). Only
        requests still in this batch are touched, so a collection interrupted by a crash can
        simply be run again."""
        now = time.time()
        batched = RequestStatus.BATCHED
        params = []
        answers = []
        again = []
        for u in updates:
            rid = u["request_id"]
            status = u["status"]
            result = u.get("result")
            error = u.get("error")
            params.append(
                (
                    status,
                    u["attempts_inc"],
                    u.get("next_attempt_at", 0.0),
                    None if result is None else compact(result),
                    None if error is None else compact(error),
                    now,
                    rid,
                    batch_id,
                    batched,
                )
            )
            answer = u.get("answer")
            if answer is not None:
                answers.append((_answer_text(answer), rid, batch_id, batched))
            if status == RequestStatus.PENDING:
                again.append(rid)
        async with self.transaction() as db:
            if answers:  # first: its condition is the one RECORD_RESULT changes
                await db.executemany(q.RECORD_ANSWER, answers)
            await db.executemany(q.RECORD_RESULT, params)
            if again:  # a canceled job's requests are not sent again: they end canceled
                await db.execute(
                    q.CANCEL_REQUEUED,
                    (
                        RequestStatus.CANCELED,
                        CANCELED_ERROR_JSON,
                        now,
                        json.dumps(again),
                        RequestStatus.PENDING,
                    ),
                )
        if again:
            self.due_changed()  # requests back to pending
        return len(params)

    async def batch_recorded(self, batch_id: int) -> dict[str, int]:
        """How many of the batch's requests have their result stored already, by status."""
        rows = await self._all(q.SELECT_BATCH_RECORDED, (batch_id, RequestStatus.BATCHED))
        return {str(r[0]): int(r[1]) for r in rows}

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
                (BatchRowStatus.COLLECTED, provider_status, _dumps(counts), time.time(), batch_id),
            )

    # -- status ----------------------------------------------------------------------------
    async def waiting_by_provider(self) -> dict[str, int]:
        """How many requests of each provider are not final yet (pending or in a batch)."""
        rows = await self._all(q.REPORT_WAITING)
        return {str(r["provider"]): int(r["n"]) for r in rows if r["provider"] is not None}


JSON_COLUMNS = ("body", "metadata", "adaptations", "batch_ids", "result", "error")


def _decode_request(row: sqlite3.Row, as_text: Iterable[str] = ()) -> dict[str, Any]:
    d = dict(row)
    for key in JSON_COLUMNS:
        if d.get(key) is not None and key not in as_text:
            d[key] = loads(d[key])
    return d


def _read_only(path: Path) -> sqlite3.Connection:
    # A writer that fails mid-file (outbox full) drops its generator unfinished; it is then
    # closed wherever it is collected, so the connection must allow another thread's close()
    # (it is only ever used by one thread at a time). Otherwise each failed write leaked one.
    uri = q.READ_ONLY_URI.format(path=quote(str(Path(path).absolute())))  # '#', '?', '%' in names
    return sqlite3.connect(uri, uri=True, check_same_thread=False)


def _file_pages(
    db: sqlite3.Connection, sql: str, head: tuple[Any, ...], file_id: int, chunk: int, line: Any
) -> Iterator[Any]:
    """A file's requests in input order, a page of ``chunk`` at a time (pages bound how long
    one read lasts); rows are stepped one at a time, never a whole page in memory (a page of
    big requests would be hundreds of megabytes). ``line`` is the line number's key."""
    try:
        last = -1
        while True:
            count = 0
            for r in db.execute(sql, (*head, file_id, last, chunk)):
                count += 1
                last = r[line]
                yield r
            if count < chunk:
                return
    finally:
        db.close()


def iter_file_rows(
    path: Path, file_id: int, chunk: int = 2000, *, as_text: Iterable[str] = ()
) -> Iterator[dict[str, Any]]:
    """A file's requests in input order (each with its ``answer``), JSON columns decoded
    except those named in ``as_text``. It opens its own read-only connection (WAL lets it
    read while the daemon writes), for use in a worker thread."""
    as_text = frozenset(as_text)
    db = _read_only(path)
    db.row_factory = sqlite3.Row
    for r in _file_pages(db, q.SELECT_FILE_REQUESTS_PAGE, (), file_id, chunk, "line"):
        yield _decode_request(r, as_text)


# The columns of iter_result_rows' tuples, in order.
RESULT_COLUMNS = (
    "custom_id", "line", "model", "provider", "status", "result", "answer", "error", "attempts",
    "batch_ids", "adaptations", "metadata", "body",
)  # fmt: skip


def iter_result_rows(
    path: Path, file_id: int, body_of: str, chunk: int = 2000
) -> Iterator[tuple[Any, ...]]:
    """What the outbox writer needs of a file's requests, in input order, as tuples of
    ``RESULT_COLUMNS``, every JSON column as its stored text; ``body`` only for the requests
    of provider ``body_of`` (None for the others). Its own read-only connection, as
    :func:`iter_file_rows`."""
    db = _read_only(path)
    yield from _file_pages(db, q.SELECT_FILE_RESULTS_PAGE, (body_of,), file_id, chunk, 1)


class StoredItem(BatchItem):
    """A claimed request read back from the store: its ``body`` is its ``body_json`` decoded
    when first read. A spool line is written around the text, so writing an OpenAI or Gemini
    input file decodes no body (Anthropic's create call and the prompt cache do read it)."""

    def __init__(self, key: str, body_json: str) -> None:
        attrs = self.__dict__  # frozen: set as the dataclass's own __init__ would, unchecked
        attrs["key"] = key
        attrs["body_json"] = body_json

    def __getattr__(self, name: str) -> Any:  # only for what the instance does not hold yet
        if name != "body" or self.body_json is None:
            raise AttributeError(name)
        body = self.__dict__["body"] = loads(self.body_json)
        return body


class StoredItems(Sequence[BatchItem]):
    """A claimed batch's items, in claim order, read from the store as they are iterated.

    Each iteration opens its own read-only connection (WAL lets it read beside the daemon's
    writes; any thread may iterate, as the spool writer does in a worker thread) and reads the
    requests a page at a time (``PAGE_ITEMS``, or fewer big ones: ``PAGE_BYTES``): memory holds
    the ids and one page, whatever the batch's size. Each item's key is ``r<request id>``, its
    ``body_json`` the stored text and its ``body`` that text decoded when first read
    (:class:`StoredItem`).
    """

    PAGE_ITEMS = 500
    PAGE_BYTES = 4 * 1024 * 1024

    def __init__(self, path: Path, ids: Sequence[int], sizes: Sequence[int] = ()) -> None:
        self.path = path
        self.ids = ids
        self.sizes = sizes  # each request's size_bytes, when known: pages by bytes too

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return list(StoredItems(self.path, self.ids[index], self.sizes[index]))
        return next(iter(StoredItems(self.path, [self.ids[index]])))

    def _pages(self) -> Iterator[Sequence[int]]:
        start = 0
        while start < len(self.ids):
            end, weight = start, 0
            while end < len(self.ids) and end - start < self.PAGE_ITEMS:
                weight += self.sizes[end] if self.sizes else 0
                if weight > self.PAGE_BYTES and end > start:
                    break
                end += 1
            yield self.ids[start:end]
            start = end

    def __iter__(self) -> Iterator[BatchItem]:
        uri = q.READ_ONLY_URI.format(path=quote(str(Path(self.path).absolute())))
        db = sqlite3.connect(uri, uri=True, check_same_thread=False)  # closed wherever it ends
        try:
            for ids in self._pages():
                bodies = dict(db.execute(q.SELECT_BODIES, (json.dumps(list(ids)),)).fetchall())
                for rid in ids:
                    text = bodies.pop(rid, None)
                    if text is None:
                        raise StoreError(f"request {rid} of a claimed batch has no body")
                    yield StoredItem(f"r{rid}", text)
        finally:
            db.close()
