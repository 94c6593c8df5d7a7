"""Throughput and memory of the whole pipeline: N requests through ``batchd run --emulate --once``.

    .venv/bin/python bench/throughput.py 10000
    .venv/bin/python bench/throughput.py 200000 --keep

Generates one JSONL file mixing the three providers (two models each), runs the daemon as a
subprocess with the in-process emulator at time scale 0, and prints requests per second
(ingest to outbox) and the peak RSS of the daemon process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = [
    "gpt-4o-mini",
    "gpt-4.1-mini",
    "claude-haiku-4-5",
    "claude-sonnet-4-5",
    "gemini-2.5-flash",
    "gemini-2.5-pro",
]

CONFIG = """
settle_s = 0.2
batch_linger_s = 0.2
poll_initial_s = 0.05
poll_max_s = 0.5
[providers.openai]
batch_size = {openai}
[providers.anthropic]
batch_size = {anthropic}
[providers.gemini]
batch_size = {gemini}
"""


def generate(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            model = MODELS[i % len(MODELS)]
            f.write(
                json.dumps(
                    {
                        "custom_id": f"req-{i}",
                        "model": model,
                        "max_tokens": 128,
                        "messages": [
                            {"role": "system", "content": "You are terse."},
                            {"role": "user", "content": f"Question number {i}: what is {i} + 1?"},
                        ],
                    }
                )
                + "\n"
            )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=10_000)
    ap.add_argument(
        "--batch-size",
        type=int,
        nargs=3,
        metavar=("OPENAI", "ANTHROPIC", "GEMINI"),
        default=(2000, 5000, 5000),
        help="provider batch sizes for the run",
    )
    ap.add_argument("--keep", action="store_true", help="keep the run folder")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="batchd-bench-"))
    (root / "inbox").mkdir()
    src = root / "bench.jsonl"
    generate(src, args.n)
    o, a, g = args.batch_size
    (root / "batchd.toml").write_text(CONFIG.format(openai=o, anthropic=a, gemini=g))
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    src.rename(root / "inbox" / "bench.jsonl")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon.cli",
            "run",
            "--root",
            str(root),
            "--config",
            str(root / "batchd.toml"),
            "--emulate",
            "--once",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        print(proc.stderr[-5000:], file=sys.stderr)
        return proc.returncode
    results = root / "outbox" / "bench.results.jsonl"
    lines = sum(1 for _ in results.open())
    ok = sum(1 for line in results.open() if '"status":"succeeded"' in line.replace(" ", ""))
    print(
        json.dumps(
            {
                "requests": args.n,
                "result_lines": lines,
                "succeeded": ok,
                "seconds": round(elapsed, 2),
                "requests_per_s": round(args.n / elapsed, 1),
                "peak_rss_mib": round(peak_kib / 1024, 1),
                "batch_sizes": [o, a, g],
            }
        )
    )
    if args.keep:
        print(f"kept {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if lines == args.n == ok else 1


if __name__ == "__main__":
    sys.exit(main())
