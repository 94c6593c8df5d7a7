"""The state folder, end to end: one daemon per folder, a corrupt or lost database, owner-only
modes, and SIGHUP. Each with ``batchd run`` as a real subprocess.

* A second daemon on the same state folder is refused (exit 2, naming the holder's PID) before
  it touches anything there (a spool file of the first one survives).
* A database that is not SQLite, or damaged, stops the start with a clear error naming the
  file and what to do (exit 2, no traceback); a missing one is created.
* A database deleted or replaced while the daemon runs ends it non-zero, said in the log.
* Under umask 022 the state folder is 0700 and the database files 0600; looser modes found at
  start are tightened and said. An archived input gets the outbox's mode, not the dropper's.
* SIGHUP reloads the configuration: live keys take effect, others are said to need a restart,
  an invalid file is refused with the running configuration kept.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.emulator import Emulator

from .daemon_harness import (
    finish,
    journal,
    read_results,
    run_once,
    start_daemon,
    stop,
    unified,
    wait_for,
    wait_for_log,
    write_jsonl,
)

LINES = [unified(f"s{i}", "gpt-4o-mini", f"state {i}") for i in range(3)]


def _db(root: Path) -> Path:
    return root / "state" / "batchd.sqlite3"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The daemon inherits the usual login umask (the files it creates would be 0644)."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


async def test_a_second_daemon_is_refused_before_touching_the_folder(
    tmp_path: Path, emulator: Emulator
):
    first = await start_daemon(tmp_path, emulator.url, once=False)
    await wait_for_log(first, "batchd started")
    spool = tmp_path / "state" / "spool"
    spool.mkdir(exist_ok=True)
    in_flight = spool / "batchd-0123.jsonl"  # as if the first one were uploading it
    in_flight.write_text("{}\n")
    second = await start_daemon(tmp_path, emulator.url, once=False)
    run = await finish(second, timeout=30)
    assert run.returncode == 2, run.stderr[-3000:]
    assert f"another batchd (PID {first.pid}) is running on the state folder" in run.stderr
    assert "Traceback" not in run.stderr
    assert in_flight.exists()  # not cleared: the lock is taken before anything else
    assert first.running()
    write_jsonl(tmp_path / "inbox" / "a.jsonl", LINES)  # the first one still serves
    await wait_for(lambda: _exists(tmp_path / "outbox" / "a.results.jsonl"), what="results")
    assert (await stop(first)).returncode == 0
    in_flight.unlink()
    run = await run_once(tmp_path, emulator.url)  # the lock is free again once it ended
    assert run.returncode == 0, run.stderr[-3000:]


async def _exists(path: Path) -> bool:
    return path.exists()


@pytest.mark.parametrize("kind", ["not sqlite", "malformed"])
async def test_a_corrupt_database_is_a_clear_error(tmp_path: Path, emulator: Emulator, kind: str):
    db = _db(tmp_path)
    if kind == "not sqlite":
        db.parent.mkdir(parents=True)
        db.write_text("these are not the rows you are looking for\n" * 100)
        expected = "is not a SQLite database"
    else:
        write_jsonl(tmp_path / "inbox" / "a.jsonl", LINES * 200)  # a database of a few pages
        assert (await run_once(tmp_path, emulator.url)).returncode == 0
        data = bytearray(db.read_bytes())
        page = int.from_bytes(data[16:18], "big")  # the page size, from the file's header
        assert len(data) > 6 * page
        data[2 * page : 5 * page] = b"\xa5" * (3 * page)  # b-tree pages overwritten
        db.write_bytes(bytes(data))
        expected = "is damaged"
    before = db.read_bytes()
    run = await run_once(tmp_path, emulator.url)
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    said = next(line for line in run.stderr.splitlines() if "cannot start" in line)
    assert f"the state database {db} {expected}" in said
    assert "move it aside" in said.lower() and f"mv '{db}'" in said
    assert db.read_bytes() == before  # left as it was, for whoever looks into it
    db.rename(db.with_name("batchd.sqlite3.broken"))
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    run = await run_once(tmp_path, emulator.url)  # moved aside: a new database, a fresh start
    assert run.returncode == 0, run.stderr[-3000:]
    assert "creating it (first start)" in run.stderr


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_database_lost_while_running_stops_the_daemon(
    tmp_path: Path, emulator: Emulator, how: str
):
    proc = await start_daemon(tmp_path, emulator.url, once=False)
    await wait_for_log(proc, "batchd started")
    db = _db(tmp_path)
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            db.with_name(db.name + suffix).unlink(missing_ok=True)
    else:
        copy = tmp_path / "backup.sqlite3"
        with sqlite3.connect(db) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
        os.replace(copy, db)
    run = await finish(proc, timeout=30)
    assert run.returncode == 1, run.stderr[-3000:]
    expected = "was deleted" if how == "deleted" else "was replaced by another file"
    assert f"state lost: {db} {expected} while batchd runs" in run.stderr
    run = await run_once(tmp_path, emulator.url)  # a restart works from what is on disk
    assert run.returncode == 0, run.stderr[-3000:]


async def test_state_files_are_owner_only_under_umask_022(
    tmp_path: Path, emulator: Emulator, umask_022: None
):
    dropped = write_jsonl(tmp_path / "inbox" / "a.jsonl", LINES)
    assert _mode(dropped) == 0o644  # world-readable, as the dropper made it
    proc = await start_daemon(tmp_path, emulator.url, once=False)
    await wait_for(lambda: _exists(tmp_path / "processed" / "a.jsonl"), what="the archived input")
    assert _mode(tmp_path / "outbox" / "a.results.jsonl") == 0o640
    assert _mode(tmp_path / "processed" / "a.jsonl") == 0o640  # the outbox's mode, not 0644
    state = tmp_path / "state"
    assert _mode(state) == 0o700
    db_files = [p for p in state.iterdir() if p.name.startswith("batchd.sqlite3")]
    assert {p.name for p in db_files} >= {"batchd.sqlite3", "batchd.sqlite3-wal"}
    for path in db_files:
        assert _mode(path) == 0o600, (path, oct(_mode(path)))
    assert (await stop(proc)).returncode == 0
    os.chmod(state, 0o755)  # as an older batchd, or a careless restore, left them
    os.chmod(_db(tmp_path), 0o644)
    run = await run_once(tmp_path, emulator.url)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _mode(state) == 0o700 and _mode(_db(tmp_path)) == 0o600
    assert "had mode 755 (readable by others); tightened to 700" in run.stderr
    assert "had mode 644 (readable by others); tightened to 600" in run.stderr


async def test_sighup_reloads_live_keys_and_keeps_the_rest(tmp_path: Path, emulator: Emulator):
    proc = await start_daemon(tmp_path, emulator.url, once=False)
    await wait_for_log(proc, "batchd started")
    config = proc.config
    original = config.read_text()
    config.write_text(
        original
        + '\ninbox = "elsewhere"\nbatch_sizing = "fixed"\n'
        + "[providers.openai]\nbatch_size = 2\n"
    )
    proc.signal(signal.SIGHUP)
    await wait_for_log(proc, "configuration reload: providers.openai.batch_size = 2 (was 50)")
    await wait_for_log(proc, "configuration reload: inbox changed")
    assert "needs a restart" in proc.log()
    five = [unified(f"f{i}", "gpt-4o-mini", f"x{i}") for i in range(5)]
    write_jsonl(tmp_path / "inbox" / "five.jsonl", five)
    await wait_for(lambda: _exists(tmp_path / "outbox" / "five.results.jsonl"), what="results")
    results = read_results(tmp_path / "outbox" / "five.results.jsonl")
    assert [r["status"] for r in results] == ["succeeded"] * 5
    # batches of 2, 2 and 1: fixed sizes, reloaded live too (adaptive would grow after 2)
    assert len({r["batch_ids"][0] for r in results}) == 3
    assert (await journal(emulator.url))["providers"]["openai"]["batches_created"] == 3

    config.write_text(original + "\n[providers.openai]\nbatchsize = 2\n")  # a typo
    proc.signal(signal.SIGHUP)
    await wait_for_log(proc, "configuration reload refused")
    assert "providers.openai.batchsize: unknown key" in proc.log()
    assert "the running configuration is kept" in proc.log()
    assert proc.running()
    run = await stop(proc)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr


def test_the_unit_does_not_restart_on_a_configuration_error() -> None:
    unit = (Path(__file__).resolve().parents[1] / "systemd" / "batchd.service").read_text()
    lines = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line)
    assert lines["Restart"] == "on-failure"
    assert lines["RestartPreventExitStatus"].split() == ["2"]
    assert lines["ExecReload"] == "/bin/kill -HUP $MAINPID"



async def test_a_state_folder_whose_path_has_uri_characters(tmp_path: Path, emulator: Emulator):
    """'#', '?' and '%' in the folder's path: the database is opened read-only by URI (outbox
    writer, status), where they would cut or change the path unless escaped."""
    root = tmp_path / "batch #1 ?50% done"
    write_jsonl(root / "inbox" / "a.jsonl", LINES)
    run = await run_once(root, emulator.url)
    assert run.returncode == 0, run.stderr[-3000:]
    results = read_results(root / "outbox" / "a.results.jsonl")
    assert [r["status"] for r in results] == ["succeeded"] * 3
