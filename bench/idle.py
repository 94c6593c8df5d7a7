"""Idle cost: CPU seconds per hour and resident memory of ``batchd run`` with nothing to do.

    .venv/bin/python bench/idle.py                 # 3 minutes, sampled every 30 s
    .venv/bin/python bench/idle.py --minutes 20 --every 60

Starts ``batchd emulator`` as its own process (so its CPU is not counted), then ``batchd run``
on an empty inbox pointed at it (every provider has a key, nothing is pending), waits for the
start-up to settle, and reads the daemon's CPU time at each sample: the nanosecond run time of
its threads (``/proc/PID/task/*/schedstat``; idle costs a few 10 ms clock ticks an hour, too
coarse for a short run; the ``/proc/PID/stat`` tick figure is printed beside the total) and its
wake-ups (voluntary context switches). It prints both for each interval, so a short run can be
extrapolated to an hour: the per-interval figures are flat when idle is linear. Start-up is
not counted (the first sample is taken ``--settle`` seconds after the daemon said it started).
The configuration is the default one (no fast test intervals).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.daemon_harness import EmulatorProcess, daemon_env  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads, ended ones included), in clock
    ticks (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def run_s(pid: int) -> float:
    """CPU seconds of the process's live threads, to the nanosecond (``schedstat``): idle costs
    a few clock ticks an hour, too coarse for a short run. Falls back to :func:`cpu_s`."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                total += int((task / "schedstat").read_text().split()[0])
    except OSError:
        return cpu_s(pid)
    return total / 1e9 if total else cpu_s(pid)


def wakeups(pid: int) -> int:
    """Voluntary context switches of the live threads: each is a sleep that ended (a wake-up)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_started(log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and "batchd started" in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"batchd did not start: {log.read_text(errors='replace')[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0, help="how long to measure")
    ap.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    ap.add_argument("--settle", type=float, default=15.0, help="seconds after start-up, unmeasured")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="batchd-idle-") as tmp:
        root = Path(tmp)
        emulator = EmulatorProcess(root / "emulator", time_scale=1.0, log=root / "emulator.log")
        log = root / "daemon.log"
        config = root / "batchd.toml"
        config.write_text("")
        argv = [sys.executable, "-m", "daemon.cli", "run", "--root", str(root / "d"),
                "--config", str(config), "--emulator-url", emulator.url]  # fmt: skip
        with log.open("ab") as err:
            proc = subprocess.Popen(argv, cwd=REPO, env=daemon_env(), stderr=err)
        try:
            wait_started(log, 60)
            time.sleep(args.settle)
            start, last, woke = time.monotonic(), run_s(proc.pid), wakeups(proc.pid)
            first, first_woke, first_ticks = last, woke, cpu_s(proc.pid)
            print(
                f"{'t (s)':>7} {'CPU in interval (s)':>20} {'CPU-s/h rate':>13} "
                f"{'wake-ups/h':>11} {'RSS (MB)':>9}"
            )
            while time.monotonic() - start < args.minutes * 60:
                time.sleep(args.every)
                now, now_woke = run_s(proc.pid), wakeups(proc.pid)
                rate = (now - last) * 3600 / args.every
                per_h = (now_woke - woke) * 3600 / args.every
                elapsed = time.monotonic() - start
                print(
                    f"{elapsed:7.0f} {now - last:20.4f} {rate:13.3f} {per_h:11.0f} "
                    f"{rss_mb(proc.pid):9.1f}"
                )
                last, woke = now, now_woke
            elapsed = time.monotonic() - start
            total = last - first
            ticks = cpu_s(proc.pid) - first_ticks
            print(
                f"idle: {total:.4f} CPU-s in {elapsed:.0f} s = {total * 3600 / elapsed:.3f} "
                f"CPU-s/h ({ticks * 3600 / elapsed:.2f} by clock ticks of {1 / TICKS:.3f} s); "
                f"{(woke - first_woke) * 3600 / elapsed:.0f} wake-ups/h; "
                f"RSS {rss_mb(proc.pid):.1f} MB"
            )
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            emulator.stop()


if __name__ == "__main__":
    main()
