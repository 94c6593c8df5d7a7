"""API keys never leave the environment; ``--log-json`` writes one JSON object per line."""

from __future__ import annotations

import json
from pathlib import Path

from adapters.emulator import Emulator

from .daemon_harness import read_results, run_once, unified, write_jsonl

SECRETS = {
    "OPENAI_API_KEY": "sk-openai-SECRET-0f1e2d3c4b5a",
    "ANTHROPIC_API_KEY": "sk-ant-SECRET-9a8b7c6d5e4f",
    "GEMINI_API_KEY": "AIza-SECRET-1234567890abcdef",
}


def _every_file(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


async def test_keys_are_never_logged_or_written(tmp_path: Path) -> None:
    async with Emulator(time_scale=0, state_dir=tmp_path / "emu") as emu:
        # The emulator checks the keys, so the daemon really sent them, and only in headers.
        emu.ctx.faults.auth.update(
            openai=SECRETS["OPENAI_API_KEY"],
            anthropic=SECRETS["ANTHROPIC_API_KEY"],
            gemini=SECRETS["GEMINI_API_KEY"],
        )
        root = tmp_path / "run"
        lines = [
            unified("a", "gpt-4o-mini", "hello"),
            unified("b", "claude-haiku-4-5", "hello"),
            unified("c", "gemini-2.5-flash", "hello"),
        ]
        write_jsonl(root / "inbox" / "s.jsonl", lines)
        run = await run_once(root, emu.url, env={**SECRETS, "BATCHD_LOG_JSON": "1"})
        assert run.returncode == 0, run.stderr[-3000:]
    results = read_results(root / "outbox" / "s.results.jsonl")
    assert [r["status"] for r in results] == ["succeeded"] * 3
    files = _every_file(root)
    assert any(p.suffix == ".sqlite3" for p in files)  # the state database is searched too
    for path in files:
        data = path.read_bytes()
        for name, secret in SECRETS.items():
            assert secret.encode() not in data, f"{name} found in {path}"
    for name, secret in SECRETS.items():
        assert secret not in run.stderr, f"{name} found in the log"


async def test_log_json_lines_carry_the_bound_context(tmp_path: Path, emulator: Emulator):
    write_jsonl(tmp_path / "inbox" / "j.jsonl", [unified("a", "gpt-4o-mini", "hi"), "{broken"])
    run = await run_once(tmp_path, emulator.url, env={"BATCHD_LOG_JSON": "true"})
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(line) for line in run.stderr.splitlines() if line.strip()]
    rejected = [r for r in records if r["message"].startswith("line rejected")]
    assert len(rejected) == 1 and rejected[0]["file"] == "j.jsonl"
    assert "line 2" in rejected[0]["message"] and rejected[0]["line"] == 2
    submitted = [r for r in records if r["message"].startswith("batch submitted")]
    assert submitted and submitted[0]["provider"] == "openai"
    assert submitted[0]["model"] == "gpt-4o-mini"
