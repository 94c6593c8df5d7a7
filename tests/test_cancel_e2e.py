"""``batchd cancel`` against a real daemon and the emulator: in the middle of a slow run (the
emulator's time scale keeps batches in progress, a concurrent-batch quota keeps requests
unsent), nothing further is sent, the job's own batch is cancelled at the provider, and its
results file is written with ``canceled`` lines; another job goes on untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.emulator import Emulator
from adapters.emulator.faults import FaultSet
from tests.daemon_harness import (
    read_results,
    run_cli,
    start_daemon,
    stop,
    unified,
    wait_for,
    wait_for_log,
    write_jsonl,
)

MODEL = "gemini-2.5-flash"
OTHER = "claude-haiku-4-5"


async def journal(url: str) -> dict[str, Any]:
    """The emulator's journal with every call it answered."""
    async with httpx.AsyncClient(timeout=10) as client:
        answer: dict[str, Any] = (
            await client.get(url + "/_emulator/journal", params={"limit": 0})
        ).json()
        return answer


def _creates(j: dict[str, Any]) -> int:
    return int(j["providers"]["gemini"].get("batches_created", 0))


@pytest.mark.timeout(240)  # a daemon start takes ~20 s on a loaded machine (SDK imports)
async def test_cancel_mid_run_sends_nothing_more_and_writes_results(tmp_path: Path) -> None:
    async with Emulator(time_scale=3, state_dir=tmp_path / "emu") as emu:
        assert emu.ctx is not None
        emu.ctx.faults = FaultSet.parse({"concurrent_batch_limits": {MODEL: 1}})
        extra = "\n[providers.gemini]\nbatch_size = 3\n"
        proc = await start_daemon(tmp_path, emu.url, once=False, config_extra=extra)
        lines = [unified(f"s{i}", MODEL, f"slow {i}") for i in range(9)]
        keep = [unified(f"k{i}", OTHER, f"keep {i}") for i in range(2)]
        write_jsonl(tmp_path / "inbox" / "slow.jsonl", lines)
        write_jsonl(tmp_path / "inbox" / "keep.jsonl", keep)

        async def one_created() -> bool:
            return _creates(await journal(emu.url)) == 1

        await wait_for(one_created, 90, what="the first batch created")
        root = ["--root", str(tmp_path)]
        out = run_cli(["cancel", *root, "slow.jsonl"])
        assert out.returncode == 0, out.stderr
        assert "cancel requested" in out.stdout
        again = run_cli(["cancel", *root, "slow.jsonl"])  # idempotent
        assert again.returncode == 0 and "already requested" in again.stdout, again.stderr
        await wait_for_log(proc, "batch cancel sent", timeout=30)
        results = tmp_path / "outbox" / "slow.results.jsonl"

        async def written() -> bool:
            return results.exists() and (tmp_path / "outbox" / "keep.results.jsonl").exists()

        await wait_for(written, 60, what="both results files")
        j = await journal(emu.url)
        run = await stop(proc)
        assert run.returncode == 0, run.stderr[-3000:]
        # Nothing further was sent: the one batch created before the cancel is the only one.
        assert _creates(j) == 1
        assert j["providers"]["gemini"]["duplicate_items"] == 0
        cancels = [c for c in j["calls"] if c["path"].endswith(":cancel")]
        assert len(cancels) == 1 and cancels[0]["status"] == 200, cancels
        rows = read_results(results)
        assert sorted(r["custom_id"] for r in rows) == sorted(x["custom_id"] for x in lines)
        assert {r["status"] for r in rows} == {"canceled"}
        unsent = [r for r in rows if r["batch_ids"] == []]
        assert len(unsent) == 6 and all(r["error"]["type"] == "job_canceled" for r in unsent)
        kept = read_results(tmp_path / "outbox" / "keep.results.jsonl")
        assert {r["status"] for r in kept} == {"succeeded"}
        # A third cancel of a finished job: nothing to do, said so.
        done = run_cli(["cancel", *root, "slow.jsonl"])
        assert done.returncode == 0 and "was canceled and is finished" in done.stdout
        assert run_cli(["cancel", *root, "nosuch.jsonl"]).returncode == 1


@pytest.mark.timeout(240)
async def test_cancel_leaves_a_shared_batch_running(tmp_path: Path) -> None:
    """A batch that also holds another job's requests is not cancelled: both jobs' answers
    arrive and are kept, and the canceled job's results file is written when it ends."""
    async with Emulator(time_scale=2, state_dir=tmp_path / "emu") as emu:
        model = "gpt-4o-mini"
        for name in ("a", "b"):  # both in the inbox at start: one batch holds both jobs
            lines = [unified(f"{name}{i}", model, f"{name} {i}") for i in range(2)]
            write_jsonl(tmp_path / "inbox" / f"{name}.jsonl", lines)
        proc = await start_daemon(
            tmp_path, emu.url, once=False, config_extra="batch_linger_s = 2\n"
        )

        async def one_created() -> bool:
            return int((await journal(emu.url))["providers"]["openai"]["batches_created"]) == 1

        await wait_for(one_created, 90, what="the shared batch created")
        out = run_cli(["cancel", "--root", str(tmp_path), "a.jsonl"])
        assert out.returncode == 0 and "2 in batches at the providers" in out.stdout, out

        async def written() -> bool:
            return all((tmp_path / "outbox" / f"{n}.results.jsonl").exists() for n in "ab")

        await wait_for(written, 90, what="both results files")
        j = await journal(emu.url)
        run = await stop(proc)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "batch is shared with other jobs: it keeps running" in run.stderr
        assert not [c for c in j["calls"] if c["path"].endswith("/cancel")]
        assert j["providers"]["openai"]["batches_created"] == 1
        for name in "ab":
            rows = read_results(tmp_path / "outbox" / f"{name}.results.jsonl")
            assert [r["status"] for r in rows] == ["succeeded", "succeeded"]
