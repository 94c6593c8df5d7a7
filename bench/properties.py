"""The long profile of the property-based tests (hypothesis): many more examples than the
short profile that runs in ``make test``.

    .venv/bin/python bench/properties.py                 # the long profile of every file below
    .venv/bin/python bench/properties.py -k backoff      # pytest arguments pass through

It runs the property test files under ``HYPOTHESIS_PROFILE=long`` (registered in them), without
the suite's per-test timeout, and exits with pytest's status.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = [
    "tests/test_properties.py",  # lines, names, outbox naming
    "tests/test_retry_properties.py",  # backoff and poll-interval bounds
    "tests/test_store_properties.py",  # record_results idempotence (stateful)
    "tests/test_error_bodies.py",  # any error body x status code, through the SDKs
]


def main(argv: list[str]) -> int:
    env = {**os.environ, "HYPOTHESIS_PROFILE": "long"}
    args = [sys.executable, "-m", "pytest", "-q", "--timeout=0", *FILES, *argv]
    return subprocess.call(args, cwd=REPO, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
