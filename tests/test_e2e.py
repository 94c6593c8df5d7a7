"""End to end: ``batchd run`` as a real subprocess, a real inbox, the official SDKs, the emulator.

Each test arranges an inbox, runs the daemon, and asserts on the outbox and on the emulator's
journal (which proves what was, and was not, submitted twice).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from adapters.emulator import Emulator, FaultSet
from daemon.crashpoints import AFTER_CREATE

from .daemon_harness import (
    crash_at,
    journal,
    read_results,
    run_once,
    start_daemon,
    stop,
    unified,
    wait_for,
    write_jsonl,
)

MODELS = {
    "openai": ["gpt-4o-mini", "gpt-4.1-mini"],
    "anthropic": ["claude-sonnet-4-5", "claude-haiku-4-5"],
    "gemini": ["gemini-2.5-flash", "gemini-2.5-pro"],
}


def _mixed_lines(n_per_model: int) -> list[dict]:
    lines = []
    for provider, models in MODELS.items():
        for model in models:
            for i in range(n_per_model):
                lines.append(
                    unified(
                        f"{provider}-{model}-{i}", model, f"question {model} {i}", metadata={"i": i}
                    )
                )
    return lines


def _assert_answered(results: list[dict], lines: list[dict]) -> None:
    assert len(results) == len(lines)
    for res, src in zip(results, lines, strict=True):
        assert res["custom_id"] == src["custom_id"]
        assert res["status"] == "succeeded", res
        prompt = src["messages"][-1]["content"]
        assert res["text"].endswith(f"Answer: {prompt}"), res["text"]
        assert src["model"] in res["text"]
        assert res["usage"]["input_tokens"] > 0 and res["usage"]["output_tokens"] > 0
        assert res["error"] is None and res["batch_ids"]
        assert res["metadata"] == src.get("metadata")


async def test_mixed_file_one_batch_per_model_all_answered(tmp_path: Path, emulator: Emulator):
    lines = _mixed_lines(3)
    write_jsonl(tmp_path / "inbox" / "mixed.jsonl", lines)
    run = await run_once(tmp_path, emulator.url)
    assert run.returncode == 0, run.stderr[-3000:]
    results = read_results(tmp_path / "outbox" / "mixed.results.jsonl")
    _assert_answered(results, lines)
    for provider, models in MODELS.items():
        ids = {r["batch_ids"][0] for r in results if r["provider"] == provider}
        assert len(ids) == len(models), (provider, ids)  # one batch per model
        for model in models:
            assert len({r["batch_ids"][0] for r in results if r["model"] == model}) == 1
    j = await journal(emulator.url)
    for provider, models in MODELS.items():
        assert j["providers"][provider]["batches_created"] == len(models)
        assert j["providers"][provider]["duplicate_items"] == 0
    summary = json.loads((tmp_path / "outbox" / "mixed.summary.json").read_text())
    assert summary["counts"]["succeeded"] == len(lines)
    assert len(summary["batches"]) == 6
    assert not (tmp_path / "inbox" / "mixed.jsonl").exists()
    assert next(iter((tmp_path / "processed").iterdir())).name.endswith("mixed.jsonl")
    mode = stat.S_IMODE((tmp_path / "outbox" / "mixed.results.jsonl").stat().st_mode)
    assert mode & 0o007 == 0  # nothing for others
    assert "file ingested" in run.stderr and "results written" in run.stderr


async def test_requests_beyond_the_batch_size_are_split(tmp_path: Path, emulator: Emulator):
    lines = [unified(f"q{i}", "gpt-4o-mini", f"n{i}") for i in range(120)]
    lines += [unified(f"g{i}", "gemini-2.5-flash", f"g{i}") for i in range(7)]
    write_jsonl(tmp_path / "inbox" / "big.jsonl", lines)
    extra = 'batch_sizing = "fixed"\n[providers.gemini]\nbatch_size = 3\n'  # no growth here
    run = await run_once(tmp_path, emulator.url, config_extra=extra)
    assert run.returncode == 0, run.stderr[-3000:]
    results = read_results(tmp_path / "outbox" / "big.results.jsonl")
    _assert_answered(results, lines)
    openai_batches = {r["batch_ids"][0] for r in results if r["provider"] == "openai"}
    gemini_batches = {r["batch_ids"][0] for r in results if r["provider"] == "gemini"}
    assert len(openai_batches) == 3  # 50 + 50 + 20
    assert len(gemini_batches) == 3  # 3 + 3 + 1
    j = await journal(emulator.url)
    assert j["providers"]["openai"]["items_received"] == 120


async def test_retryable_item_failures_are_retried_until_they_succeed(
    tmp_path: Path, emulator: Emulator
):
    emulator.ctx.faults = FaultSet.parse(
        {
            "seed": 5,
            "faults": [
                {"kind": "item_error", "provider": p, "rate": 0.3, "error": err}
                for p, err in (
                    ("openai", "rate_limit"),
                    ("anthropic", "overloaded"),
                    ("gemini", "server"),
                )
            ],
        }
    )
    lines = _mixed_lines(10)
    write_jsonl(tmp_path / "inbox" / "flaky.jsonl", lines)
    run = await run_once(tmp_path, emulator.url)
    assert run.returncode == 0, run.stderr[-3000:]
    results = read_results(tmp_path / "outbox" / "flaky.results.jsonl")
    _assert_answered(results, lines)
    retried = [r for r in results if r["attempts"] > 1]
    assert retried, "the 30 % fault rate should have hit some items"
    assert all(len(r["batch_ids"]) == r["attempts"] for r in retried)
    for provider in MODELS:
        stats = (await journal(emulator.url))["providers"][provider]
        assert stats["items_retryable"] > 0
        assert stats["duplicate_items"] == 0  # a retry after a failure is not a duplicate


async def test_bad_lines_become_invalid_results_and_the_rest_goes_through(
    tmp_path: Path, emulator: Emulator
):
    src = Path(__file__).resolve().parents[1] / "inbox_example" / "deliberately_broken.jsonl"
    (tmp_path / "inbox").mkdir(parents=True)
    (tmp_path / "inbox" / "broken.jsonl").write_bytes(src.read_bytes())
    (tmp_path / "inbox" / "garbage.jsonl").write_bytes(b"\x00\x01\x02binary\xff\xfe" * 100)
    run = await run_once(tmp_path, emulator.url)
    assert run.returncode == 0, run.stderr[-3000:]
    results = read_results(tmp_path / "outbox" / "broken.results.jsonl")
    by_status = [r["status"] for r in results]
    assert by_status == [
        "succeeded",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "succeeded",
    ]
    for r in results:
        if r["status"] == "invalid":
            assert f"line {r['line']}" in r["error"]["message"]
            assert f"line {r['line']}" in run.stderr  # logged with the line number
    summary = json.loads((tmp_path / "outbox" / "garbage.summary.json").read_text())
    assert "binary" in json.dumps(summary).lower()
    assert (tmp_path / "outbox" / "garbage.results.jsonl").read_text() == ""
    assert not list((tmp_path / "inbox").glob("*.jsonl"))


async def test_same_name_twice_never_overwrites(tmp_path: Path, emulator: Emulator):
    write_jsonl(tmp_path / "inbox" / "a.jsonl", [unified("x", "gpt-4o-mini", "first")])
    assert (await run_once(tmp_path, emulator.url)).returncode == 0
    write_jsonl(tmp_path / "inbox" / "a.jsonl", [unified("x", "gpt-4o-mini", "second")])
    assert (await run_once(tmp_path, emulator.url)).returncode == 0
    outs = sorted(p.name for p in (tmp_path / "outbox").glob("a*.results.jsonl"))
    assert len(outs) == 2 and "a.results.jsonl" in outs
    texts = sorted(read_results(tmp_path / "outbox" / n)[0]["text"] for n in outs)
    assert texts[0].endswith("first") and texts[1].endswith("second")
    assert len(list((tmp_path / "processed").iterdir())) == 2


async def test_sigterm_mid_run_then_restart_loses_nothing(tmp_path: Path):
    async with Emulator(time_scale=0.2, state_dir=tmp_path / "emu") as emu:
        proc = await start_daemon(tmp_path, emu.url, once=False)
        lines = _mixed_lines(4)
        await wait_for(lambda: _has(tmp_path / "inbox"), what="daemon start")
        write_jsonl(tmp_path / "inbox" / "late.jsonl", lines)  # a real file event
        await wait_for(lambda: _created(emu.url, 3), what="batches created")
        run = await stop(proc)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "SIGTERM received" in run.stderr
        assert not (tmp_path / "outbox" / "late.results.jsonl").exists()
        run = await run_once(tmp_path, emu.url)
        assert run.returncode == 0, run.stderr[-3000:]
        _assert_answered(read_results(tmp_path / "outbox" / "late.results.jsonl"), lines)
        j = await journal(emu.url)
        assert all(j["providers"][p]["duplicate_items"] == 0 for p in MODELS)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_kill_right_after_create_submits_nothing_twice(
    tmp_path: Path, emulator: Emulator, provider: str
):
    lines = [unified(f"k{i}", MODELS[provider][0], f"kill {i}") for i in range(5)]
    write_jsonl(tmp_path / "inbox" / "k.jsonl", lines)
    run = await run_once(tmp_path, emulator.url, env=crash_at(AFTER_CREATE))
    assert run.returncode == 137, run.stderr[-3000:]
    assert f"crash point {AFTER_CREATE}" in run.stderr
    j = await journal(emulator.url)
    assert j["providers"][provider]["batches_created"] == 1
    run = await run_once(tmp_path, emulator.url)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "found at the provider" in run.stderr
    _assert_answered(read_results(tmp_path / "outbox" / "k.results.jsonl"), lines)
    j = await journal(emulator.url)
    assert j["providers"][provider]["batches_created"] == 1
    assert j["providers"][provider]["duplicate_items"] == 0


async def test_submit_and_status_commands(tmp_path: Path, emulator: Emulator):
    from daemon.cli import main

    src = write_jsonl(tmp_path / "elsewhere" / "s.jsonl", [unified("a", "gpt-4o-mini", "hi")])
    assert main(["submit", "--root", str(tmp_path), str(src)]) == 0
    assert (tmp_path / "inbox" / "s.jsonl").read_bytes() == src.read_bytes()
    assert not [p for p in (tmp_path / "inbox").iterdir() if p.name.startswith(".")]
    assert (await run_once(tmp_path, emulator.url)).returncode == 0
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "status", "--root", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ},
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["files"][0]["name"] == "s.jsonl"
    assert report["files"][0]["counts"] == {"succeeded": 1}
    assert report["batches"][0]["provider"] == "openai"


async def _has(path: Path) -> bool:
    return path.exists()


async def _created(url: str, n: int) -> bool:
    j = await journal(url)
    return sum(p["batches_created"] for p in j["providers"].values()) >= n
