"""Running ``batchd run`` as a real subprocess against an emulator, for end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
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


@dataclass
class Run:
    returncode: int
    stderr: str


def write_config(root: Path, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "batchd.toml"
    path.write_text(FAST_CONFIG + extra)
    return path


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
    emulator_url: str,
    *,
    once: bool = True,
    config_extra: str = "",
    env: dict[str, str] | None = None,
) -> asyncio.subprocess.Process:
    cfg = write_config(root, config_extra)
    log_size = (root / "daemon.log").stat().st_size if (root / "daemon.log").exists() else 0
    args = [
        sys.executable,
        "-m",
        "daemon.cli",
        "run",
        "--root",
        str(root),
        "--config",
        str(cfg),
        "--emulator-url",
        emulator_url,
    ]
    if once:
        args.append("--once")
    log = (root / "daemon.log").open("ab")  # stderr to a file: readable even after a kill
    try:
        proc = await asyncio.create_subprocess_exec(
            *args, env=daemon_env(env), stdout=asyncio.subprocess.DEVNULL, stderr=log
        )
    finally:
        log.close()
    _LOGS[proc.pid] = (root / "daemon.log", log_size)
    return proc


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
