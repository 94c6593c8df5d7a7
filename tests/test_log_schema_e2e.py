"""``--log-json`` is the documented schema, and one batch's (one job's) lines correlate.

A real daemon runs a real file through the emulator (a slow batch, so it is polled while it
runs; a broken line; an item the provider fails for good) with ``--log-json``; every line of
its log is validated against ``daemon.logs.JSON_SCHEMA`` and the lines are then followed by
batch tag and by job id, as an operator would with ``jq``.
"""

from __future__ import annotations

import io
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import jsonschema
from loguru import logger

from adapters.emulator import Emulator
from adapters.emulator.faults import FaultSet
from daemon.logs import FIELDS, JSON_SCHEMA, Throttle, json_record
from daemon.text import plural

from .daemon_harness import (
    REPO,
    read_results,
    run_once,
    start_daemon,
    stop,
    unified,
    wait_for,
    write_jsonl,
)

MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}


def _lines(stderr: str) -> list[dict[str, Any]]:
    validator = jsonschema.Draft202012Validator(JSON_SCHEMA)
    records = []
    for raw in stderr.splitlines():
        if not raw.strip():
            continue
        record = json.loads(raw)  # every line is one JSON object, nothing else
        errors = sorted(validator.iter_errors(record), key=str)
        assert not errors, f"{raw}\n{errors[0].message}"
        assert len(raw.encode()) < 1200 or "exception" in record, raw  # no raw library dumps
        records.append(record)
    return records


async def test_log_json_lines_follow_the_schema_and_correlate(tmp_path: Path) -> None:
    async with Emulator(time_scale=0.2, state_dir=tmp_path / "emu") as emu:
        assert emu.ctx is not None
        emu.ctx.faults = FaultSet.parse(
            {"faults": [{"kind": "item_error", "match": "POISON", "error": "invalid"}]}
        )
        lines: list[Any] = [unified(f"{p}-{i}", m, f"hello {i}") for p, m in MODELS.items()
                            for i in range(2)]  # fmt: skip
        lines.insert(1, "{broken")  # input line 2
        lines.append(unified("poisoned", "gpt-4o-mini", "POISON pill"))  # line 8
        write_jsonl(tmp_path / "inbox" / "mixed.jsonl", lines)
        run = await run_once(tmp_path, emu.url, env={"BATCHD_LOG_JSON": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    results = {r["custom_id"]: r for r in read_results(tmp_path / "outbox" / "mixed.results.jsonl")}
    assert results["poisoned"]["status"] == "failed"
    records = _lines(run.stderr)
    events = [r["event"] for r in records]
    for needed in ("daemon.started", "job.ingested", "batch.submitted", "batch.progress",
                   "batch.ended", "request.invalid", "request.failed", "job.written",
                   "job.done", "shutdown.summary"):  # fmt: skip
        assert needed in events, f"no {needed} line in {sorted(set(events))}"

    # One batch: the same provider, model and tag on every line, and one provider id once known.
    by_tag: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["batch"] is not None:
            by_tag[r["batch"]].append(r)
        if r["provider_batch_id"] is not None:
            assert r["batch"] is not None, f"a provider id without the local tag: {r}"
    assert len(by_tag) >= len(MODELS)
    for tag, said in by_tag.items():
        assert re.fullmatch(r"batchd-[0-9a-f]{16}", tag), tag
        assert len({(r["provider"], r["model"]) for r in said}) == 1, said
        assert None not in {r["provider"] for r in said}
        ids = {r["provider_batch_id"] for r in said} - {None}
        assert len(ids) == 1, f"batch {tag}: provider ids {ids}"
        kinds = {r["event"] for r in said}
        assert {"batch.submitted", "batch.ended"} <= kinds, (tag, kinds)
        for r in said:
            if r["event"] in ("batch.submitted", "batch.progress", "batch.ended"):
                assert r["provider_batch_id"] is not None, r
    progress = [r for r in records if r["event"] == "batch.progress"]
    assert all(re.search(r"\d+/\d+ done \((\d+%|-)\)", r["message"]) for r in progress), progress
    ended = [r for r in records if r["event"] == "batch.ended"]
    assert all(r["elapsed_s"] is not None and r["elapsed_s"] >= 0 for r in ended), ended

    # One job: every line about it names the file and its job id.
    for r in records:
        if r["event"].startswith(("job.", "request.")):
            assert r["file"] == "mixed.jsonl" and isinstance(r["job"], int), r
    assert len({r["job"] for r in records if r["job"] is not None}) == 1
    (invalid,) = [r for r in records if r["event"] == "request.invalid"]
    assert (invalid["line"], invalid["custom_id"], invalid["error_kind"]) == (
        2,
        results[invalid["custom_id"]]["custom_id"],
        "invalid_request",
    )
    (failed,) = [r for r in records if r["event"] == "request.failed"]
    assert (failed["custom_id"], failed["line"]) == ("poisoned", 8)
    assert failed["error_kind"] == results["poisoned"]["error"]["type"]
    assert (failed["provider"], failed["model"]) == ("openai", "gpt-4o-mini")
    (written,) = [r for r in records if r["event"] == "job.written"]
    assert written["elapsed_s"] is not None and "8 requests" in written["message"]
    (summary,) = [r for r in records if r["event"] == "shutdown.summary"]
    assert "nothing left open" in summary["message"] and summary["elapsed_s"] is not None


async def test_shutdown_names_the_batch_it_cut_off_and_sums_up(tmp_path: Path) -> None:
    """A create call still in flight when the grace period ends: the log names that batch (by
    its tag, provider and model) and the summary counts it as one to look up."""
    async with Emulator(time_scale=0, state_dir=tmp_path / "emu") as emu:
        assert emu.ctx is not None
        emu.ctx.faults = FaultSet.parse(
            {"faults": [{"kind": "slow", "route": "batches.create", "delay_s": 60}]}
        )
        write_jsonl(tmp_path / "inbox" / "slow.jsonl", [unified("a", "gpt-4o-mini", "hi")])
        proc = await start_daemon(tmp_path, emu.url, once=False, config_extra="grace_s = 1\n",
                                  env={"BATCHD_LOG_JSON": "1"})  # fmt: skip
        submitting = "SELECT tag FROM batches WHERE status = 'submitting'"

        async def creating() -> bool:
            return bool(proc.db(submitting))

        await wait_for(creating, timeout=60, what="a batch in its create call")
        (tag,) = proc.db(submitting)[0]
        run = await stop(proc)
    assert run.returncode == 0, run.stderr[-3000:]
    records = _lines(run.stderr)
    (cut,) = [r for r in records if r["event"] == "shutdown.cut_off" and r["batch"] == tag]
    assert (cut["provider"], cut["model"]) == ("openai", "gpt-4o-mini") and tag in cut["message"]
    (summary,) = [r for r in records if r["event"] == "shutdown.summary"]
    assert "1 file open: slow.jsonl (job 1)" in summary["message"], summary
    assert "1 batch with a create call to look up" in summary["message"], summary


def test_a_record_is_the_schema_not_the_library_dump() -> None:
    """Unit check of the serializer: context bound or passed, an int job, no stray keys."""
    seen: list[dict[str, Any]] = []
    sink = logger.add(lambda m: seen.append(json_record(m.record)), format="{message}")
    try:
        logger.bind(file="a.jsonl", job="7", provider="openai", stray="x").bind(
            event="job.test"
        ).warning("hello {}", "there")
        logger.info("no event of its own")
    finally:
        logger.remove(sink)
    jsonschema.validate(seen[0], JSON_SCHEMA)
    assert seen[0]["job"] == 7 and seen[0]["message"] == "hello there"
    assert seen[0]["event"] == "job.test" and "stray" not in seen[0]
    assert set(seen[0]) == {"time", "level", "event", "message", *FIELDS}
    jsonschema.validate(seen[1], JSON_SCHEMA)
    assert seen[1]["event"] == "test_log_schema_e2e.log"


def test_json_lines_survive_names_that_are_not_text() -> None:
    """A file name with an undecodable byte (a lone surrogate) or a newline is still one valid
    UTF-8 JSON line."""
    out = io.StringIO()
    sink = logger.add(lambda m: out.write(json.dumps(json_record(m.record), ensure_ascii=False)
                                          + "\n"), format="{message}")  # fmt: skip
    try:
        logger.bind(file="bad\udcff\nname.jsonl", job=1).error("file {} went", "bad\udcff")
    finally:
        logger.remove(sink)
    (line,) = out.getvalue().splitlines()
    line.encode("utf-8")  # writable to a UTF-8 stderr
    record = json.loads(line)
    assert record["file"] == "bad\\udcff\nname.jsonl"
    assert record["message"] == "file bad\\udcff went"


def test_progress_lines_are_throttled_per_batch() -> None:
    every = Throttle(300)
    assert every.due("batchd-a", now=0) and every.due("batchd-b", now=1)
    assert not every.due("batchd-a", now=299) and every.due("batchd-a", now=300)
    every.forget("batchd-b")
    assert every.due("batchd-b", now=2)


def test_plurals() -> None:
    assert plural(1, "request") == "1 request"
    assert plural(0, "request") == "0 requests"
    assert plural(2, "batch", "batches") == "2 batches"


def test_readme_documents_every_json_key() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Logs", 1)[1].split("\n## ", 1)[0]
    for key in ("time", "level", "event", "message", *FIELDS, "exception"):
        assert f"`{key}`" in section, f"README's Logs section does not document {key}"
