"""A state database as an earlier schema version left it, for the tests of later migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from daemon.store.schema import MIGRATIONS


def database_at(path: Path, version: int) -> sqlite3.Connection:
    """A database at schema ``version`` holding one active file (id 1); still open, so the test
    adds the rows of that version (commit and close it before the Store opens it)."""
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:version]:
        db.executescript(script)
    db.execute(f"PRAGMA user_version = {version}")
    db.execute(
        "INSERT INTO files (id, name, inbox_path, work_path, size, status, created_at)"
        " VALUES (1, 'a.jsonl', '/in', '/w', 1, 'active', 0)"
    )
    return db
