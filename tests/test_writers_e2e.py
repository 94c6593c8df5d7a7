"""Files still being written, end to end: nothing a writer adds is dropped without a word.

* A writer that keeps the file open and appends a line every 1.2-1.4 s (longer than
  ``settle_s``): the file is not taken while it is open, and every line gets its result.
* A writer batchd did not see (it opens the file after it was taken, as another user's process
  or one on another host could): the lines it appends to the work copy are ingested as more
  requests of the same job.
* A last line still without its end when the file is finished: the summary names the bytes
  that arrived late (they are in the archived input).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from adapters.emulator import Emulator

from .daemon_harness import (
    finish,
    read_results,
    start_daemon,
    stop,
    unified,
    wait_for,
    wait_for_log,
    write_jsonl,
)

MODEL = "gpt-4o-mini"

# A writer that holds the file open the whole time, with pauses longer than settle_s.
WRITER = """
import json, random, sys, time
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "a") as f:
    for i in range(n):
        line = {"custom_id": f"w{i}", "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"slow line {i}"}]}
        f.write(json.dumps(line) + "\\n")
        f.flush()
        if i < n - 1:
            time.sleep(random.uniform(1.2, 1.4))
"""


def _line(cid: str) -> str:
    return json.dumps(unified(cid, MODEL, f"hello {cid}"))


async def _exists(path: Path) -> bool:
    return path.exists()


async def _lines_in(path: Path, n: int) -> bool:
    return path.exists() and path.read_text().count("\n") >= n


async def test_a_file_held_open_by_its_writer_is_taken_once_closed(
    tmp_path: Path, emulator: Emulator
):
    inbox = tmp_path / "inbox"
    inbox.mkdir(parents=True)
    target = inbox / "slow.jsonl"
    n = 5
    proc = await start_daemon(tmp_path, emulator.url, once=False, config_extra="settle_s = 1.0\n")
    await wait_for_log(proc, "batchd started")
    writer = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, str(target), str(n))
    try:
        await wait_for(lambda: _lines_in(target, 2), what="the writer's second line")
        assert target.exists(), "taken while its writer had it open"
        assert await asyncio.wait_for(writer.wait(), 60) == 0
        summary = tmp_path / "outbox" / "slow.summary.json"
        await wait_for(lambda: _exists(summary), timeout=60, what="the results")
    finally:
        if writer.returncode is None:
            writer.kill()
            await writer.wait()
    run = await stop(proc)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "slow.jsonl is still open for writing by another process (lease)" in run.stderr
    results = read_results(tmp_path / "outbox" / "slow.results.jsonl")
    assert [(r["custom_id"], r["status"]) for r in results] == [
        (f"w{i}", "succeeded") for i in range(n)
    ]


async def _work_copy(tmp_path: Path) -> Path:
    found: list[Path] = []

    async def taken() -> bool:
        found[:] = list((tmp_path / "state" / "work").glob("*grow.jsonl"))
        return bool(found)

    await wait_for(taken, what="the file taken into state/work")
    return found[0]


async def test_lines_appended_after_the_file_was_taken_are_ingested(
    tmp_path: Path, emulator: Emulator
):
    write_jsonl(tmp_path / "inbox" / "grow.jsonl", [unified(f"g{i}", MODEL, "x") for i in range(3)])
    # The linger keeps the first batch back, so the appends come before the file is finished.
    proc = await start_daemon(tmp_path, emulator.url, config_extra="batch_linger_s = 3\n")
    work = await _work_copy(tmp_path)
    await wait_for_log(proc, "file ingested: grow.jsonl")  # its first pass has read it
    with work.open("a") as f:  # a writer that opened the file after batchd took it
        f.write(_line("late1") + "\n" + _line("late2") + "\n")
    run = await finish(proc, 90)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "grow.jsonl grew by" in run.stderr
    results = read_results(tmp_path / "outbox" / "grow.results.jsonl")
    assert [(r["line"], r["custom_id"], r["status"]) for r in results] == [
        (1, "g0", "succeeded"),
        (2, "g1", "succeeded"),
        (3, "g2", "succeeded"),
        (4, "late1", "succeeded"),
        (5, "late2", "succeeded"),
    ]
    summary = json.loads((tmp_path / "outbox" / "grow.summary.json").read_text())
    assert summary["file_error"] is None and summary["lines"] == 5


async def test_a_line_still_being_written_when_the_file_ends_is_reported(
    tmp_path: Path, emulator: Emulator
):
    write_jsonl(tmp_path / "inbox" / "grow.jsonl", [unified(f"g{i}", MODEL, "x") for i in range(2)])
    proc = await start_daemon(tmp_path, emulator.url, config_extra="batch_linger_s = 2\n")
    work = await _work_copy(tmp_path)
    await wait_for_log(proc, "file ingested: grow.jsonl")
    fragment = '{"custom_id": "half", "model": '
    with work.open("a") as f:  # held open, its last line unfinished, until the results exist
        f.write(fragment)
        f.flush()
        run = await finish(proc, 90)
    assert run.returncode == 0, run.stderr[-4000:]
    results = read_results(tmp_path / "outbox" / "grow.results.jsonl")
    assert [r["custom_id"] for r in results] == ["g0", "g1"]
    summary: dict[str, Any] = json.loads((tmp_path / "outbox" / "grow.summary.json").read_text())
    late = len(fragment.encode())
    assert f"{late} bytes arrived after the file was read" in summary["file_error"]
    assert (tmp_path / "processed" / "grow.jsonl").read_text().endswith(fragment)
