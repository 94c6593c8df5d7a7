"""Retention (``batchd gc``, daemon/gc.py) on a real state database and real files: finished
jobs older than the limits lose their files, then their rows; jobs not finished, and jobs
finished within the limits, are untouched; the database gives its pages back. Also the
cancel intent written beside the store (``batchd cancel``), and the provider-expiry check."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from daemon.config import load_config
from daemon.gc import DAY_S, collect_garbage, expiring_batches
from daemon.states import FileStatus
from daemon.store import Store, queries
from tests.daemon_harness import run_cli

BIG = "x" * 4000  # each request body: enough rows to free whole pages


def _req(line: int, status: str = "succeeded") -> dict[str, Any]:
    return {
        "line": line,
        "custom_id": f"c{line}",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "body": {"messages": [{"role": "user", "content": BIG}]},
        "size_bytes": 4000,
        "status": status,
    }


async def _job(
    store: Store, root: Path, name: str, *, finished_days_ago: float | None, lines: int = 50
) -> tuple[int, list[Path]]:
    """A job with ``lines`` requests; finished that many days ago with its three files, or
    (None) still active."""
    job = await store.claim_file(name, str(root / "inbox" / name), str(root / "work" / name), 1)
    status = "pending" if finished_days_ago is None else "succeeded"
    await store.add_requests(job, [_req(i, status) for i in range(1, lines + 1)])
    if finished_days_ago is None:
        await store.set_file_status(job, FileStatus.ACTIVE)
        return job, []
    files = [
        root / "outbox" / f"{name}.results.jsonl",
        root / "outbox" / f"{name}.summary.json",
        root / "processed" / name,
    ]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("{}\n")
    await store.set_file_status(
        job,
        FileStatus.DONE,
        results_path=str(files[0]),
        summary_path=str(files[1]),
        archived_path=str(files[2]),
        finished_at=time.time() - finished_days_ago * DAY_S,
    )
    return job, files


async def test_gc_removes_old_files_then_rows_and_leaves_the_rest(tmp_path: Path) -> None:
    cfg = load_config(None, {"root": str(tmp_path)}, env={})
    assert (cfg.retention_days, cfg.state_retention_days) == (30.0, 30.0)  # a month by default
    cfg.state_dir.mkdir(parents=True)
    store = await Store(cfg.state_dir / "batchd.sqlite3").open()
    try:
        old, old_files = await _job(store, tmp_path, "old.jsonl", finished_days_ago=45)
        recent, recent_files = await _job(store, tmp_path, "recent.jsonl", finished_days_ago=3)
        active, _ = await _job(store, tmp_path, "active.jsonl", finished_days_ago=None)
        assert (await store.free_space())[0] == 2  # a new database: incremental auto-vacuum

        report = await collect_garbage(cfg, store)

        assert not any(f.exists() for f in old_files)
        assert all(f.exists() for f in recent_files)
        assert report.files_removed == 3 and report.jobs_forgotten == 1
        assert report.requests_forgotten == 50
        assert await store.file(old) is None
        assert (await store.file(recent) or {})["status"] == FileStatus.DONE
        assert (await store.file(active) or {})["status"] == FileStatus.ACTIVE
        assert sum((await store.request_counts(active)).values()) == 50
        assert sum((await store.request_counts(recent)).values()) == 50
        assert report.bytes_reclaimed > 50 * 4000 // 2  # the prompts' pages went back
        again = await collect_garbage(cfg, store)  # idempotent: nothing more to do
        assert (again.files_removed, again.jobs_forgotten) == (0, 0)
    finally:
        await store.close()


async def test_rows_outlive_kept_files_and_zero_keeps_for_ever(tmp_path: Path) -> None:
    flags = {"root": str(tmp_path)}
    env = {"BATCHD_RETENTION_DAYS": "60", "BATCHD_STATE_RETENTION_DAYS": "10"}
    cfg = load_config(None, flags, env=env)
    cfg.state_dir.mkdir(parents=True)
    store = await Store(cfg.state_dir / "batchd.sqlite3").open()
    try:
        job, files = await _job(store, tmp_path, "mid.jsonl", finished_days_ago=20)
        report = await collect_garbage(cfg, store)
        # Its files are kept 60 days, so its row stays too (files go only through their row).
        assert all(f.exists() for f in files) and await store.file(job) is not None
        assert report.jobs_forgotten == 0
        forever = load_config(None, flags, env={"BATCHD_RETENTION_DAYS": "0"})
        report = await collect_garbage(forever, store, now=time.time() + 400 * DAY_S)
        assert all(f.exists() for f in files)  # files kept for ever; the row may go
        assert report.jobs_forgotten == 1 and await store.file(job) is None
    finally:
        await store.close()


async def test_gc_command_beside_the_state_folder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    store = await Store(state / "batchd.sqlite3").open()
    _, files = await _job(store, tmp_path, "a.jsonl", finished_days_ago=31)
    await store.close()
    out = run_cli(["gc", "--root", str(tmp_path)])
    assert out.returncode == 0, out.stderr
    assert "3 files removed" in out.stdout and "1 finished jobs forgotten" in out.stdout
    assert not any(f.exists() for f in files)
    missing = run_cli(["gc", "--root", str(tmp_path / "none")])
    assert missing.returncode == 1 and "no state database" in missing.stderr


async def test_gc_with_no_daemon_gives_an_old_database_the_new_page_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database made before new ones got 16 KiB pages (4 KiB, WAL) is rewritten with them
    by ``batchd gc`` when no daemon runs; its jobs are all still there."""
    state = tmp_path / "state"
    state.mkdir()
    with monkeypatch.context() as m:
        m.setattr(queries, "NEW_DB_PRAGMAS", ("PRAGMA auto_vacuum=INCREMENTAL",))
        store = await Store(state / "batchd.sqlite3").open()
    await _job(store, tmp_path, "a.jsonl", finished_days_ago=1)
    assert await store.page_size() == 4096
    await store.close()
    out = run_cli(["gc", "--root", str(tmp_path)])
    assert out.returncode == 0, out.stderr
    assert "database rewritten by VACUUM" in out.stdout
    store = await Store(state / "batchd.sqlite3").open()
    try:
        assert await store.page_size() == queries.NEW_DB_PAGE_SIZE
        assert await store.quick_check() == []
        assert [f["name"] for f in await store.files_in(*FileStatus)] == ["a.jsonl"]
    finally:
        await store.close()


def test_expiring_batches_warns_a_day_before_the_provider_deletes() -> None:
    now = time.time()
    batches = [
        {"provider": "anthropic", "submitted_at": now - 28.5 * DAY_S, "created_at": 0},
        {"provider": "anthropic", "submitted_at": now - 27 * DAY_S, "created_at": 0},
        {"provider": "openai", "submitted_at": now - 29.2 * DAY_S, "created_at": 0},
        {"provider": "openai", "submitted_at": None, "created_at": now - 31 * DAY_S},
        {"provider": "gemini", "submitted_at": now - 90 * DAY_S, "created_at": 0},
    ]
    found = expiring_batches(batches, now)
    assert [b["provider"] for b, _ in found] == ["anthropic", "openai", "openai"]
    assert 0 < found[0][1] <= DAY_S and found[2][1] < 0
