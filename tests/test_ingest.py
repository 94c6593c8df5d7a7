"""Ingest passes against a real SQLite store and real files: containment of one file, resumed
passes that store nothing twice, the quarantine count, refused moves, unknown work copies and
growth of the work copy."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daemon import chunks, ingest, watcher
from daemon.config import Config, load_config
from daemon.ingest import claim, recover, take_growth
from daemon.recovery import QUARANTINE_AFTER
from daemon.store import Store
from daemon.validate import Invalid, Request


def _line(i: int, **extra: Any) -> str:
    body = {"custom_id": f"c{i}", "model": "gpt-4o-mini"}
    return json.dumps(body | {"messages": [{"role": "user", "content": f"q{i}"}]} | extra)


def _drop(cfg: Config, name: str, n: int) -> Path:
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    path = cfg.inbox / name
    path.write_text("".join(_line(i) + "\n" for i in range(n)))
    return path


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return load_config(flags={"root": str(tmp_path)}, env={})


@pytest.fixture
async def store(cfg: Config) -> AsyncIterator[Store]:
    s = await Store(cfg.state_dir / "batchd.sqlite3").open()
    try:
        yield s
    finally:
        await s.close()


def _rows(store: Store, file_id: int) -> list[tuple[int, str, str]]:
    db = sqlite3.connect(store.path)
    try:
        sql = "SELECT line, custom_id, status FROM requests WHERE file_id = ? ORDER BY line"
        return db.execute(sql, (file_id,)).fetchall()
    finally:
        db.close()


async def test_an_unexpected_error_is_contained_to_its_file(
    cfg: Config, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunks, "CHUNK", 3)
    real = ingest.next_chunk
    calls = []

    def failing(lines: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("a bug")
        return real(lines)

    monkeypatch.setattr(ingest, "next_chunk", failing)
    file_id = await claim(cfg, store, _drop(cfg, "bad.jsonl", 10))
    assert file_id is not None
    row = await store.file(file_id)
    assert row is not None and row["status"] == "active"
    assert row["error"].startswith("ingest failed after line 3: RuntimeError: a bug")
    assert row["ingest_starts"] == 0 and row["read_bytes"] == -1  # ended, not read to its end
    assert [r[0] for r in _rows(store, file_id)] == [1, 2, 3]  # the stored lines go on
    monkeypatch.setattr(ingest, "next_chunk", real)
    other = await claim(cfg, store, _drop(cfg, "fine.jsonl", 4))  # the next file is served
    assert other is not None and len(_rows(store, other)) == 4


async def test_a_stopped_pass_resumes_without_storing_a_line_twice(
    cfg: Config, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunks, "CHUNK", 4)
    stop = asyncio.Event()
    real = ingest.store_lines

    async def stop_after_first(*args: Any) -> Any:
        stored = await real(*args)
        stop.set()  # a shutdown arrives while the first chunk is stored
        return stored

    monkeypatch.setattr(ingest, "store_lines", stop_after_first)
    file_id = await claim(cfg, store, _drop(cfg, "big.jsonl", 10), stop)
    assert file_id is not None
    row = await store.file(file_id)
    assert row is not None and row["status"] == "ingesting"
    assert row["ingest_starts"] == 0  # a clean stop does not count toward quarantine
    assert len(_rows(store, file_id)) == 4
    monkeypatch.setattr(ingest, "store_lines", real)
    await recover(cfg, store)
    row = await store.file(file_id)
    assert row is not None and (row["status"], row["lines"]) == ("active", 10)
    assert [r[0] for r in _rows(store, file_id)] == list(range(1, 11))


async def test_passes_that_died_are_counted_and_quarantined(cfg: Config, store: Store) -> None:
    file_id = await claim(cfg, store, _drop(cfg, "k.jsonl", 3))
    assert file_id is not None
    await store.set_file_status(file_id, "ingesting")
    for _ in range(QUARANTINE_AFTER):  # passes begun, never ended: the process died in them
        await store.note_ingest_start(file_id)
    await recover(cfg, store)
    row = await store.file(file_id)
    assert row is not None and row["status"] == "active"
    assert row["error"].startswith(
        f"quarantined: the process died {QUARANTINE_AFTER} times while ingesting this file"
    )
    assert "lines 1 to 3 were stored before and go on" in row["error"]


async def test_a_line_the_store_refuses_is_stored_invalid(cfg: Config, store: Store) -> None:
    file_id = await store.claim_file("x.jsonl", "x", "x", 0)
    good = Request(1, "a", "gpt-4o-mini", "openai", {"model": "gpt-4o-mini"}, size_bytes=10)
    bad = Request(2, "b", "gpt-4o-mini", "openai", {"model": "gpt-4o-mini"}, {"k": "\ud800"})
    stored = await chunks.store_lines(store, file_id, [good, bad])
    assert stored[0] is good and isinstance(stored[1], Invalid)
    assert stored[1].reason.startswith("line 2: cannot be stored: UnicodeEncodeError")
    assert _rows(store, file_id) == [(1, "a", "pending"), (2, "line-2", "invalid")]


async def test_lines_stored_after_their_jobs_cancel_end_canceled(
    cfg: Config, store: Store
) -> None:
    mine = await store.claim_file("mine.jsonl", "x", "x", 0)
    other = await store.claim_file("other.jsonl", "y", "y", 0)
    lines = [Request(i, f"c{i}", "gpt-4o-mini", "openai", {"model": "m"}) for i in (1, 2)]
    await chunks.store_lines(store, mine, [chunks.stored(lines[0])])
    assert await store.request_cancel(mine)
    bad = Invalid(3, "line-3", "line 3: nope")
    rows = [chunks.stored(lines[1]), bad]
    assert await chunks.store_lines(store, mine, rows) == rows
    await chunks.store_lines(store, other, [chunks.stored(lines[0])])
    db = sqlite3.connect(store.path)
    try:
        sql = "SELECT file_id, line, status, error FROM requests ORDER BY file_id, line"
        got = db.execute(sql).fetchall()
    finally:
        db.close()
    canceled = json.dumps(
        {"type": "job_canceled", "message": "the job was canceled (batchd cancel) before this "
         "request got an answer", "code": None}, separators=(",", ":"),
    )  # fmt: skip
    invalid = json.dumps({"type": "invalid_request", "message": "line 3: nope", "code": None},
                         separators=(",", ":"))  # fmt: skip
    assert got == [
        (mine, 1, "pending", None),  # stored before the cancel: the daemon's cancel ends it
        (mine, 2, "canceled", canceled),
        (mine, 3, "invalid", invalid),
        (other, 1, "pending", None),
    ]


async def test_a_file_that_cannot_be_moved_is_refused_and_left_alone(
    cfg: Config, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _drop(cfg, "stuck.jsonl", 2)

    def refuse(src: Path, dst: Path) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ingest, "move", refuse)
    file_id = await claim(cfg, store, path)
    assert file_id is not None
    row = await store.file(file_id)
    assert row is not None and row["work_path"] == row["inbox_path"] == str(path)
    assert row["error"].startswith("cannot move out of the inbox: [Errno 13] Permission denied")
    inbox = watcher.Inbox(cfg.inbox, settle_s=0)
    assert inbox.scan(now=0) == ([], 0) and inbox.scan(now=1) == ([], 0)  # not taken again
    path.write_text(_line(9) + "\n")  # changed: tried again
    inbox.scan(now=2)
    assert inbox.scan(now=3) == ([path], 0)


async def test_unknown_work_copies_are_ingested_again(cfg: Config, store: Store) -> None:
    work = cfg.state_dir / "work"
    work.mkdir(parents=True)
    (work / "0123abcd-lost.jsonl").write_text(_line(1) + "\n" + _line(2) + "\n")
    (work / ".0123abcd-half.jsonl.tmp-99").write_text("a partial copy")
    known = await claim(cfg, store, _drop(cfg, "known.jsonl", 1))
    await recover(cfg, store)
    files = await store.files_in("active")
    assert sorted(f["name"] for f in files) == ["known.jsonl", "lost.jsonl"]
    lost = next(f for f in files if f["name"] == "lost.jsonl")
    assert lost["id"] != known and len(_rows(store, lost["id"])) == 2
    assert sorted(p.name for p in work.iterdir()) == sorted(
        [Path(f["work_path"]).name for f in files]
    )
    await recover(cfg, store)  # known now: not ingested a second time
    assert len(await store.files_in("active")) == 2


async def test_growth_of_the_work_copy_is_ingested_as_more_lines(cfg: Config, store: Store) -> None:
    file_id = await claim(cfg, store, _drop(cfg, "g.jsonl", 2))
    assert file_id is not None
    row = await store.file(file_id)
    assert row is not None
    assert not await take_growth(cfg, store, row)
    work = Path(row["work_path"])
    with work.open("a") as f:
        f.write(_line(2) + "\n" + _line(0) + "\n" + '{"custom_id": "half"')
        f.flush()
        row = await store.file(file_id)
        assert row is not None
        assert await take_growth(cfg, store, row)  # a writer holds it: the half line waits
        row = await store.file(file_id)
        assert row is not None and row["lines"] == 4
        assert ingest.late_bytes(row) == len('{"custom_id": "half"')
    statuses = [(r[0], r[1], r[2]) for r in _rows(store, file_id)]
    assert statuses == [
        (1, "c0", "pending"),
        (2, "c1", "pending"),
        (3, "c2", "pending"),
        (4, "c0", "invalid"),  # a duplicate custom_id of line 1: the whole file is seen
    ]
