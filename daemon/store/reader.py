"""The state database read synchronously and read-only, for ``batchd status``.

A command that only reads has no use for an event loop: this is one plain ``sqlite3``
connection opened read-only at the SQLite level (``mode=ro``), so ``batchd status`` starts
without asyncio or aiosqlite. It never migrates, never switches the journal mode and never
writes, so it works beside a running daemon and for a user who may read but not write the
state folder (then, with no -wal and no -shm file to share, the file is read as it stands).
Every statement is a named constant of ``queries.py``, the same ones the daemon's
:class:`~daemon.store.db.Store` runs.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from ..states import BATCH_OPEN, FILE_OPEN
from . import queries as q
from .schema import MIGRATIONS


class StateUnreadable(RuntimeError):
    """The file is a database, but not one this batchd can read; the message says why."""


def _json_list(values: Iterable[Any]) -> str:
    return json.dumps(sorted(str(v) for v in values))


class StatusReader:
    """``with StatusReader(path) as r: r.recent()``. Opening raises ``sqlite3.Error`` (or
    ``OSError``) when the file cannot be read, :class:`StateUnreadable` when batchd never set
    it up or a newer batchd did."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def __enter__(self) -> StatusReader:
        path = quote(str(self.path.absolute()))
        try:
            try:
                self._connect(q.READ_ONLY_URI.format(path=path), q.READ_ONLY_TIMEOUT_S)
                version = self.schema_version()
            except sqlite3.OperationalError:
                if not self._wal_index_unwritable():
                    raise
                self.close()
                self._connect(q.IMMUTABLE_URI.format(path=path), q.READ_ONLY_TIMEOUT_S)
                version = self.schema_version()
            if version == 0:
                never = "holds no batchd state yet (never started on it)"
                raise StateUnreadable(f"{self.path} {never}")
            if version > len(MIGRATIONS):
                raise StateUnreadable(
                    f"database {self.path} is at schema {version}, newer than this batchd "
                    f"({len(MIGRATIONS)}); upgrade batchd"
                )
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _connect(self, uri: str, timeout: float) -> None:
        self._db = sqlite3.connect(uri, uri=True, timeout=timeout)
        self._db.row_factory = sqlite3.Row

    def _wal_index_unwritable(self) -> bool:
        """No -wal and no -shm file beside the database, and no right to create them."""
        wal, shm = (self.path.with_name(self.path.name + s) for s in ("-wal", "-shm"))
        folder_writable = os.access(self.path.parent, os.W_OK | os.X_OK)
        return not wal.exists() and not shm.exists() and not folder_writable

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        if self._db is None:
            raise sqlite3.ProgrammingError("the reader is not open")
        return self._db.execute(sql, params).fetchall()

    def schema_version(self) -> int:
        return int(self._all(q.GET_SCHEMA_VERSION)[0][0])

    def migrated(self) -> bool:
        """Whether the daemon has brought the database up to this batchd's schema (the
        reports of later tables need it)."""
        return self.schema_version() >= len(MIGRATIONS)

    # -- what every schema has --------------------------------------------------------------
    def recent(self) -> dict[str, Any]:
        """The latest 200 jobs (with their request counts by state) and batches, and the most
        common error kinds of all time."""
        files = self._all(q.REPORT_FILES)
        return {
            "files": [{**dict(r), "counts": json.loads(r["counts"] or "{}")} for r in files],
            "batches": [dict(r) for r in self._all(q.REPORT_BATCHES)],
            "errors": [dict(r) for r in self._all(q.REPORT_ERRORS)],
        }

    def waiting_by_provider(self) -> dict[str, int]:
        """How many requests of each provider are not final yet (pending or in a batch)."""
        rows = self._all(q.REPORT_WAITING)
        return {str(r["provider"]): int(r["n"]) for r in rows if r["provider"] is not None}

    # -- work in hand (the current schema) --------------------------------------------------
    def open_jobs(self) -> list[dict[str, Any]]:
        """Jobs not finished, oldest first, with their request counts by state."""
        rows = self._all(q.REPORT_OPEN_FILES, (_json_list(FILE_OPEN),))
        return [{**dict(r), "counts": json.loads(r["counts"] or "{}")} for r in rows]

    def jobs_usage(self, file_ids: Sequence[int]) -> list[dict[str, Any]]:
        """Token totals per job, provider and model of the requests answered so far."""
        if not file_ids:
            return []
        return [dict(r) for r in self._all(q.REPORT_FILE_USAGE, (json.dumps(list(file_ids)),))]

    def jobs_errors(self, file_ids: Sequence[int]) -> list[dict[str, Any]]:
        """The most common error kinds of the given jobs."""
        if not file_ids:
            return []
        return [dict(r) for r in self._all(q.REPORT_FILE_ERRORS, (json.dumps(list(file_ids)),))]

    def open_batches(self) -> list[dict[str, Any]]:
        """Batches still submitting or running, with the provider's last counts."""
        out = []
        for r in self._all(q.REPORT_OPEN_BATCHES, (_json_list(BATCH_OPEN),)):
            d = dict(r)
            d["counts"] = json.loads(d["counts"]) if d["counts"] else None
            out.append(d)
        return out

    def in_flight(self) -> list[dict[str, Any]]:
        """Per provider and model: batches, requests and request bytes at the providers."""
        return [dict(r) for r in self._all(q.REPORT_IN_FLIGHT)]

    def budgets(self) -> list[dict[str, Any]]:
        """Every known enqueued-token budget: provider, model, the limit batchd fills (its share
        of the provider's) and the estimated tokens its model has in flight."""
        return [
            {
                "provider": str(b["account"]).split("|", 1)[0],
                "model": str(b["model"]),
                "limit": int(b["limit_tokens"] * b["scale"]),
                "in_use": int(b["in_flight"]),
            }
            for b in self._all(q.REPORT_BUDGETS, (_json_list(BATCH_OPEN),))
        ]


__all__ = ["StateUnreadable", "StatusReader"]
