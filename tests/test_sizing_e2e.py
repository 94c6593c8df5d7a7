"""Adaptive batch sizing and enqueued-token budgets, end to end: ``batchd run --once`` as a
real subprocess against the emulator, asserting on the outbox, the state database, the log
and the emulator's journal (what the provider really received)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adapters.emulator import Emulator, FaultSet

from .daemon_harness import (
    Run,
    finish,
    journal,
    query,
    read_results,
    run_cli,
    start_daemon,
    stop,
    unified,
    wait_for,
    write_jsonl,
)

MODEL = "gpt-4o-mini"


def _set(emulator: Emulator, config: dict[str, Any]) -> None:
    assert emulator.ctx is not None
    emulator.ctx.faults = FaultSet.parse({"seed": 3, **config})


async def _run(root: Path, url: str, **kw: Any) -> Run:
    """``batchd run --once``, allowed 100 s (its start-up alone is slow on a loaded machine)."""
    return await finish(await start_daemon(root, url, **kw), timeout=100)


def _sizes(root: Path) -> list[int]:
    """The sizes of the batches the daemon created, in order."""
    sql = "SELECT n_items FROM batches WHERE provider_batch_id IS NOT NULL ORDER BY id"
    return [int(r[0]) for r in query(root, sql)]


async def test_a_failed_canary_stops_the_rest_of_the_file(tmp_path: Path, emulator: Emulator):
    """Every item is refused as invalid: the canary (50) fails, the other 450 are never sent
    and end with the canary's error; the log and the summary say so."""
    _set(emulator, {"faults": [{"kind": "item_error", "provider": "openai", "error": "invalid"}]})
    lines = [unified(f"c{i}", MODEL, f"question {i}") for i in range(500)]
    write_jsonl(tmp_path / "inbox" / "bad.jsonl", lines)
    run = await _run(tmp_path, emulator.url)
    assert run.returncode == 0, run.stderr[-3000:]
    stats = (await journal(emulator.url))["providers"]["openai"]
    assert stats["items_received"] == 50 < len(lines)  # the money of 450 requests saved
    assert stats["batches_created"] == 1
    results = read_results(tmp_path / "outbox" / "bad.results.jsonl")
    assert [r["status"] for r in results] == ["failed"] * 500
    kept = [r for r in results if r["error"]["type"] == "canary_failed"]
    assert len(kept) == 450
    assert "not sent" in kept[0]["error"]["message"]
    assert "canary failed" in run.stderr and "not sent" in run.stderr
    summary = json.loads((tmp_path / "outbox" / "bad.summary.json").read_text())
    (canary,) = summary["canaries_failed"]
    assert canary["model"] == MODEL and canary["not_sent"] == 450
    assert canary["prompt_tokens_not_sent"] > 0


async def test_batches_grow_after_a_good_canary(tmp_path: Path, emulator: Emulator):
    """A canary of 5, then 50, 500, and what is left; a later file of the same model starts
    at the size the model has proven. One daemon (``run`` without ``--once``) for both."""
    extra = "[providers.openai]\nbatch_size = 5\n"
    proc = await start_daemon(tmp_path, emulator.url, once=False, config_extra=extra)
    try:
        lines = [unified(f"g{i}", MODEL, f"grow {i}") for i in range(600)]
        write_jsonl(tmp_path / "inbox" / "grow.jsonl", lines)
        await _wait_results(tmp_path / "outbox" / "grow.results.jsonl")
        assert _sizes(tmp_path) == [5, 50, 500, 45]
        results = read_results(tmp_path / "outbox" / "grow.results.jsonl")
        assert {r["status"] for r in results} == {"succeeded"}
        later = [unified(f"h{i}", MODEL, f"later {i}") for i in range(700)]
        write_jsonl(tmp_path / "inbox" / "later.jsonl", later)
        await _wait_results(tmp_path / "outbox" / "later.results.jsonl")
        assert _sizes(tmp_path)[4:] == [500, 200]  # its canary at the proven 500, then the rest
    finally:
        run = await stop(proc)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "canary passed" in run.stderr


async def _wait_results(path: Path) -> None:
    async def written() -> bool:
        return path.exists()

    await wait_for(written, timeout=90, what=f"{path.name} written")


async def test_enqueued_token_limit_smaller_than_the_workload(tmp_path: Path, emulator: Emulator):
    """5,000 requests of about 50 tokens each (250,000) against a limit of 60,000: the batches
    refused for it go back to pending without an attempt; everything ends ``succeeded``."""
    _set(emulator, {"enqueued_token_limits": {MODEL: 60_000}})
    prompt = "w" * 196
    lines = [unified(f"t{i}", MODEL, f"{i:04d}{prompt}") for i in range(5000)]
    write_jsonl(tmp_path / "inbox" / "tokens.jsonl", lines)
    extra = "[providers.openai]\nmax_batch_size = 1000\n"
    run = await _run(tmp_path, emulator.url, config_extra=extra)
    assert run.returncode == 0, run.stderr[-3000:]
    results = read_results(tmp_path / "outbox" / "tokens.results.jsonl")
    assert len(results) == 5000
    assert {r["status"] for r in results} == {"succeeded"}
    assert {r["attempts"] for r in results} == {1}  # no refusal consumed an attempt
    stats = (await journal(emulator.url))["providers"]["openai"]
    refused = stats["enqueued_limit_refusals"]
    print(f"refused creates: {refused}; batches: {stats['batches_created']}")
    assert stats["duplicate_items"] == 0
    assert refused >= 1  # the limit was not known: it was learned from the first refusal
    budget = query(tmp_path, f"SELECT limit_tokens, source FROM budgets WHERE model = '{MODEL}'")
    assert budget and budget[0][0] == 60_000  # read from the provider's message, kept
    assert "enqueued-token limit" in run.stderr
    shown = run_cli(["status", "--root", str(tmp_path), "--json"])
    assert shown.returncode == 0, shown.stderr
    budgets = json.loads(shown.stdout)["budgets"]
    assert [(b["provider"], b["model"], b["limit"], b["in_use"]) for b in budgets] == [
        ("openai", MODEL, 60_000, 0)  # every batch ended: nothing in use
    ]
    text = run_cli(["status", "--root", str(tmp_path)]).stdout
    assert f"openai {MODEL}: 0 of 60,000 tokens in use" in text


async def test_gemini_quota_refusals_at_create_hold_without_attempts(
    tmp_path: Path, emulator: Emulator
):
    """Gemini refuses a create beyond the model's quota (429 RESOURCE_EXHAUSTED; here one
    batch at a time): with another batch of the model open that is the quota, not a failure:
    the requests wait for it to end, no attempt counted, and all succeed."""
    model = "gemini-2.5-flash"
    _set(emulator, {"concurrent_batch_limits": {model: 1}})
    lines = [unified(f"m{i}", model, f"quota {i}") for i in range(40)]
    write_jsonl(tmp_path / "inbox" / "quota.jsonl", lines)
    extra = "[providers.gemini]\nbatch_size = 5\nmax_batch_size = 5\n"
    run = await _run(tmp_path, emulator.url, config_extra=extra)
    assert run.returncode == 0, run.stderr[-3000:]
    results = read_results(tmp_path / "outbox" / "quota.results.jsonl")
    assert {r["status"] for r in results} == {"succeeded"}
    assert {r["attempts"] for r in results} == {1}
    stats = (await journal(emulator.url))["providers"]["gemini"]
    refused = stats["enqueued_limit_refusals"]
    print(f"gemini refused creates: {refused}")
    # The budget learned from the first refusal holds the rest (without it: 9 of 8 batches).
    assert 1 <= refused <= 2
    assert stats["duplicate_items"] == 0
