"""File names, end to end: any name the filesystem allows goes through ``batchd run``.

Names of 255 bytes (ASCII and multi-byte), spaces, a leading dash, control characters with a
newline, braces, bytes that are not UTF-8: each file gets its results and its summary, every
name batchd derives fits NAME_MAX, the input is archived, and the text log stays one line per
event (a newline in a name cannot forge a log line). A file that cannot be moved out of the
inbox is refused once, loudly, and not claimed again in a loop.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from adapters.emulator import Emulator

from .daemon_harness import permissions_enforceable, read_results, run_once, unified

MODEL = "gpt-4o-mini"
NAME_MAX = 255
LOG_LINE = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [A-Z]+ ")


def _name(stem: str) -> str:
    return stem + ".jsonl"


def _long(char: str) -> str:
    """A ``.jsonl`` name of exactly 255 bytes made of ``char``."""
    width = len(char.encode())
    n = (NAME_MAX - len(".jsonl")) // width
    name = char * n + "x" * (NAME_MAX - len(".jsonl") - n * width) + ".jsonl"
    assert len(name.encode()) == NAME_MAX
    return name


NAMES: list[str] = [
    _long("a"),
    _long("é"),
    _long("日"),
    "a" * 240 + ".jsonl",  # the length at which the outbox temp name used to overflow
    _name("  spaces  and\ttab "),
    _name("--leading-dashes"),
    _name("line\nbreak 2026-01-01 00:00:00.000 ERROR forged"),
    _name("esc\x1b[31mred\x07bell"),
    _name("{braces} and {0} and %s"),
    _name("ü – 日本"),
]
RAW_NAME = b"latin1-\xe9t\xe9-\xff.jsonl"  # not UTF-8: the escaped form is used for outputs


def _drop(inbox: Path, name: str | bytes, cid: str) -> None:
    data = (json.dumps(unified(cid, MODEL, f"hello {cid}")) + "\n").encode()
    path = os.path.join(os.fsencode(inbox), name if isinstance(name, bytes) else name.encode())
    with open(path, "wb") as f:
        f.write(data)


async def test_any_name_the_filesystem_allows_goes_through(tmp_path: Path, emulator: Emulator):
    inbox = tmp_path / "inbox"
    inbox.mkdir(parents=True)
    for i, name in enumerate(NAMES):
        _drop(inbox, name, f"n{i}")
    _drop(inbox, RAW_NAME, "raw")
    run = await run_once(tmp_path, emulator.url)
    assert run.returncode == 0, run.stderr[-4000:]

    outbox = tmp_path / "outbox"
    summaries = {}
    for path in outbox.glob("*.summary.json"):
        summary = json.loads(path.read_text())
        summaries[summary["file"]] = (path, summary)
    expected = [*NAMES, "latin1-\\xe9t\\xe9-\\xff.jsonl"]
    assert sorted(summaries) == sorted(expected)  # one job per file: nothing claimed twice
    for i, name in enumerate(expected):
        path, summary = summaries[name]
        assert summary["file_error"] is None, summary
        results = path.with_name(path.name.replace(".summary.json", ".results.jsonl"))
        (result,) = read_results(results)
        assert result["status"] == "succeeded", result
        assert result["custom_id"] == ("raw" if i == len(NAMES) else f"n{i}")
    for folder in (outbox, tmp_path / "processed", tmp_path / "state" / "work"):
        assert all(len(os.fsencode(p.name)) <= NAME_MAX for p in folder.iterdir())
    assert len(list((tmp_path / "processed").iterdir())) == len(expected)
    assert os.listdir(inbox) == [] and os.listdir(tmp_path / "state" / "work") == []
    short = NAMES[4]
    assert (outbox / short.replace(".jsonl", ".results.jsonl")).exists()  # short names kept
    assert (tmp_path / "processed" / short).exists()

    log = (tmp_path / "daemon.log").read_bytes()
    assert b"Traceback" not in log
    assert all(LOG_LINE.match(line) for line in log.splitlines()), "a log line was forged"
    assert b"line\\nbreak 2026-01-01 00:00:00.000 ERROR forged" in log
    assert b"esc\\x1b[31mred\\x07bell" in log


@pytest.mark.skipif(not permissions_enforceable(), reason="cannot make a folder read-only here")
async def test_a_file_that_cannot_be_moved_is_refused_once(tmp_path: Path, emulator: Emulator):
    inbox = tmp_path / "inbox"
    inbox.mkdir(parents=True)
    _drop(inbox, "stuck.jsonl", "s1")
    inbox.chmod(0o555)  # readable, not writable: the file cannot be moved out
    try:
        run = await run_once(tmp_path, emulator.url, enforce_permissions=True)
    finally:
        inbox.chmod(0o755)
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stderr.count("cannot take stuck.jsonl from the inbox") == 1
    summaries = list((tmp_path / "outbox").glob("*.summary.json"))
    assert [p.name for p in summaries] == ["stuck.summary.json"]
    summary = json.loads(summaries[0].read_text())
    assert summary["file_error"].startswith("cannot move out of the inbox: ")
    assert (inbox / "stuck.jsonl").exists()  # left where it was
    assert "could not be taken from the inbox; it is left there" in run.stderr
