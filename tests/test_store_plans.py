"""The requests table's partial indexes (schema migration 8): the query plans that depend on
them, the counts read through them, and the migration from a version 7 database.

SQLite uses a partial index only when a query's WHERE clause implies the index's own, and a
bound parameter (``status = ?``) never does: a query that stops naming its statuses in its
text falls back to reading the table. These tests read each hot statement's plan
(``EXPLAIN QUERY PLAN``) on a real, migrated database, so such a change fails here.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from daemon.outcomes import RequestUpdate
from daemon.states import FileStatus, RequestStatus
from daemon.store import Store
from daemon.store import db as store_db
from daemon.store import queries as q
from daemon.store.reader import StatusReader
from daemon.store.schema import MIGRATIONS
from daemon.store.snapshot import Snapshot

from .store_setup import submitted_batch

OPEN = "requests_open (status=? AND file_id=?)"
IN_LANE = "requests_open (status=? AND file_id=? AND provider=? AND model=?)"
BATCH = "requests_batch (batch_id=?)"
PK = "requests USING INTEGER PRIMARY KEY (rowid=?)"
FINAL = "COVERING INDEX requests_final (file_id=?)"
# Each hot statement, and what its plan must hold (every piece, each in some line of it).
PLANS: dict[str, tuple[str, ...]] = {
    # planning and claims
    "SELECT_PENDING_BUCKETS": ("COVERING INDEX requests_open (status=?)",),
    "SELECT_CLAIMABLE_SIZES_IN_FILE": (IN_LANE[:-1] + " AND next_attempt_at<?)",),
    "SELECT_CLAIMABLE_SIZES": ("INDEX requests_open (status=?)",),
    "SELECT_DUE_MODELS": ("COVERING INDEX requests_open (status=?)",),
    "SUM_LANE_PENDING": (IN_LANE,),
    "FAIL_LANE_REQUESTS": (IN_LANE,),
    "BATCH_REQUESTS_LISTED": (PK,),
    "SELECT_FINISHED_FILES": ("COVERING INDEX " + OPEN,),
    # results, aborts, cancels (a submit touches no request row: migration 9)
    "RECORD_RESULT": (PK,),
    "RECORD_ANSWER": (PK,),
    "RECORD_SUCCEEDED": (PK,),
    "SELECT_STILL_BATCHED": ("requests_batch (batch_id=? AND rowid=?)",),
    "SELECT_BATCH_REQUESTS": (BATCH,),
    "SELECT_BATCH_ROWS": (BATCH,),
    "REQUEUE_BATCH_REQUESTS": (BATCH,),
    "FAIL_BATCH_REQUESTS": (BATCH,),
    "FAIL_EXHAUSTED_REQUESTS": (BATCH,),
    "CANCEL_BATCH_REQUESTS": (BATCH,),
    "CANCEL_REQUEUED": (PK,),
    "CANCEL_PENDING_LINES": ("requests_file (file_id=? AND line>? AND line<?)",),
    "SELECT_BATCH_FILES": (BATCH,),
    "SELECT_BATCH_FAILURE": (BATCH,),
    "DELETE_OLD_BATCHES": ("COVERING INDEX " + BATCH,),
    # counts: status, cancel, the status line and metrics
    "REPORT_FILES": ("COVERING INDEX " + OPEN, FINAL),
    "REPORT_OPEN_FILES": ("COVERING INDEX " + OPEN, FINAL),
    "COUNT_FILE_REQUESTS": ("COVERING INDEX " + OPEN, FINAL),
    "REPORT_WAITING": ("COVERING INDEX requests_open (status=?)",),
    "REPORT_IN_FLIGHT": ("INDEX requests_open (status=?)",),
    "SERVICE_OPEN_REQUESTS": ("COVERING INDEX requests_open (status=?)",),
    "METRICS_OLDEST_PENDING": ("COVERING INDEX requests_open (status=?)",),
    "METRICS_REQUESTS": (
        "COVERING INDEX requests_open (status=?)",
        "SCAN requests USING COVERING INDEX requests_final",  # every final request, no row
    ),
    # a job's summary: one pass over the job's requests, then its batches by their ids
    "SELECT_FILE_BATCH_COUNTS": ("requests_file (file_id=?)",),
    "SELECT_BATCH_PROVIDER_IDS": ("batches USING INTEGER PRIMARY KEY (rowid=?)",),
    # retention
    "DELETE_REQUEST_LINES": ("requests_file (file_id=? AND line>? AND line<?)",),
    "DELETE_ANSWER_LINES": ("requests_file (file_id=? AND line>? AND line<?)",),
}

# Statements that read their requests in the index's order: no sort of every row they read
# (a sort of what they grouped them into comes after a "SCAN (subquery-N)").
IN_INDEX_ORDER = ("SELECT_PENDING_BUCKETS", "SELECT_CLAIMABLE_SIZES_IN_FILE",
                  "SERVICE_OPEN_REQUESTS", "REPORT_WAITING", "METRICS_REQUESTS")  # fmt: skip


def _plan(db: sqlite3.Connection, sql: str) -> list[str]:
    """The plan's lines; every parameter bound to NULL (a plan does not depend on them).
    Worded as SQLite 3.36 and later word them (before: "SCAN TABLE requests", "SCAN
    SUBQUERY 1")."""
    n = 0
    while True:
        try:
            rows = db.execute("EXPLAIN QUERY PLAN " + sql, [None] * n).fetchall()
            lines = [re.sub(r"^(SCAN|SEARCH) TABLE ", r"\1 ", str(r[3])) for r in rows]
            return [re.sub(r"^SCAN SUBQUERY (\d+)", r"SCAN (subquery-\1)", x) for x in lines]
        except sqlite3.ProgrammingError as exc:  # "... uses N, and there are 0 supplied"
            found = re.search(r"uses (\d+)", str(exc))
            assert found is not None, exc
            n = int(found.group(1))


@pytest.fixture
async def migrated(tmp_path: Path) -> Path:
    """A database at this batchd's schema, holding requests in every status."""
    path = tmp_path / "b.sqlite3"
    store = await Store(path).open()
    try:
        await _fill(store)
    finally:
        await store.close()
    return path


@pytest.mark.parametrize("name", sorted(PLANS))
def test_each_hot_statement_reads_its_index(migrated: Path, name: str) -> None:
    db = sqlite3.connect(migrated)
    try:
        lines = _plan(db, getattr(q, name))
    finally:
        db.close()
    for piece in PLANS[name]:
        assert any(piece in line for line in lines), (name, piece, lines)
    # nothing walks the requests table itself (a SCAN of it names no index)
    assert not [x for x in lines if re.match(r"SCAN (requests|r)\b(?! USING)", x)], lines
    if name in IN_INDEX_ORDER:
        cut = next((i for i, x in enumerate(lines) if x.startswith("SCAN (subquery")), None)
        rows_read = lines if cut is None else lines[:cut]
        assert not [x for x in rows_read if "TEMP B-TREE" in x], lines


def test_a_status_as_a_parameter_would_not_use_the_partial_index(migrated: Path) -> None:
    """Why the statuses are in the SQL text: the same statement with ``status = ?`` reads the
    table (this is what the tests above would catch)."""
    db = sqlite3.connect(migrated)
    try:
        literal = _plan(db, q.SELECT_PENDING_BUCKETS)
        bound = _plan(db, q.SELECT_PENDING_BUCKETS.replace(q.is_pending(), "status = ?"))
    finally:
        db.close()
    assert any("requests_open" in x for x in literal)
    assert not any("requests_open" in x for x in bound), bound


def test_the_status_words_are_the_state_enums() -> None:
    assert q.is_open() == "(status = 'pending' OR status = 'batched')"
    assert q.is_final("r.status") == "r.status NOT IN ('pending', 'batched')"
    # the migration's indexes spell the same conditions (frozen there, one home here)
    assert "WHERE status = 'pending' OR status = 'batched'" in MIGRATIONS[7]
    assert "WHERE status NOT IN ('pending', 'batched')" in MIGRATIONS[7]


def test_counts_read_through_the_indexes_are_the_rows(migrated: Path) -> None:
    db = sqlite3.connect(migrated)
    try:
        rows = db.execute("SELECT file_id, status, provider, model FROM requests NOT INDEXED")
        everything = [tuple(r) for r in rows]
        with_counts = [tuple(r) for r in db.execute(q.METRICS_REQUESTS)]
    finally:
        db.close()
    by_file: dict[int, dict[str, int]] = {}
    for fid, status, *_ in everything:
        by_file.setdefault(fid, {})
        by_file[fid][status] = by_file[fid].get(status, 0) + 1
    assert len({s for _, s, *_ in everything}) >= 6  # the fixture holds most statuses
    with StatusReader(migrated) as reader:
        recent = {f["id"]: f["counts"] for f in reader.recent()["files"]}
        assert recent == by_file
        assert list(recent[1]) == sorted(recent[1])  # in the order of the statuses' names
        assert {j["id"]: j["counts"] for j in reader.open_jobs()} == by_file
        waiting = sum(1 for _, s, *_ in everything if s in ("pending", "batched"))
        assert sum(reader.waiting_by_provider().values()) == waiting
    metrics: dict[tuple[str, str, str], int] = {}
    for _, status, provider, model in everything:
        key = (status, provider or "", model or "")
        metrics[key] = metrics.get(key, 0) + 1
    assert {(s, p, m): n for s, p, m, n in with_counts} == metrics
    with Snapshot(migrated) as snap:
        counts = snap.service_counts()
        assert (counts.pending, counts.in_flight) == (
            sum(1 for _, s, *_ in everything if s == "pending"),
            sum(1 for _, s, *_ in everything if s == "batched"),
        )
        assert snap.readings().requests == metrics


def _req(line: int, model: str = "gpt-4o-mini", status: str = "pending") -> dict[str, Any]:
    return {"line": line, "custom_id": f"c{line}", "model": model, "provider": "openai",
            "body": {"model": model, "n": line}, "size_bytes": 20, "status": status}  # fmt: skip


def _update(rid: int, status: RequestStatus) -> RequestUpdate:
    error = None if status == RequestStatus.SUCCEEDED else {"type": "bad", "message": "m"}
    update = RequestUpdate(request_id=rid, status=status, attempts_inc=1,
                           result={"text": "t"} if error is None else None, error=error)
    if status == RequestStatus.PENDING:
        update["next_attempt_at"] = 0.0
    return update


async def _fill(store: Store) -> tuple[int, int]:
    """Two files: one with requests pending, batched, succeeded, failed, expired, invalid and
    a retried one; one canceled. Returns (the first file, its open batch)."""
    fid = await store.claim_file("a.jsonl", "/in/a.jsonl", "/w/a.jsonl", 10)
    rows = [_req(n) for n in range(1, 9)] + [_req(9, "gpt-4o", "invalid")]
    await store.add_requests(fid, rows)
    await store.set_file_status(fid, FileStatus.ACTIVE, lines=9)
    batch_id, items = await submitted_batch(store, 6, "batch_A", "file_A")
    ids = list(items.ids)
    statuses = (RequestStatus.SUCCEEDED, RequestStatus.FAILED, RequestStatus.EXPIRED,
                RequestStatus.PENDING)  # fmt: skip
    updates = [_update(r, s) for r, s in zip(ids[:4], statuses, strict=True)]
    await store.record_results(batch_id, updates)
    other = await store.claim_file("b.jsonl", "/in/b.jsonl", "/w/b.jsonl", 10)
    await store.add_requests(other, [_req(n, "gpt-4o") for n in (1, 2)])
    await store.request_cancel(other)
    await store.cancel_pending(other)
    return fid, batch_id


async def _looks(store: Store, fid: int, batch_id: int) -> dict[str, Any]:
    """What the store answers about the filled database, through the queries that use the
    status-keyed indexes."""
    return {
        "counts": await store.request_counts(fid),
        "due": sorted((d.file_id, d.model, d.n) for d in await store.due_lanes(2e12)),
        "waiting": await store.waiting_by_provider(),
        "in_batch": sorted(await store.batch_requests(batch_id)),
        "collected": await store.batch_rows(batch_id),
        "finished": [f["id"] for f in await store.finished_files()],
        "failure": await store.batch_failure("batch_A", "openai", "gpt-4o-mini"),
        "batch_files": await store.batch_files(batch_id),
    }


async def test_migration_8_from_a_version_7_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b.sqlite3"
    with monkeypatch.context() as patch:  # the store as it was at schema 7
        patch.setattr(store_db, "MIGRATIONS", MIGRATIONS[:7])
        store = await Store(path).open()
        assert await store.schema_version() == 7
        fid, batch_id = await _fill(store)
        before = await _looks(store, fid, batch_id)
        await store.close()
    db = sqlite3.connect(path)
    old = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    db.close()
    assert {"requests_due", "requests_file_status", "requests_batch"} <= old

    store = await Store(path).open()
    try:
        assert await store.schema_version() == len(MIGRATIONS) >= 8
        assert await store.quick_check() == []
        after = await _looks(store, fid, batch_id)
        assert after == before
        assert after["counts"] == {"batched": 2, "expired": 1, "failed": 1, "invalid": 1,
                                   "pending": 3, "succeeded": 1}  # fmt: skip
        assert after["failure"] == {"type": "bad", "message": "m"}
        assert after["collected"] == (dict(after["in_batch"]), {"succeeded": 1, "failed": 1,
                                                                "expired": 1, "pending": 1})
        # the rest of the work goes on from the migrated indexes
        left = [rid for rid, _ in await store.batch_requests(batch_id)]
        await store.record_results(batch_id, [_update(r, RequestStatus.SUCCEEDED) for r in left])
        await store.fail_lane(fid, "openai", "gpt-4o-mini", {"type": "canary_failed"})
        assert [f["id"] for f in await store.finished_files()] == [fid]
        assert await store.request_counts(fid) == {"expired": 1, "failed": 4, "invalid": 1,
                                                   "succeeded": 3}  # fmt: skip
    finally:
        await store.close()
    db = sqlite3.connect(path)
    try:
        indexes = dict(
            db.execute("SELECT name, sql FROM sqlite_master WHERE tbl_name = 'requests'"
                       " AND type = 'index'").fetchall()
        )  # fmt: skip
        assert set(indexes) == {"requests_open", "requests_final", "requests_batch",
                                "requests_file"}  # fmt: skip
        for name in ("requests_open", "requests_final", "requests_batch"):
            assert " WHERE " in indexes[name], indexes[name]  # partial
        # each partial index holds exactly the rows of its condition
        for name, where in (("requests_open", q.is_open()), ("requests_final", q.is_final()),
                            ("requests_batch", "batch_id IS NOT NULL")):  # fmt: skip
            (held,) = db.execute(f"SELECT COUNT(*) FROM requests INDEXED BY {name}"
                                 f" WHERE {where}").fetchone()  # fmt: skip
            (rows,) = db.execute(f"SELECT COUNT(*) FROM requests NOT INDEXED"
                                 f" WHERE {where}").fetchone()  # fmt: skip
            assert held == rows, name
            assert rows > 0 or name == "requests_open"  # every request is final by now
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
