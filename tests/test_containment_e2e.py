"""Containment and lost state, end to end: ``batchd run`` as a subprocess on a real inbox.

* Lines that used to kill the process (about 1,100 nested ``[``, a lone surrogate escape in the
  text, the ``custom_id`` or the metadata, a number too large for a float) are ``invalid``
  lines with their reason; the daemon goes on and every other file is served.
* A file whose ingest killed the process twice is quarantined at the next start: a summary
  naming the reason, the input archived, the rest of the inbox served.
* A work copy the state database does not know (the database deleted after a crash) is
  ingested again and its results are written, with an error line saying so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adapters.emulator import Emulator
from daemon.check import check_file
from daemon.config import load_config

from .daemon_harness import read_results, run_once, unified, write_jsonl

MODEL = "gpt-4o-mini"


def _good(cid: str) -> dict[str, Any]:
    return unified(cid, MODEL, f"good {cid}")


def _text(cid: str, content: str, **extra: str) -> str:
    """A unified line written by hand, so that JSON escapes reach the daemon as written."""
    fields = "".join(f', "{k}": {v}' for k, v in extra.items())
    return (
        f'{{"custom_id": "{cid}", "model": "{MODEL}", '
        f'"messages": [{{"role": "user", "content": "{content}"}}]{fields}}}'
    )


# Each killer line, with a piece of the reason batchd must give for it.
KILLERS: list[tuple[str, str]] = [
    ("[" * 1100 + "]" * 1100, "nested too deeply"),
    ('{"custom_id": "deep", "metadata": ' + "[" * 150 + "]" * 150 + "}", "nested too deeply"),
    (_text("sur-text", "hi \\ud800 there"), "'messages[0].content' contains an unpaired surrogate"),
    (_text("sur-id\\udfff", "hi"), "'custom_id' contains an unpaired surrogate"),
    (_text("sur-meta", "hi", metadata='{"k": ["\\udc00"]}'), "'metadata.k[0]' contains an"),
    (_text("sur-key", "hi", metadata='{"\\ud83d": 1}'), "a key in 'metadata' contains an unpaired"),
    (_text("inf-meta", "hi", metadata='{"x": 1e999}'), "1e999 is out of range"),
    (_text("inf-temp", "hi", temperature="-1e400"), "out of range"),
]


def _killer_file(path: Path) -> list[str | None]:
    """Good lines around each killer; per line the expected reason (None: a good line)."""
    lines: list[str] = []
    expected: list[str | None] = []
    for i, (line, reason) in enumerate(KILLERS):
        lines += [json.dumps(_good(f"g{i}")), line]
        expected += [None, reason]
    lines.append(_text("pair", "a valid pair \\ud83d\\ude00 is one character"))
    expected.append(None)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return expected


async def test_killer_lines_are_invalid_and_the_daemon_goes_on(tmp_path: Path, emulator: Emulator):
    expected = _killer_file(tmp_path / "inbox" / "killers.jsonl")
    write_jsonl(tmp_path / "inbox" / "other.jsonl", [_good("o1"), _good("o2")])
    run = await run_once(tmp_path, emulator.url)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "Traceback" not in run.stderr
    results = read_results(tmp_path / "outbox" / "killers.results.jsonl")
    assert [r["line"] for r in results] == list(range(1, len(expected) + 1))
    for r, reason in zip(results, expected, strict=True):
        if reason is None:
            assert r["status"] == "succeeded", r
        else:
            assert r["status"] == "invalid", r
            assert r["error"]["message"].startswith(f"line {r['line']}: "), r
            assert reason in r["error"]["message"], (reason, r["error"])
    assert results[-1]["text"].endswith("a valid pair \U0001f600 is one character")
    assert [r["status"] for r in read_results(tmp_path / "outbox" / "other.results.jsonl")] == [
        "succeeded",
        "succeeded",
    ]
    # batchd check gives the same lines, with the same reasons, on the same file.
    cfg = load_config(flags={"root": str(tmp_path)}, env={})
    report = check_file(tmp_path / "processed" / "killers.jsonl", cfg, max_invalid=100)
    invalid = [(r["line"], r["error"]["message"]) for r in results if r["status"] == "invalid"]
    assert [(x["line"], x["reason"]) for x in report["invalid_lines"]] == invalid


async def test_a_file_that_kills_the_process_twice_is_quarantined(
    tmp_path: Path, emulator: Emulator
):
    crash = {"BATCHD_CRASH_AT": "mid_ingest"}
    write_jsonl(tmp_path / "inbox" / "a-killer.jsonl", [_good(f"k{i}") for i in range(10)])
    write_jsonl(tmp_path / "inbox" / "b-fine.jsonl", [_good("f1")])
    for attempt in (1, 2):
        run = await run_once(tmp_path, emulator.url, env=crash)
        assert run.returncode == 137, (attempt, run.stderr[-3000:])
        assert "crash point mid_ingest reached" in run.stderr
    run = await run_once(tmp_path, emulator.url)  # the third start does not read it again
    assert run.returncode == 0, run.stderr[-4000:]
    assert "resuming ingest of a-killer.jsonl" not in run.stderr
    summary = json.loads((tmp_path / "outbox" / "a-killer.summary.json").read_text())
    assert "quarantined: the process died 2 times while ingesting this file" in summary[
        "file_error"
    ]
    assert (tmp_path / "outbox" / "a-killer.results.jsonl").read_text() == ""
    assert (tmp_path / "processed" / "a-killer.jsonl").exists()
    assert read_results(tmp_path / "outbox" / "b-fine.results.jsonl")[0]["status"] == "succeeded"
    assert list((tmp_path / "inbox").iterdir()) == []
    assert list((tmp_path / "state" / "work").iterdir()) == []


async def test_one_crash_during_ingest_resumes_and_serves_the_whole_file(
    tmp_path: Path, emulator: Emulator
):
    """One death is not enough for quarantine: the pass resumes and the file is served."""
    write_jsonl(tmp_path / "inbox" / "once.jsonl", [_good(f"c{i}") for i in range(5)])
    run = await run_once(tmp_path, emulator.url, env={"BATCHD_CRASH_AT": "mid_ingest"})
    assert run.returncode == 137
    run = await run_once(tmp_path, emulator.url)
    assert run.returncode == 0, run.stderr[-4000:]
    results = read_results(tmp_path / "outbox" / "once.results.jsonl")
    assert [r["status"] for r in results] == ["succeeded"] * 5
    summary = json.loads((tmp_path / "outbox" / "once.summary.json").read_text())
    assert summary["file_error"] is None


async def test_a_lost_state_database_does_not_forget_the_work_in_hand(
    tmp_path: Path, emulator: Emulator
):
    lines = [_good(f"l{i}") for i in range(4)]
    write_jsonl(tmp_path / "inbox" / "lost.jsonl", lines)
    run = await run_once(tmp_path, emulator.url, env={"BATCHD_CRASH_AT": "after_ingest_commit"})
    assert run.returncode == 137, run.stderr[-3000:]
    (work,) = (tmp_path / "state" / "work").iterdir()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / "state" / f"batchd.sqlite3{suffix}").unlink(missing_ok=True)
    run = await run_once(tmp_path, emulator.url)
    assert run.returncode == 0, run.stderr[-4000:]
    assert f"{work.name} is in " in run.stderr
    assert "the state database does not know it" in run.stderr
    assert "may be sent a second time" in run.stderr
    results = read_results(tmp_path / "outbox" / "lost.results.jsonl")
    assert [(r["custom_id"], r["status"]) for r in results] == [
        (f"l{i}", "succeeded") for i in range(4)
    ]
    assert (tmp_path / "processed" / "lost.jsonl").exists()
    assert list((tmp_path / "state" / "work").iterdir()) == []
