"""batchd beside the bare-SDK floor: client CPU per request, per batch, HTTP calls, RSS, wall.

    .venv/bin/python bench/compare.py                 # N = 2,000 and 20,000, medians of 3
    .venv/bin/python bench/compare.py --short         # what ``make bench`` runs (~1 minute)
    .venv/bin/python bench/compare.py --json out.json

Starts ONE emulator process (``batchd emulator --time-scale 0``: a batch ends as soon as it is
polled), then, against it, for each N:

* ``floor``: ``bench/floor.py``, a bare official-SDK script (write the JSONL, upload, create,
  poll, download, parse);
* ``batchd 1 batch``: ``batchd run --once --emulator-url`` on a fresh root, one inbox file of N
  gpt-4o-mini requests, ``batch_size`` = N (``batch_sizing = "fixed"`` where that key exists);
* ``batchd 50/batch``: the same with the product's default OpenAI size, 50 requests a batch
  (fixed), so N / 50 batches;
* ``batchd defaults``: no size keys at all, when the configuration has a ``batch_sizing`` key
  (its default is then adaptive); otherwise the row above is the default.

Each run is a child process; its CPU is user + system time from ``os.wait4`` (the child's own
rusage, so the emulator's work and the machine's other load are not counted; wall time is
shown but depends on that load). ``marginal`` is the CPU slope between the two N, per request:
start-up (imports, opening the database) cancels out. HTTP calls come from the emulator's
journal (reset before each run). Peak RSS is the child's ``ru_maxrss``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from floor import write_inbox_file  # noqa: E402

TIMINGS = """
settle_s = 0.1
batch_linger_s = 0.1
poll_initial_s = 0.2
poll_max_s = 1.0
"""


@dataclass
class Run:
    cpu_s: float
    rss_mib: float
    wall_s: float
    http_calls: int


@dataclass
class Cell:
    runs: list[Run] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(getattr(r, name) for r in self.runs)


class Emulator:
    """``batchd emulator`` as its own process, on a free port, state in ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "emulator", "--port", "0", "--time-scale", "0",
             "--state-dir", str(state_dir)],
            cwd=REPO, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise SystemExit(f"the emulator did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[-1].strip()

    def _call(self, method: str, path: str) -> Any:
        req = urllib.request.Request(self.url + path, method=method, data=b"" if method == "POST"
                                     else None)  # fmt: skip
        with urllib.request.urlopen(req, timeout=120) as answer:
            return json.loads(answer.read())

    def reset(self) -> None:
        self._call("POST", "/_emulator/reset")

    def calls(self) -> int:
        return int(self._call("GET", "/_emulator/journal?limit=0")["calls_total"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def measure(argv: list[str], *, cwd: Path, log: Path, env: dict[str, str]) -> Run:
    """Run ``argv`` to its end; its own CPU (user + system), peak RSS and wall time."""
    t0 = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(argv[:4])} ... exited {proc.returncode}:\n{tail}")
    return Run(usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, wall, 0)


def _sizing_keys() -> tuple[bool, bool]:
    """Whether ``batch_sizing`` is a top-level key, or a key of ``[providers.X]``."""
    from daemon.config import Config, ProviderConfig

    top = any(f.name == "batch_sizing" for f in fields(Config))
    per_provider = any(f.name == "batch_sizing" for f in fields(ProviderConfig))
    return top, per_provider


def batchd_config(batch_size: int | None) -> str:
    """The run's TOML: fast timings; ``batch_size`` None leaves the sizes to the defaults."""
    if batch_size is None:
        return TIMINGS
    top, per_provider = _sizing_keys()
    text = TIMINGS + ('batch_sizing = "fixed"\n' if top else "")
    text += f"[providers.openai]\nbatch_size = {batch_size}\n"
    return text + ('batch_sizing = "fixed"\n' if per_provider and not top else "")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_floor(emu: Emulator, n: int, tmp: Path) -> Run:
    emu.reset()
    run = measure([sys.executable, str(HERE / "floor.py"), emu.url, str(n)], cwd=REPO,
                  log=tmp / "floor.log", env=_env())  # fmt: skip
    run.http_calls = emu.calls()
    return run


def run_batchd(emu: Emulator, n: int, batch_size: int | None, tmp: Path, keep: bool) -> Run:
    """One ``batchd run --once`` on a fresh root whose inbox holds the N requests."""
    emu.reset()
    root = Path(tempfile.mkdtemp(prefix="batchd-compare-", dir=tmp))
    (root / "inbox").mkdir()
    (root / "batchd.toml").write_text(batchd_config(batch_size))
    write_inbox_file(root / "requests.jsonl", n)
    os.rename(root / "requests.jsonl", root / "inbox" / "requests.jsonl")
    argv = [sys.executable, "-m", "daemon.cli", "run", "--root", str(root), "--config",
            str(root / "batchd.toml"), "--emulator-url", emu.url, "--once"]  # fmt: skip
    run = measure(argv, cwd=REPO, log=root / "batchd.log", env=_env())
    run.http_calls = emu.calls()
    results = root / "outbox" / "requests.results.jsonl"
    with results.open("rb") as f:
        ok = sum(1 for line in f if json.loads(line)["status"] == "succeeded")
    if ok != n:
        raise SystemExit(f"batchd: {ok} of {n} requests succeeded (see {root})")
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    return run


def table(cells: dict[tuple[str, int], Cell], ns: tuple[int, int], rows: list[str]) -> str:
    small, big = ns
    floor_marginal = _marginal(cells, "floor", ns)
    head = (
        f"| tool | CPU at {small:,} (s) | CPU at {big:,} (s) | marginal CPU per request | "
        f"× floor | CPU ÷ one batch at {big:,} | HTTP calls at {big:,} | peak RSS at {big:,} "
        f"| wall at {big:,} |"
    )
    out = [head, "|" + "---|" * 9]
    one = cells.get(("batchd 1 batch", big))
    for name in rows:
        lo, hi = cells[(name, small)], cells[(name, big)]
        marginal = _marginal(cells, name, ns)
        per_batch = "" if one is None or name == "floor" else (
            f"{hi.median('cpu_s') / one.median('cpu_s'):.2f}×")  # fmt: skip
        out.append(
            f"| {name} | {lo.median('cpu_s'):.2f} | {hi.median('cpu_s'):.2f} "
            f"| {marginal * 1e6:.1f} µs | {marginal / floor_marginal:.1f}× | {per_batch} "
            f"| {int(hi.median('http_calls')):,} | {hi.median('rss_mib'):.0f} MiB "
            f"| {hi.median('wall_s'):.1f} s |"
        )
    return "\n".join(out)


def _marginal(cells: dict[tuple[str, int], Cell], name: str, ns: tuple[int, int]) -> float:
    small, big = ns
    return (cells[(name, big)].median("cpu_s") - cells[(name, small)].median("cpu_s")) / (
        big - small
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs=2, default=(2_000, 20_000), metavar=("SMALL", "BIG"))
    ap.add_argument("--reps", type=int, default=3, help="repetitions (the median is shown)")
    ap.add_argument("--short", action="store_true", help="N = 200 and 2,000, one repetition")
    ap.add_argument("--only", nargs="*", help="rows to run (floor, one, fifty, defaults)")
    ap.add_argument("--json", type=Path, help="also write every run's figures here")
    ap.add_argument("--keep", action="store_true", help="keep the batchd run folders")
    args = ap.parse_args()
    ns: tuple[int, int] = (200, 2_000) if args.short else tuple(args.n)  # type: ignore[assignment]
    reps = 1 if args.short else args.reps
    top, per_provider = _sizing_keys()
    plans: dict[str, Any] = {
        "floor": ("floor", None),
        "one": ("batchd 1 batch", "N"),
        "fifty": ("batchd 50/batch", 50),
    }
    if top or per_provider:
        plans["defaults"] = ("batchd defaults", None)
    chosen = [k for k in plans if not args.only or k in args.only]
    if "floor" not in chosen:
        chosen.insert(0, "floor")
    cells: dict[tuple[str, int], Cell] = {}
    with tempfile.TemporaryDirectory(prefix="batchd-compare-") as tmp_name:
        tmp = Path(tmp_name)
        emu = Emulator(tmp / "emulator")
        try:
            for rep in range(reps):
                for n in ns:
                    for key in chosen:
                        name, size = plans[key]
                        if key == "floor":
                            run = run_floor(emu, n, tmp)
                        else:
                            run = run_batchd(emu, n, n if size == "N" else size, tmp, args.keep)
                        cells.setdefault((name, n), Cell()).runs.append(run)
                        print(f"rep {rep + 1} N={n:>6} {name:<16} cpu {run.cpu_s:6.2f}s "
                              f"rss {run.rss_mib:5.0f} MiB wall {run.wall_s:5.1f}s "
                              f"http {run.http_calls}", file=sys.stderr, flush=True)  # fmt: skip
        finally:
            emu.stop()
    rows = [plans[k][0] for k in chosen]
    print(f"\nClient CPU (user + system of the child), medians of {reps}; one emulator process; "
          f"{os.cpu_count()} CPUs.\n")  # fmt: skip
    print(table(cells, ns, rows))
    if args.json:
        data = {f"{name} @ {n}": [r.__dict__ for r in cell.runs] for (name, n), cell in
                cells.items()}  # fmt: skip
        args.json.write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
