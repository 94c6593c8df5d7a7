"""``batchd run`` and ``batchd emulator`` as real subprocesses: the one harness shared by the
end-to-end tests and the reliability campaign (``bench/chaos.py``).

It owns everything about running the daemon for a test: the environment (test keys, no stray
``BATCHD_*`` variables), the config file (every interval short; a caller's keys replace the
fast ones), the command line, the log of one run (stderr goes to ``root/daemon.log``, read
from where this run started, so it survives a SIGKILL), read-only looks at the daemon's
database, crash points, bounded waits, and the emulator as its own process.

:class:`DaemonProcess` is driven from plain code (the campaign does that). Tests run the
emulator in their own event loop, so they use the async helpers around it (``start_daemon``,
``finish``, ``stop``, ``wait_for_log``), which never block the loop. ``bench/chaos.py``
imports this module as ``tests.daemon_harness``; it must not import pytest.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from adapters.facts import PROVIDERS
from daemon.crashpoints import POINTS

REPO = Path(__file__).resolve().parents[1]
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


@dataclass
class Run:
    returncode: int
    stderr: str


# -- configuration, environment, command line --------------------------------------------------


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


KEY_VARIABLES = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}


def daemon_env(
    extra: dict[str, str] | None = None, keys: Collection[str] = PROVIDERS
) -> dict[str, str]:
    """This process's environment without ``BATCHD_*``, with a test key for each provider in
    ``keys`` (every provider by default) and no key variable at all for the others."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
    for variables in KEY_VARIABLES.values():
        for name in variables:
            env.pop(name, None)
    for provider in keys:
        env[KEY_VARIABLES[provider][0]] = TEST_KEY
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def emulator_base_urls(url: str) -> str:
    """Config tables pointing every provider at the emulator by ``base_url``: unlike
    ``--emulator-url``, the daemon then needs real keys (a provider without one is held)."""
    return "".join(f'\n[providers.{p}]\nbase_url = "{url}"\n' for p in PROVIDERS)


def run_cli(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    keys: Collection[str] = PROVIDERS,
    enforce_permissions: bool = False,
    timeout: float = 60,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``batchd ARGS...`` as a subprocess (any command); ``enforce_permissions`` makes a root
    process honour file modes (see _drop_dac_caps)."""
    drop = enforce_permissions and os.geteuid() == 0
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        cwd=REPO,
        env=daemon_env(env, keys),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text,
        preexec_fn=_drop_dac_caps if drop else None,
        check=False,
    )


def crash_at(point: str, nth: int = 1) -> dict[str, str]:
    """The environment that makes the daemon exit at crash point ``point`` (the ``nth`` time
    it is reached); ``point`` is one of ``daemon.crashpoints.POINTS``."""
    if point not in POINTS:
        raise ValueError(f"unknown crash point {point!r}; one of {', '.join(POINTS)}")
    return {"BATCHD_CRASH_AT": f"{point}:{nth}"}


def crash_reached(point: str) -> str:
    """The log text of a daemon that exited at ``point``."""
    return f"crash point {point} reached"


def daemon_argv(root: Path, config: Path, emulator_url: str | None, *, once: bool) -> list[str]:
    """``batchd run`` for ``root``; ``emulator_url=None`` leaves the base URLs to the config."""
    args = [sys.executable, "-m", "daemon.cli", "run", "--root", str(root), "--config", str(config)]
    if emulator_url is not None:
        args += ["--emulator-url", emulator_url]
    if once:
        args.append("--once")
    return args


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
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "pass"], preexec_fn=_drop_dac_caps, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


# -- bounded waits ---------------------------------------------------------------------------------


def wait_until(check: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """A bounded poll from plain code; True once ``check()`` holds, False at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float = 30, what: str = "condition"
) -> None:
    """A bounded poll inside an event loop; AssertionError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- the daemon ----------------------------------------------------------------------------------


class DaemonProcess:
    """``batchd run`` for one root folder; may be started again after it ends (or is killed).

    Its stderr goes to ``root/daemon.log``; :meth:`log` is what the current run wrote.
    """

    def __init__(self, root: Path, emulator_url: str | None, *, config_extra: str = "") -> None:
        self.root = root
        self.emulator_url = emulator_url
        self.config = write_config(root, config_extra)
        self.log_path = root / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0

    def start(
        self,
        *,
        once: bool = False,
        env: dict[str, str] | None = None,
        enforce_permissions: bool = False,
        keys: Collection[str] = PROVIDERS,
    ) -> DaemonProcess:
        """Start a run; ``env`` adds to :func:`daemon_env`, ``keys``: the providers given an
        API key (all by default), and ``enforce_permissions`` makes a root daemon honour file
        modes (see _drop_dac_caps)."""
        if self.running():
            raise RuntimeError("the daemon is already running")
        args = daemon_argv(self.root, self.config, self.emulator_url, once=once)
        drop = enforce_permissions and os.geteuid() == 0
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args,
                cwd=REPO,
                env=daemon_env(env, keys),
                stdout=subprocess.DEVNULL,
                stderr=log,
                preexec_fn=_drop_dac_caps if drop else None,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """None while the process runs."""
        return None if self.proc is None else self.proc.poll()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        """What this run has logged so far (it may still be running)."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(self._offset)
            return f.read().decode(errors="replace")

    def logged(self, text: str, count: int = 1) -> bool:
        """Whether ``text`` appears ``count`` times in this run's log (a log can grow to many
        megabytes, so a single occurrence is looked for without counting them all)."""
        log = self.log()
        return text in log if count == 1 else log.count(text) >= count

    def wait_log(self, text: str, timeout: float, count: int = 1) -> bool:
        """Wait until ``text`` appears ``count`` times in this run's log; False if the run
        ended first or the time ran out."""
        wait_until(lambda: self.logged(text, count) or not self.running(), timeout)
        return self.logged(text, count)

    def signal(self, sig: int) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if the run has not ended within ``timeout`` seconds."""
        assert self.proc is not None, "not started"
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> int:
        """SIGKILL (if still running) and reap; the exit code."""
        self.signal(signal.SIGKILL)
        code = self.wait(30)
        assert code is not None, "the daemon survived SIGKILL"
        return code

    def db(self, sql: str) -> list[tuple[Any, ...]]:
        return query(self.root, sql)


# -- the daemon, from a test's event loop ----------------------------------------------------------

_STARTED: list[DaemonProcess] = []  # daemons of the current test, for reap_daemons


async def start_daemon(
    root: Path,
    emulator_url: str | None,
    *,
    once: bool = True,
    config_extra: str = "",
    env: dict[str, str] | None = None,
    enforce_permissions: bool = False,
    keys: Collection[str] = PROVIDERS,
) -> DaemonProcess:
    """Start ``batchd run``; ``emulator_url=None`` leaves the base URLs to the config,
    ``keys``: the providers given an API key (all by default; with ``emulator_url`` set any
    provider works without one), and ``enforce_permissions`` makes a root daemon honour file
    modes (see _drop_dac_caps)."""
    daemon = DaemonProcess(root, emulator_url, config_extra=config_extra)
    daemon.start(once=once, env=env, enforce_permissions=enforce_permissions, keys=keys)
    _STARTED.append(daemon)
    return daemon


def reap_daemons() -> None:
    """Kill the daemons a test left running (it failed before stopping them): a --once daemon
    whose emulator is gone would otherwise retry for ever. Call after each test."""
    while _STARTED:
        _STARTED.pop().kill()


async def finish(proc: DaemonProcess, timeout: float = 60) -> Run:
    """Wait for the daemon to exit; its stderr of this run comes back in ``Run.stderr``."""
    code = await asyncio.to_thread(proc.wait, timeout)
    if code is None:
        proc.kill()
        raise AssertionError("batchd did not finish in time:\n" + proc.log()[-6000:])
    return Run(code, proc.log())


async def run_once(root: Path, emulator_url: str, **kw: Any) -> Run:
    return await finish(await start_daemon(root, emulator_url, **kw))


async def stop(proc: DaemonProcess, sig: int = signal.SIGTERM) -> Run:
    proc.signal(sig)
    return await finish(proc, timeout=30)


def log_of(proc: DaemonProcess) -> str:
    """What this run of the daemon has logged so far (it may still be running)."""
    return proc.log()


async def wait_for_log(proc: DaemonProcess, text: str, count: int = 1, timeout: float = 30) -> str:
    """Wait until ``text`` appears ``count`` times in this run's log (or the daemon exits)."""

    async def seen() -> bool:
        if proc.returncode is not None:
            raise AssertionError(f"batchd exited ({proc.returncode}) waiting for {text!r}")
        return proc.logged(text, count)

    await wait_for(seen, timeout, what=f"{count} x {text!r} in the daemon log")
    return proc.log()


# -- the daemon's database (read-only) -------------------------------------------------------------


def query(root: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read the daemon's database (read-only; WAL lets it read while the daemon writes)."""
    path = root / "state" / "batchd.sqlite3"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{quote(str(path.absolute()))}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:  # created, not migrated yet
        return []
    finally:
        db.close()


def request_states(root: Path) -> Counter[str]:
    """How many requests are in each state."""
    return Counter(dict(query(root, "SELECT status, COUNT(*) FROM requests GROUP BY status")))


def provider_batch_ids(root: Path) -> list[str]:
    """The provider batch ids the daemon has recorded, oldest first."""
    sql = "SELECT provider_batch_id FROM batches WHERE provider_batch_id IS NOT NULL ORDER BY id"
    return [r[0] for r in query(root, sql)]


# -- the emulator ----------------------------------------------------------------------------------


async def journal(url: str) -> dict[str, Any]:
    """The emulator's journal (what each provider received), from a test's event loop."""
    async with httpx.AsyncClient(timeout=10) as client:
        answer: dict[str, Any] = (await client.get(url + "/_emulator/journal")).json()
        return answer


class EmulatorProcess:
    """``batchd emulator`` as its own process on a free port, with its state on disk."""

    def __init__(self, state_dir: Path, time_scale: float, log: Path) -> None:
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "emulator", "--port", "0",
             "--state-dir", str(state_dir), "--time-scale", str(time_scale)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "batchd emulator listening on http://..."
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[-1].strip()
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def journal(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.http.get("/_emulator/journal", params={"limit": 0}).json()
        return answer

    def duplicates(self) -> dict[str, int]:
        """Items each provider received more than once, so far."""
        providers = self.journal()["providers"]
        return {p: providers[p]["duplicate_items"] for p in PROVIDERS}

    def counter(self, provider: str, name: str) -> int:
        return int(self.journal()["providers"][provider].get(name, 0))

    def set_faults(self, faults: dict[str, Any]) -> None:
        self.http.put("/_emulator/faults", json=faults).raise_for_status()

    def add_faults(self, faults: list[dict[str, Any]]) -> None:
        self.http.post("/_emulator/faults", json={"faults": faults}).raise_for_status()

    def faults_fired(self) -> int:
        return sum(f["fired"] for f in self.http.get("/_emulator/faults").json()["faults"])

    def provider_files(self) -> dict[str, int]:
        """Files still stored at OpenAI and Gemini (inputs and results not cleaned up)."""
        openai = self.http.get("/v1/files", headers={"Authorization": f"Bearer {TEST_KEY}"})
        gemini, token = 0, ""
        for _ in range(1000):  # pages of 100; bounded
            page = self.http.get(
                "/v1beta/files",
                params={"pageSize": 100, "pageToken": token},
                headers={"x-goog-api-key": TEST_KEY},
            ).json()
            gemini += len(page.get("files", []))
            token = page.get("nextPageToken", "")
            if not token:
                break
        return {"openai": len(openai.json()["data"]), "gemini": gemini}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        self.log.close()


# -- input and output files ------------------------------------------------------------------------


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
