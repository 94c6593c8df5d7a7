"""The provider's answer of each request: kept apart from the request rows (migration 6), and
written into the results line as the provider sent it, never decoded and encoded again."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from adapters.jsontext import RawJSON
from daemon import finish, outbox
from daemon.outcomes import RequestUpdate
from daemon.registry import default_registry
from daemon.states import RequestStatus
from daemon.store import Store, iter_file_rows
from daemon.store.schema import MIGRATIONS

from .store_setup import database_at

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
# As a provider may write it: spaces, a key order of its own, an integer beyond 64 bits.
RAW = '{"id": "batch_req_1",  "custom_id": "r1", "response": {"status_code": 200, "body": ' \
    '{"big": 123456789012345678901234567890, "usage": {"prompt_tokens": 3}}}, "error": null}'


def _request(line: int) -> dict[str, Any]:
    return {
        "line": line,
        "custom_id": f"c{line}",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "body": BODY,
        "size_bytes": 60,
        "status": RequestStatus.PENDING,
        "metadata": {"k": [1, "é"]} if line == 1 else None,
    }


def _update(rid: int, answer: Any, text: str = "hello") -> RequestUpdate:
    usage = {"input_tokens": 3, "output_tokens": 2, "cached_input_tokens": 0,
             "cache_creation_input_tokens": 0}  # fmt: skip
    update = RequestUpdate(
        request_id=rid,
        status=RequestStatus.SUCCEEDED,
        attempts_inc=1,
        result={"text": text, "finish_reason": "stop", "usage": usage},
        error=None,
    )
    update["answer"] = answer
    return update


async def _batch(store: Store, fid: int, n: int) -> tuple[int, list[int]]:
    claimed = await store.claim_batch_items(
        "openai", "gpt-4o-mini", "t1", "acct", max_items=n, max_bytes=10**6, now=1e12
    )
    assert claimed is not None
    batch_id, items = claimed
    await store.mark_submitted(batch_id, "batch_X", "file_1", poll_interval_s=1, now=1e12)
    return batch_id, list(items.ids)


def _write(store: Store, fid: int, out: Path) -> list[bytes]:
    rows = finish._rows(store.path, fid, default_registry())
    targets = (out / "a.results.jsonl", out / "a.summary.json")
    outbox.write_outputs(out, "a", fid, rows, summary_meta={"file": "a.jsonl"}, targets=targets)
    return targets[0].read_bytes().splitlines()


async def test_answer_is_written_as_the_provider_sent_it(tmp_path: Path) -> None:
    store = await Store(tmp_path / "b.sqlite3").open()
    fid = await store.claim_file("a.jsonl", "/in/a.jsonl", "/w/a.jsonl", 10)
    await store.add_requests(fid, [_request(1), _request(2)])
    batch_id, ids = await _batch(store, fid, 2)
    decoded = {"id": "x", "n": 1}
    await store.record_results(batch_id, [_update(ids[0], RawJSON(RAW)), _update(ids[1], decoded)])
    # a collection run again after a crash changes nothing it stored before
    await store.record_results(batch_id, [_update(ids[0], RawJSON("{}"), text="other")])
    (tmp_path / "out").mkdir()
    first, second = _write(store, fid, tmp_path / "out")
    await store.close()

    # compact JSON, the documented order, the answer's own text copied in as it came
    assert first.startswith(b'{"custom_id":"c1","line":1,"model":"gpt-4o-mini",')
    assert first.endswith(b',"response":' + RAW.encode() + b',"metadata":{"k":[1,"\xc3\xa9"]}}')
    line = json.loads(first)
    assert list(line) == ["custom_id", "line", "model", "provider", "status", "text",
                          "finish_reason", "usage", "cost_usd", "error", "attempts",
                          "batch_ids", "adaptations", "response", "metadata"]  # fmt: skip
    assert line["text"] == "hello" and line["batch_ids"] == ["batch_X"]
    assert line["response"]["response"]["body"]["big"] == 123456789012345678901234567890
    assert line["usage"]["input_tokens"] == 3 and line["cost_usd"] > 0
    assert json.loads(second)["response"] == decoded


async def test_lone_surrogate_in_text_still_gives_valid_utf8(tmp_path: Path) -> None:
    store = await Store(tmp_path / "b.sqlite3").open()
    fid = await store.claim_file("a.jsonl", "/in/a.jsonl", "/w/a.jsonl", 10)
    await store.add_requests(fid, [_request(1)])
    batch_id, ids = await _batch(store, fid, 1)
    await store.record_results(batch_id, [_update(ids[0], RawJSON(RAW), text="ok")])
    await store.close()
    db = sqlite3.connect(tmp_path / "b.sqlite3")  # as a provider's "\ud800" escape leaves it
    db.execute("UPDATE requests SET result = json_set(result, '$.text', ?)", ("bad \\ud800",))
    db.commit()
    db.close()
    (tmp_path / "out").mkdir()
    store = Store(tmp_path / "b.sqlite3")
    (line,) = _write(store, fid, tmp_path / "out")
    line.decode("utf-8")  # valid UTF-8: the lone surrogate is written as an ASCII escape
    assert json.loads(line)["response"] == json.loads(RAW)


def _v5_database(path: Path) -> None:
    db = database_at(path, 5)
    old = {"text": "hi", "finish_reason": "stop", "usage": {"input_tokens": 3,
           "output_tokens": 2, "cached_input_tokens": 0, "cache_creation_input_tokens": 0},
           "response": {"custom_id": "r1", "a": [1, 2]}}  # fmt: skip
    for line, result in ((1, old), (2, {**old, "response": None}), (3, None)):
        db.execute(
            "INSERT INTO requests (file_id, line, custom_id, model, provider, body, status,"
            " attempts, result, updated_at) VALUES (1, ?, ?, 'gpt-4o-mini', 'openai', '{}', ?,"
            " 1, ?, 0)",
            (line, f"c{line}", "succeeded" if result else "failed",
             None if result is None else json.dumps(result)),
        )  # fmt: skip
    db.commit()
    db.close()


async def test_migration_6_moves_stored_answers_apart(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    _v5_database(path)
    store = await Store(path).open()
    assert await store.schema_version() == len(MIGRATIONS) >= 6
    rows = {r["line"]: r for r in iter_file_rows(path, 1)}
    assert rows[1]["result"] == {"text": "hi", "finish_reason": "stop", "usage": {
        "input_tokens": 3, "output_tokens": 2, "cached_input_tokens": 0,
        "cache_creation_input_tokens": 0}}  # fmt: skip
    assert json.loads(rows[1]["answer"]) == {"custom_id": "r1", "a": [1, 2]}
    assert "response" not in rows[2]["result"] and rows[2]["answer"] is None
    assert rows[3]["result"] is None and rows[3]["answer"] is None
    (tmp_path / "out").mkdir()
    first, second, third = (json.loads(x) for x in _write(store, 1, tmp_path / "out"))
    assert first["response"] == {"custom_id": "r1", "a": [1, 2]} and first["text"] == "hi"
    assert second["response"] is None and third["response"] is None
    # forgetting the job removes its answers with its requests
    assert await store.forget_job(1) == 3
    await store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM answers").fetchone() == (0,)
    db.close()


async def test_results_stored_before_a_crash_count_in_the_batch(tmp_path: Path) -> None:
    # A collection cut short stored some results; the batch's counts (a canary's verdict is
    # read from them) are those plus what the collection run again stores.
    store = await Store(tmp_path / "b.sqlite3").open()
    fid = await store.claim_file("a.jsonl", "/in/a.jsonl", "/w/a.jsonl", 10)
    await store.add_requests(fid, [_request(n) for n in (1, 2, 3)])
    batch_id, ids = await _batch(store, fid, 3)
    retry = _update(ids[1], None)
    retry.update(status=RequestStatus.PENDING, result=None, next_attempt_at=0.0)
    await store.record_results(batch_id, [_update(ids[0], {"a": 1}), retry])
    rows = await store.batch_rows(batch_id)
    assert rows.recorded == {"succeeded": 1, "pending": 1}
    assert list(rows.outstanding) == [ids[2]]
    assert [rid for rid, _ in await store.batch_requests(batch_id)] == [ids[2]]
    await store.close()
