"""All of the daemon's SQL, behind intent-named methods. Nothing else in batchd writes SQL.

State lives in rows, so a restart remembers everything: which file is at which stage, which
request is in which batch, how many attempts it has had and when it may be tried again, and
which provider batch a local batch became. One aiosqlite connection (one thread); multi-
statement writes are serialised with ``BEGIN IMMEDIATE`` under an asyncio lock. WAL mode, so
``batchd status`` can read while the daemon writes.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

FINAL = ("invalid", "succeeded", "failed", "expired", "canceled")

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema
    """
    CREATE TABLE files (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,             -- the name it was dropped under
        inbox_path TEXT NOT NULL,
        work_path TEXT NOT NULL,        -- where it is kept while its requests run
        size INTEGER NOT NULL,
        status TEXT NOT NULL,           -- claimed, ingesting, active, writing, done
        lines INTEGER NOT NULL DEFAULT 0,
        invalid INTEGER NOT NULL DEFAULT 0,
        error TEXT,                     -- why the file could not be read at all
        results_path TEXT,
        summary_path TEXT,
        archived_path TEXT,
        created_at REAL NOT NULL,
        ingested_at REAL,
        finished_at REAL
    );
    CREATE TABLE batches (
        id INTEGER PRIMARY KEY,
        tag TEXT NOT NULL UNIQUE,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        account TEXT NOT NULL,          -- provider, base URL and a digest of the key
        status TEXT NOT NULL,           -- submitting, submitted, collected, aborted
        provider_batch_id TEXT,
        input_file_id TEXT,
        provider_status TEXT,
        n_items INTEGER NOT NULL,
        counts TEXT,
        error TEXT,
        created_at REAL NOT NULL,       -- when the intent row was written
        submitted_at REAL,
        ended_at REAL,
        next_poll_at REAL,
        poll_interval_s REAL,
        reconcile_attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        file_id INTEGER NOT NULL REFERENCES files (id),
        line INTEGER NOT NULL,
        custom_id TEXT NOT NULL,
        model TEXT,
        provider TEXT,
        body TEXT,                      -- provider-native request body (JSON)
        size_bytes INTEGER NOT NULL DEFAULT 0,
        metadata TEXT,                  -- echoed back untouched (JSON)
        adaptations TEXT,               -- JSON list of sentences
        -- status: invalid, pending, batched, succeeded, failed, expired, canceled
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        batch_id INTEGER REFERENCES batches (id),
        batch_ids TEXT NOT NULL DEFAULT '[]',
        result TEXT,                    -- JSON: text, finish_reason, usage, response
        error TEXT,                     -- JSON: type, message, code
        updated_at REAL NOT NULL
    );
    CREATE INDEX requests_due ON requests (status, provider, model, next_attempt_at);
    CREATE INDEX requests_file ON requests (file_id, line);
    CREATE INDEX requests_batch ON requests (batch_id);
    CREATE INDEX batches_status ON batches (status, provider);
    """,
    # 2: ingest bookkeeping: passes begun (a pass that a crash cut short stays counted, so a
    # file that keeps killing the process is quarantined), and the bytes of the work copy read
    # so far (what a writer appended after that is found and ingested, or reported; -1: not
    # read to its end by a pass)
    """
    ALTER TABLE files ADD COLUMN ingest_starts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE files ADD COLUMN read_bytes INTEGER NOT NULL DEFAULT -1
    """,
)

# -- ingest bookkeeping (files) -----------------------------------------------------------------
COUNT_INGEST_START = (
    "UPDATE files SET ingest_starts = ingest_starts + 1 WHERE id = ? RETURNING ingest_starts"
)
UNCOUNT_INGEST_START = (  # a pass that ended cleanly (done, or stopped by a shutdown)
    "UPDATE files SET ingest_starts = MAX(ingest_starts - 1, 0) WHERE id = ?"
)
SET_READ_BYTES = "UPDATE files SET read_bytes = ? WHERE id = ?"
SELECT_LAST_STORED_LINE = "SELECT COALESCE(MAX(line), 0) FROM requests WHERE file_id = ?"
SELECT_WORK_PATHS_NAMED = (  # work paths ending in one of the given names (one JSON list)
    "SELECT f.work_path FROM files f, json_each(?) j"
    " WHERE substr(f.work_path, -length(j.value)) = j.value"
)


class StoreError(RuntimeError):
    pass


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------
    async def open(self) -> Store:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        self._db.row_factory = aiosqlite.Row
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA foreign_keys=ON")
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise
        return self

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
        (version,) = await (await self.db.execute("PRAGMA user_version")).fetchone()
        if version > len(MIGRATIONS):
            raise StoreError(
                f"database {self.path} is at schema {version}, newer than this batchd "
                f"({len(MIGRATIONS)}); upgrade batchd"
            )
        for number in range(version + 1, len(MIGRATIONS) + 1):
            async with self.transaction():
                await self._apply(number)

    async def _apply(self, number: int) -> None:
        for statement in MIGRATIONS[number - 1].split(";"):
            if statement.strip():
                await self.db.execute(statement)
        await self.db.execute(f"PRAGMA user_version={number}")

    async def schema_version(self) -> int:
        (version,) = await (await self.db.execute("PRAGMA user_version")).fetchone()
        return int(version)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            else:
                await self.db.execute("COMMIT")

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self.db.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self.db.execute(sql, params) as cur:
            return await cur.fetchone()

    # -- files -----------------------------------------------------------------------------
    async def claim_file(self, name: str, inbox_path: str, work_path: str, size: int) -> int:
        """The intent row for a file about to be moved out of the inbox."""
        async with self.transaction() as db:
            cur = await db.execute(
                "INSERT INTO files (name, inbox_path, work_path, size, status, created_at) "
                "VALUES (?, ?, ?, ?, 'claimed', ?)",
                (name, inbox_path, work_path, size, time.time()),
            )
            return int(cur.lastrowid)

    async def set_file_status(self, file_id: int, status: str, **fields: Any) -> None:
        allowed = {
            "error",
            "lines",
            "invalid",
            "results_path",
            "summary_path",
            "archived_path",
            "ingested_at",
            "finished_at",
            "work_path",
        }
        bad = set(fields) - allowed
        if bad:
            raise StoreError(f"unknown file field(s) {bad}")
        sets = ", ".join(["status = ?", *(f"{k} = ?" for k in fields)])
        async with self.transaction() as db:
            await db.execute(
                f"UPDATE files SET {sets} WHERE id = ?", (status, *fields.values(), file_id)
            )

    async def files_in(self, *statuses: str) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(statuses))
        rows = await self._all(
            f"SELECT * FROM files WHERE status IN ({marks}) ORDER BY id", statuses
        )
        return [dict(r) for r in rows]

    async def file(self, file_id: int) -> dict[str, Any] | None:
        row = await self._one("SELECT * FROM files WHERE id = ?", (file_id,))
        return None if row is None else dict(row)

    async def forget_requests(self, file_id: int) -> None:
        """Drop a half-ingested file's requests (ingest starts again from its first line)."""
        async with self.transaction() as db:
            await db.execute("DELETE FROM requests WHERE file_id = ?", (file_id,))

    async def add_requests(self, file_id: int, rows: Iterable[dict[str, Any]]) -> None:
        now = time.time()
        params = [
            (
                file_id,
                r["line"],
                r["custom_id"],
                r.get("model"),
                r.get("provider"),
                _dumps(r.get("body")),
                r.get("size_bytes", 0),
                _dumps(r.get("metadata")),
                _dumps(r.get("adaptations") or []),
                r["status"],
                _dumps(r.get("error")),
                now,
            )
            for r in rows
        ]
        async with self.transaction() as db:
            await db.executemany(
                "INSERT INTO requests (file_id, line, custom_id, model, provider, body, size_bytes,"
                " metadata, adaptations, status, error, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                params,
            )

    async def finished_files(self) -> list[dict[str, Any]]:
        """Active files none of whose requests is still open."""
        rows = await self._all(
            "SELECT f.* FROM files f WHERE f.status = 'active' AND NOT EXISTS ("
            " SELECT 1 FROM requests r WHERE r.file_id = f.id"
            " AND r.status IN ('pending', 'batched'))"
            " ORDER BY f.id"
        )
        return [dict(r) for r in rows]

    async def file_batches(self, file_id: int) -> list[dict[str, Any]]:
        rows = await self._all(
            "SELECT b.provider, b.model, b.provider_batch_id AS id,"
            " COALESCE(b.provider_status, b.status) AS status, b.status AS local_status,"
            " b.counts FROM batches b WHERE b.provider_batch_id IN ("
            " SELECT DISTINCT j.value FROM requests r, json_each(r.batch_ids) j"
            " WHERE r.file_id = ?) ORDER BY b.id",
            (file_id,),
        )
        out = []
        for r in rows:
            d = dict(r)
            d["counts"] = json.loads(d["counts"]) if d["counts"] else None
            out.append(d)
        return out

    async def note_ingest_start(self, file_id: int) -> int:
        """Count one more ingest pass of the file, before it runs; returns the count."""
        async with self.transaction() as db:
            async with db.execute(COUNT_INGEST_START, (file_id,)) as cur:
                row = await cur.fetchone()
        return 0 if row is None else int(row[0])

    async def note_ingest_ended(self, file_id: int, read_bytes: int | None = None) -> None:
        """A pass ended without a crash; ``read_bytes``: how far the work copy was read."""
        async with self.transaction() as db:
            await db.execute(UNCOUNT_INGEST_START, (file_id,))
            if read_bytes is not None:
                await db.execute(SET_READ_BYTES, (read_bytes, file_id))

    async def last_stored_line(self, file_id: int) -> int:
        """The last line of the file already stored (0: none): a resumed ingest goes on after
        it instead of storing (and maybe sending) the earlier lines a second time."""
        row = await self._one(SELECT_LAST_STORED_LINE, (file_id,))
        return 0 if row is None else int(row[0])

    async def known_work_names(self, names: Iterable[str]) -> set[str]:
        """Which of ``names`` (of files in the work folder) some file row holds as its work
        copy. Names, not whole paths: the same folder may be spelled another way next run."""
        wanted = set(names)
        rows = await self._all(SELECT_WORK_PATHS_NAMED, (json.dumps(sorted(wanted)),))
        return {Path(r[0]).name for r in rows} & wanted

    # -- planning and submission -----------------------------------------------------------
    async def due_models(self, now: float) -> list[tuple[str, str, int, float]]:
        """(provider, model, due count, oldest ready time) of pending requests due by ``now``."""
        rows = await self._all(
            "SELECT provider, model, COUNT(*) AS n, MIN(updated_at) AS oldest FROM requests"
            " WHERE status = 'pending' AND next_attempt_at <= ? GROUP BY provider, model",
            (now,),
        )
        return [(r["provider"], r["model"], r["n"], r["oldest"]) for r in rows]

    async def next_due_at(self) -> float | None:
        row = await self._one("SELECT MIN(next_attempt_at) FROM requests WHERE status = 'pending'")
        return None if row is None or row[0] is None else float(row[0])

    async def claim_batch(
        self,
        provider: str,
        model: str,
        tag: str,
        account: str,
        *,
        max_items: int,
        max_bytes: int,
        now: float,
    ) -> tuple[int, list[tuple[int, dict[str, Any]]]] | None:
        """Write the intent row of a batch and move its requests into it, atomically."""
        async with self.transaction() as db:
            async with db.execute(
                "SELECT id, body, size_bytes FROM requests WHERE status = 'pending'"
                " AND provider = ? AND model = ? AND next_attempt_at <= ?"
                " ORDER BY next_attempt_at, id LIMIT ?",
                (provider, model, now, max_items),
            ) as cur:
                rows = list(await cur.fetchall())
            chosen: list[tuple[int, dict[str, Any]]] = []
            total = 0
            for r in rows:
                if chosen and total + r["size_bytes"] + 256 > max_bytes:
                    break
                total += r["size_bytes"] + 256
                chosen.append((r["id"], json.loads(r["body"])))
            if not chosen:
                return None
            cur = await db.execute(
                "INSERT INTO batches (tag, provider, model, account, status, n_items, created_at)"
                " VALUES (?, ?, ?, ?, 'submitting', ?, ?)",
                (tag, provider, model, account, len(chosen), now),
            )
            batch_id = int(cur.lastrowid)
            await db.executemany(
                "UPDATE requests SET status = 'batched', batch_id = ?, updated_at = ? WHERE id = ?",
                [(batch_id, now, rid) for rid, _ in chosen],
            )
            return batch_id, chosen

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
                "UPDATE batches SET status = 'submitted', provider_batch_id = ?, input_file_id = ?,"
                " submitted_at = ?, next_poll_at = ?, poll_interval_s = ? WHERE id = ?",
                (
                    provider_batch_id,
                    input_file_id,
                    now,
                    now + poll_interval_s,
                    poll_interval_s,
                    batch_id,
                ),
            )
            await db.execute(
                "UPDATE requests SET batch_ids = json_insert(batch_ids, '$[#]', ?)"
                " WHERE batch_id = ? AND status = 'batched'",
                (provider_batch_id, batch_id),
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
        async with self.transaction() as db:
            await db.execute(
                "UPDATE batches SET status = 'aborted', error = ?, ended_at = ? WHERE id = ?",
                (error, now, batch_id),
            )
            inc = 1 if count_attempt else 0
            if final_error is not None and max_attempts is not None:
                await db.execute(
                    "UPDATE requests SET status = 'failed', error = ?, attempts = attempts + ?,"
                    " batch_id = NULL, updated_at = ? WHERE batch_id = ? AND status = 'batched'"
                    " AND attempts + ? >= ?",
                    (_dumps(final_error), inc, now, batch_id, inc, max_attempts),
                )
            await db.execute(
                "UPDATE requests SET status = 'pending', attempts = attempts + ?,"
                " next_attempt_at = ?, batch_id = NULL, updated_at = ?"
                " WHERE batch_id = ? AND status = 'batched'",
                (inc, next_attempt_at, now, batch_id),
            )

    async def fail_batch_requests(self, batch_id: int, error: dict[str, Any]) -> None:
        """A create call refused for good: every request of the batch ends ``failed``."""
        now = time.time()
        async with self.transaction() as db:
            await db.execute(
                "UPDATE batches SET status = 'aborted', error = ?, ended_at = ? WHERE id = ?",
                (error.get("message"), now, batch_id),
            )
            await db.execute(
                "UPDATE requests SET status = 'failed', error = ?, attempts = attempts + 1,"
                " batch_id = NULL, updated_at = ? WHERE batch_id = ? AND status = 'batched'",
                (_dumps(error), now, batch_id),
            )

    async def batches_in(self, *statuses: str, provider: str | None = None) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(statuses))
        sql = f"SELECT * FROM batches WHERE status IN ({marks})"
        params: list[Any] = list(statuses)
        if provider is not None:
            sql += " AND provider = ?"
            params.append(provider)
        return [dict(r) for r in await self._all(sql + " ORDER BY id", params)]

    async def known_provider_ids(self, provider: str) -> set[str]:
        rows = await self._all(
            "SELECT provider_batch_id FROM batches WHERE provider = ? AND provider_batch_id"
            " IS NOT NULL",
            (provider,),
        )
        return {r[0] for r in rows}

    async def note_reconcile_attempt(self, batch_id: int) -> int:
        async with self.transaction() as db:
            await db.execute(
                "UPDATE batches SET reconcile_attempts = reconcile_attempts + 1 WHERE id = ?",
                (batch_id,),
            )
        row = await self._one("SELECT reconcile_attempts FROM batches WHERE id = ?", (batch_id,))
        return int(row[0])

    async def creates_since(self, provider: str, since: float) -> int:
        row = await self._one(
            "SELECT COUNT(*) FROM batches WHERE provider = ? AND created_at >= ?"
            " AND status != 'aborted'",
            (provider, since),
        )
        return int(row[0])

    # -- polling and results ---------------------------------------------------------------
    async def due_polls(self, provider: str, now: float) -> list[dict[str, Any]]:
        rows = await self._all(
            "SELECT * FROM batches WHERE status = 'submitted' AND provider = ?"
            " AND next_poll_at <= ? ORDER BY next_poll_at",
            (provider, now),
        )
        return [dict(r) for r in rows]

    async def next_poll_at(self, provider: str) -> float | None:
        row = await self._one(
            "SELECT MIN(next_poll_at) FROM batches WHERE status = 'submitted' AND provider = ?",
            (provider,),
        )
        return None if row is None or row[0] is None else float(row[0])

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
                "UPDATE batches SET provider_status = ?, counts = ?, next_poll_at = ?,"
                " poll_interval_s = ? WHERE id = ?",
                (provider_status, _dumps(counts), next_poll_at, poll_interval_s, batch_id),
            )

    async def record_results(self, batch_id: int, updates: Sequence[dict[str, Any]]) -> int:
        """Store a chunk of item results. Only requests still in this batch are touched, so a
        collection interrupted by a crash can simply be run again."""
        now = time.time()
        params = [
            (
                u["status"],
                u["attempts_inc"],
                u.get("next_attempt_at", 0.0),
                _dumps(u.get("result")),
                _dumps(u.get("error")),
                now,
                u["request_id"],
                batch_id,
            )
            for u in updates
        ]
        async with self.transaction() as db:
            await db.executemany(
                "UPDATE requests SET status = ?, attempts = attempts + ?, next_attempt_at = ?,"
                " result = COALESCE(?, result), error = ?, updated_at = ?,"
                " batch_id = CASE WHEN status = 'batched' THEN NULL ELSE batch_id END"
                " WHERE id = ? AND batch_id = ? AND status = 'batched'",
                params,
            )
        return len(params)

    async def batch_requests(self, batch_id: int) -> list[tuple[int, int]]:
        """(request id, attempts) of the requests still waiting on this batch."""
        rows = await self._all(
            "SELECT id, attempts FROM requests WHERE batch_id = ? AND status = 'batched'",
            (batch_id,),
        )
        return [(r[0], r[1]) for r in rows]

    async def mark_collected(
        self, batch_id: int, provider_status: str, counts: dict[str, Any] | None
    ) -> None:
        async with self.transaction() as db:
            await db.execute(
                "UPDATE batches SET status = 'collected', provider_status = ?, counts = ?,"
                " ended_at = ? WHERE id = ?",
                (provider_status, _dumps(counts), time.time(), batch_id),
            )

    # -- status ----------------------------------------------------------------------------
    async def status_report(self) -> dict[str, Any]:
        files = await self._all(
            "SELECT f.id, f.name, f.status, f.lines, f.invalid, f.error, f.created_at,"
            " (SELECT json_group_object(status, n) FROM (SELECT status, COUNT(*) AS n"
            "  FROM requests WHERE file_id = f.id GROUP BY status)) AS counts"
            " FROM files f ORDER BY f.id DESC LIMIT 200"
        )
        batches = await self._all(
            "SELECT id, provider, model, provider_batch_id, status, provider_status, n_items,"
            " created_at, ended_at FROM batches ORDER BY id DESC LIMIT 200"
        )
        errors = await self._all(
            "SELECT json_extract(error, '$.type') AS type, COUNT(*) AS n FROM requests"
            " WHERE error IS NOT NULL GROUP BY type ORDER BY n DESC LIMIT 10"
        )
        return {
            "files": [{**dict(r), "counts": json.loads(r["counts"] or "{}")} for r in files],
            "batches": [dict(r) for r in batches],
            "errors": [dict(r) for r in errors],
        }


def _decode_request(row: aiosqlite.Row | sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    for key in ("body", "metadata", "adaptations", "batch_ids", "result", "error"):
        if d.get(key) is not None:
            d[key] = json.loads(d[key])
    return d


def iter_file_rows(path: Path, file_id: int, chunk: int = 2000) -> Iterator[dict[str, Any]]:
    """A file's requests in input order, for a writer running in a worker thread.

    It opens its own read-only connection (WAL lets it read while the daemon writes), so the
    outbox writer can stream rows without holding them all or blocking the event loop.
    """
    # A writer that fails mid-file (outbox full) drops the generator unfinished; it is then
    # closed wherever it is collected, so the connection must allow another thread's close()
    # (it is only ever used by one thread at a time). Otherwise each failed write leaked one.
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    db.row_factory = sqlite3.Row
    try:
        last = -1
        while True:
            # Pages bound how long one read lasts; rows are stepped one at a time (never a
            # whole page in memory: a page of big requests would be hundreds of megabytes).
            cursor = db.execute(
                "SELECT * FROM requests WHERE file_id = ? AND line > ? ORDER BY line LIMIT ?",
                (file_id, last, chunk),
            )
            count = 0
            for r in cursor:
                count += 1
                last = r["line"]
                yield _decode_request(r)
            if count < chunk:
                return
    finally:
        db.close()
