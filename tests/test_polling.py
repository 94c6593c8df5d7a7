"""Polling in rounds, against the emulator: each adapter's list pages (the cursor each provider
documents), and the daemon's status calls for many batches and for one six-hour batch."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from adapters import anthropic_batch, gemini_batch, openai_batch
from adapters.emulator import Emulator
from adapters.emulator.core import Timing
from daemon.polling import poll_interval_s

from .daemon_harness import finish, journal, read_results, start_daemon, unified, write_jsonl
from .test_adapters import MODELS, PROVIDERS, build, items

STATUS_ROUTES = ("batches.get", "batches.list")
# The query parameter that asks for the next page, per provider.
CURSOR = {"openai": "after=", "anthropic": "after_id=", "gemini": "pageToken="}
MODULES = {"openai": openai_batch, "anthropic": anthropic_batch, "gemini": gemini_batch}


def status_calls(answer: dict[str, Any], provider: str) -> Counter[str]:
    return Counter(
        c["route"]
        for c in answer["calls"]
        if c["provider"] == provider and c["route"] in STATUS_ROUTES
    )


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_list_batches_reads_every_page_newest_first(
    emulator: Emulator, provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MODULES[provider], "LIST_PAGE", 2)
    adapter = build(emulator, provider, tmp_path / "spool")
    try:
        made = []
        for i in range(5):
            submitted = await adapter.submit(f"tag-{i}", MODELS[provider], items(provider, 1))
            made.append(submitted.provider_batch_id)
        before = len((await journal(emulator.url))["calls"])
        pages = [page async for page in adapter.list_batches()]
    finally:
        await adapter.close()
    assert [len(p) for p in pages] == [2, 2, 1]
    listed = [s.provider_batch_id for p in pages for s in p]
    assert listed == made[::-1]  # newest first, each once
    created = [s.created_at for p in pages for s in p]
    assert all(c is not None for c in created) and created == sorted(created, reverse=True)
    later = (await journal(emulator.url))["calls"][before:]
    calls = [c for c in later if c["provider"] == provider]
    assert [c["route"] for c in calls] == ["batches.list"] * 3
    assert CURSOR[provider] not in calls[0]["query"]
    assert all(CURSOR[provider] in c["query"] for c in calls[1:])


async def test_many_batches_are_polled_with_one_list_call_per_round(tmp_path: Path) -> None:
    """Twelve OpenAI batches running a second or two: the rounds read the list, so the status
    calls are a few per round, far fewer than a retrieve per batch per poll."""
    n_batches = 12
    async with Emulator(time_scale=0.2, state_dir=tmp_path / "emu") as emu:
        lines = [unified(f"c{i}", "gpt-4o-mini", f"q {i}") for i in range(5 * n_batches)]
        write_jsonl(tmp_path / "root" / "inbox" / "many.jsonl", lines)
        extra = (  # fixed sizes: twelve batches of five (adaptive would grow them)
            'batch_sizing = "fixed"\n'
            "[providers.openai]\nbatch_size = 5\nmax_concurrent_submits = 12\n"
        )
        run = await finish(
            await start_daemon(tmp_path / "root", emu.url, config_extra=extra), timeout=90
        )
        assert run.returncode == 0, run.stderr[-3000:]
        answer = await journal(emu.url)
    results = read_results(tmp_path / "root" / "outbox" / "many.results.jsonl")
    assert len(results) == len(lines) and all(r["status"] == "succeeded" for r in results)
    assert answer["providers"]["openai"]["batches_created"] == n_batches
    calls = status_calls(answer, "openai")
    # One batch alone takes some 12 polls here (ages 0.05 s to ~2 s, x1.5 each, at most 0.3 s
    # apart): a retrieve per batch per poll would be well over 100 calls.
    assert calls["batches.list"] >= 1
    assert sum(calls.values()) <= 3 * n_batches, calls


async def test_a_six_hour_batch_takes_at_most_30_status_calls(tmp_path: Path) -> None:
    """Time runs 1,440 times faster for the emulator and the daemon alike: the batch takes six
    emulated hours (15 s), polled with the default schedule scaled the same way."""
    scale = 1440.0
    hours_6 = 6 * 3600.0
    async with Emulator(time_scale=1 / scale, state_dir=tmp_path / "emu") as emu:
        assert emu.ctx is not None
        emu.ctx.timing = Timing(
            validating_s=60.0, in_progress_base_s=hours_6 - 120.0, per_item_s=0.0, finalizing_s=60
        )
        write_jsonl(tmp_path / "root" / "inbox" / "long.jsonl", [unified("c", "gpt-4o-mini", "q")])
        extra = (
            f"poll_initial_s = {5.0 / scale}\npoll_factor = 1.5\npoll_max_s = {1800.0 / scale}\n"
        )
        started = time.monotonic()
        run = await finish(
            await start_daemon(tmp_path / "root", emu.url, config_extra=extra), timeout=110
        )
        took = time.monotonic() - started
        assert run.returncode == 0, run.stderr[-3000:]
        answer = await journal(emu.url)
    assert took >= hours_6 / scale - 1  # it did run six emulated hours
    calls = status_calls(answer, "openai")
    assert 10 <= sum(calls.values()) <= 30, calls


def test_the_poll_interval_grows_with_age_between_its_bounds() -> None:
    """The default schedule (5 s, x1.5, 30 min): a six-hour batch is polled some 27 times."""
    age, polls = 0.0, 0
    while age < 6 * 3600:
        age += poll_interval_s(age, initial_s=5.0, factor=1.5, max_s=1800.0)
        polls += 1
    assert 20 <= polls <= 30
    assert poll_interval_s(0.0, initial_s=5.0, factor=1.5, max_s=1800.0) == 5.0
    assert poll_interval_s(1e9, initial_s=5.0, factor=1.5, max_s=1800.0) == 1800.0
