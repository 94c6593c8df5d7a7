"""The store's connection and its intent-named methods for files and ingest; the statements are
in ``queries.py``, a batch's life in ``batches.py``, readers for other threads in ``rows.py``.

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
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiosqlite

from ..states import FileStatus, RequestStatus
from . import queries as q
from .base import StoreError, dumps, row_id, state_failure, statuses_param
from .batches import BatchesMixin
from .jobs import CANCELED_ERROR_JSON, JobsMixin
from .planning import PlanningStore
from .rows import StoredItems, iter_file_rows, iter_result_rows
from .schema import MIGRATIONS

# Re-exported: the store's public names have lived here since it began.
__all__ = [
    "RequestRow",
    "Store",
    "StoreError",
    "StoredItems",
    "iter_file_rows",
    "iter_result_rows",
    "request_row",
    "state_failure",
]


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
        r.get("body_json") or dumps(r.get("body")),
        r.get("size_bytes", 0),
        dumps(r.get("metadata")),
        dumps(r.get("adaptations") or []),
        str(r["status"]),
        dumps(r.get("error")),
    )


def _canceled(params: tuple[Any, ...]) -> tuple[Any, ...]:
    """INSERT_REQUEST's values of a pending line, as a line of a canceled job."""
    return (*params[:9], str(RequestStatus.CANCELED), CANCELED_ERROR_JSON, params[11])



RETRIED = "retried"  # a job's request that a batch sent back and a later batch ran


class Store(BatchesMixin, PlanningStore, JobsMixin):
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
            return row_id(cur)

    async def set_file_status(self, file_id: int, status: FileStatus, **fields: Any) -> None:
        bad = set(fields) - q.FILE_FIELDS
        if bad:
            raise StoreError(f"unknown file field(s) {bad}")
        sql = q.UPDATE_FILE.format(fields="".join(f", {name} = ?" for name in fields))
        async with self.transaction() as db:
            await db.execute(sql, (status, *fields.values(), file_id))

    async def files_in(self, *statuses: FileStatus) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._all(q.SELECT_FILES_IN, (statuses_param(statuses),))]

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
        each, by final status (``retried``: sent again in a later batch). A request counts
        under the last of its batches that has a provider batch id (a batch whose create
        failed never had one, and is not listed)."""
        groups = [
            (json.loads(r[0]), str(r[1]), int(r[2]))
            for r in await self._all(q.SELECT_FILE_BATCH_COUNTS, (file_id,))
        ]
        listed = sorted({i for ids, _, _ in groups for i in ids})
        if not listed:
            return []
        rows = await self._all(q.SELECT_BATCH_PROVIDER_IDS, (json.dumps(listed),))
        names = {int(r[0]): r[1] for r in rows if r[1] is not None}
        counts: dict[str, dict[str, int]] = {}
        for ids, status, n in groups:
            pbids = [str(names[i]) for i in ids if i in names]
            for pbid in pbids:
                kind = status if pbid == pbids[-1] else RETRIED
                mine = counts.setdefault(pbid, {})
                mine[kind] = mine.get(kind, 0) + n
        if not counts:
            return []
        rows = await self._all(q.SELECT_BATCHES_NAMED, (json.dumps(sorted(counts)),))
        return [{**dict(r), "counts": dict(sorted(counts[str(r["id"])].items()))} for r in rows]

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

    # -- status ----------------------------------------------------------------------------
    async def waiting_by_provider(self) -> dict[str, int]:
        """How many requests of each provider are not final yet (pending or in a batch)."""
        rows = await self._all(q.REPORT_WAITING)
        return {str(r["provider"]): int(r["n"]) for r in rows if r["provider"] is not None}

