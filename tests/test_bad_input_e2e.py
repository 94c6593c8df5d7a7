"""Bad input, end to end: every kind of bad line and bad file in a real inbox of ``batchd run``.

The kinds: broken JSON, a JSON value that is not an object, missing or ill-typed fields,
values out of range, an unknown model, a duplicate ``custom_id``, a line over
``max_request_bytes``, a line that is not UTF-8; empty and blank-only files, binary and
Latin-1 files, a BOM and CRLF line ends, a file still being written, the same name dropped
twice, a file the daemon may not read, a symlink, a file that is not ``.jsonl``, and files too
big to hold in memory.

Each bad input gets a clear error naming the file, the line where there is one, and the
reason; the rest of the file still goes through; the daemon keeps running; nothing else in
the inbox is held up.

Symlinks in the inbox are **refused** (logged once, left where they are): batchd moves what it
takes, and a link could point anywhere on the server (another user's file, /etc/...). A refused
link does not keep ``--once`` from finishing.

The gigabyte file: ``BATCHD_TEST_GIGABYTE=1 .venv/bin/pytest tests/test_bad_input_e2e.py -k
gigabyte`` (a minute or two, 4 GB of free disk). A 96 MiB version runs by default.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from adapters.emulator import Emulator

from .daemon_harness import (
    journal,
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

MODEL = "gpt-4o-mini"
MAX_REQUEST_BYTES = 4096


def _good(cid: str, model: str = MODEL) -> dict[str, Any]:
    return unified(cid, model, f"good {cid}")


def _msg(text: str = "x") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# One bad line of each kind, with a piece of the reason batchd must give for it.
BAD_LINES: list[tuple[str, str]] = [
    ('{"custom_id": "broken", "model": ', "invalid JSON"),
    ("[1, 2, 3]", "expected a JSON object"),
    ("42", "expected a JSON object"),
    (json.dumps({"custom_id": "nomodel", "messages": _msg()}), "'model' is missing"),
    (json.dumps({"custom_id": "nomsg", "model": MODEL}), "'messages' is missing"),
    (json.dumps({"custom_id": "empty", "model": MODEL, "messages": []}), "'messages' is empty"),
    (
        json.dumps({"custom_id": "hot", "model": MODEL, "messages": _msg(), "temperature": "hot"}),
        "'temperature' must be a number",
    ),
    (
        json.dumps({"custom_id": "range", "model": MODEL, "messages": _msg(), "temperature": 7}),
        "'temperature' must be between",
    ),
    (
        json.dumps({"custom_id": "negative", "model": MODEL, "messages": _msg(), "max_tokens": -1}),
        "'max_tokens' must be a positive integer",
    ),
    (
        json.dumps({"custom_id": "llama", "model": "llama-3-70b", "messages": _msg()}),
        "unknown model",
    ),
    (json.dumps(_good("g1") | {"messages": _msg("again")}), "duplicate custom_id 'g1'"),
    (json.dumps(_good("huge") | {"messages": _msg("y" * 5000)}), "over the per-request limit"),
    (b"\xff\xfe not utf-8 \xc3\x28".decode("latin-1"), "not valid UTF-8"),
]


def _mixed_file() -> tuple[bytes, list[str | None]]:
    """Good lines around every bad one; returns the bytes and, per line, the expected reason
    (None: a good line)."""
    out: list[bytes] = []
    expected: list[str | None] = []
    for i, (bad, reason) in enumerate(BAD_LINES):
        out.append(json.dumps(_good(f"g{i}")).encode())
        expected.append(None)
        # The UTF-8 case must reach the daemon as the raw bytes, not re-encoded.
        out.append(bad.encode("latin-1") if reason == "not valid UTF-8" else bad.encode())
        expected.append(reason)
    out.append(json.dumps(_good("last")).encode())
    expected.append(None)
    return b"\n".join(out) + b"\n", expected


def _summary(outbox: Path, stem: str) -> dict[str, Any]:
    return json.loads((outbox / f"{stem}.summary.json").read_text())


async def test_every_bad_input_kind_in_one_inbox(tmp_path: Path, emulator: Emulator):
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir(parents=True)
    mixed, expected = _mixed_file()
    (inbox / "mixed.jsonl").write_bytes(mixed)
    (inbox / "empty.jsonl").write_bytes(b"")
    (inbox / "blank.jsonl").write_bytes(b"\n  \n\t\r\n\n")
    (inbox / "binary.jsonl").write_bytes(bytes(range(256)) * 64)
    (inbox / "latin1.jsonl").write_bytes("Grüße, café, naïve\n".encode("latin-1") * 50)
    bom_lines = [_good("b1"), _good("b2")]
    (inbox / "bom.jsonl").write_bytes(
        b"\xef\xbb\xbf" + b"\n".join(json.dumps(x).encode() for x in bom_lines) + b"\n"
    )
    crlf_lines = [_good("c1"), _good("c2", "claude-haiku-4-5"), _good("c3", "gemini-2.5-flash")]
    (inbox / "crlf.jsonl").write_bytes(
        b"".join(json.dumps(x).encode() + b"\r\n" for x in crlf_lines)
    )
    odd_name = "my requests – ü 日本.jsonl"
    write_jsonl(inbox / odd_name, [_good("n1"), _good("n2")])
    outside = tmp_path / "elsewhere" / "target.jsonl"
    write_jsonl(outside, [_good("s1")])
    (inbox / "link.jsonl").symlink_to(outside)
    (inbox / "notes.txt").write_text("not a jsonl file\n")

    run = await run_once(
        tmp_path, emulator.url, config_extra=f"max_request_bytes = {MAX_REQUEST_BYTES}\n"
    )
    assert run.returncode == 0, run.stderr[-4000:]  # --once finished despite the symlink
    log = run.stderr

    # mixed.jsonl: every bad line invalid, with its line number and reason, also in the log.
    results = read_results(outbox / "mixed.results.jsonl")
    assert [r["line"] for r in results] == list(range(1, len(expected) + 1))
    for r, reason in zip(results, expected, strict=True):
        if reason is None:
            assert r["status"] == "succeeded", r
        else:
            assert r["status"] == "invalid", r
            assert r["error"]["message"].startswith(f"line {r['line']}: "), r
            assert reason in r["error"]["message"], (reason, r["error"])
            assert f"line rejected: mixed.jsonl: line {r['line']}: " in log
    assert _summary(outbox, "mixed")["counts"]["invalid"] == len(BAD_LINES)

    # Whole files that cannot be read, or hold no request: a reason in the summary and the log.
    for stem, reason in [
        ("empty", "empty"),
        ("blank", "only blank lines"),
        ("binary", "binary content"),
        ("latin1", "not UTF-8"),
    ]:
        assert (outbox / f"{stem}.results.jsonl").read_text() == ""
        summary = _summary(outbox, stem)
        assert reason in (summary["file_error"] or ""), (stem, summary)
        assert any(f"{stem}.jsonl" in ln and reason in ln for ln in log.splitlines()), stem

    # Accepted: a byte-order mark, Windows line endings, an odd file name.
    assert [r["status"] for r in read_results(outbox / "bom.results.jsonl")] == ["succeeded"] * 2
    crlf = read_results(outbox / "crlf.results.jsonl")
    assert [r["status"] for r in crlf] == ["succeeded"] * 3
    assert [r["line"] for r in crlf] == [1, 2, 3]
    odd = read_results(outbox / "my requests – ü 日本.results.jsonl")
    assert [r["status"] for r in odd] == ["succeeded"] * 2
    assert (tmp_path / "processed" / odd_name).exists()

    # The symlink is refused once, left alone, and its target untouched.
    assert log.count("link.jsonl is a symlink; refused") == 1
    assert (inbox / "link.jsonl").is_symlink() and outside.exists()
    assert not (outbox / "link.results.jsonl").exists()
    assert log.count("notes.txt ignored") == 1
    assert sorted(p.name for p in inbox.iterdir()) == ["link.jsonl", "notes.txt"]


async def test_file_still_being_written_and_same_name_twice(tmp_path: Path, emulator: Emulator):
    """A file growing in the inbox is left alone until it has settled; a name dropped again
    once the first file was taken is a new job with its own results (nothing overwritten)."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir(parents=True)
    proc = await start_daemon(tmp_path, emulator.url, once=False, config_extra="settle_s = 0.6\n")
    await wait_for_log(proc, "batchd started")
    growing = inbox / "growing.jsonl"
    with growing.open("w") as f:  # written line by line, slower than a scan, faster than settle
        for i in range(12):
            f.write(json.dumps(_good(f"w{i}")) + "\n")
            f.flush()
            await asyncio.sleep(0.15)
    await wait_for(lambda: _exists(outbox / "growing.results.jsonl"), what="growing results")
    assert [r["custom_id"] for r in read_results(outbox / "growing.results.jsonl")] == [
        f"w{i}" for i in range(12)
    ]

    write_jsonl(inbox / "twice.jsonl", [_good("first")])
    await wait_for(lambda: _gone(inbox / "twice.jsonl"), what="the first twice.jsonl taken")
    write_jsonl(inbox / "twice.jsonl", [_good("second")])
    await wait_for(lambda: _count(outbox, "twice*.summary.json", 2), what="two twice results")
    texts = sorted(
        read_results(p)[0]["text"].rsplit(" ", 1)[-1] for p in outbox.glob("twice*.results.jsonl")
    )
    assert texts == ["first", "second"]
    # each input is archived just after its results are written: waited for, not read once
    await wait_for(lambda: _count(tmp_path / "processed", "twice*.jsonl", 2), what="two archived")
    assert len(list((tmp_path / "processed").glob("twice*.jsonl"))) == 2
    run = await stop(proc)
    assert run.returncode == 0, run.stderr[-4000:]


@pytest.mark.skipif(not permissions_enforceable(), reason="cannot make a file unreadable here")
async def test_unreadable_file_is_reported_and_the_rest_goes_on(tmp_path: Path, emulator: Emulator):
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    write_jsonl(inbox / "secret.jsonl", [_good("x")])
    (inbox / "secret.jsonl").chmod(0)
    write_jsonl(inbox / "fine.jsonl", [_good("y")])
    run = await run_once(tmp_path, emulator.url, enforce_permissions=True)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "secret.jsonl cannot be read: cannot read: permission denied" in run.stderr
    assert _summary(outbox, "secret")["file_error"] == "cannot read: permission denied"
    assert (outbox / "secret.results.jsonl").read_text() == ""
    assert read_results(outbox / "fine.results.jsonl")[0]["status"] == "succeeded"


# -- a big file: streamed, memory flat --------------------------------------------------------

BIG_MODELS = ("gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash")


def _big_lines(target_bytes: int, line_bytes: int) -> Iterator[bytes]:
    """Requests whose bulk is metadata (echoed back, never sent): big lines, few batches."""
    pad = "m" * (line_bytes - 200)
    written = i = 0
    while written < target_bytes:
        line = {
            "custom_id": f"big-{i}",
            "model": BIG_MODELS[i % 3],
            "messages": [{"role": "user", "content": f"q{i}"}],
            "metadata": {"i": i, "pad": pad},
        }
        data = json.dumps(line).encode() + b"\n"
        written += len(data)
        i += 1
        yield data


async def _rss_sampler(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], proc.memory_info().rss)
        except psutil.Error:
            return
        await asyncio.sleep(0.02)


async def _stream_big_file(tmp_path: Path, size: int, line_bytes: int) -> tuple[int, int, int]:
    """Run a file of ``size`` bytes through a daemon; returns (lines, baseline RSS, peak RSS)."""
    async with Emulator(time_scale=0, state_dir=tmp_path / "emu") as emu:
        staging = tmp_path / "staging.jsonl"
        with staging.open("wb") as f:
            n = sum(f.write(data) > 0 for data in _big_lines(size, line_bytes))
        extra = "batch_linger_s = 0.5\n[providers.openai]\nbatch_size = 2000\n"
        proc = await start_daemon(tmp_path, emu.url, once=False, config_extra=extra)
        await wait_for_log(proc, "batchd started")
        # The provider SDKs are imported at a provider's first work: one small file through
        # all three first, so the baseline holds them (and the growth is the big file's).
        warm = [
            {"custom_id": f"warm-{i}", "model": m, "messages": [{"role": "user", "content": "w"}]}
            for i, m in enumerate(BIG_MODELS)
        ]
        warm_text = "".join(json.dumps(line) + "\n" for line in warm)
        (tmp_path / "warm.jsonl").write_text(warm_text)
        os.replace(tmp_path / "warm.jsonl", tmp_path / "inbox" / "warm.jsonl")
        await wait_for(
            lambda: _exists(tmp_path / "outbox" / "warm.summary.json"), what="the warm-up file"
        )
        baseline = psutil.Process(proc.pid).memory_info().rss
        peak, done = [baseline], asyncio.Event()
        sampler = asyncio.create_task(_rss_sampler(proc.pid, peak, done))
        os.replace(staging, tmp_path / "inbox" / "big.jsonl")
        await wait_for(
            lambda: _exists(tmp_path / "outbox" / "big.summary.json"),
            timeout=max(60, size / 2_000_000),
            what="results of the big file",
        )
        done.set()
        await sampler
        run = await stop(proc)
        assert run.returncode == 0, run.stderr[-4000:]
        assert (await journal(emu.url))["providers"]["openai"]["duplicate_items"] == 0
    summary = _summary(tmp_path / "outbox", "big")
    assert summary["counts"]["succeeded"] == n, summary["counts"]
    return n, baseline, peak[0]


async def test_big_file_is_streamed_memory_stays_flat(tmp_path: Path):
    """The daemon's own footprint (Python and three SDKs, imported by a small warm-up file) is
    ~120 MiB, so what is measured is how much it grows while a 96 MiB file goes through:
    ~20 MiB, the same for 256 MiB."""
    size = 96 * 1024 * 1024
    n, baseline, peak = await _stream_big_file(tmp_path, size, line_bytes=32 * 1024)
    growth = peak - baseline
    print(f"{size >> 20} MiB, {n} lines: RSS {baseline >> 20} -> {peak >> 20} MiB")
    assert growth < size // 3, f"{n} lines: RSS grew {growth >> 20} MiB for a {size >> 20} MiB file"


@pytest.mark.skipif(
    os.environ.get("BATCHD_TEST_GIGABYTE") != "1", reason="set BATCHD_TEST_GIGABYTE=1 (minutes)"
)
async def test_gigabyte_file_is_streamed_memory_stays_flat(tmp_path: Path):
    size = 1024 * 1024 * 1024
    if shutil.disk_usage(tmp_path).free < 4 * size:
        pytest.skip("needs 4 GB free disk")
    n, baseline, peak = await _stream_big_file(tmp_path, size, line_bytes=64 * 1024)
    growth = peak - baseline
    print(f"{size >> 20} MiB, {n} lines: RSS {baseline >> 20} -> {peak >> 20} MiB")
    assert growth < 64 * 1024 * 1024, f"{n} lines: RSS grew {growth >> 20} MiB for 1 GiB"


async def _exists(path: Path) -> bool:
    return path.exists()


async def _gone(path: Path) -> bool:
    return not path.exists()


async def _count(folder: Path, pattern: str, n: int) -> bool:
    return len(list(folder.glob(pattern))) >= n
