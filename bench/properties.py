"""The long profile of the property-based tests (hypothesis): many more examples than the
short profile that runs in ``make test``.

    .venv/bin/python bench/properties.py                 # 20,000 examples per property
    .venv/bin/python bench/properties.py -k names        # pytest arguments pass through

It runs the property test files under ``HYPOTHESIS_PROFILE=long`` (registered in them), without
the suite's per-test timeout, and exits with pytest's status.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = ["tests/test_properties.py"]


def main(argv: list[str]) -> int:
    env = {**os.environ, "HYPOTHESIS_PROFILE": "long"}
    args = [sys.executable, "-m", "pytest", "-q", "--timeout=0", *FILES, *argv]
    return subprocess.call(args, cwd=REPO, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
