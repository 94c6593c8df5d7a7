"""The test harness's own rules: spec checks cannot be skipped in CI, crash points are named in
one place, a caller's config keys replace the fast defaults, and a daemon process is reaped."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from daemon.crashpoints import AFTER_CREATE, POINTS

from .daemon_harness import FAST_CONFIG, crash_at, crash_reached, merge_config

REPO = Path(__file__).resolve().parents[1]


def _run_pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """pytest on a throw-away test that asks for a spec that does not exist."""
    module = tmp_path / "test_specs_probe.py"
    module.write_text(
        "from tests.conftest import require_specs\n\n\n"
        "def test_needs_a_spec():\n"
        "    require_specs('no-such-spec.yaml')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(module)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(("ci", "outcome"), [(None, "1 skipped"), ("true", "1 failed")])
def test_a_missing_spec_skips_outside_ci_and_fails_in_ci(
    tmp_path: Path, ci: str | None, outcome: str
) -> None:
    done = _run_pytest(tmp_path, ci)
    assert outcome in done.stdout, done.stdout[-3000:]
    assert "no-such-spec.yaml" in done.stdout
    if ci:
        assert "CI=true" in done.stdout


def test_crash_points_are_checked_against_the_daemon_list() -> None:
    assert crash_at(AFTER_CREATE, 2) == {"BATCHD_CRASH_AT": f"{AFTER_CREATE}:2"}
    assert crash_reached(AFTER_CREATE) == f"crash point {AFTER_CREATE} reached"
    assert len(set(POINTS)) == len(POINTS) == 4
    with pytest.raises(ValueError, match="unknown crash point"):
        crash_at("after_creat")


def test_config_overrides_replace_the_fast_values() -> None:
    merged = tomllib.loads(merge_config("settle_s = 2.0\n[providers.openai]\nbatch_size = 3\n"))
    fast = tomllib.loads(FAST_CONFIG)
    assert merged["settle_s"] == 2.0
    assert merged["providers"]["openai"]["batch_size"] == 3
    assert {k: v for k, v in merged.items() if k not in ("settle_s", "providers")} == {
        k: v for k, v in fast.items() if k != "settle_s"
    }
