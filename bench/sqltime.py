"""Every SQL statement batchd runs, timed where it runs: inside the database threads.

    .venv/bin/python bench/sqltime.py [--top N] [--out FILE] [--profile FILE] -- \\
        run --root R --config R/batchd.toml --emulator-url http://127.0.0.1:P --once

Takes the arguments of ``python -m daemon.cli`` after ``--``. ``sqlite3.connect`` is wrapped
with a Connection whose cursors time ``execute``, ``executemany`` and the fetches (a SELECT
does most of its work while its rows are stepped) with the calling thread's CPU clock, per
statement text. The event loop's profiler does not see the aiosqlite thread; this does. At
the end the statements are listed by CPU, with their calls and CPU per call (to stderr, or
``--out``). ``--profile FILE`` also writes a cProfile of the main thread (the event loop), in
its CPU time.
"""

from __future__ import annotations

import argparse
import cProfile
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

T = TypeVar("T")
_stats: dict[str, list[float]] = {}  # statement -> [calls, thread CPU s, wall s]
_guard = threading.Lock()


def _note(sql: str, cpu_ns: int, wall_ns: int, call: bool) -> None:
    with _guard:
        entry = _stats.setdefault(" ".join(sql.split()), [0, 0.0, 0.0])
        entry[0] += call
        entry[1] += cpu_ns / 1e9
        entry[2] += wall_ns / 1e9


class TimedCursor(sqlite3.Cursor):
    _sql = "?"

    def _timed(self, sql: str, call: bool, fn: Callable[..., T], *args: Any) -> T:
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        try:
            return fn(*args)
        finally:
            _note(sql, time.thread_time_ns() - c0, time.perf_counter_ns() - w0, call)

    def execute(self, sql: str, parameters: Any = (), /) -> TimedCursor:
        self._sql = sql
        return self._timed(sql, True, super().execute, sql, parameters)

    def executemany(self, sql: str, seq: Iterable[Any], /) -> TimedCursor:
        self._sql = sql
        return self._timed(sql, True, super().executemany, sql, seq)

    def fetchone(self) -> Any:
        return self._timed(self._sql, False, super().fetchone)

    def fetchmany(self, size: int = 1) -> list[Any]:
        return self._timed(self._sql, False, super().fetchmany, size)

    def fetchall(self) -> list[Any]:
        return self._timed(self._sql, False, super().fetchall)

    def __next__(self) -> Any:
        return self._timed(self._sql, False, super().__next__)


class TimedConnection(sqlite3.Connection):
    def cursor(self, factory: Any = TimedCursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq: Iterable[Any], /) -> Any:
        return self.cursor().executemany(sql, seq)


_connect = sqlite3.connect


def _timed_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    kwargs.setdefault("factory", TimedConnection)
    return _connect(*args, **kwargs)


def report(top: int) -> str:
    rows = sorted(_stats.items(), key=lambda kv: -kv[1][1])
    total = sum(v[1] for v in _stats.values())
    out = [f"all SQL: {total:.2f} s thread CPU in {sum(v[0] for v in _stats.values()):,.0f} calls",
           f"{'CPU s':>8} {'wall s':>8} {'calls':>8} {'ms/call':>8}  statement"]  # fmt: skip
    for sql, (calls, cpu, wall) in rows[:top]:
        per = cpu / calls * 1e3 if calls else 0.0
        out.append(f"{cpu:8.3f} {wall:8.3f} {calls:8.0f} {per:8.3f}  {sql[:150]}")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", type=Path, help="write the statement table here (else stderr)")
    ap.add_argument("--profile", type=Path, help="cProfile of the main thread, written here")
    ap.add_argument("argv", nargs=argparse.REMAINDER, help="-- then daemon.cli's arguments")
    args = ap.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    sqlite3.connect = _timed_connect  # type: ignore[assignment]
    from daemon.cli import main as cli_main

    profiler = cProfile.Profile(time.thread_time) if args.profile else None  # CPU, not wall
    c0 = time.process_time()
    if profiler is not None:
        profiler.enable()
    try:
        status = cli_main(argv)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(args.profile))
        text = report(args.top) + f"\nprocess CPU: {time.process_time() - c0:.2f} s\n"
        if args.out:
            args.out.write_text(text)
        else:
            print(text, file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
