"""Start-up cost of the commands: CPU seconds (user + system) of ``batchd --help``, ``status``,
``check`` on a small file, ``models``, and ``run --once`` on an empty inbox.

    .venv/bin/python bench/startup.py              # median of 5 runs each
    .venv/bin/python bench/startup.py --runs 9 --json

Each command runs as its own process (the installed ``batchd`` script), and its CPU comes from
``wait4``'s resource usage of that process alone, so the machine's other load does not count
(it still slows the wall time, which is printed beside). ``python -c pass`` is the floor: the
interpreter's own start-up. One warm-up run of each command comes first, with byte code
caching on (as for an installed program), and is not counted. ``status`` reads a state
database made for the purpose; ``run --once`` has every provider configured (``--emulator-url``
at a port nothing listens on: with no work, no call is made) and shows which provider SDKs it
imported (none should be, without work). The target is 0.3 s of CPU for each of the first four.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from daemon.store import Store  # noqa: E402

TARGET_S = 0.3
SDK_MODULES = ("openai", "anthropic", "google.genai")


def batchd() -> list[str]:
    script = Path(sys.executable).with_name("batchd")
    return [str(script)] if script.exists() else [sys.executable, "-m", "daemon.cli"]


def measure(argv: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """CPU seconds, wall seconds, exit code and stderr of one run of ``argv``."""
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, time.monotonic() - started, proc.returncode, err


def prepare(root: Path) -> dict[str, list[str]]:
    """The commands, with what they need on disk."""
    state = root / "state"
    asyncio.run(_make_db(state / "batchd.sqlite3"))
    small = root / "small.jsonl"
    lines = [
        {"custom_id": f"c{i}", "model": "gpt-4o-mini",
         "messages": [{"role": "user", "content": f"question {i}"}]}
        for i in range(20)
    ]  # fmt: skip
    small.write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = root / "batchd.toml"
    config.write_text("")
    cli = batchd()
    run_root = root / "run"
    run_args = ["--root", str(run_root), "--config", str(config)]
    run_args += ["--emulator-url", "http://127.0.0.1:9"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "batchd --help": [*cli, "--help"],
        "batchd status": [*cli, "status", "--root", str(root), "--config", str(config)],
        "batchd check (20 lines)": [*cli, "check", str(small), "--config", str(config)],
        "batchd models": [*cli, "models", "--config", str(config)],
        "batchd run --once (empty inbox)": [*cli, "run", "--once", *run_args],
    }


async def _make_db(path: Path) -> None:
    store = await Store(path).open()
    await store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs of each command (median taken)")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args()
    # Byte code cached as for any installed program (a shell with PYTHONDONTWRITEBYTECODE set
    # would otherwise compile every module of batchd at each run), after one warm-up run.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BATCHD_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(
        OPENAI_API_KEY="k", ANTHROPIC_API_KEY="k", GEMINI_API_KEY="k", BATCHD_LOG_LEVEL="DEBUG"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="batchd-startup-") as tmp:
        for name, argv in prepare(Path(tmp)).items():
            cpu, wall, codes, err = [], [], set(), ""
            measure(argv, env)  # warm-up: byte code written, files in the page cache
            for _ in range(args.runs):
                c, w, code, err = measure(argv, env)
                cpu.append(c)
                wall.append(w)
                codes.add(code)
            sdks = [m for m in SDK_MODULES if f"importing the {m} SDK" in err]
            rows.append(
                {
                    "command": name,
                    "cpu_s": round(statistics.median(cpu), 3),
                    "wall_s": round(statistics.median(wall), 3),
                    "exit": sorted(codes),
                    "sdks_imported": sdks if name.startswith("batchd run") else None,
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'command':34} {'CPU (s)':>8} {'wall (s)':>9}  exit  note")
    for row in rows:
        note = ""
        if row["command"].startswith("batchd") and not row["command"].startswith("batchd run"):
            note = "ok" if row["cpu_s"] <= TARGET_S else f"over {TARGET_S} s"
        if row["sdks_imported"] is not None:
            note = f"SDKs imported: {', '.join(row['sdks_imported']) or 'none'}"
        print(
            f"{row['command']:34} {row['cpu_s']:8.3f} {row['wall_s']:9.3f}  "
            f"{','.join(map(str, row['exit'])):>4}  {note}"
        )


if __name__ == "__main__":
    main()
