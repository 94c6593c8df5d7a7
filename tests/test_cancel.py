"""A canceled job in the store (real SQLite file): its requests never go back to pending —
whether the cancel found them pending, they were stored after it (a file still being read), a
batch sent them back for a retry, or their batch was aborted — while another job's requests in
the same batch go on as usual; and ``batchd cancel`` (the intent, beside the store) is once only,
by name or id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.cancel import request
from daemon.store import Store, iter_file_rows


def _req(line: int) -> dict[str, Any]:
    return {
        "line": line,
        "custom_id": f"c{line}",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "body": {"messages": [{"role": "user", "content": str(line)}]},
        "size_bytes": 60,
        "status": "pending",
    }


def _states(store: Store, file_id: int) -> dict[int, str]:
    return {r["line"]: r["status"] for r in iter_file_rows(store.path, file_id)}


async def _batch(store: Store, tag: str) -> tuple[int, list[int]]:
    claimed = await store.claim_batch_items(
        "openai", "gpt-4o-mini", tag, "acct", max_items=100, max_bytes=10**9, now=1e12
    )
    assert claimed is not None
    batch_id, rows = claimed
    await store.mark_submitted(batch_id, f"batch_{tag}", "file", poll_interval_s=1, now=1e12)
    return batch_id, list(rows.ids)


async def test_canceled_requests_never_go_back_to_pending(tmp_path: Path) -> None:
    store = await Store(tmp_path / "b.sqlite3").open()
    try:
        mine = await store.claim_file("mine.jsonl", "/in/m", "/w/m", 1)
        other = await store.claim_file("other.jsonl", "/in/o", "/w/o", 1)
        await store.add_requests(mine, [_req(i) for i in (1, 2)])
        await store.add_requests(other, [_req(i) for i in (1, 2)])
        batch_id, ids = await _batch(store, "shared")  # one batch holds both jobs
        await store.add_requests(mine, [_req(3)])  # unsent yet
        assert await store.request_cancel(mine)
        assert not await store.request_cancel(mine)  # once only
        assert await store.cancel_pending(mine) == 1
        await store.add_requests(mine, [_req(4)])  # stored after the cancel: canceled at once
        assert _states(store, mine) == {1: "batched", 2: "batched", 3: "canceled", 4: "canceled"}
        assert await store.batch_files(batch_id) == {mine, other}
        # The shared batch sends every request back for a retry: only the other job's go.
        updates: list[Any] = [
            {"request_id": rid, "status": "pending", "attempts_inc": 1, "next_attempt_at": 0.0,
             "error": {"type": "batch_cancelled", "message": "x"}}
            for rid in ids
        ]  # fmt: skip
        await store.record_results(batch_id, updates)
        assert set(_states(store, mine).values()) == {"canceled"}
        assert set(_states(store, other).values()) == {"pending"}
        # An aborted batch: the same.
        await store.add_requests(mine, [_req(5)])
        batch_id, _ = await _batch(store, "again")  # the other job's two requests
        assert await store.batch_files(batch_id) == {other}
        await store.abort_batch(batch_id, "boom", next_attempt_at=0, count_attempt=False)
        assert set(_states(store, other).values()) == {"pending"}
        rows = list(iter_file_rows(store.path, mine))
        assert all(r["error"]["type"] == "job_canceled" for r in rows if r["line"] >= 3)
        assert [f["id"] for f in await store.canceling_files()] == [mine]
    finally:
        await store.close()


async def test_cancel_command_by_name_or_id(tmp_path: Path) -> None:
    db = tmp_path / "b.sqlite3"
    store = await Store(db).open()
    first = await store.claim_file("same.jsonl", "/in/1", "/w/1", 1)
    second = await store.claim_file("same.jsonl", "/in/2", "/w/2", 1)
    await store.add_requests(second, [_req(1), _req(2)])
    await store.close()
    code, text = await request(db, "same.jsonl")
    assert code == 1 and f"#{first}, #{second}" in text  # ambiguous: the ids are listed
    code, text = await request(db, f"#{second}")
    assert code == 0 and "cancel requested; 2 pending requests canceled now" in text
    code, text = await request(db, str(second))
    assert code == 0 and "already requested" in text
    code, text = await request(db, "nosuch.jsonl")
    assert code == 1 and "no job named" in text
    store = await Store(db).open()
    try:
        assert set(_states(store, second).values()) == {"canceled"}
        assert (await store.file(first) or {})["cancel_requested_at"] is None
    finally:
        await store.close()
