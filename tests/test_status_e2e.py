"""``batchd status`` beside a real daemon: active work by default (% done, cost so far, ETA,
what is in flight per model, disk usage), ``--all`` for history, ``--watch`` bounded by
``--count``, ``--json`` keeping its keys; and per-job summaries that count only the job's own
requests of a batch it shares with another job."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.emulator import Emulator
from daemon.cli_status import progress
from daemon.store import Store
from daemon.store.schema import MIGRATIONS
from tests.daemon_harness import (
    REPO,
    daemon_env,
    run_cli,
    start_daemon,
    stop,
    unified,
    wait_for,
    write_jsonl,
)

MODEL = "gpt-4o-mini"


async def _created(url: str) -> int:
    async with httpx.AsyncClient(timeout=10) as client:
        j: dict[str, Any] = (await client.get(url + "/_emulator/journal")).json()
    return int(j["providers"]["openai"]["batches_created"])


@pytest.mark.timeout(240)  # a daemon start takes ~20 s on a loaded machine (SDK imports)
async def test_status_views_while_running_and_after(tmp_path: Path) -> None:
    async with Emulator(time_scale=2, state_dir=tmp_path / "emu") as emu:
        for name in ("a", "b"):  # both in the inbox at start: one batch holds both jobs
            lines = [unified(f"{name}{i}", MODEL, f"{name} {i}") for i in range(2)]
            write_jsonl(tmp_path / "inbox" / f"{name}.jsonl", lines)
        proc = await start_daemon(
            tmp_path, emu.url, once=False, config_extra="batch_linger_s = 2\n"
        )

        async def one_batch() -> bool:
            return await _created(emu.url) == 1

        await wait_for(one_batch, 90, what="the shared batch created")
        root = ["--root", str(tmp_path)]
        out = run_cli(["status", *root])
        assert out.returncode == 0, out.stderr
        text = out.stdout
        assert "ACTIVE JOBS" in text and "a.jsonl [active] 0.0% (0/2)" in text, text
        assert "cost so far $0.0000" in text
        assert f"openai {MODEL}: 1 batches, 4 requests, ~" in text, text
        assert "DISK" in text and "state " in text
        assert "ALL JOBS" not in text  # history only with --all
        out = run_cli(["status", *root, "--json"])
        report = json.loads(out.stdout)
        assert {"daemon", "providers", "files", "batches", "errors"} <= set(report)
        assert [j["name"] for j in report["active"]] == ["a.jsonl", "b.jsonl"]
        assert report["active"][0]["percent_done"] == 0.0
        assert report["in_flight"][0]["requests"] == 4
        assert report["in_flight"][0]["estimated_input_tokens"] > 0
        assert report["disk"]["state"] > 0
        out = run_cli(["status", *root, "--watch", "--interval", "0.2", "--count", "2"])
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("ACTIVE JOBS") == 2
        out = run_cli(["status", *root, "--watch", "--json", "--interval", "0.2", "--count", "2"])
        assert [len(json.loads(line)["active"]) for line in out.stdout.splitlines()] == [2, 2]

        async def written() -> bool:
            return all((tmp_path / "outbox" / f"{n}.summary.json").exists() for n in "ab")

        await wait_for(written, 90, what="both summaries")
        run = await stop(proc)
        assert run.returncode == 0, run.stderr[-3000:]
    for name in "ab":
        summary = json.loads((tmp_path / "outbox" / f"{name}.summary.json").read_text())
        # The batch held 4 requests; this job's summary counts its own 2 only.
        assert [b["counts"] for b in summary["batches"]] == [{"succeeded": 2}], summary
    text = run_cli(["status", *root]).stdout
    assert "ACTIVE JOBS\n  none" in text and "IN FLIGHT (budgets in use, per model)\n  none" in text
    history = run_cli(["status", *root, "--all"]).stdout
    assert "ALL JOBS" in history and "a.jsonl [done]" in history and "ALL BATCHES" in history
    report = json.loads(run_cli(["status", *root, "--json"]).stdout)
    assert [f["counts"] for f in report["files"]] == [{"succeeded": 2}] * 2  # as before
    assert report["active"] == []


def test_progress_and_eta() -> None:
    job = {"counts": {"succeeded": 30, "invalid": 10, "batched": 40}, "status": "active",
           "created_at": 0.0, "ingested_at": 100.0}  # fmt: skip
    p = progress(job, now=200.0)
    assert p == {"done": 40, "total": 80, "percent_done": 50.0, "eta_s": 100.0}
    assert progress({**job, "counts": {"pending": 3}}, 200.0)["eta_s"] is None
    assert progress({**job, "counts": {}}, 200.0)["percent_done"] is None


async def test_status_reads_without_an_event_loop(tmp_path: Path) -> None:
    """``status`` is a plain synchronous read: neither asyncio nor aiosqlite (nor the store's
    async half) is imported, which is most of what made it slow to start."""
    state = tmp_path / "state"
    await (await Store(state / "batchd.sqlite3").open()).close()
    script = (
        "import sys\n"
        "from daemon.cli import main\n"
        f"code = main(['status', '--state-dir', {str(state)!r}, '--json'])\n"
        "loaded = [m for m in ('asyncio', 'aiosqlite', 'daemon.store.db') if m in sys.modules]\n"
        "print('LOADED', loaded, code)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=daemon_env(None),
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "LOADED [] 0", out.stdout[-2000:]


def test_status_refuses_a_database_it_cannot_read(tmp_path: Path) -> None:
    """A database batchd never set up, or one a newer batchd migrated: exit 1 and why."""
    for name, version in (("empty", 0), ("newer", len(MIGRATIONS) + 1)):
        state = tmp_path / name
        state.mkdir()
        with sqlite3.connect(state / "batchd.sqlite3") as db:
            db.execute("CREATE TABLE t (x)")
            db.execute(f"PRAGMA user_version={version}")
        out = run_cli(["status", "--state-dir", str(state)])
        assert out.returncode == 1, out.stderr
        assert "cannot read the state database" in out.stderr and "Traceback" not in out.stderr
        why = "never started on it" if version == 0 else "newer than this batchd"
        assert why in out.stderr, out.stderr
