"""The store's methods for operations: cancelling a job, retention, the open batches.

A mixin of :class:`daemon.store.Store` (``db.py`` keeps the connection and the data path); the
statements are in ``queries.py``. Long operations on one job (its pending requests canceled,
its rows deleted) run as windows of lines, one short transaction each, so that a ``batchd``
command working beside the running daemon never holds the database for long (the daemon waits
at most a few seconds for a busy database before it gives up).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

import aiosqlite

from ..states import BATCH_ENDED, BATCH_OPEN, FileStatus, RequestStatus
from . import queries as q
from .base import StoreParts
from .schema import MIGRATIONS

# The error a canceled job's requests end with (those never sent, and those a cancelled batch
# or a retry would have sent again).
JOB_CANCELED = "job_canceled"
JOB_CANCELED_ERROR: dict[str, Any] = {
    "type": JOB_CANCELED,
    "message": "the job was canceled (batchd cancel) before this request got an answer",
    "code": None,
}
RECLAIM_CHUNK_BYTES = 8 << 20  # given back per statement (the write lock is held briefly)
LINE_WINDOW = 5000  # lines per transaction when a job's requests are canceled or deleted
# A canceled job is still worked on while it has requests to cancel or batches to stop.
CANCELING = (FileStatus.CLAIMED, FileStatus.INGESTING, FileStatus.ACTIVE)


def _statuses(statuses: Sequence[str] | frozenset[Any]) -> str:
    return json.dumps(sorted(str(s) for s in statuses))


CANCELED_ERROR_JSON = json.dumps(JOB_CANCELED_ERROR, separators=(",", ":"))


class StoreVersionError(RuntimeError):
    """The database is at another schema version than this batchd's."""


class JobsMixin(StoreParts):
    """Cancel, retention and progress-report methods of the Store."""

    if TYPE_CHECKING:  # provided by the Store (db.py)
        path: Path
        _db: aiosqlite.Connection | None

        async def close(self) -> None: ...

        async def schema_version(self) -> int: ...


    # -- a command beside the daemon -------------------------------------------------------
    async def open_beside(self, busy_timeout_s: float = 30.0) -> Self:
        """Open for writing beside a running daemon (``batchd cancel``, ``batchd gc``): no
        migration (the daemon owns the schema; a database at another version is refused), a
        long busy timeout (the daemon's transactions are short)."""
        path = quote(str(self.path.absolute()))
        self._db = await aiosqlite.connect(
            q.READ_WRITE_URI.format(path=path), uri=True, isolation_level=None,
            timeout=busy_timeout_s,
        )  # fmt: skip
        self._db.row_factory = aiosqlite.Row
        try:
            version = await self.schema_version()
            if version != len(MIGRATIONS):
                raise StoreVersionError(
                    f"database {self.path} is at schema {version}, this batchd expects "
                    f"{len(MIGRATIONS)}: run the same batchd version as the daemon"
                )
            for pragma in q.BESIDE_PRAGMAS:
                await self._db.execute(pragma)
        except BaseException:
            await self.close()
            raise
        return self

    # -- cancel ----------------------------------------------------------------------------
    async def jobs_matching(self, target: str) -> list[dict[str, Any]]:
        """The jobs ``target`` names: a job id (``12`` or ``#12``), else a file name as it
        was dropped (several jobs may have had the same name), oldest first."""
        number = target.removeprefix("#")
        if number.isdigit():
            row = await self._one(q.SELECT_JOB, (int(number),))
            if row is not None:
                return [dict(row)]
        return [dict(r) for r in await self._all(q.SELECT_JOBS_NAMED, (target,))]

    async def request_cancel(self, file_id: int, now: float | None = None) -> bool:
        """Write a job's cancel intent; False when it was already asked for, or the job is
        finished (nothing to do either way)."""
        async with self.transaction() as db:
            cur = await db.execute(
                q.REQUEST_CANCEL, (now or time.time(), file_id, FileStatus.DONE)
            )
            return cur.rowcount > 0

    async def canceling_files(self) -> list[dict[str, Any]]:
        """Canceled jobs whose results are not written yet."""
        return [dict(r) for r in await self._all(q.SELECT_CANCELING_FILES, (_statuses(CANCELING),))]

    async def cancel_pending(self, file_id: int) -> int:
        """End every pending request of a job ``canceled``, a window of lines at a time;
        returns how many. Idempotent."""
        last = int(await self._scalar(q.SELECT_MAX_LINE, (file_id,)))
        done = 0
        for low in range(0, last, LINE_WINDOW):
            async with self.transaction() as db:
                cur = await db.execute(
                    q.CANCEL_PENDING_LINES,
                    (
                        RequestStatus.CANCELED,
                        CANCELED_ERROR_JSON,
                        time.time(),
                        file_id,
                        low,
                        low + LINE_WINDOW,
                        RequestStatus.PENDING,
                    ),
                )
                done += max(cur.rowcount, 0)
            self.due_changed()
        return done

    async def batch_files(self, batch_id: int) -> set[int]:
        """The jobs that have requests in a batch (still waiting on it)."""
        return {int(r[0]) for r in await self._all(q.SELECT_BATCH_FILES, (batch_id,))}

    async def note_batch_cancel(self, batch_id: int) -> None:
        """The intent before a batch is cancelled at its provider."""
        async with self.transaction() as db:
            await db.execute(q.NOTE_BATCH_CANCEL, (time.time(), batch_id))

    async def mark_batch_cancel_sent(self, batch_id: int, error: str | None = None) -> None:
        """The provider took the cancel (or refused it for good: ``error``)."""
        async with self.transaction() as db:
            await db.execute(q.MARK_BATCH_CANCEL_SENT, (time.time(), error, batch_id))

    async def poll_soon(self, batch_id: int, interval_s: float) -> None:
        """Poll a batch at once, then every ``interval_s`` again (a cancelled batch ends soon)."""
        async with self.transaction() as db:
            await db.execute(q.POLL_SOON, (time.time(), interval_s, batch_id))

    async def mark_cancel_applied(self, file_id: int) -> bool:
        """The daemon has applied the job's cancel; False when it had already."""
        async with self.transaction() as db:
            cur = await db.execute(q.MARK_CANCEL_APPLIED, (time.time(), file_id))
            return cur.rowcount > 0

    async def request_counts(self, file_id: int) -> dict[str, int]:
        rows = await self._all(q.COUNT_FILE_REQUESTS, (file_id,))
        return {str(r["status"]): int(r["n"]) for r in rows}

    # -- retention -------------------------------------------------------------------------
    async def outputs_to_remove(self, cutoff: float, limit: int = 500) -> list[dict[str, Any]]:
        """Finished jobs (finished before ``cutoff``) whose outbox and archived files are
        still there, oldest first."""
        params = (FileStatus.DONE, cutoff, limit)
        return [dict(r) for r in await self._all(q.SELECT_OUTPUTS_TO_REMOVE, params)]

    async def mark_outputs_removed(self, file_id: int) -> None:
        async with self.transaction() as db:
            await db.execute(q.MARK_OUTPUTS_REMOVED, (time.time(), file_id))

    async def jobs_to_forget(
        self, cutoff: float, *, outputs_gone: bool, limit: int = 500
    ) -> list[dict[str, Any]]:
        """Finished jobs (finished before ``cutoff``) whose rows may go; ``outputs_gone``:
        only those whose files retention has already deleted (so none is left untracked)."""
        sql = q.SELECT_JOBS_TO_FORGET.format(kept=q.OUTPUTS_GONE if outputs_gone else "")
        return [dict(r) for r in await self._all(sql, (FileStatus.DONE, cutoff, limit))]

    async def forget_job(self, file_id: int) -> int:
        """Delete a finished job's requests (a window of lines at a time), then its row;
        returns how many requests went."""
        last = int(await self._scalar(q.SELECT_MAX_LINE, (file_id,)))
        gone = 0
        for low in range(0, last, LINE_WINDOW):
            async with self.transaction() as db:
                window = (file_id, low, low + LINE_WINDOW)
                await db.execute(q.DELETE_ANSWER_LINES, window)
                cur = await db.execute(q.DELETE_REQUEST_LINES, window)
                gone += max(cur.rowcount, 0)
        async with self.transaction() as db:
            await db.execute(q.DELETE_FILE_ROW, (file_id,))
        return gone

    async def forget_old_batches(self, cutoff: float) -> int:
        """Delete ended batches (ended before ``cutoff``) that no open job may still list."""
        params = (_statuses(BATCH_ENDED), cutoff, FileStatus.DONE, cutoff)
        async with self.transaction() as db:
            cur = await db.execute(q.DELETE_OLD_BATCHES, params)
            return max(cur.rowcount, 0)

    async def free_space(self) -> tuple[int, int]:
        """(auto_vacuum mode: 0 none, 1 full, 2 incremental; bytes on the free list)."""
        mode = int(await self._scalar(q.AUTO_VACUUM_MODE))
        pages = int(await self._scalar(q.FREELIST_COUNT))
        return mode, pages * int(await self._scalar(q.PAGE_SIZE))

    async def reclaim(self, max_pages: int = 2000) -> int:
        """Give up to ``max_pages`` free pages back to the file system (a database created
        with incremental auto-vacuum; elsewhere SQLite reuses free pages, the file never
        shrinks until a full VACUUM); returns the bytes given back."""
        mode, before = await self.free_space()
        if mode != 2 or before == 0:
            return 0
        left = int(max_pages)
        chunk_pages = max(1, RECLAIM_CHUNK_BYTES // int(await self._scalar(q.PAGE_SIZE)))
        while left > 0:  # a chunk at a time: the write lock is held only briefly
            chunk = min(left, chunk_pages)
            # Run to completion (one step of this PRAGMA frees only one page).
            await self.db.executescript(q.INCREMENTAL_VACUUM.format(pages=chunk))
            left -= chunk
            if int(await self._scalar(q.FREELIST_COUNT)) == 0:
                break
        return before - (await self.free_space())[1]

    async def page_size(self) -> int:
        """The database's page size in bytes (new ones: ``queries.NEW_DB_PAGE_SIZE``)."""
        return int(await self._scalar(q.PAGE_SIZE))

    async def has_small_pages(self) -> bool:
        """Whether the database was made with smaller pages than new ones get (a full
        :meth:`vacuum` gives it theirs: fewer page writes per request)."""
        return await self.page_size() < q.NEW_DB_PAGE_SIZE

    async def vacuum(self) -> None:
        """Rewrite the whole file (only with no daemon running): it shrinks to its data,
        incremental auto-vacuum is switched on for the next time, and a database made with
        smaller pages than new ones get (before 16 KiB pages) is given their size: a WAL
        database cannot change it, so the rewrite is done out of WAL mode, then back in it."""
        resize = await self.has_small_pages()
        if resize:
            await self.db.execute(q.JOURNAL_ROLLBACK)
        try:
            for pragma in q.NEW_DB_PRAGMAS:
                await self.db.execute(pragma)
            await self.db.execute(q.FULL_VACUUM)
        finally:
            if resize:
                await self.db.execute(q.JOURNAL_WAL)

    # -- open batches (retention) ------------------------------------------------------
    async def open_batches(self) -> list[dict[str, Any]]:
        """Batches still submitting or running, with the provider's last counts."""
        out = []
        for r in await self._all(q.REPORT_OPEN_BATCHES, (_statuses(BATCH_OPEN),)):
            d = dict(r)
            d["counts"] = json.loads(d["counts"]) if d["counts"] else None
            out.append(d)
        return out

