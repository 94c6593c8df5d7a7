"""``batchd models``: what each family accepts and costs, and the README's tables from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon import models_cmd
from daemon.cli import main
from daemon.registry import default_registry

README = Path(__file__).resolve().parents[1] / "README.md"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["models", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_readme_tables_are_generated_from_the_registry() -> None:
    """Edit models.toml, then: batchd models --markdown (into the README's marked block)."""
    generated = models_cmd.render_markdown(default_registry())
    assert models_cmd.readme_block(README.read_text(encoding="utf-8")) == generated


def test_markdown_flag_prints_the_readme_tables(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--markdown")
    assert code == 0 and out == models_cmd.render_markdown(default_registry())
    assert "| `claude-sonnet-4-6*` | top-level `system` field | none accepted" in out
    assert "| `gpt-5*` | developer message |" in out and "ceiling 128,000" in out


def test_one_model_in_words(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "claude-sonnet-4-5-20250929")
    assert code == 0
    head = "claude-sonnet-4-5-20250929 -> family claude-sonnet-4-5* (anthropic)"
    assert out.splitlines()[0] == head
    sampling = "temperature 0-1, top_p 0-1, top_k; not temperature and top_p together"
    assert f"  sampling          {sampling}\n" in out
    assert "  not accepted      presence_penalty, frequency_penalty, logprobs" in out
    assert "  output limit      max_tokens, default 1,024, ceiling 64,000" in out
    assert "  cache prefix      >= 1024 tokens" in out
    assert "cache write 5m 3.75, cache write 1h 6 USD per million tokens; checked 2026-11-28" in out
    code, out, _ = run(capsys, "gpt-5.2")
    assert "  stop sequences    not accepted (removed)" in out
    assert "(only with reasoning_effort none)" in out


def test_a_newer_model_shows_the_newest_rules_and_no_price(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "--json", "claude-opus-4-9")
    assert code == 0
    data = json.loads(out)
    assert (data["model"], data["family"], data["provider"]) == (
        "claude-opus-4-9",
        "claude-opus-4*",
        "anthropic",
    )
    assert data["sampling"]["temperature"] == {"accepted": False, "only": 1}
    assert data["sampling"]["top_p"] == {"accepted": False}
    assert data["thinking"]["mode"] == "adaptive"
    assert data["cache_min_tokens"] == 4096
    assert data["prices"]["input"] is None  # never a guess
    assert "newest" in data["note"]


def test_every_family_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--json")
    assert code == 0
    data = json.loads(out)
    registry = default_registry()
    assert len(data) == len(registry.families) + 3  # plus each provider's defaults
    assert [d["family"] for d in data[:3]] == [None, None, None]
    gpt4o = next(d for d in data if d["family"] == "gpt-4o*")
    assert gpt4o["output"] == {"field": "max_tokens", "default": None, "ceiling": 16384}
    assert gpt4o["sampling"]["temperature"] == {"accepted": True, "range": [0.0, 2.0]}
    assert gpt4o["prices"]["source"].startswith("https://")


def test_unknown_model_and_config_overrides(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(capsys, "llama-3")
    assert code == 1 and out == ""
    assert '[models."llama-3"]' in err
    config = tmp_path / "batchd.toml"
    config.write_text('[models."gpt-5.5*"]\nstop = true\n[routes]\n"house-*" = "anthropic"\n')
    code, out, _ = run(capsys, "--config", str(config), "gpt-5.5")
    assert code == 0 and "family gpt-5.5*" in out and "  stop sequences    accepted" in out
    code, out, _ = run(capsys, "--config", str(config), "house-model")
    assert code == 0
    assert out.startswith("house-model: not in the registry; anthropic's standard format")
