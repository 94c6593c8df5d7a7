"""End to end: an unexpected error in a task the scheduler started is never silent.

``batchd run --once --emulate`` as a real subprocess. The file's two native Claude requests
share a system prompt given as a list of plain strings, which the submit-time caching step
cannot mark: it raises inside the per-model submit task. That error must be logged once with
its traceback and end the process non-zero within a bounded time (it used to be swallowed by
the task, and ``--once`` waited for ever).
"""

from __future__ import annotations

from pathlib import Path

from .daemon_harness import finish, start_daemon, write_jsonl


def _native_claude(custom_id: str) -> dict[str, object]:
    return {
        "custom_id": custom_id,
        "params": {
            "model": "claude-sonnet-4-5",
            "max_tokens": 50,
            "system": ["x", "y"],
            "messages": [{"role": "user", "content": "hi"}],
        },
    }


async def test_an_error_in_a_submit_task_ends_the_daemon_non_zero(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "inbox" / "boom.jsonl", [_native_claude("a"), _native_claude("b")])
    proc = await start_daemon(tmp_path, None, config_extra="emulate = true")
    run = await finish(proc, timeout=90)  # raises if the daemon is still running by then
    assert run.returncode == 1, run.stderr[-3000:]
    assert run.stderr.count("Traceback (most recent call last)") == 1, run.stderr[-3000:]
    assert "task submit-anthropic-claude-sonnet-4-5 died of an unexpected error" in run.stderr
    assert "caching.py" in run.stderr and "TypeError" in run.stderr
