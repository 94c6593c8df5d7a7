"""Store set-ups several test files share: a database as an earlier schema version left it (for
the tests of later migrations), a claimed batch marked submitted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from daemon.store import Store, StoredItems
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


async def submitted_batch(
    store: Store,
    max_items: int,
    provider_batch_id: str,
    input_file_id: str,
    *,
    tag: str = "t1",
    account: str = "acct",
    max_bytes: int = 10**6,
) -> tuple[int, StoredItems]:
    """Claim a batch of up to ``max_items`` due gpt-4o-mini requests and mark it submitted as
    ``provider_batch_id``: (its batch id, its items)."""
    claimed = await store.claim_batch_items(
        "openai", "gpt-4o-mini", tag, account, max_items=max_items, max_bytes=max_bytes, now=1e12
    )
    assert claimed is not None
    batch_id, items = claimed
    await store.mark_submitted(
        batch_id, provider_batch_id, input_file_id, poll_interval_s=1, now=1e12
    )
    return batch_id, items
