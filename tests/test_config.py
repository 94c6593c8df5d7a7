"""Configuration: defaults < TOML file < BATCHD_* environment < flags; keys only from the env."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "systemd" / "batchd.toml.example"


def test_the_shipped_example_config_loads() -> None:
    cfg = load_config(EXAMPLE, env={})
    assert cfg.root == Path("/var/lib/batchd")
    assert cfg.inbox == Path("/var/lib/batchd/inbox")
    assert cfg.state_dir == Path("/var/lib/batchd/state")
    assert cfg.batch_linger_s == 10.0
    assert cfg.providers["anthropic"].options["api_version"] == "2023-06-01"
    assert cfg.providers["gemini"].options["inline_max_bytes"] == 10_000_000


def test_precedence_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('batch_linger_s = 3.0\nmax_attempts = 2\nroot = "/srv/a"\n')
    env = {"BATCHD_BATCH_LINGER_S": "4.5", "BATCHD_KEEP_PROVIDER_FILES": "yes"}
    cfg = load_config(path, {"root": str(tmp_path), "once": True}, env=env)
    assert cfg.max_attempts == 2  # file
    assert cfg.batch_linger_s == 4.5  # environment over file
    assert cfg.keep_provider_files is True
    assert cfg.root == tmp_path and cfg.outbox == tmp_path / "outbox"  # flag over file
    assert cfg.once is True


def test_defaults_are_the_product_batch_sizes(tmp_path: Path) -> None:
    cfg = load_config(None, {"root": str(tmp_path)}, env={})
    sizes = {name: p.batch_size for name, p in cfg.providers.items()}
    assert sizes == {"openai": 50, "anthropic": 100, "gemini": 250}
    assert cfg.providers["openai"].creates_per_hour == 2000


def test_keys_and_base_urls_come_from_the_environment(tmp_path: Path) -> None:
    env = {
        "OPENAI_API_KEY": "k1",
        "GEMINI_API_KEY": "k3",
        "GOOGLE_API_KEY": "k4",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
    }
    cfg = load_config(None, {"root": str(tmp_path)}, env=env)
    assert cfg.api_key("openai", env) == "k1"
    assert cfg.api_key("anthropic", env) is None
    assert cfg.api_key("gemini", env) == "k4"  # GOOGLE_API_KEY wins, as in the SDK
    assert cfg.providers["anthropic"].base_url == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1\n", "unknown key 'colour'"),
        ("max_attempts = 'many'\n", "max_attempts"),
        ("[providers.azure]\nbatch_size = 1\n", "unknown provider"),
        ("[providers.openai]\nbatch_size = 0\n", "batch_size must be at least 1"),
        ("[routes]\n'x*' = 'azure'\n", "unknown provider"),
        ("on_external_cancel = 'ignore'\n", "on_external_cancel"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, env={})
