"""Running ``batchd run`` as a real subprocess against an emulator, for end-to-end tests."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import sqlite3
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

TEST_KEY = "test-key-not-secret"

# Every interval short, so a whole run takes a second or two.
FAST_CONFIG = """
settle_s = 0.1
scan_interval_s = 0.5
batch_linger_s = 0.1
poll_initial_s = 0.05
poll_factor = 1.5
poll_max_s = 0.3
retry_base_s = 0.05
retry_max_s = 0.3
reconcile_after_s = 0.1
request_timeout_s = 10
grace_s = 5
max_attempts = 8
"""


_LOGS: dict[int, tuple[Path, int]] = {}  # pid -> (log file, offset where this run starts)
_STARTED: list[asyncio.subprocess.Process] = []  # daemons of the current test, for reap_daemons


@dataclass
class Run:
    returncode: int
    stderr: str


def merge_config(extra: str) -> str:
    """FAST_CONFIG with ``extra`` appended; a top-level key set in ``extra`` replaces the fast
    value (TOML refuses a key given twice). Top-level keys in ``extra`` come before its tables."""
    head = extra.split("\n[", 1)[0]
    overridden = set(tomllib.loads(head)) if head.strip() else set()
    kept = [
        line for line in FAST_CONFIG.splitlines() if line.split("=", 1)[0].strip() not in overridden
    ]
    return "\n".join(kept) + "\n" + extra


def write_config(root: Path, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "batchd.toml"
    path.write_text(merge_config(extra))
    return path


# Linux capabilities that let root ignore file modes (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH).
_DAC_CAPS = (1, 2)
_PR_CAPBSET_DROP = 24


def _drop_dac_caps() -> None:
    """In the child before exec: drop root's licence to ignore file modes, so a test can make a
    file unreadable or a folder unwritable with chmod, as for the unprivileged systemd user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in _DAC_CAPS:
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def permissions_enforceable() -> bool:
    """Whether chmod can stop the daemon (non-root, or root able to drop its DAC capabilities)."""
    if os.geteuid() != 0:
        return True
    import subprocess

    try:
        probe = subprocess.run(
            [sys.executable, "-c", "pass"], preexec_fn=_drop_dac_caps, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def daemon_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
    env.update(
        OPENAI_API_KEY=TEST_KEY,
        ANTHROPIC_API_KEY=TEST_KEY,
        GEMINI_API_KEY=TEST_KEY,
        PYTHONUNBUFFERED="1",
    )
    env.pop("GOOGLE_API_KEY", None)
    env.update(extra or {})
    return env


async def start_daemon(
    root: Path,
    emulator_url: str | None,
    *,
    once: bool = True,
    config_extra: str = "",
    env: dict[str, str] | None = None,
    enforce_permissions: bool = False,
) -> asyncio.subprocess.Process:
    """Start ``batchd run``; ``emulator_url=None`` leaves the base URLs to the config, and
    ``enforce_permissions`` makes a root daemon honour file modes (see _drop_dac_caps)."""
    cfg = write_config(root, config_extra)
    log_size = (root / "daemon.log").stat().st_size if (root / "daemon.log").exists() else 0
    args = [sys.executable, "-m", "daemon.cli", "run", "--root", str(root), "--config", str(cfg)]
    if emulator_url is not None:
        args += ["--emulator-url", emulator_url]
    if once:
        args.append("--once")
    drop = enforce_permissions and os.geteuid() == 0
    log = (root / "daemon.log").open("ab")  # stderr to a file: readable even after a kill
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            env=daemon_env(env),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
            preexec_fn=_drop_dac_caps if drop else None,
        )
    finally:
        log.close()
    _LOGS[proc.pid] = (root / "daemon.log", log_size)
    _STARTED.append(proc)
    return proc


async def reap_daemons() -> None:
    """Kill the daemons a test left running (it failed before stopping them): a --once daemon
    whose emulator is gone would otherwise retry for ever. Call after each test."""
    while _STARTED:
        proc = _STARTED.pop()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def finish(proc: asyncio.subprocess.Process, timeout: float = 60) -> Run:
    """Wait for the daemon to exit; its stderr of this run comes back in ``Run.stderr``."""
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("batchd did not finish in time:\n" + _log(proc)[-6000:]) from None
    return Run(proc.returncode or 0, _log(proc))


def _log(proc: asyncio.subprocess.Process) -> str:
    path, start = _LOGS[proc.pid]
    with open(path, "rb") as f:
        f.seek(start)
        return f.read().decode(errors="replace")


async def run_once(root: Path, emulator_url: str, **kw: Any) -> Run:
    return await finish(await start_daemon(root, emulator_url, **kw))


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> Run:
    proc.send_signal(sig)
    return await finish(proc, timeout=30)


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float = 30, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def log_of(proc: asyncio.subprocess.Process) -> str:
    """What this run of the daemon has logged so far (it may still be running)."""
    return _log(proc)


async def wait_for_log(
    proc: asyncio.subprocess.Process, text: str, count: int = 1, timeout: float = 30
) -> str:
    """Wait until ``text`` appears ``count`` times in this run's log (or the daemon exits)."""

    async def seen() -> bool:
        if proc.returncode is not None:
            raise AssertionError(f"batchd exited ({proc.returncode}) waiting for {text!r}")
        return _log(proc).count(text) >= count

    await wait_for(seen, timeout, what=f"{count} x {text!r} in the daemon log")
    return _log(proc)


def _query(root: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read the daemon's database (read-only; WAL lets it read while the daemon writes)."""
    path = root / "state" / "batchd.sqlite3"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:  # created, not migrated yet
        return []
    finally:
        db.close()


def request_states(root: Path) -> Counter[str]:
    """How many requests are in each state."""
    return Counter(dict(_query(root, "SELECT status, COUNT(*) FROM requests GROUP BY status")))


def provider_batch_ids(root: Path) -> list[str]:
    """The provider batch ids the daemon has recorded, oldest first."""
    sql = "SELECT provider_batch_id FROM batches WHERE provider_batch_id IS NOT NULL ORDER BY id"
    return [r[0] for r in _query(root, sql)]


async def journal(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.get(url + "/_emulator/journal")).json()


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    tmp.rename(path)
    return path


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def unified(custom_id: str, model: str, prompt: str, **extra: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        **extra,
    }
