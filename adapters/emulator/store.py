"""Durable state of the emulator: JSON objects in SQLite, file contents as blobs on disk.

Objects (batches, files, upload sessions) are small JSON documents keyed by (kind, id) and
listed in creation order. File contents never live in memory: they are blobs under
``<root>/blobs``, written and read as streams. With ``--state-dir`` the root is that folder and
everything survives a restart; without it the root is a temporary folder removed on close.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    data TEXT NOT NULL,
    UNIQUE (kind, id)
);
CREATE TABLE IF NOT EXISTS items (
    provider TEXT NOT NULL,
    digest TEXT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (provider, digest)
);
CREATE TABLE IF NOT EXISTS counters (
    provider TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (provider, name)
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class EmulatorStore:
    def __init__(self, state_dir: str | os.PathLike[str] | None = None) -> None:
        self._temporary = state_dir is None
        self.root = (
            Path(tempfile.mkdtemp(prefix="batchd-emulator-"))
            if state_dir is None
            else Path(state_dir)
        )
        self.root.mkdir(parents=True, exist_ok=True)
        self.blob_dir = self.root / "blobs"
        self.blob_dir.mkdir(exist_ok=True)
        self._db = sqlite3.connect(self.root / "emulator.sqlite3", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    # -- objects ---------------------------------------------------------------------------
    def put(self, kind: str, obj_id: str, data: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO objects (kind, id, data) VALUES (?, ?, ?) "
            "ON CONFLICT (kind, id) DO UPDATE SET data = excluded.data",
            (kind, obj_id, json.dumps(data, separators=(",", ":"))),
        )

    def get(self, kind: str, obj_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT data FROM objects WHERE kind = ? AND id = ?", (kind, obj_id)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def delete(self, kind: str, obj_id: str) -> bool:
        cur = self._db.execute("DELETE FROM objects WHERE kind = ? AND id = ?", (kind, obj_id))
        return cur.rowcount > 0

    def list(
        self, kind: str, *, newest_first: bool = True, after: str | None = None, limit: int = 100
    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of objects of ``kind`` strictly after the object ``after`` in list order.

        Returns the page and whether more objects follow it.
        """
        op, order = ("<", "DESC") if newest_first else (">", "ASC")
        params: list[Any] = [kind]
        where = "kind = ?"
        if after is not None:
            row = self._db.execute(
                "SELECT seq FROM objects WHERE kind = ? AND id = ?", (kind, after)
            ).fetchone()
            if row is None:
                return [], False
            where += f" AND seq {op} ?"
            params.append(row[0])
        rows = self._db.execute(
            f"SELECT data FROM objects WHERE {where} ORDER BY seq {order} LIMIT ?",
            [*params, limit + 1],
        ).fetchall()
        return [json.loads(r[0]) for r in rows[:limit]], len(rows) > limit

    def all(self, kind: str) -> Iterator[dict[str, Any]]:
        for (data,) in self._db.execute(
            "SELECT data FROM objects WHERE kind = ? ORDER BY seq", (kind,)
        ).fetchall():
            yield json.loads(data)

    # -- item ledger (for the journal's duplicate counter) ----------------------------------
    def item_statuses(self, provider: str, digests: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for start in range(0, len(digests), 500):
            chunk = digests[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for digest, status in self._db.execute(
                f"SELECT digest, status FROM items WHERE provider = ? AND digest IN ({marks})",
                [provider, *chunk],
            ):
                found[digest] = status
        return found

    def set_item_statuses(self, provider: str, pairs: Iterable[tuple[str, str]]) -> None:
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT INTO items (provider, digest, status) VALUES (?, ?, ?) "
            "ON CONFLICT (provider, digest) DO UPDATE SET status = excluded.status",
            [(provider, d, s) for d, s in pairs],
        )
        self._db.execute("COMMIT")

    def add_counter(self, provider: str, name: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO counters (provider, name, value) VALUES (?, ?, ?) "
            "ON CONFLICT (provider, name) DO UPDATE SET value = value + excluded.value",
            (provider, name, value),
        )

    def counters(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for provider, name, value in self._db.execute("SELECT provider, name, value FROM counters"):
            out.setdefault(provider, {})[name] = value
        return out

    def next_number(self, name: str) -> int:
        """A counter that survives restarts (used for readable, unique ids)."""
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (name,)).fetchone()
        value = int(row[0]) + 1 if row else 1
        self._db.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (name, str(value)),
        )
        return value

    def reset(self) -> None:
        self._db.executescript(
            "DELETE FROM objects; DELETE FROM items; DELETE FROM counters; DELETE FROM kv;"
        )
        shutil.rmtree(self.blob_dir, ignore_errors=True)
        self.blob_dir.mkdir(exist_ok=True)

    # -- blobs -----------------------------------------------------------------------------
    def new_blob(self) -> tuple[str, Path]:
        blob_id = secrets.token_hex(12)
        return blob_id, self.blob_dir / blob_id

    def blob_path(self, blob_id: str) -> Path:
        return self.blob_dir / blob_id

    def delete_blob(self, blob_id: str | None) -> None:
        if blob_id:
            (self.blob_dir / blob_id).unlink(missing_ok=True)

    def close(self) -> None:
        self._db.close()
        if self._temporary:
            shutil.rmtree(self.root, ignore_errors=True)
