"""``batchd check``: a good file, a file with invalid lines, a mixed-provider file; exit codes."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from adapters.base import ProviderLimits
from adapters.facts import PROVIDER_LIMITS
from daemon.check import check_file, prompt_chars
from daemon.cli import main
from daemon.config import load_config
from daemon.ingest import claim
from daemon.packing import ITEM_OVERHEAD_BYTES
from daemon.reading import iter_lines
from daemon.store import Store
from daemon.validate import Request


def write(path: Path, lines: list[dict[str, Any] | str]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def line(cid: str, model: str, text: str = "hello world!", **extra: Any) -> dict[str, Any]:
    return {
        "custom_id": cid,
        "model": model,
        "messages": [{"role": "user", "content": text}],
    } | extra


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["check", *argv])
    return code, capsys.readouterr().out


def test_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path / "good.jsonl", [line(f"q{i}", "gpt-4o-mini", "x" * 400) for i in range(120)]
    )
    code, out = run(capsys, str(path), "--json")
    assert code == 0
    report = json.loads(out)
    assert (report["ok"], report["lines"], report["requests"], report["invalid"]) == (
        True,
        120,
        120,
        0,
    )
    (model,) = report["models"]
    assert (model["model"], model["provider"], model["family"]) == (
        "gpt-4o-mini",
        "openai",
        "gpt-4o-mini*",
    )
    assert (model["requests"], model["batch_size"], model["batches"]) == (120, 50, 3)
    assert model["adaptations"] == {}
    assert model["input_tokens_est"] == 120 * 100  # 400 characters / 4
    # gpt-4o-mini input: 0.15 per million live, half in a batch.
    assert model["cost_usd_live_est"] == pytest.approx(12_000 * 0.15 / 1e6)
    assert model["cost_usd_est"] == pytest.approx(12_000 * 0.075 / 1e6)
    assert report["invalid_lines"] == [] and report["invalid_not_shown"] == 0
    code, text = run(capsys, str(path))
    assert code == 0
    assert "gpt-4o-mini" in text and "120" in text and "0 invalid" in text


def test_file_with_invalid_lines_lists_the_first_n_then_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[dict[str, Any] | str] = [line("ok", "claude-haiku-4-5")]
    lines += ["{not json"] * 4
    lines.append(line("u", "llama-3"))
    path = write(tmp_path / "bad.jsonl", lines)
    code, out = run(capsys, str(path), "--json", "--max-invalid", "2")
    assert code == 1
    report = json.loads(out)
    assert (report["ok"], report["requests"], report["invalid"]) == (False, 1, 5)
    assert [x["line"] for x in report["invalid_lines"]] == [2, 3]
    assert report["invalid_lines"][0]["reason"].startswith("line 2: invalid JSON")
    assert report["invalid_not_shown"] == 3
    code, text = run(capsys, str(path))
    assert code == 1
    assert "INVALID LINES" in text and text.count("invalid JSON") == 4
    assert '[models."llama-3"]' in text  # how to add the unknown model


def test_mixed_providers_batches_adaptations_and_prices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [line(f"o{i}", "o3-mini", temperature=0.2, max_tokens=10) for i in range(3)]
    lines += [line(f"c{i}", "claude-sonnet-4-5", temperature=1.5) for i in range(5)]
    lines += [line(f"g{i}", "gemini-2.5-flash", system="be brief") for i in range(7)]
    lines += [line("p", "o1-preview")]
    path = write(tmp_path / "mixed.jsonl", lines)
    config = tmp_path / "batchd.toml"
    config.write_text("[providers.gemini]\nbatch_size = 3\n")
    code, out = run(capsys, str(path), "--json", "--config", str(config))
    assert code == 0
    models = {m["model"]: m for m in json.loads(out)["models"]}
    assert {m: (x["provider"], x["requests"], x["batches"]) for m, x in models.items()} == {
        "o3-mini": ("openai", 3, 1),
        "claude-sonnet-4-5": ("anthropic", 5, 1),
        "gemini-2.5-flash": ("gemini", 7, 3),
        "o1-preview": ("openai", 1, 1),
    }
    assert models["o3-mini"]["adaptations"] == {
        "max_tokens → max_completion_tokens": 3,
        "temperature removed": 3,
    }
    assert models["claude-sonnet-4-5"]["adaptations"] == {
        "max_tokens default": 5,
        "temperature clamped": 5,
    }
    assert models["gemini-2.5-flash"]["adaptations"] == {}
    assert models["o1-preview"]["cost_usd_est"] is None  # no price, never a guess
    report = json.loads(out)
    assert report["totals"]["unpriced_models"] == ["o1-preview"]
    assert report["totals"]["batches"] == 6


def test_reject_policy_from_the_config_makes_lossy_lines_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "f.jsonl", [line("a", "o3-mini", temperature=0.2), line("b", "gpt-4o")])
    config = tmp_path / "batchd.toml"
    config.write_text('on_unsupported = "reject"\n')
    report = check_file(path, load_config(config, env={}))
    assert (report["ok"], report["requests"], report["invalid"]) == (False, 1, 1)
    assert "on_unsupported" in report["invalid_lines"][0]["reason"]
    assert run(capsys, str(path), "--config", str(config))[0] == 1


def test_unreadable_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bin.jsonl"
    path.write_bytes(b"\x00\x01\x02")
    code, out = run(capsys, str(path))
    assert code == 2 and "cannot be read: binary content" in out
    code, out = run(capsys, str(tmp_path / "missing.jsonl"), "--json")
    assert code == 2 and json.loads(out)["file_error"] == "cannot read: no such file"


def test_prompt_chars_counts_prompt_text_only() -> None:
    body = {
        "model": "claude-x",
        "system": "abcd",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "12345678"}]}],
    }
    assert prompt_chars(body) == 12
    gemini = {"contents": [{"role": "user", "parts": [{"text": "abc"}]}], "systemInstruction": {}}
    assert prompt_chars(gemini) == 3


async def test_check_and_the_store_claim_agree_when_the_per_item_overhead_matters(
    tmp_path: Path,
) -> None:
    """A byte cap that ten bodies fill exactly: counting the per-item overhead, fewer fit. The
    check report and the batches the scheduler's claim takes from the store must agree."""
    cfg = load_config(flags={"root": str(tmp_path)}, env={})
    n = 30
    path = write(tmp_path / "f.jsonl", [line(f"q{i}", "gpt-4o-mini", "x" * 1000) for i in range(n)])
    sizes = {item.size_bytes for item in iter_lines(path)}
    (size,) = sizes  # same-sized bodies, so the expected count is plain arithmetic
    cap = 10 * size
    per_batch = cap // (size + ITEM_OVERHEAD_BYTES)
    assert per_batch < 10  # the overhead changes the count
    limits = {**PROVIDER_LIMITS, "openai": ProviderLimits(max_items=50_000, max_bytes=cap)}

    (model,) = check_file(path, cfg, limits=limits)["models"]
    assert model["batches"] == math.ceil(n / per_batch)

    store = await Store(tmp_path / "b.sqlite3").open()
    try:
        assert await claim(cfg, store, path) is not None
        claimed = []
        while batch := await store.claim_batch_items(
            "openai",
            "gpt-4o-mini",
            f"t{len(claimed)}",
            "acct",
            max_items=model["batch_size"],
            max_bytes=cap,
            now=1e12,
        ):
            claimed.append(len(batch[1]))
    finally:
        await store.close()
    assert sum(claimed) == n
    assert len(claimed) == model["batches"]


def test_lines_that_used_to_kill_are_reported_never_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same lines and reasons as ingest gives, with no traceback, also for a file whose
    name is not UTF-8 (printed in its escaped form)."""
    path = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"k\xff.jsonl")))
    good = json.dumps(line("g", "gpt-4o-mini"))
    bad = [
        "[" * 1100 + "]" * 1100,
        '{"custom_id": "s", "model": "gpt-4o-mini", "messages": '
        '[{"role": "user", "content": "\\ud800"}]}',
        '{"custom_id": "m", "model": "gpt-4o-mini", "messages": '
        '[{"role": "user", "content": "x"}], "metadata": {"x": 1e999}}',
    ]
    path.write_text("\n".join([good, *bad, good.replace('"g"', '"h"')]) + "\n")
    code, out = run(capsys, str(path), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["file"].endswith("k\\xff.jsonl")
    expected = [(x.line, x.reason) for x in iter_lines(path) if not isinstance(x, Request)]
    assert [(x["line"], x["reason"]) for x in report["invalid_lines"]] == expected
    assert [n for n, _ in expected] == [2, 3, 4]
    code, out = run(capsys, str(path))
    assert code == 1 and "line 2: JSON nested too deeply" in out
