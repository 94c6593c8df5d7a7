"""Peak memory of ``batchd run --once`` as the input file and the batches grow.

    .venv/bin/python bench/memory.py            # 100,000 and 1,000,000 lines, batches of 50,000
    .venv/bin/python bench/memory.py --short    # 10,000 and 50,000 lines (what ``make bench`` runs)
    .venv/bin/python bench/memory.py --lines 100000 400000 --batch-size 20000

Starts ONE emulator process (``batchd emulator --time-scale 0``, its own process, so its memory
is not counted), then for each file size runs ``batchd run --once`` on a fresh root whose inbox
holds that many gpt-4o-mini requests (the requests of ``bench/compare.py``), with
``batch_size`` fixed at ``--batch-size`` (OpenAI's cap is 50,000 items a batch). Peak RSS is
the child's own ``ru_maxrss`` from ``os.wait4``: the SDKs, the interpreter and everything the
run held at its worst moment.

Prints each run's peak RSS, CPU and wall time, the ratio of the largest file's peak to the
smallest's (the target: at most 1.2) and whether every peak is within 150 MB (MiB here).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare import REPO, Emulator, Run, _env, batchd_config, measure  # noqa: E402
from floor import write_inbox_file  # noqa: E402

LIMIT_MIB = 150.0
RATIO = 1.2


def run_once(emu: Emulator, n: int, batch_size: int, tmp: Path) -> Run:
    emu.reset()
    root = Path(tempfile.mkdtemp(prefix="batchd-memory-", dir=tmp))
    (root / "inbox").mkdir()
    (root / "batchd.toml").write_text(batchd_config(batch_size))
    write_inbox_file(root / "requests.jsonl", n)
    (root / "requests.jsonl").rename(root / "inbox" / "requests.jsonl")
    argv = [sys.executable, "-m", "daemon.cli", "run", "--root", str(root), "--config",
            str(root / "batchd.toml"), "--emulator-url", emu.url, "--once"]  # fmt: skip
    try:
        run = measure(argv, cwd=REPO, log=root / "batchd.log", env=_env())
        run.http_calls = emu.calls()
        with (root / "outbox" / "requests.results.jsonl").open("rb") as f:
            ok = sum(1 for line in f if json.loads(line)["status"] == "succeeded")
        if ok != n:
            raise SystemExit(f"batchd: {ok} of {n} requests succeeded (see {root})")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--batch-size", type=int, default=50_000)
    ap.add_argument("--short", action="store_true", help="10,000 and 50,000 lines")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    sizes = [10_000, 50_000] if args.short else sorted(args.lines)
    runs: dict[int, Run] = {}
    with tempfile.TemporaryDirectory(prefix="batchd-memory-") as tmp_name:
        tmp = Path(tmp_name)
        emu = Emulator(tmp / "emulator")
        try:
            for n in sizes:
                runs[n] = run = run_once(emu, n, args.batch_size, tmp)
                print(f"N={n:>9,} batch_size {args.batch_size:,}: peak RSS {run.rss_mib:6.1f} "
                      f"MiB, cpu {run.cpu_s:7.1f}s, wall {run.wall_s:7.1f}s, "
                      f"http {run.http_calls}", file=sys.stderr, flush=True)  # fmt: skip
        finally:
            emu.stop()
    small, big = runs[sizes[0]], runs[sizes[-1]]
    ratio = big.rss_mib / small.rss_mib
    worst = max(r.rss_mib for r in runs.values())
    print("\n| lines | batch_size | peak RSS | CPU | wall |\n|---|---|---|---|---|")
    for n, r in runs.items():
        print(f"| {n:,} | {args.batch_size:,} | {r.rss_mib:.0f} MiB | {r.cpu_s:.1f} s "
              f"| {r.wall_s:.1f} s |")  # fmt: skip
    print(f"\npeak RSS at {sizes[-1]:,} lines / at {sizes[0]:,}: {ratio:.2f} "
          f"(target <= {RATIO}); largest peak {worst:.0f} MiB (target <= {LIMIT_MIB:.0f})")
    if args.json:
        data: dict[str, Any] = {str(n): r.__dict__ for n, r in runs.items()}
        args.json.write_text(json.dumps(data, indent=2))
    return 0 if ratio <= RATIO and worst <= LIMIT_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
