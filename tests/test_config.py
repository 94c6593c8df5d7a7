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
    ("text", "key", "reason"),
    [
        ("colour = 1\n", "colour", "unknown key"),
        ("batchsize = 10\n", "batchsize", "unknown key"),
        ("max_attempts = 'many'\n", "max_attempts", "must be an integer, got a string"),
        ("max_attempts = 0\n", "max_attempts", "must be at least 1, got 0"),
        ("max_attempts = 2.5\n", "max_attempts", "must be a whole number"),
        ("settle_s = -1\n", "settle_s", "must be at least 0, got -1"),
        ("retry_base_s = 0\n", "retry_base_s", "must be above 0, got 0"),
        ("grace_s = inf\n", "grace_s", "must be a finite number"),
        ("poll_max_s = 1e12\n", "poll_max_s", "must be at most 31622400"),
        ("poll_factor = 0.9\n", "poll_factor", "must be at least 1, got 0.9"),
        ("keep_provider_files = 'yes'\n", "keep_provider_files", "must be true or false"),
        ("log_level = 'loud'\n", "log_level", "must be one of TRACE, DEBUG, INFO"),
        ("on_external_cancel = 'ignore'\n", "on_external_cancel", "must be one of requeue"),
        ("on_unsupported = 'drop'\n", "on_unsupported", "must be one of adapt, reject"),
        ("prompt_cache = 'on'\n", "prompt_cache", "must be one of auto, off"),
        ("batch_sizing = 'grow'\n", "batch_sizing", "must be one of adaptive, fixed"),
        ("canary_failure = 'skip'\n", "canary_failure", "must be one of fail, hold, send"),
        ("canary_max_wait_s = -1\n", "canary_max_wait_s", "must be at least 0"),
        ("canary_failure_share = 0\n", "canary_failure_share", "must be above 0"),
        ("[providers.openai]\nmax_batch_size = 50001\n", "max_batch_size", "50000"),
        ('[models."gpt-4o-mini"]\nenqueued_token_limit = 0\n', "enqueued_token_limit", "0"),
        ("min_free_disk_mb = -5\n", "min_free_disk_mb", "must be at least 0"),
        ("max_request_bytes = 0\n", "max_request_bytes", "must be at least 1"),
        ("retention_days = -1\n", "retention_days", "must be at least 0"),
        ("state_retention_days = 1e6\n", "state_retention_days", "must be at most 36600"),
        ("retention_days = 'forever'\n", "retention_days", "must be a number"),
        ("inbox = ''\n", "inbox", "must be a folder path"),
        ("state_dir = 3\n", "state_dir", "must be a string"),
        ("emulator_url = 'localhost:1'\n", "emulator_url", "must be an http:// or https:// URL"),
        ("[providers.azure]\nbatch_size = 1\n", "providers.azure", "unknown provider"),
        ("[providers.openai]\nbatchsize = 10\n", "providers.openai.batchsize", "unknown key"),
        ("[providers.openai]\nbatch_size = 0\n", "providers.openai.batch_size", "at least 1"),
        ("[providers.openai]\nbatch_size = 50001\n", "providers.openai.batch_size", "50000"),
        ("[providers.openai]\nmax_concurrent_submits = 0\n", "max_concurrent_submits", "at least"),
        ("[providers.openai]\ncreates_per_hour = -1\n", "creates_per_hour", "at least 1"),
        ("[providers.openai]\nbase_url = 'ftp://x'\n", "providers.openai.base_url", "URL"),
        ("[providers.openai]\napi_version = 'x'\n", "providers.openai.api_version", "unknown"),
        ("[providers.anthropic]\napi_version = 'new'\n", "anthropic.api_version", "date"),
        ("[providers.gemini]\napi_version = 'beta'\n", "gemini.api_version", "v1beta"),
        ("[providers.gemini]\ninline_max_bytes = 2e7\n", "inline_max_bytes", "whole number"),
        ("[providers.gemini]\ninline_max_bytes = 20000000\n", "inline_max_bytes", "at most"),
        ("providers = 3\n", "providers", "must be tables"),
        ("[routes]\n'x*' = 'azure'\n", "routes.'x*'", "unknown provider"),
        ("routes = ['openai']\n", "routes", "must be a table"),
        ('[models."my-ft*"]\nprovidr = "openai"\n', "models.'my-ft*'", "unknown field"),
        ('models = 1\n', "models", "must be tables"),
    ],
)
def test_config_errors_name_the_file_the_key_and_the_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    message = str(caught.value)
    assert message.startswith(f"config file {path}: "), message
    assert key in message and reason in message, message


def test_unknown_keys_suggest_the_near_one(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text("[providers.openai]\nbatchsize = 10\n")
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        load_config(path, env={})


def test_unreadable_and_broken_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_config(tmp_path / "missing.toml", env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("settle_s = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken, env={})
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(latin, env={})


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("BATCHD_MAX_ATTEMPTS", "many", "must be an integer, got 'many'"),
        ("BATCHD_KEEP_PROVIDER_FILES", "ture", "must be true or false"),
        ("BATCHD_SETTLE_S", "nan", "finite"),
        ("BATCHD_LOG_LEVEL", "verbose", "must be one of"),
    ],
)
def test_environment_values_are_checked_and_named(variable: str, value: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={variable: value})
    assert f"environment variable {variable}" in str(caught.value)
    assert reason in str(caught.value)


def test_environment_words_and_normalised_values(tmp_path: Path) -> None:
    env = {"BATCHD_KEEP_PROVIDER_FILES": "off", "BATCHD_LOG_LEVEL": "debug", "BATCHD_GRACE_S": "0"}
    cfg = load_config(None, {"root": str(tmp_path)}, env=env)
    assert (cfg.keep_provider_files, cfg.log_level, cfg.grace_s) == (False, "DEBUG", 0.0)


def test_base_url_from_the_environment_is_checked() -> None:
    with pytest.raises(ConfigError, match="environment variable OPENAI_BASE_URL"):
        load_config(None, env={"OPENAI_BASE_URL": "not a url"})


def test_explicit_keys_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('inbox = "in"\n[providers.gemini]\nbatch_size = 5\n')
    cfg = load_config(path, {"state_dir": str(tmp_path)}, env={"BATCHD_GRACE_S": "3"})
    assert {"inbox", "state_dir", "grace_s", "providers.gemini"} <= cfg.explicit
    assert "root" not in cfg.explicit and "outbox" not in cfg.explicit
