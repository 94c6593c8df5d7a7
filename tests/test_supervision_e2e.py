"""End to end: an unexpected error in a task the scheduler started is never silent.

``batchd run --once`` (in-process emulator) as a real subprocess, with ``BATCHD_FAULT_AT``
raising a bug-shaped error (``InjectedFault``, a RuntimeError) inside the planner's step or a
per-model submit task. That error must be logged once with its traceback and end the process
non-zero within a bounded time: it used to be swallowed by the task, and ``--once`` waited for ever.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .daemon_harness import finish, start_daemon, write_jsonl


def _line(custom_id: str) -> dict[str, object]:
    return {
        "custom_id": custom_id,
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
    }


@pytest.mark.parametrize("point", ["plan", "submit"])
async def test_an_unexpected_error_ends_the_daemon_non_zero(tmp_path: Path, point: str) -> None:
    write_jsonl(tmp_path / "inbox" / "boom.jsonl", [_line("a"), _line("b")])
    proc = await start_daemon(
        tmp_path, None, config_extra="emulate = true", env={"BATCHD_FAULT_AT": f"{point}:1000"}
    )
    run = await finish(proc, timeout=90)  # raises if the daemon is still running by then
    assert run.returncode == 1, run.stderr[-3000:]
    assert run.stderr.count("Traceback (most recent call last)") == 1, run.stderr[-3000:]
    assert f"InjectedFault: injected fault at {point}" in run.stderr, run.stderr[-3000:]
