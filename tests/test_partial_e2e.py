"""Partial deployments, end to end: ``batchd run`` with one or two API keys in its environment.

A provider without a key is held (its requests wait, said loudly and in ``batchd status``) and
the others run; a key refused (401) is the same kind of pause. ``--once`` ends when nothing more
can progress: 0 when every request is final, 3 when some wait for a provider that cannot
proceed, saying how many, for which provider and why. Every provider points at the emulator by
``base_url`` (not ``--emulator-url``, which would stand in for the missing keys).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from adapters.emulator import Emulator, FaultSet

from .daemon_harness import (
    emulator_base_urls,
    finish,
    journal,
    read_results,
    request_states,
    run_cli,
    start_daemon,
    stop,
    unified,
    wait_for,
    wait_for_log,
    write_jsonl,
)

MODEL = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}
ALL = ("openai", "anthropic", "gemini")


def _drop_files(root: Path) -> dict[str, list[dict[str, Any]]]:
    """One file per provider, and one mixing all three."""
    files = {p: [unified(f"{p}-{i}", MODEL[p], f"{p} question {i}") for i in range(3)] for p in ALL}
    files["mixed"] = [unified(f"mixed-{p}", MODEL[p], f"mixed {p}") for p in ALL]
    for name, lines in files.items():
        write_jsonl(root / "inbox" / f"{name}.jsonl", lines)
    return files


def _status(root: Path, **kw: Any) -> dict[str, Any]:
    out = run_cli(["status", "--root", str(root), "--json"], **kw)
    assert out.returncode == 0, out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    return report


@pytest.mark.parametrize("keys", [("openai",), ("anthropic", "gemini")], ids=["one", "two"])
async def test_missing_keys_hold_those_providers_the_others_run(
    tmp_path: Path, emulator: Emulator, keys: tuple[str, ...]
):
    """With one (or two) keys: the daemon starts, the keyed providers' files are answered, the
    others' requests wait; --once exits 3 naming them. Given every key, the rest goes through
    and nothing was sent twice."""
    files = _drop_files(tmp_path)
    held = [p for p in ALL if p not in keys]
    urls = emulator_base_urls(emulator.url)
    proc = await start_daemon(tmp_path, None, config_extra=urls, keys=keys)
    run = await finish(proc)
    assert run.returncode == 3, run.stderr[-4000:]
    assert "Traceback" not in run.stderr
    for provider in keys:
        results = read_results(tmp_path / "outbox" / f"{provider}.results.jsonl")
        assert Counter(r["status"] for r in results) == {"succeeded": 3}
    for provider in held:
        assert not (tmp_path / "outbox" / f"{provider}.results.jsonl").exists()
        assert f"provider {provider} is not configured: no API key" in run.stderr
    waiting = 4 * len(held)  # three in its own file, one in the mixed file
    assert request_states(tmp_path)["pending"] == waiting
    said = next(line for line in run.stderr.splitlines() if "nothing more can progress" in line)
    assert f"{waiting} requests wait for a provider that cannot proceed" in said
    for provider in held:
        assert f"4 for {provider} (no API key: set " in said
    report = _status(tmp_path, keys=())  # status needs no key
    assert report["daemon"]["running"] is False
    for provider in ALL:
        view = report["providers"][provider]
        if provider in keys:
            assert (view["state"], view["waiting"]) == ("running", 0)
        else:
            assert (view["state"], view["waiting"]) == ("no key", 4), view
            assert "no API key" in view["reason"]

    proc = await start_daemon(tmp_path, None, config_extra=urls)  # every key now
    run = await finish(proc)
    assert run.returncode == 0, run.stderr[-4000:]
    for name, lines in files.items():
        results = read_results(tmp_path / "outbox" / f"{name}.results.jsonl")
        assert [r["custom_id"] for r in results] == [x["custom_id"] for x in lines]
        assert {r["status"] for r in results} == {"succeeded"}, name
    stats = (await journal(emulator.url))["providers"]
    assert all(stats[p]["duplicate_items"] == 0 for p in ALL)
    assert all(stats[p]["batches_created"] >= 1 for p in ALL)


async def test_one_key_and_only_its_requests_exits_0(tmp_path: Path, emulator: Emulator):
    """A deployment that uses one provider: --once ends 0 when every request is final; the
    providers it does not use are said once at start-up, not every auth_pause_s."""
    lines = [unified(f"g{i}", MODEL["gemini"], f"q {i}") for i in range(4)]
    write_jsonl(tmp_path / "inbox" / "g.jsonl", lines)
    extra = "auth_pause_s = 0.2\n" + emulator_base_urls(emulator.url)
    run = await finish(await start_daemon(tmp_path, None, config_extra=extra, keys=("gemini",)))
    assert run.returncode == 0, run.stderr[-4000:]
    results = read_results(tmp_path / "outbox" / "g.results.jsonl")
    assert [r["status"] for r in results] == ["succeeded"] * 4
    assert "paused" not in run.stderr and "Traceback" not in run.stderr


async def test_held_provider_said_every_auth_pause_and_shown_in_status(
    tmp_path: Path, emulator: Emulator
):
    """A running daemon (not --once) with only an OpenAI key: a loud error line every
    auth_pause_s while Anthropic requests wait, and `batchd status` beside it shows it running
    with each provider's state; SIGTERM then ends it 0."""
    write_jsonl(tmp_path / "inbox" / "c.jsonl", [unified("c", MODEL["anthropic"], "hello")])
    extra = "auth_pause_s = 0.5\n" + emulator_base_urls(emulator.url)
    proc = await start_daemon(tmp_path, None, once=False, config_extra=extra, keys=("openai",))
    await wait_for_log(proc, "provider anthropic paused: no API key", count=3)

    async def published() -> bool:
        return (tmp_path / "state" / "providers.json").exists()

    await wait_for(published, what="the providers' states")
    report = _status(tmp_path)
    assert report["daemon"] == {**report["daemon"], "running": True, "pid": proc.pid}
    states = {p: v["state"] for p, v in report["providers"].items()}
    assert states == {"openai": "running", "anthropic": "no key", "gemini": "no key"}
    assert report["providers"]["anthropic"]["waiting"] == 1
    text = run_cli(["status", "--root", str(tmp_path)])
    assert f"running (PID {proc.pid})" in text.stdout
    assert "anthropic  no key: no API key: set ANTHROPIC_API_KEY" in text.stdout
    run = await stop(proc)
    assert run.returncode == 0, run.stderr[-4000:]
    assert request_states(tmp_path) == {"pending": 1}


async def test_refused_key_with_once_exits_3_naming_it(tmp_path: Path, emulator: Emulator):
    """A key the provider refuses (401) pauses it, as a missing key holds it: --once answers
    the others and exits 3 saying the key was refused; nothing is failed."""
    assert emulator.ctx is not None
    emulator.ctx.faults = FaultSet.parse({"auth": {"anthropic": "the-right-key"}})
    files = _drop_files(tmp_path)
    run = await finish(await start_daemon(tmp_path, emulator.url))
    assert run.returncode == 3, run.stderr[-4000:]
    said = next(line for line in run.stderr.splitlines() if "nothing more can progress" in line)
    assert "4 for anthropic (API key refused" in said
    for provider in ("openai", "gemini"):
        results = read_results(tmp_path / "outbox" / f"{provider}.results.jsonl")
        assert len(results) == len(files[provider])
    assert request_states(tmp_path)["pending"] == 4
    report = _status(tmp_path)
    assert report["providers"]["anthropic"]["state"] == "paused"
    assert "API key refused" in report["providers"]["anthropic"]["reason"]
