"""Derived names: NAME_MAX, stable shortening, UTF-8 safety, the outbox and archive sequences on
disk, and the one-line log."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from daemon import names
from daemon.outbox import archive_input, reserve_names, write_outputs
from daemon.text import escape

NAME_MAX = 255


def _bytes(name: str) -> int:
    return len(os.fsencode(name))


def test_short_names_are_kept_as_they_are() -> None:
    assert names.outbox_pair("in", "") == ("in.results.jsonl", "in.summary.json")
    assert names.outbox_pair("in", ".7") == ("in.7.results.jsonl", "in.7.summary.json")
    assert names.work_name("ab12cd34", "my file.jsonl") == "ab12cd34-my file.jsonl"
    assert names.temp_name("in.results.jsonl", 42) == ".in.results.jsonl.tmp-42"
    assert names.archive_name("in", ".3", ".jsonl") == "in.3.jsonl"
    assert names.name_of_work("ab12cd34-my-file.jsonl") == "my-file.jsonl"
    assert names.name_of_work("not-a-token.jsonl") == "not-a-token.jsonl"


@pytest.mark.parametrize("char", ["a", "é", "日", "😀"])
def test_long_names_shorten_stably_within_name_max(char: str) -> None:
    stem = char * 300
    results, summary = names.outbox_pair(stem, ".123456")
    assert _bytes(results) <= NAME_MAX and _bytes(summary) <= NAME_MAX
    assert results.endswith(".123456.results.jsonl") and summary.endswith(".123456.summary.json")
    assert results.removesuffix(".results.jsonl") == summary.removesuffix(".summary.json")
    assert "~" + names.digest(stem) in results
    assert names.outbox_pair(stem, ".123456") == (results, summary)  # stable
    assert names.outbox_pair(stem + "b", ".123456") != (results, summary)  # the tail counts
    for derived in (
        names.work_name("ab12cd34", stem + ".jsonl"),
        names.temp_name(results, 4194304),
        names.archive_name(stem, ".99", ".jsonl"),
    ):
        assert _bytes(derived) <= NAME_MAX, derived
        derived.encode("utf-8")  # a cut never splits a character


def test_names_that_are_not_utf8_are_carried_escaped() -> None:
    raw = os.fsdecode(b"caf\xe9-\xff.jsonl")
    shown = names.display(raw)
    assert shown == "caf\\xe9-\\xff.jsonl"
    assert names.display("plain ü.jsonl") == "plain ü.jsonl"
    assert names.work_name("ab12cd34", raw) == "ab12cd34-caf\\xe9-\\xff.jsonl"
    assert names.display("\ud800") == "\\ud800"  # a surrogate that stands for no byte


def test_long_names_on_disk_never_overwrite(tmp_path: Path) -> None:
    stem = "é" * 200
    taken = []
    for _ in range(4):
        targets = reserve_names(tmp_path, stem, 1234567)
        rows = [{"custom_id": f"c{len(taken)}", "line": 1, "status": "invalid"}]
        write_outputs(tmp_path, stem, 1234567, rows, summary_meta={}, targets=targets)
        taken.append(targets)
    assert len({t for pair in taken for t in pair}) == 8
    assert [json.loads(t[0].read_text())["custom_id"] for t in taken] == ["c0", "c1", "c2", "c3"]
    assert all(_bytes(p.name) <= NAME_MAX for p in tmp_path.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_a_stale_temp_of_a_long_name_is_removed(tmp_path: Path) -> None:
    targets = reserve_names(tmp_path, "x" * 250, 1)
    dead = tmp_path / names.temp_name(targets[0].name, 4194300)  # no such pid
    dead.write_text("partial")
    write_outputs(tmp_path, "x" * 250, 1, [], summary_meta={}, targets=targets)
    assert not dead.exists()


def test_archive_of_a_255_byte_name_with_collisions(tmp_path: Path) -> None:
    name = "日" * 83 + ".jsonl"  # 249 + 6 = 255 bytes
    assert _bytes(name) == NAME_MAX
    done = tmp_path / "processed"
    moved = []
    for i in range(3):
        src = tmp_path / f"work-{i}"
        src.write_text(str(i))
        moved.append(archive_input(src, done, 42, name))
    assert moved[0].name == name
    assert all(_bytes(p.name) <= NAME_MAX and p.name.endswith(".jsonl") for p in moved)
    assert moved[1].name.endswith(".42.jsonl") and moved[2].name.endswith(".42.1.jsonl")
    assert [p.read_text() for p in moved] == ["0", "1", "2"]


def test_a_lone_surrogate_in_a_result_is_written_as_an_escape(tmp_path: Path) -> None:
    targets = reserve_names(tmp_path, "s", 1)
    row = {"custom_id": "c", "line": 1, "status": "succeeded", "text": "bad \ud800 text"}
    write_outputs(tmp_path, "s", 1, [row], summary_meta={}, targets=targets)
    data = targets[0].read_bytes()
    data.decode("utf-8")  # valid UTF-8
    assert json.loads(data)["text"] == "bad \ud800 text"
    assert b"\\ud800" in data


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain", "plain"),
        ("a\nb", "a\\nb"),
        ("tab\there", "tab\\there"),
        ("esc\x1b[31m", "esc\\x1b[31m"),
        ("c1\x85 del\x7f", "c1\\x85 del\\x7f"),
        ("sep\u2028para\u2029", "sep\\u2028para\\u2029"),
        ("bad \udcff byte", "bad \\udcff byte"),
        ("ü 日本 {braces}", "ü 日本 {braces}"),
    ],
)
def test_log_escape_keeps_one_line(text: str, shown: str) -> None:
    assert escape(text) == shown
