"""Result lines, summaries, atomic outbox writes and the never-overwriting archive, on disk."""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import daemon.outbox as outbox_mod
from adapters.base import ItemError, Usage
from daemon.outbox import (
    STATUSES,
    SummaryBuilder,
    archive_input,
    reserve_names,
    result_line,
    write_outputs,
)

FIELDS = [
    "custom_id",
    "line",
    "model",
    "provider",
    "status",
    "text",
    "finish_reason",
    "usage",
    "cost_usd",
    "error",
    "attempts",
    "batch_ids",
    "adaptations",
    "response",
    "metadata",
]
META = {"file": "in.jsonl", "started_at": 0.0, "ended_at": 90.5}


def ok(i: int, **extra: Any) -> dict[str, Any]:
    row = {
        "custom_id": f"c{i}",
        "line": i,
        "model": "gpt-4o",
        "provider": "openai",
        "status": "succeeded",
        "text": f"answer {i} — é",
        "finish_reason": "stop",
        "usage": {"input_tokens": 10, "output_tokens": 5, "cached_input_tokens": 2},
        "attempts": 1,
        "batch_ids": ["batch_1"],
        "response": {"id": f"r{i}"},
    }
    return row | extra


def failed(i: int, kind: str, message: str) -> dict[str, Any]:
    return {
        "custom_id": f"c{i}",
        "line": i,
        "status": "failed",
        "text": "partial answer",
        "error": {"type": kind, "message": message, "code": 400},
    }


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write(
    outbox: Path, stem: str, job_id: int, rows: Any, meta: Mapping[str, Any]
) -> tuple[Path, Path]:
    """As the daemon finishes a file: reserve the names first, then write under them."""
    targets = reserve_names(outbox, stem, job_id)
    return write_outputs(outbox, stem, job_id, rows, summary_meta=meta, targets=targets)


# ---------------------------------------------------------------------------------------------
# result_line


def test_result_line_field_order_and_values() -> None:
    result = result_line(ok(1, metadata={"k": [1]}, adaptations=("a",)))
    assert list(result) == FIELDS
    assert result["text"] == "answer 1 — é"
    assert result["usage"] == {
        "input_tokens": 10,
        "output_tokens": 5,
        "cached_input_tokens": 2,
        "cache_creation_input_tokens": 0,
    }
    assert (result["error"], result["adaptations"], result["metadata"]) == (None, ["a"], {"k": [1]})


def test_result_line_defaults_and_text_only_when_succeeded() -> None:
    assert result_line(failed(3, "invalid_request_error", "bad")) == {
        "custom_id": "c3",
        "line": 3,
        "model": None,
        "provider": None,
        "status": "failed",
        "text": None,
        "finish_reason": None,
        "usage": {
            "input_tokens": 0,
            "output_tokens": 0,
            "cached_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
        "cost_usd": None,
        "error": {"type": "invalid_request_error", "message": "bad", "code": 400},
        "attempts": 0,
        "batch_ids": [],
        "adaptations": [],
        "response": None,
        "metadata": None,
    }


def test_result_line_accepts_adapter_dataclasses() -> None:
    row = ok(1, usage=Usage(3, 4, 1, 9), error=ItemError("overloaded", "busy"))
    result = result_line(row)
    assert result["usage"] == {
        "input_tokens": 3,
        "output_tokens": 4,
        "cached_input_tokens": 1,
        "cache_creation_input_tokens": 9,
    }
    assert result["error"] == {"type": "overloaded", "message": "busy", "code": None}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"custom_id": "a", "status": "done"}, "unknown status 'done'"),
        ({"custom_id": "a"}, "unknown status None"),
        ({"status": "failed"}, "has no custom_id"),
    ],
)
def test_result_line_rejects_rows_it_cannot_describe(row: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        result_line(row)


# ---------------------------------------------------------------------------------------------
# Summary


def test_summary_counts_tokens_errors_and_batches() -> None:
    builder = SummaryBuilder()
    rows = [
        ok(1),
        failed(2, "invalid_request_error", "first bad"),
        ok(3),
        failed(4, "rate_limit_error", "slow down"),
        failed(5, "invalid_request_error", "second bad"),
        {"custom_id": "c6", "line": 6, "status": "expired"},
    ]
    for row in rows:
        builder.add(result_line(row), row.get("cost_usd_live"))
    batch = {"provider": "openai", "model": "gpt-4o", "id": "batch_1", "status": "completed"}
    summary = builder.build(
        file="in.jsonl",
        job_id=7,
        started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        ended_at=1767323045.25,
        batches=[batch | {"counts": {"completed": 2}, "extra": "dropped"}],
    )
    assert summary == {
        "file": "in.jsonl",
        "job_id": 7,
        "started_at": "2026-01-02T03:04:05.000Z",
        "ended_at": "2026-01-02T03:04:05.250Z",
        "lines": 6,
        "counts": {"succeeded": 2, "failed": 3, "expired": 1, "canceled": 0, "invalid": 0},
        "tokens": {
            "input_tokens": 20,
            "output_tokens": 10,
            "cached_input_tokens": 4,
            "cache_creation_input_tokens": 0,
        },
        "cost_usd": 0.0,
        "cost_usd_live": 0.0,
        "savings_usd": 0.0,
        "unpriced_requests": 2,
        "prompt_cache": {
            "tokens_written": 0,
            "tokens_read": 4,
            "net_savings_usd": None,
            "paid_off": None,
        },
        "batches": [batch | {"counts": {"completed": 2}}],
        "errors": [
            {
                "type": "invalid_request_error",
                "count": 2,
                "example": "first bad",
                "first_line": 2,
                "last_line": 5,
            },
            {
                "type": "rate_limit_error",
                "count": 1,
                "example": "slow down",
                "first_line": 4,
                "last_line": 4,
            },
        ],
        "file_error": None,
    }
    assert list(summary["counts"]) == list(STATUSES)


def test_naive_datetimes_are_taken_as_utc() -> None:
    summary = SummaryBuilder().build(
        file="f", job_id="j", started_at=datetime(2026, 5, 1, 12), ended_at=None
    )
    assert (summary["started_at"], summary["ended_at"]) == ("2026-05-01T12:00:00.000Z", None)
    assert (summary["lines"], summary["errors"], summary["batches"]) == (0, [], [])


# ---------------------------------------------------------------------------------------------
# write_outputs


def test_write_outputs_keeps_order_and_writes_summary(tmp_path: Path) -> None:
    rows = [ok(i) for i in (3, 1, 2)] + [failed(4, "server_error", "boom")]
    results, summary = write(tmp_path, "in", 7, rows, META)
    assert (results.name, summary.name) == ("in.results.jsonl", "in.summary.json")
    assert [r["custom_id"] for r in read_results(results)] == ["c3", "c1", "c2", "c4"]
    assert "answer 3 — é" in results.read_text(encoding="utf-8")  # not \\u-escaped
    data = json.loads(summary.read_text())
    assert data["counts"]["succeeded"] == 3
    assert (data["file"], data["job_id"], data["lines"]) == ("in.jsonl", 7, 4)
    assert (data["started_at"], data["ended_at"]) == (
        "1970-01-01T00:00:00.000Z",
        "1970-01-01T00:01:30.500Z",
    )
    assert sorted(os.listdir(tmp_path)) == ["in.results.jsonl", "in.summary.json"]


def test_ended_at_defaults_to_now(tmp_path: Path) -> None:
    before = datetime.now(UTC).isoformat(timespec="seconds")
    _, summary = write(tmp_path, "in", 1, [], {})
    data = json.loads(summary.read_text())
    assert data["ended_at"] >= before[:19]
    assert (data["file"], data["lines"]) == ("in", 0)


def test_name_collisions_never_overwrite(tmp_path: Path) -> None:
    (tmp_path / "in.summary.json").write_text("old summary")  # only one of the pair is taken
    first = write(tmp_path, "in", 7, [ok(1)], META)
    assert [p.name for p in first] == ["in.7.results.jsonl", "in.7.summary.json"]
    second = write(tmp_path, "in", 7, [ok(2)], META)
    third = write(tmp_path, "in", 7, [ok(3)], META)
    assert [p.name for p in second] == ["in.7.1.results.jsonl", "in.7.1.summary.json"]
    assert [p.name for p in third] == ["in.7.2.results.jsonl", "in.7.2.summary.json"]
    assert (tmp_path / "in.summary.json").read_text() == "old summary"
    assert not (tmp_path / "in.results.jsonl").exists()
    assert read_results(first[0])[0]["custom_id"] == "c1"
    assert read_results(second[0])[0]["custom_id"] == "c2"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o640), (0o002, 0o640), (0o077, 0o600)])
def test_files_are_0640_filtered_by_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        paths = write(tmp_path, "in", 1, [ok(1)], META)
    finally:
        os.umask(old)
    assert [stat.S_IMODE(p.stat().st_mode) for p in paths] == [mode, mode]


def test_failure_mid_write_leaves_nothing(tmp_path: Path) -> None:
    seen: list[list[str]] = []

    def rows() -> Iterator[Mapping[str, Any]]:
        yield ok(1)
        yield ok(2)
        seen.append(sorted(os.listdir(tmp_path)))  # what a reader would see mid-write
        raise RuntimeError("store went away")

    with pytest.raises(RuntimeError, match="store went away"):
        write(tmp_path, "in", 1, rows(), META)
    assert seen == [[f".in.results.jsonl.tmp-{os.getpid()}"]]  # hidden, temporary name only
    assert os.listdir(tmp_path) == []


def test_disk_full_removes_temp_and_reraises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outbox_mod.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        write(tmp_path, "in", 1, [ok(1)], META)
    assert os.listdir(tmp_path) == []


def test_unwritable_outbox_raises(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write(tmp_path / "missing", "in", 1, [ok(1)], META)


def test_summary_is_placed_after_the_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    placed: list[str] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        placed.append(Path(dst).name)
        assert (Path(dst).name == "in.summary.json") == (tmp_path / "in.results.jsonl").exists()
        real_replace(src, dst)

    monkeypatch.setattr(outbox_mod.os, "replace", spy)
    write(tmp_path, "in", 1, [ok(1)], META)
    assert placed == ["in.results.jsonl", "in.summary.json"]


def test_failed_summary_placement_leaves_no_summary_and_the_retry_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's path: names reserved (and recorded) once, the write retried under them."""
    targets = reserve_names(tmp_path, "in", 1)
    real_replace = os.replace

    def fail_on_summary(src: Any, dst: Any) -> None:
        if Path(dst).name.endswith(".summary.json"):
            raise OSError(errno.EIO, "I/O error")
        real_replace(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(outbox_mod.os, "replace", fail_on_summary)
        with pytest.raises(OSError, match="I/O error"):
            write_outputs(tmp_path, "in", 1, [ok(1)], summary_meta=META, targets=targets)
    assert os.listdir(tmp_path) == ["in.results.jsonl"]  # no summary: not complete yet
    assert write_outputs(tmp_path, "in", 1, [ok(2)], summary_meta=META, targets=targets) == targets
    assert sorted(os.listdir(tmp_path)) == ["in.results.jsonl", "in.summary.json"]
    assert [r["custom_id"] for r in read_results(targets[0])] == ["c2"]


# ---------------------------------------------------------------------------------------------
# archive_input


def test_archive_input_never_overwrites(tmp_path: Path) -> None:
    inbox, processed = tmp_path / "inbox", tmp_path / "inbox" / "processed"
    inbox.mkdir()
    moved = []
    for i in range(3):
        src = inbox / "batch.jsonl"
        src.write_text(f"content {i}")
        moved.append(archive_input(src, processed, 9))
        assert not src.exists()
    assert [p.name for p in moved] == ["batch.jsonl", "batch.9.jsonl", "batch.9.1.jsonl"]
    assert [p.read_text() for p in moved] == ["content 0", "content 1", "content 2"]
    assert sorted(os.listdir(processed)) == ["batch.9.1.jsonl", "batch.9.jsonl", "batch.jsonl"]


def test_archive_on_a_filesystem_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(src: Any, dst: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(outbox_mod.os, "link", no_link)
    moved = []
    for i in range(2):
        src = tmp_path / "in.jsonl"
        src.write_text(f"content {i}")
        moved.append(archive_input(src, tmp_path / "done", 1))
    assert [p.name for p in moved] == ["in.jsonl", "in.1.jsonl"]
    assert [p.read_text() for p in moved] == ["content 0", "content 1"]


def test_archive_across_filesystems_copies_then_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_link = os.link

    def cross_device(src: Any, dst: Any) -> None:
        if Path(src).parent.name == "inbox":
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_link(src, dst)

    monkeypatch.setattr(outbox_mod.os, "link", cross_device)
    (tmp_path / "inbox").mkdir()
    src = tmp_path / "inbox" / "a.jsonl"
    src.write_text("x")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "a.jsonl").write_text("older")
    dst = archive_input(src, tmp_path / "done", "j1")
    assert dst.name == "a.j1.jsonl" and dst.read_text() == "x" and not src.exists()
    assert sorted(os.listdir(tmp_path / "done")) == ["a.j1.jsonl", "a.jsonl"]


def test_reserved_names_are_written_as_they_are_and_archive_keeps_the_name(tmp_path: Path) -> None:
    outbox = tmp_path / "out"
    outbox.mkdir()
    (outbox / "a.results.jsonl").write_text("someone else's\n")
    targets = reserve_names(outbox, "a", 9)
    assert targets == (outbox / "a.9.results.jsonl", outbox / "a.9.summary.json")
    # a crashed first attempt left partial files under the reserved names: they are replaced
    targets[0].write_text("partial")
    rows = [{"custom_id": "c1", "line": 1, "status": "invalid"}]
    assert write_outputs(outbox, "a", 9, rows, summary_meta={}, targets=targets) == targets
    assert json.loads(targets[0].read_text())["custom_id"] == "c1"
    assert (outbox / "a.results.jsonl").read_text() == "someone else's\n"
    work = tmp_path / "ab12-a.jsonl"
    work.write_text("x\n")
    assert archive_input(work, tmp_path / "done", 9, "a.jsonl") == tmp_path / "done" / "a.jsonl"


money = st.none() | st.floats(-1, 1) | st.just(0.0) | st.just(-0.0)
tokens = st.integers(0, 10**6) | st.just(0)
summed_line = st.tuples(
    st.builds(
        lambda status, usage, cost, error, line: {"status": status, "usage": usage,
                                                  "cost_usd": cost, "error": error, "line": line},
        st.sampled_from(STATUSES),
        st.fixed_dictionaries({k: tokens for k in outbox_mod.TOKEN_FIELDS}),
        money,
        st.none() | st.fixed_dictionaries({"type": st.sampled_from(["a", "b"]),
                                           "message": st.text(max_size=3)}),
        st.integers(1, 100),
    ),
    money,
    money,
)  # fmt: skip


@given(st.lists(summed_line, max_size=12), st.integers(1, 5))
def test_a_summary_counted_a_write_at_a_time_is_one_counted_a_line_at_a_time(
    lines: list[tuple[dict[str, Any], float | None, float | None]], every: int
) -> None:
    one, many = SummaryBuilder(), SummaryBuilder()
    for result, live, saved in lines:
        _add_before(one, result, live, saved)
    for start in range(0, len(lines), every):
        many.add_all(lines[start : start + every])
    meta: dict[str, Any] = {"file": "f", "job_id": 1, "started_at": 0.0, "ended_at": 1.0}
    assert repr(many.build(**meta)) == repr(one.build(**meta))  # (repr: -0.0 and 0 told apart)


def _add_before(b: SummaryBuilder, result: dict[str, Any], live: Any, saved: Any) -> None:
    """``SummaryBuilder.add`` as it was: one line, every sum kept in the builder."""
    b.lines += 1
    b.counts[result["status"]] = b.counts.get(result["status"], 0) + 1
    usage = result["usage"]
    for key in outbox_mod.TOKEN_FIELDS:
        b.tokens[key] += usage[key]
    if result.get("cost_usd") is not None and live is not None:
        b.costs.batch += result["cost_usd"]
        b.costs.live += live
    elif usage["input_tokens"] or usage["output_tokens"]:
        b.costs.unpriced += 1
    if saved is not None:
        b.cache_savings += saved
    elif usage["cached_input_tokens"] or usage["cache_creation_input_tokens"]:
        b.cache_unpriced += 1
    if result.get("error"):
        b._add_error(result["error"], result.get("line"))
