"""What the writer check costs: an inbox scan of N settled files, with and without it, and the
``/proc`` fallback on its own.

    .venv/bin/python bench/inbox_probe.py            # 1,000 files
    .venv/bin/python bench/inbox_probe.py 10000

Prints milliseconds per scan (median of several), per file, and how many processes and
descriptors the ``/proc`` scan went through on this machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon import watcher
from daemon.writers import WriterCheck, lease_says_written, proc_written_files


class _NoCheck:
    how = "none"

    def held(self, path: object) -> bool:
        return False


def _median_ms(fn: object, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", type=int, nargs="?", default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inbox = Path(tmp)
        for i in range(args.files):
            (inbox / f"f{i:06d}.jsonl").write_text('{"model": "gpt-4o-mini"}\n')
        box = watcher.Inbox(inbox, settle_s=0)
        box.scan()
        ready, _ = box.scan()
        assert len(ready) == args.files, len(ready)
        with_check = _median_ms(box.scan, args.rounds)
        real = watcher.WriterCheck
        watcher.WriterCheck = _NoCheck  # type: ignore[assignment, misc]
        try:
            without = _median_ms(box.scan, args.rounds)
        finally:
            watcher.WriterCheck = real  # type: ignore[misc]
        paths = sorted(inbox.iterdir())
        lease = _median_ms(lambda: [lease_says_written(p) for p in paths], args.rounds)
        proc = _median_ms(proc_written_files, args.rounds)
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        fds = sum(len(os.listdir(f"/proc/{p}/fd")) for p in pids if os.access(f"/proc/{p}/fd", 4))
        check = WriterCheck()
        check.held(paths[0])
    n = args.files
    print(f"inbox of {n} settled files, median of {args.rounds} scans ({check.how} answers here)")
    print(f"  scan without the writer check  {without:8.1f} ms")
    extra = with_check - without
    print(f"  scan with the writer check     {with_check:8.1f} ms  (+{extra:.1f} ms)")
    print(f"  read leases alone              {lease:8.1f} ms  ({1000 * lease / n:.1f} us a file)")
    print(f"  /proc fallback, one scan       {proc:8.1f} ms  ({len(pids)} processes, {fds} fds)")


if __name__ == "__main__":
    main()
