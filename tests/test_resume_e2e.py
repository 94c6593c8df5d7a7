"""A kill in the middle of a big file's ingest, end to end: nothing is sent twice.

The scheduler batches a file's requests as soon as they are stored, so when the daemon dies
half-way through an ingest, some of the file's requests may already be at the provider. The
resumed ingest goes on after the last stored line; it used to forget the stored lines and store
(and send) them again.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

from adapters.emulator import Emulator

from .daemon_harness import (
    finish,
    journal,
    read_results,
    start_daemon,
    unified,
    wait_for,
    write_jsonl,
)

MODEL = "gpt-4o-mini"
LINGER = "batch_linger_s = 0.3\n"


def _sent_while_ingesting(root: Path) -> bool:
    """Some of big.jsonl's requests are in batches while its ingest is still running."""
    path = root / "state" / "batchd.sqlite3"
    if not path.exists():
        return False
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute(
            "SELECT COUNT(*) FROM requests r JOIN files f ON f.id = r.file_id"
            " WHERE f.name = 'big.jsonl' AND f.status = 'ingesting' AND r.batch_ids != '[]'"
        ).fetchone()
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()
    return bool(row and row[0])


async def test_a_kill_mid_ingest_sends_nothing_twice(tmp_path: Path, emulator: Emulator):
    inbox = tmp_path / "inbox"
    inbox.mkdir(parents=True)
    pad = "p" * 3000  # heavy lines (metadata, never sent): the ingest takes a while
    with (inbox / ".big.tmp").open("w") as f:
        for i in range(12_000):
            f.write(json.dumps(unified(f"b{i}", MODEL, f"big {i}", metadata={"pad": pad})) + "\n")
    os.replace(inbox / ".big.tmp", inbox / "big.jsonl")
    # A small file of the same model, taken first: the planner waits batch_linger_s for its
    # batch to fill, and by then the big file's first chunks are stored and go out with it.
    write_jsonl(inbox / "a.jsonl", [unified(f"a{i}", MODEL, f"small {i}") for i in range(30)])
    proc = await start_daemon(tmp_path, emulator.url, once=False, config_extra=LINGER)

    async def sent() -> bool:
        return _sent_while_ingesting(tmp_path)

    await wait_for(sent, timeout=90, what="big.jsonl requests sent while it is ingested")
    os.kill(proc.pid, signal.SIGKILL)  # as the OOM killer would, mid-ingest
    await finish(proc)
    run = await finish(await start_daemon(tmp_path, emulator.url, config_extra=LINGER), 300)
    assert run.returncode == 0, run.stderr[-4000:]
    assert (await journal(emulator.url))["providers"]["openai"]["duplicate_items"] == 0
    results = read_results(tmp_path / "outbox" / "big.results.jsonl")
    assert [r["custom_id"] for r in results] == [f"b{i}" for i in range(12_000)]
    assert all(r["status"] == "succeeded" for r in results)
