"""The store on a real SQLite file: migrations, batch intent rows, idempotent result records."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from daemon.packing import BatchPacker
from daemon.store import Store, StoreError, iter_file_rows, state_failure
from daemon.store import queries as q
from daemon.store.reader import StatusReader
from daemon.store.schema import MIGRATIONS

from .store_setup import submitted_batch


async def _store(tmp_path: Path) -> Store:
    return await Store(tmp_path / "b.sqlite3").open()


def _req(line: int, model: str = "gpt-4o-mini", status: str = "pending") -> dict:
    return {
        "line": line,
        "custom_id": f"c{line}",
        "model": model,
        "provider": "openai",
        "body": {"model": model, "messages": [{"role": "user", "content": str(line)}]},
        "size_bytes": 60,
        "status": status,
    }


async def test_migrating_twice_is_a_no_op_and_newer_schema_is_refused(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    assert await store.schema_version() == len(MIGRATIONS)
    await store.close()
    store = await _store(tmp_path)  # second open: nothing to apply, nothing breaks
    assert await store.schema_version() == len(MIGRATIONS)
    await store.close()
    db = sqlite3.connect(tmp_path / "b.sqlite3")
    db.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer than this batchd"):
        await _store(tmp_path)


async def test_claim_submit_and_record_results_idempotently(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    fid = await store.claim_file("a.jsonl", "/in/a.jsonl", "/w/a.jsonl", 10)
    await store.add_requests(fid, [_req(i) for i in range(1, 6)])
    await store.set_file_status(fid, "active", lines=5)
    assert await store.due_models(now=1e12) == [
        ("openai", "gpt-4o-mini", 5, pytest.approx(0, abs=1e10))
    ]
    claimed = await store.claim_batch_items(
        "openai", "gpt-4o-mini", "t1", "acct", max_items=3, max_bytes=10_000, now=1e12
    )
    assert claimed is not None
    batch_id, rows = claimed
    assert len(rows) == 3 and rows[0].body["messages"][0]["content"] == "1"
    (batch,) = await store.batches_in("submitting")
    assert batch["tag"] == "t1" and batch["n_items"] == 3
    await store.mark_submitted(batch_id, "batch_X", "file_1", poll_interval_s=1, now=1e12)
    ids = list(rows.ids)
    updates = [
        {
            "request_id": ids[0],
            "status": "succeeded",
            "attempts_inc": 1,
            "result": {"text": "hi"},
            "error": None,
        }
    ]
    await store.record_results(batch_id, updates)
    await store.record_results(batch_id, updates)  # a re-run after a crash changes nothing
    left = await store.batch_requests(batch_id)
    assert sorted(r for r, _ in left) == ids[1:]
    got = {r["line"]: r for r in iter_file_rows(store.path, fid)}
    assert got[1]["status"] == "succeeded" and got[1]["attempts"] == 1
    assert got[1]["batch_ids"] == ["batch_X"] and got[1]["result"] == {"text": "hi"}
    assert got[4]["status"] == "pending" and got[4]["batch_ids"] == []
    assert await store.finished_files() == []
    await store.close()


async def _page_size(store: Store) -> int:
    return int(await store._scalar("PRAGMA page_size"))


async def test_new_databases_have_16k_pages_old_4k_ones_work_and_vacuum_resizes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await _store(tmp_path)
    assert await _page_size(store) == q.NEW_DB_PAGE_SIZE == 16384
    assert (await store.free_space())[0] == 2  # still incremental auto-vacuum
    await store.close()
    # A database made by an earlier batchd (SQLite's default page size, WAL), opened again by
    # this one: it keeps its pages, and requests go through it as before.
    old = tmp_path / "old"
    old.mkdir()
    with monkeypatch.context() as m:
        m.setattr(q, "NEW_DB_PRAGMAS", ("PRAGMA auto_vacuum=INCREMENTAL",))
        await (await _store(old)).close()
    store = await _store(old)
    assert await _page_size(store) == 4096
    fid = await store.claim_file("a.jsonl", "/in/a.jsonl", "/w/a.jsonl", 10)
    await store.add_requests(fid, [_req(i) for i in range(1, 4)])
    batch_id, rows = await submitted_batch(store, 3, "batch_X", "file_1", max_bytes=10_000)
    updates = [
        {"request_id": rid, "status": "succeeded", "attempts_inc": 1,
         "result": {"text": f"a{rid}"}, "answer": {"n": rid}, "error": None}
        for rid in rows.ids
    ]  # fmt: skip
    await store.record_results(batch_id, updates)
    got = {r["line"]: r for r in iter_file_rows(store.path, fid)}
    assert [got[i]["status"] for i in (1, 2, 3)] == ["succeeded"] * 3
    assert json.loads(got[2]["answer"]) == {"n": rows.ids[1]}
    assert await store.has_small_pages()
    await store.vacuum()  # a full rewrite (no daemon running) gives it the new page size
    assert await _page_size(store) == q.NEW_DB_PAGE_SIZE and not await store.has_small_pages()
    assert await store.quick_check() == []
    async with store.db.execute("PRAGMA journal_mode") as cur:
        assert (await cur.fetchone())[0] == "wal"  # back in WAL mode
    got = {r["line"]: r for r in iter_file_rows(store.path, fid)}  # every row kept
    assert [got[i]["status"] for i in (1, 2, 3)] == ["succeeded"] * 3
    assert json.loads(got[2]["answer"]) == {"n": rows.ids[1]}
    await store.close()


async def test_byte_cap_splits_batches_and_abort_requeues(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    fid = await store.claim_file("a.jsonl", "/in", "/w", 1)
    await store.add_requests(fid, [_req(i) for i in range(1, 5)])
    claimed = await store.claim_batch_items(
        "openai", "gpt-4o-mini", "t1", "a", max_items=100, max_bytes=2 * (60 + 256), now=1e12
    )
    assert claimed is not None and len(claimed[1]) == 2
    await store.abort_batch(claimed[0], "boom", next_attempt_at=5e12, count_attempt=True)
    (b,) = await store.batches_in("aborted")
    assert b["error"] == "boom"
    rows = {r["line"]: r for r in iter_file_rows(store.path, fid)}
    assert rows[1]["status"] == "pending" and rows[1]["attempts"] == 1
    assert rows[1]["next_attempt_at"] == 5e12
    # out of attempts: the abort ends them failed
    claimed = await store.claim_batch_items(
        "openai", "gpt-4o-mini", "t2", "a", max_items=100, max_bytes=10**9, now=1e12
    )
    assert claimed is not None and list(claimed[1].ids) == [3, 4]
    await store.abort_batch(
        claimed[0],
        "gone",
        next_attempt_at=0,
        count_attempt=True,
        max_attempts=1,
        final_error={"type": "batch_gone", "message": "x"},
    )
    rows = {r["line"]: r for r in iter_file_rows(store.path, fid)}
    assert rows[3]["status"] == "failed" and rows[3]["error"]["type"] == "batch_gone"
    await store.close()


async def test_finished_files_and_status_report(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    fid = await store.claim_file("a.jsonl", "/in", "/w", 1)
    await store.add_requests(
        fid,
        [
            {**_req(1, status="invalid"), "error": {"type": "invalid_request", "message": "m"}},
        ],
    )
    await store.set_file_status(fid, "active", lines=1, invalid=1)
    assert [f["id"] for f in await store.finished_files()] == [fid]
    with StatusReader(store.path) as reader:
        report = reader.recent()
    assert report["files"][0]["counts"] == {"invalid": 1}
    assert report["errors"] == [{"type": "invalid_request", "n": 1}]
    with pytest.raises(StoreError):
        await store.set_file_status(fid, "done", colour="red")
    await store.close()


async def test_polls_and_lookups_see_only_the_current_account(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    fid = await store.claim_file("a.jsonl", "/in", "/w", 1)
    await store.add_requests(fid, [_req(i) for i in range(1, 5)])
    ids = {}
    for tag, account in (("old1", "old"), ("old2", "old"), ("new1", "new"), ("new2", "new")):
        claimed = await store.claim_batch_items(
            "openai", "gpt-4o-mini", tag, account, max_items=1, max_bytes=10**9, now=1e12
        )
        assert claimed is not None
        ids[tag] = claimed[0]
    for tag in ("old1", "new1"):
        await store.mark_submitted(ids[tag], f"pb-{tag}", None, poll_interval_s=1, now=100)
    assert [b["tag"] for b in await store.due_polls("openai", "new", now=1e12)] == ["new1"]
    assert await store.next_poll_at("openai", "new") == 101
    assert [b["tag"] for b in await store.submitting_batches("openai", "new")] == ["new2"]
    assert [b["tag"] for b in await store.other_account_batches("openai", "new")] == [
        "old1",
        "old2",
    ]
    assert len(await store.other_account_batches("openai", "old")) == 2
    assert await store.other_account_batches("gemini", "new") == []
    await store.abort_batch(ids["old2"], "x", next_attempt_at=0, count_attempt=False)
    # an ended batch is not open
    assert [b["tag"] for b in await store.other_account_batches("openai", "new")] == ["old1"]
    assert await store.due_polls("openai", "other", now=1e12) == []
    assert await store.next_poll_at("openai", "other") is None
    await store.adopt_batch(ids["old1"], "new")
    assert await store.other_account_batches("openai", "new") == []
    assert [b["tag"] for b in await store.due_polls("openai", "new", now=1e12)] == ["old1", "new1"]
    await store.close()


async def test_claim_packs_as_the_shared_packing_rule(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    fid = await store.claim_file("a.jsonl", "/in", "/w", 1)
    sizes = [100, 700, 40, 900, 10, 10, 300]
    await store.add_requests(
        fid, [{**_req(i), "size_bytes": size} for i, size in enumerate(sizes, start=1)]
    )
    packer = BatchPacker(max_items=3, max_bytes=1500)
    expected: list[list[int]] = []
    for line, size in enumerate(sizes, start=1):
        if packer.add(size):
            expected.append([])
        expected[-1].append(line)
    got: list[list[int]] = []
    while claimed := await store.claim_batch_items(
        "openai", "gpt-4o-mini", f"t{len(got)}", "a", max_items=3, max_bytes=1500, now=1e12
    ):
        got.append([int(item.body["messages"][0]["content"]) for item in claimed[1]])
    assert got == expected == [[1, 2], [3, 4], [5, 6, 7]]  # the byte cap closes the first two
    await store.close()


async def test_due_models_measures_the_linger_from_when_requests_became_due(
    tmp_path: Path,
) -> None:
    """A request sent back with a backoff became due when its backoff ended, not when it was
    last updated (that is older than the linger by then, and sent retries out one by one)."""
    store = await _store(tmp_path)
    fid = await store.claim_file("a.jsonl", "/in", "/w", 1)
    await store.add_requests(fid, [_req(i) for i in range(1, 4)])
    stored_at = (await store.due_models(now=1e12))[0][3]  # new requests: when stored
    claimed = await store.claim_batch_items(
        "openai", "gpt-4o-mini", "t1", "a", max_items=2, max_bytes=10**9, now=1e12
    )
    assert claimed is not None
    await store.abort_batch(claimed[0], "x", next_attempt_at=5e12, count_attempt=True)
    assert await store.due_models(now=1e12) == [("openai", "gpt-4o-mini", 1, stored_at)]
    await store.forget_requests(fid)
    await store.add_requests(fid, [_req(i) for i in range(1, 3)])
    claimed = await store.claim_batch_items(
        "openai", "gpt-4o-mini", "t2", "a", max_items=2, max_bytes=10**9, now=1e12
    )
    assert claimed is not None
    await store.abort_batch(claimed[0], "x", next_attempt_at=5e12, count_attempt=True)
    assert await store.due_models(now=4e12) == []
    assert await store.due_models(now=6e12) == [("openai", "gpt-4o-mini", 2, 5e12)]
    await store.close()


async def test_a_create_error_is_noted_only_on_a_batch_still_submitting(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    fid = await store.claim_file("a.jsonl", "/in", "/w", 1)
    await store.add_requests(fid, [_req(i) for i in range(1, 3)])
    ids = []
    for tag in ("t1", "t2"):
        claimed = await store.claim_batch_items(
            "openai", "gpt-4o-mini", tag, "a", max_items=1, max_bytes=10**9, now=1e12
        )
        assert claimed is not None
        ids.append(claimed[0])
    await store.mark_submitted(ids[1], "pb", None, poll_interval_s=1, now=1e12)
    for batch_id in ids:
        await store.note_create_error(batch_id, "RuntimeError: boom")
    first, second = [await store.batch(i) for i in ids]
    assert first is not None and first["error"] == "RuntimeError: boom"
    assert second is not None and second["error"] is None
    await store.close()


def test_state_failures_are_the_databases_own_errors() -> None:
    assert state_failure(sqlite3.OperationalError("disk I/O error"))
    assert state_failure(sqlite3.DatabaseError("file is not a database"))
    assert state_failure(StoreError("store is not open"))
    assert not state_failure(sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert not state_failure(RuntimeError("a bug"))


async def test_file_batches_counts_each_jobs_share_and_what_was_sent_again(tmp_path: Path) -> None:
    """A job's summary lists every batch its requests went through, with its own requests in
    each by final status, or ``retried`` for those a later batch ran again."""
    store = await _store(tmp_path)
    fid = await store.claim_file("a.jsonl", "/in", "/w", 1)
    other = await store.claim_file("b.jsonl", "/in", "/w", 1)
    await store.add_requests(fid, [_req(i) for i in range(1, 4)])
    await store.add_requests(other, [_req(i) for i in range(1, 3)])
    assert await store.file_batches(fid) == []
    first = await store.claim_batch_items(
        "openai", "gpt-4o-mini", "t1", "a", max_items=10, max_bytes=10**9, now=1e12
    )
    assert first is not None and len(first[1]) == 5
    ids = list(first[1].ids)
    await store.mark_submitted(first[0], "pb-1", None, poll_interval_s=1, now=1)
    outcomes = ["succeeded", "pending", "failed", "succeeded", "succeeded"]
    await store.record_results(first[0], [
        {"request_id": rid, "status": s, "attempts_inc": 1, "next_attempt_at": 0.0,
         "result": None, "error": None}
        for rid, s in zip(ids, outcomes, strict=True)
    ])  # fmt: skip
    second = await store.claim_batch_items(
        "openai", "gpt-4o-mini", "t2", "a", max_items=10, max_bytes=10**9, now=1e12
    )
    assert second is not None and list(second[1].ids) == [ids[1]]
    await store.mark_submitted(second[0], "pb-2", None, poll_interval_s=1, now=1)
    await store.record_results(second[0], [
        {"request_id": ids[1], "status": "succeeded", "attempts_inc": 1, "result": None,
         "error": None}
    ])  # fmt: skip
    got = await store.file_batches(fid)
    assert [(b["id"], b["local_status"], b["counts"]) for b in got] == [
        ("pb-1", "submitted", {"failed": 1, "retried": 1, "succeeded": 1}),
        ("pb-2", "submitted", {"succeeded": 1}),
    ]
    assert [(b["id"], b["counts"]) for b in await store.file_batches(other)] == [
        ("pb-1", {"succeeded": 2})
    ]
    await store.close()


async def test_a_failed_canarys_lane_ends_its_retried_requests_with_their_own_error(
    tmp_path: Path,
) -> None:
    """When a canary fails, the lane's requests never sent end with the canary's error ("not
    sent"); one the canary did send, whose retryable error sent it back, was sent: it ends
    with that error, its attempt counted, and is not counted as kept back."""
    store = await _store(tmp_path)
    fid = await store.claim_file("a.jsonl", "/in/a.jsonl", "/w/a.jsonl", 5)
    await store.add_requests(fid, [_req(i) for i in range(1, 6)])
    batch_id, items = await submitted_batch(
        store, 3, "batch_C", "file_1", tag="canary", account="a", max_bytes=10_000
    )
    bad = {"type": "invalid_request_error", "message": "no such parameter", "code": None}
    busy = {"type": "rate_limit_exceeded", "message": "slow down", "code": 429}
    r1, r2, r3 = items.ids
    await store.record_results(batch_id, [
        {"request_id": r1, "status": "failed", "attempts_inc": 1, "error": bad},
        {"request_id": r2, "status": "failed", "attempts_inc": 1, "error": bad},
        {"request_id": r3, "status": "pending", "attempts_inc": 1, "next_attempt_at": 0.0,
         "error": busy},
    ])  # fmt: skip
    canary_error = {"type": "canary_failed", "message": "the canary failed", "code": None}
    n, size_bytes, sent = await store.fail_lane(fid, "openai", "gpt-4o-mini", canary_error)
    assert (n, size_bytes, sent) == (2, 120, 1)
    rows = {r["line"]: r for r in iter_file_rows(store.path, fid)}
    assert {line: (rows[line]["status"], rows[line]["attempts"]) for line in rows} == {
        1: ("failed", 1), 2: ("failed", 1), 3: ("failed", 1), 4: ("failed", 0), 5: ("failed", 0)
    }
    assert rows[3]["error"] == busy  # sent, answered "slow down": not "not sent"
    assert rows[4]["error"] == rows[5]["error"] == canary_error
    assert await store.due_lanes(now=1e12) == []  # nothing of the lane is sent any more
    await store.close()


async def test_batch_rows_reads_waiting_and_recorded_requests_of_one_batch(
    tmp_path: Path,
) -> None:
    # A collection's one read of its batch: the requests still waiting on it, and those whose
    # result is stored already, by status. A request re-queued and sent again in another
    # batch belongs to that batch only.
    store = await _store(tmp_path)
    fid = await store.claim_file("a.jsonl", "/in/a.jsonl", "/w/a.jsonl", 10)
    await store.add_requests(fid, [_req(n) for n in (1, 2, 3, 4)])
    first, items = await submitted_batch(store, 4, "batch_A", "file_A")
    ids = list(items.ids)
    done = {"status": "succeeded", "attempts_inc": 1, "result": {"text": "t"}, "error": None}
    again = {"status": "pending", "attempts_inc": 1, "result": None, "error": None,
             "next_attempt_at": 0.0}  # fmt: skip
    failed = {"status": "failed", "attempts_inc": 1, "result": None, "error": {"type": "x"}}
    updates = [{"request_id": rid, **u} for rid, u in zip(ids, (done, again, failed), strict=False)]
    await store.record_results(first, updates)
    assert await store.batch_rows(first) == (
        {ids[3]: 0}, {"succeeded": 1, "pending": 1, "failed": 1}
    )
    claimed = await store.claim_batch_items(
        "openai", "gpt-4o-mini", "t2", "acct", max_items=4, max_bytes=10**6, now=1e12
    )
    assert claimed is not None and list(claimed[1].ids) == [ids[1]]
    second = claimed[0]
    rows = await store.batch_rows(first)  # the re-queued request left the first batch
    assert rows.outstanding == {ids[3]: 0} and rows.recorded == {"succeeded": 1, "failed": 1}
    assert rows.outstanding == dict(await store.batch_requests(first))
    assert await store.batch_rows(second) == ({ids[1]: 1}, {})
    await store.record_results(first, updates[:1])  # a re-run after a crash changes nothing
    assert await store.batch_rows(first) == rows
    await store.close()
