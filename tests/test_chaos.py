"""The short reliability campaign (bench/chaos.py --short) as part of the suite.

Five SIGKILLs (each named crash point once, one at a random moment), SIGTERM in every phase,
then a run to the end: nothing lost, no result line twice, every status right, no item sent
twice to any provider. The full campaign (24 kills, 3,000 requests) is run by hand:
``.venv/bin/python bench/chaos.py`` (see docs/reliability.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CHAOS = Path(__file__).resolve().parents[1] / "bench" / "chaos.py"


@pytest.mark.timeout(600)
def test_short_campaign_keeps_every_promise(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(CHAOS), "--short", "--json", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=590,
        check=False,
    )
    assert done.stdout.strip(), done.stderr[-4000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["broken"] == [], (figures["broken"], figures["problems"])
    assert done.returncode == 0
    assert figures["kills"] == 5
    assert len(figures["crash_points_reached"]) == 4, figures["runs"]
    assert figures["sigterm_clean_exits"] == figures["sigterm_phases"] == 7
    assert figures["lost"] == figures["duplicated_result_lines"] == figures["wrong_status"] == 0
    assert figures["duplicate_provider_items"] == {"openai": 0, "anthropic": 0, "gemini": 0}
    assert figures["faults_survived"] > 0
    assert figures["requests"] >= 600
