"""End to end: an unexpected error is contained to its unit, or ends the daemon, never silent.

``batchd run --once`` as a real subprocess, with ``BATCHD_FAULT_AT`` raising a bug-shaped
error (``InjectedFault``, a RuntimeError) at a named point (``point:N``: its first N passages).

* In the planner's own step (outside any unit of work) it is logged once with its traceback and
  ends the process non-zero within a bounded time (it used to be swallowed, and ``--once``
  waited for ever).
* In one batch's submission (before the create call), right after a create call that took
  effect, or in one batch's collection, it is contained: logged with its traceback, the run
  goes on and exits 0. A fault that passes leaves the requests ``succeeded``; one that never
  passes ends them ``failed`` with ``internal_error`` after ``max_attempts``. The emulator's
  journal shows nothing was paid twice where the create had taken effect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.emulator import Emulator

from .daemon_harness import finish, journal, read_results, start_daemon, write_jsonl

N = 4


def _line(custom_id: str) -> dict[str, object]:
    return {
        "custom_id": custom_id,
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"hi {custom_id}"}],
    }


async def _run(
    tmp_path: Path, fault: str, emulator: Emulator | None, extra: str = ""
) -> tuple[int, str, list[dict[str, Any]]]:
    write_jsonl(tmp_path / "inbox" / "boom.jsonl", [_line(f"c{i}") for i in range(N)])
    proc = await start_daemon(
        tmp_path,
        None if emulator is None else emulator.url,
        config_extra=extra or ("emulate = true" if emulator is None else ""),
        env={"BATCHD_FAULT_AT": fault},
    )
    run = await finish(proc, timeout=90)  # raises if the daemon is still running by then
    out = tmp_path / "outbox" / "boom.results.jsonl"
    return run.returncode, run.stderr, read_results(out) if out.exists() else []


async def test_an_error_in_the_planner_ends_the_daemon_non_zero(tmp_path: Path) -> None:
    rc, log, _ = await _run(tmp_path, "plan:1000", None)
    assert rc == 1, log[-3000:]
    assert log.count("Traceback (most recent call last)") == 1, log[-3000:]
    assert "InjectedFault: injected fault at plan" in log, log[-3000:]


# point, times it fires, what one contained occurrence logs, the attempts of each request
PASSING = [
    ("submit", 2, "preparing a batch of 4 requests failed", 3),
    ("create", 1, "batch create failed with an unexpected error", 1),
    ("collect", 2, "collecting batch", 1),
]


@pytest.mark.parametrize(("point", "times", "said", "attempts"), PASSING)
async def test_a_fault_in_one_unit_is_contained_and_the_requests_succeed(
    tmp_path: Path, emulator: Emulator, point: str, times: int, said: str, attempts: int
) -> None:
    rc, log, results = await _run(tmp_path, f"{point}:{times}", emulator)
    assert rc == 0, log[-4000:]
    assert [(r["status"], r["attempts"]) for r in results] == [("succeeded", attempts)] * N
    assert log.count(said) == times, log[-4000:]
    assert log.count("Traceback (most recent call last)") == times, log[-4000:]
    assert log.count(f"InjectedFault: injected fault at {point}") == 2 * times  # line + trace
    assert "died of an unexpected error" not in log
    stats = (await journal(emulator.url))["providers"]["openai"]
    assert stats["duplicate_items"] == 0
    # a create that took effect is looked up, not sent again
    assert stats["batches_created"] == 1


@pytest.mark.parametrize(("point", "creates"), [("submit", 0), ("collect", 3)])
async def test_a_unit_that_always_fails_ends_its_requests_failed_with_the_error(
    tmp_path: Path, emulator: Emulator, point: str, creates: int
) -> None:
    """Out of attempts (3 here), the requests end ``failed`` with ``internal_error`` naming the
    exception; the run ends by itself, exit 0. A collection always failing sends the batch
    again once per attempt (each given up after its tries), never more."""
    rc, log, results = await _run(tmp_path, f"{point}:1000", emulator, "max_attempts = 3\n")
    assert rc == 0, log[-4000:]
    assert [(r["status"], r["attempts"]) for r in results] == [("failed", 3)] * N
    for r in results:
        assert r["error"]["type"] == "internal_error", r
        assert f"InjectedFault: injected fault at {point}" in r["error"]["message"], r
    stats = (await journal(emulator.url))["providers"]["openai"]
    assert stats["batches_created"] == creates
