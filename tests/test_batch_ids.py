"""The batches a request went through (``requests.batch_ids``): stored as batch row ids by the
claim itself (schema migration 9), read as provider batch ids by the outbox and the summary.

A batch whose create failed never had a provider batch id, and is not listed; one that
reconcile found at the provider after an unclear create is listed from then on. A database of
schema 8 (provider batch ids, appended at submit) is converted, and reads the same.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from daemon import finish, outbox
from daemon.outcomes import RequestUpdate
from daemon.registry import default_registry
from daemon.states import FileStatus, RequestStatus
from daemon.store import Store, iter_file_rows, iter_result_rows
from daemon.store import queries as q
from daemon.store.rows import RESULT_COLUMNS, BatchIdTexts
from daemon.store.schema import MIGRATIONS

from .store_setup import database_at

BATCH_IDS = RESULT_COLUMNS.index("batch_ids")
# The summary's batch counts as schema 8 read them, straight from provider batch ids.
SCHEMA_8_FILE_BATCH_COUNTS = (
    "SELECT j.value AS pbid, CASE WHEN json_extract(r.batch_ids, '$[#-1]') = j.value"
    " THEN r.status ELSE ?2 END AS k, COUNT(*) AS n FROM requests r, json_each(r.batch_ids) j"
    " WHERE r.file_id = ?1 GROUP BY pbid, k"
)


def _req(line: int) -> dict[str, Any]:
    return {"line": line, "custom_id": f"c{line}", "model": "gpt-4o-mini", "provider": "openai",
            "body": {"model": "gpt-4o-mini", "n": line}, "size_bytes": 20,
            "status": RequestStatus.PENDING}  # fmt: skip


def _done(rid: int, status: RequestStatus = RequestStatus.SUCCEEDED) -> RequestUpdate:
    update = RequestUpdate(request_id=rid, status=status, attempts_inc=1, result={"text": "t"},
                           error=None)  # fmt: skip
    if status == RequestStatus.PENDING:
        update["next_attempt_at"] = 0.0
    return update


async def _claim(store: Store, tag: str) -> tuple[int, list[int]]:
    claimed = await store.claim_batch_items(
        "openai", "gpt-4o-mini", tag, "acct", max_items=10, max_bytes=10**6, now=1e12
    )
    assert claimed is not None
    return claimed[0], list(claimed[1].ids)


def _stored(path: Path) -> dict[int, list[int]]:
    db = sqlite3.connect(path)
    try:
        return {line: json.loads(ids) for line, ids in
                db.execute("SELECT line, batch_ids FROM requests ORDER BY line")}  # fmt: skip
    finally:
        db.close()


def _write(store: Store, fid: int, out: Path) -> list[bytes]:
    out.mkdir(exist_ok=True)
    rows = finish._rows(store.path, fid, default_registry())
    targets = (out / "a.results.jsonl", out / "a.summary.json")
    outbox.write_outputs(out, "a", fid, rows, summary_meta={"file": "a.jsonl"}, targets=targets)
    return targets[0].read_bytes().splitlines()


async def test_a_batch_whose_create_failed_is_not_listed_the_one_that_answered_is(
    tmp_path: Path,
) -> None:
    store = await Store(tmp_path / "b.sqlite3").open()
    try:
        fid = await store.claim_file("a.jsonl", "/in/a.jsonl", "/w/a.jsonl", 10)
        await store.add_requests(fid, [_req(1), _req(2)])
        await store.set_file_status(fid, FileStatus.ACTIVE, lines=2)
        # 1: its create was refused: the requests go back, the batch never had an id
        failed, ids = await _claim(store, "t1")
        await store.abort_batch(failed, "refused", next_attempt_at=0.0, count_attempt=True)
        # 2: its create raised; reconcile found it at the provider later (adopted)
        adopted, again = await _claim(store, "t2")
        assert again == ids
        await store.note_create_error(adopted, "RuntimeError: boom")
        assert [r["batch_ids"] for r in iter_file_rows(store.path, fid)] == [[], []]
        await store.mark_submitted(adopted, "batch_B", None, poll_interval_s=1, now=1e12)
        assert [r["batch_ids"] for r in iter_file_rows(store.path, fid)] == [
            ["batch_B"], ["batch_B"]
        ]
        await store.record_results(adopted, [_done(ids[0]), _done(ids[1], RequestStatus.PENDING)])
        # 3: the second request sent again; claimed, not submitted yet: not listed yet
        third, last = await _claim(store, "t3")
        assert last == [ids[1]]
        assert [r["batch_ids"] for r in iter_file_rows(store.path, fid)] == [
            ["batch_B"], ["batch_B"]
        ]
        await store.mark_submitted(third, "batch_C", "file_C", poll_interval_s=1, now=1e12)
        await store.record_results(third, [_done(ids[1])])
        # stored: every batch row each went into, in claim order (the claim wrote them)
        assert _stored(store.path) == {1: [failed, adopted], 2: [failed, adopted, third]}
        lines = _write(store, fid, tmp_path / "out")
        assert [json.loads(x)["batch_ids"] for x in lines] == [["batch_B"], ["batch_B", "batch_C"]]
        assert b'"batch_ids":["batch_B","batch_C"],' in lines[1]  # compact, as it was
        got = await store.file_batches(fid)
        assert [(b["id"], b["counts"]) for b in got] == [
            ("batch_B", {"retried": 1, "succeeded": 1}),
            ("batch_C", {"succeeded": 1}),
        ]
    finally:
        await store.close()


def _v8_database(path: Path) -> None:
    """A database as schema 8 left it: ``batch_ids`` holds provider batch ids, appended when
    a batch was marked submitted."""
    db = database_at(path, 8)
    # id, provider, model, status, provider batch id
    batches: list[tuple[int, str, str, str, str | None]] = [
        (1, "openai", "gpt-4o-mini", "collected", "batch_A"),
        (2, "openai", "gpt-4o-mini", "aborted", None),  # its create failed
        (3, "openai", "gpt-4o-mini", "submitted", "batch_C"),
        (4, "openai", "gpt-4o-mini", "submitting", None),  # claimed, not created yet
        (5, "anthropic", "claude-haiku-4-5", "collected", "batch_A"),  # another provider's
    ]
    for row in batches:
        db.execute(
            "INSERT INTO batches (id, tag, provider, model, account, status, provider_batch_id,"
            " n_items, created_at) VALUES (?1, 't' || ?1, ?2, ?3, 'acct', ?4, ?5, 1, 0)",
            row,
        )
    # line, provider, status, batch_id, provider batch ids (as submit noted them)
    requests: list[tuple[int, str | None, str, int | None, list[str]]] = [
        (1, "openai", "succeeded", 1, ["batch_A"]),
        (2, "openai", "succeeded", 3, ["batch_A", "batch_C"]),  # sent again
        (3, "openai", "failed", None, ["batch_A"]),  # then batch 2's create refused for good
        (4, "openai", "batched", 3, ["batch_C"]),
        (5, "openai", "batched", 4, ["batch_A"]),  # in batch 4 now: not noted yet
        (6, "openai", "canceled", None, []),
        (7, "anthropic", "succeeded", 5, ["batch_A"]),
        (8, None, "invalid", None, []),
    ]
    for line, provider, status, bid, pbids in requests:
        model = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}.get(provider or "")
        db.execute(
            "INSERT INTO requests (file_id, line, custom_id, model, provider, body, status,"
            " attempts, batch_id, batch_ids, result, updated_at)"
            " VALUES (1, ?, ?, ?, ?, '{}', ?, ?, ?, (SELECT json_group_array(value)"
            " FROM json_each(?)), ?, 0)",
            (line, f"c{line}", model, provider, status, len(pbids), bid, json.dumps(pbids),
             '{"text":"t"}' if status == "succeeded" else None),
        )  # fmt: skip
    db.commit()
    db.close()


def _old_reads(path: Path) -> tuple[dict[int, str], list[dict[str, Any]]]:
    """What schema 8's readers gave: each line's outbox text and the summary's batches."""
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        texts = {r[0]: r[1] for r in db.execute("SELECT line, batch_ids FROM requests")}
        counts: dict[str, dict[str, int]] = {}
        for r in db.execute(SCHEMA_8_FILE_BATCH_COUNTS, (1, "retried")):
            counts.setdefault(str(r["pbid"]), {})[str(r["k"])] = int(r["n"])
        rows = db.execute(q.SELECT_BATCHES_NAMED, (json.dumps(sorted(counts)),)).fetchall()
        return texts, [{**dict(r), "counts": counts[str(r["id"])]} for r in rows]
    finally:
        db.close()


async def test_migration_9_stores_batch_rows_and_reads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    _v8_database(path)
    old_texts, old_batches = _old_reads(path)
    assert old_texts[2] == '["batch_A","batch_C"]'  # (SQLite's compact text)
    db = sqlite3.connect(path)
    columns = "line, custom_id, status, batch_id, result, attempts, updated_at"
    before = db.execute(f"SELECT {columns} FROM requests ORDER BY line").fetchall()
    db.close()
    store = await Store(path).open()
    try:
        assert await store.schema_version() == len(MIGRATIONS) >= 9
        assert await store.quick_check() == []
        # provider ids to batch rows of the same provider, in order; batch 4 added to line 5
        assert _stored(path) == {1: [1], 2: [1, 3], 3: [1], 4: [3], 5: [1, 4], 6: [], 7: [5],
                                 8: []}  # fmt: skip
        db = sqlite3.connect(path)
        assert db.execute(f"SELECT {columns} FROM requests ORDER BY line").fetchall() == before
        db.close()
        async with store.db.execute("SELECT name FROM sqlite_temp_master") as cur:
            assert await cur.fetchall() == []  # the migration's own table is gone
        # the readers give what they gave before, byte for byte
        rows = {r[1]: r[BATCH_IDS] for r in iter_result_rows(path, 1, body_of="anthropic")}
        assert rows == old_texts
        assert await store.file_batches(1) == old_batches
        assert [(b["id"], b["provider"], b["counts"]) for b in old_batches] == [
            ("batch_A", "openai", {"batched": 1, "failed": 1, "retried": 1, "succeeded": 2}),
            ("batch_C", "openai", {"batched": 1, "succeeded": 1}),
            ("batch_A", "anthropic", {"batched": 1, "failed": 1, "retried": 1, "succeeded": 2}),
        ]
        # the work goes on from the converted rows: batch 4 created, both batches answer
        await store.mark_submitted(4, "batch_D", "file_D", poll_interval_s=1, now=1e12)
        await store.record_results(3, [_done(4)])  # request ids are the lines here
        await store.record_results(4, [_done(5)])
        lines = [json.loads(x) for x in _write(store, 1, tmp_path / "out")]
        assert {x["line"]: x["batch_ids"] for x in lines} == {
            1: ["batch_A"], 2: ["batch_A", "batch_C"], 3: ["batch_A"], 4: ["batch_C"],
            5: ["batch_A", "batch_D"], 6: [], 7: ["batch_A"], 8: [],
        }  # fmt: skip
    finally:
        await store.close()


async def test_the_readers_cache_of_lists_stays_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b.sqlite3"
    await (await Store(path).open()).close()
    db = sqlite3.connect(path)
    for bid in range(1, 7):  # batch 3's create failed: no provider batch id
        db.execute(
            "INSERT INTO batches (id, tag, provider, model, account, status, provider_batch_id,"
            " n_items, created_at) VALUES (?1, 't' || ?1, 'openai', 'm', 'a', 'collected', ?2,"
            " 1, 0)",
            (bid, None if bid == 3 else f"batch_{bid}"),
        )  # fmt: skip
    db.commit()
    monkeypatch.setattr(BatchIdTexts, "MAX_TEXTS", 3)
    texts = BatchIdTexts(db)
    held = texts.texts
    lists = ["[1]", "[1,2]", "[3]", "[2,3,4]", "[5]", "[1]", "[6,5]", "[]", "[1,2]"]
    got = [texts(x) for x in lists * 2]
    assert got == [
        '["batch_1"]', '["batch_1","batch_2"]', "[]", '["batch_2","batch_4"]', '["batch_5"]',
        '["batch_1"]', '["batch_6","batch_5"]', "[]", '["batch_1","batch_2"]',
    ] * 2  # fmt: skip
    assert texts.texts is held and len(held) <= 3  # emptied in place, never above its bound
    db.close()
