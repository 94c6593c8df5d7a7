"""Resources, end to end: an outbox that cannot be written, a full disk, the free-disk check.

Tests run as root, where chmod stops nothing; the daemon is started without the two
capabilities that let root ignore file modes (see ``daemon_harness._drop_dac_caps``), so a
read-only outbox really refuses its writes. The full disk is a tiny tmpfs mounted on the
outbox (skipped where mounting is not allowed).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.emulator import Emulator
from daemon.crashpoints import AFTER_INGEST_COMMIT, MID_OUTBOX_WRITE

from .daemon_harness import (
    crash_at,
    finish,
    permissions_enforceable,
    read_results,
    run_once,
    start_daemon,
    stop,
    unified,
    wait_for,
    wait_for_log,
    write_jsonl,
)

LINES = [unified(f"r{i}", "gpt-4o-mini", f"resource {i}") for i in range(5)]


def _assert_answered(path: Path) -> None:
    results = read_results(path)
    assert [r["custom_id"] for r in results] == [x["custom_id"] for x in LINES]
    assert all(r["status"] == "succeeded" for r in results)


@pytest.mark.skipif(not permissions_enforceable(), reason="cannot make a folder read-only here")
async def test_outbox_not_writable_is_retried_until_it_is(tmp_path: Path, emulator: Emulator):
    outbox = tmp_path / "outbox"
    outbox.mkdir(parents=True)
    outbox.chmod(0o555)
    write_jsonl(tmp_path / "inbox" / "f.jsonl", LINES)
    proc = await start_daemon(tmp_path, emulator.url, enforce_permissions=True)
    log = await wait_for_log(proc, "cannot write results of f.jsonl", count=3)
    assert "Permission denied" in log
    assert not list(outbox.iterdir())  # nothing half-written, no temp file left
    outbox.chmod(0o755)
    run = await finish(proc)
    assert run.returncode == 0, run.stderr[-4000:]
    _assert_answered(outbox / "f.results.jsonl")
    assert sorted(p.name for p in outbox.iterdir()) == ["f.results.jsonl", "f.summary.json"]


@pytest.fixture
def tiny_outbox(tmp_path: Path) -> Iterator[Path]:
    """The outbox on a 256 KiB tmpfs, filled up (root with CAP_SYS_ADMIN only)."""
    outbox = tmp_path / "outbox"
    outbox.mkdir(parents=True)
    mount = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(outbox)]
    try:
        done = subprocess.run(mount, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield outbox
    finally:
        subprocess.run(["umount", "-l", str(outbox)], capture_output=True, timeout=30, check=False)


def _fill(folder: Path) -> Path:
    filler = folder / ".filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


async def test_disk_full_outbox_is_retried_until_space_is_freed(
    tmp_path: Path, emulator: Emulator, tiny_outbox: Path
):
    filler = _fill(tiny_outbox)
    write_jsonl(tmp_path / "inbox" / "f.jsonl", LINES)
    # The free-disk check would keep the file in the inbox; here the write itself must fail.
    proc = await start_daemon(tmp_path, emulator.url, config_extra="min_free_disk_mb = 0\n")
    log = await wait_for_log(proc, "cannot write results of f.jsonl", count=3)
    assert "No space left on device" in log
    filler.unlink()
    run = await finish(proc)
    assert run.returncode == 0, run.stderr[-4000:]
    _assert_answered(tiny_outbox / "f.results.jsonl")
    summary = json.loads((tiny_outbox / "f.summary.json").read_text())
    assert summary["counts"]["succeeded"] == len(LINES)


async def test_low_disk_stops_new_files_and_finishes_the_work_in_hand(
    tmp_path: Path, emulator: Emulator
):
    """The threshold is set absurdly high: a file already ingested is answered and written;
    a new one waits in the inbox, and the log says why."""
    write_jsonl(tmp_path / "inbox" / "in_hand.jsonl", LINES)
    crashed = await run_once(tmp_path, emulator.url, env=crash_at(AFTER_INGEST_COMMIT))
    assert crashed.returncode == 137, crashed.stderr[-4000:]
    write_jsonl(tmp_path / "inbox" / "new.jsonl", LINES)
    proc = await start_daemon(
        tmp_path, emulator.url, once=False, config_extra="min_free_disk_mb = 1000000000\n"
    )
    await wait_for(
        lambda: _exists(tmp_path / "outbox" / "in_hand.summary.json"), what="in-hand results"
    )
    log = await wait_for_log(proc, "low disk space")
    assert "below min_free_disk_mb = 1000000000; new files wait in the inbox" in log
    run = await stop(proc)
    assert run.returncode == 0, run.stderr[-4000:]
    _assert_answered(tmp_path / "outbox" / "in_hand.results.jsonl")
    assert (tmp_path / "inbox" / "new.jsonl").exists()
    assert not (tmp_path / "outbox" / "new.results.jsonl").exists()
    assert run.stderr.count("low disk space") == 1  # said once, not on every scan


async def _exists(path: Path) -> bool:
    return path.exists()


async def test_crash_mid_outbox_write_is_redone_and_leaves_no_temp_file(
    tmp_path: Path, emulator: Emulator
):
    outbox = tmp_path / "outbox"
    write_jsonl(tmp_path / "inbox" / "f.jsonl", LINES)
    crashed = await run_once(tmp_path, emulator.url, env=crash_at(MID_OUTBOX_WRITE))
    assert crashed.returncode == 137, crashed.stderr[-4000:]
    [left] = [p.name for p in outbox.iterdir()]  # half a results file, under its temp name
    assert left.startswith(".f.results.jsonl.tmp-")
    run = await run_once(tmp_path, emulator.url)
    assert run.returncode == 0, run.stderr[-4000:]
    _assert_answered(outbox / "f.results.jsonl")
    assert sorted(p.name for p in outbox.iterdir()) == ["f.results.jsonl", "f.summary.json"]
