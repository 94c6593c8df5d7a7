"""Configuration: one frozen dataclass, built by one pure function from file, environment and flags.

Precedence: command-line flag > ``BATCHD_*`` environment variable > TOML file > default.
API keys never come from here: only from the providers' usual environment variables.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from adapters.facts import ANTHROPIC_DEFAULT_API_VERSION, PROVIDERS

from .adapt import POLICIES, Policy
from .registry import Registry, RegistryError

KEY_ENV = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
}
BASE_URL_ENV = {
    "openai": "OPENAI_BASE_URL",
    "anthropic": "ANTHROPIC_BASE_URL",
    "gemini": "GOOGLE_GEMINI_BASE_URL",
}


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ProviderConfig:
    batch_size: int
    base_url: str | None = None
    max_concurrent_submits: int = 4
    creates_per_hour: int = 1000
    options: Mapping[str, Any] = field(default_factory=dict)


def _default_providers() -> dict[str, ProviderConfig]:
    return {
        # Batch sizes: the product spec's values (OpenAI 50, Anthropic 100, Gemini 250).
        "openai": ProviderConfig(batch_size=50, creates_per_hour=2000),
        "anthropic": ProviderConfig(
            batch_size=100, options={"api_version": ANTHROPIC_DEFAULT_API_VERSION}
        ),
        "gemini": ProviderConfig(batch_size=250),
    }


@dataclass(frozen=True)
class Config:
    root: Path | None = None
    inbox: Path = Path("inbox")
    outbox: Path = Path("outbox")
    processed: Path = Path("processed")
    state_dir: Path = Path("state")
    once: bool = False
    emulate: bool = False
    emulator_url: str | None = None
    log_json: bool = False
    log_level: str = "INFO"
    settle_s: float = 1.0
    scan_interval_s: float = 10.0
    batch_linger_s: float = 2.0
    poll_initial_s: float = 5.0
    poll_factor: float = 1.5
    poll_max_s: float = 300.0
    retry_base_s: float = 5.0
    retry_max_s: float = 900.0
    max_attempts: int = 5
    request_timeout_s: float = 60.0
    reconcile_after_s: float = 5.0
    grace_s: float = 20.0
    auth_pause_s: float = 300.0
    keep_provider_files: bool = False
    on_external_cancel: str = "requeue"  # or "cancel"
    max_request_bytes: int = 10 * 1024 * 1024
    min_free_disk_mb: int = 500  # below this (state or outbox disk) no new file is taken
    # Model adaptation (daemon/adapt.py) and prompt caching (daemon/caching.py).
    on_unsupported: str = "adapt"  # or "reject": a line needing a removal/clamp is invalid
    prompt_cache: str = "auto"  # or "off": cache_control on Claude system prompts shared in a batch
    cache_priming: bool = False
    cache_priming_max_wait_s: float = 900.0  # how long a batch waits for its primer
    models: Mapping[str, Any] = field(default_factory=dict)  # [models."name*"] registry overrides
    routes: Mapping[str, str] = field(default_factory=dict)
    # The registry + routes + adaptation settings, built once by load_config (see adapt_policy).
    policy: Policy | None = field(default=None, compare=False, repr=False)
    providers: Mapping[str, ProviderConfig] = field(default_factory=_default_providers)

    def api_key(self, provider: str, env: Mapping[str, str] | None = None) -> str | None:
        env = os.environ if env is None else env
        for name in KEY_ENV[provider]:
            if env.get(name):
                return env[name]
        return None


_TABLES = ("routes", "providers", "models")
_SCALARS = {f.name: f for f in fields(Config) if f.name not in (*_TABLES, "policy")}
_PATHS = {"root", "inbox", "outbox", "processed", "state_dir"}


def _coerce(name: str, value: Any) -> Any:
    kind = _SCALARS[name].type
    try:
        if name in _PATHS:
            return None if value in (None, "") else Path(str(value)).expanduser()
        if kind == "bool":
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind == "int":
            return int(value, 0) if isinstance(value, str) else int(value)
        if kind == "float":
            return float(value)
        if kind == "str | None":
            return None if value in (None, "") else str(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config {name}: cannot use {value!r}: {exc}") from None


def _providers(raw: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, ProviderConfig]:
    out = _default_providers()
    for name, table in raw.items():
        if name not in PROVIDERS:
            raise ConfigError(f"config providers.{name}: unknown provider (one of {PROVIDERS})")
        if not isinstance(table, Mapping):
            raise ConfigError(f"config providers.{name} must be a table")
        base = out[name]
        known = {"batch_size", "base_url", "max_concurrent_submits", "creates_per_hour"}
        options = {**base.options, **{k: v for k, v in table.items() if k not in known}}
        out[name] = replace(
            base,
            batch_size=int(table.get("batch_size", base.batch_size)),
            base_url=table.get("base_url", base.base_url),
            max_concurrent_submits=int(
                table.get("max_concurrent_submits", base.max_concurrent_submits)
            ),
            creates_per_hour=int(table.get("creates_per_hour", base.creates_per_hour)),
            options=options,
        )
    for name in PROVIDERS:
        url = out[name].base_url or env.get(BASE_URL_ENV[name]) or None
        out[name] = replace(out[name], base_url=url)
        if out[name].batch_size < 1:
            raise ConfigError(f"config providers.{name}.batch_size must be at least 1")
    return out


def _file_values(raw: Mapping[str, Any], path: object) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _TABLES:
            continue
        if key not in _SCALARS:
            raise ConfigError(f"config file {path}: unknown key {key!r}")
        values[key] = _coerce(key, value)
    return values


def load_config(
    path: str | os.PathLike[str] | None = None,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Build the configuration: defaults < TOML file < BATCHD_* environment < flags."""
    env = dict(os.environ if env is None else env)
    raw: dict[str, Any] = {}
    path = path or env.get("BATCHD_CONFIG")
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
    values = _file_values(raw, path)
    for key in _SCALARS:
        env_value = env.get(f"BATCHD_{key.upper()}")
        if env_value is not None:
            values[key] = _coerce(key, env_value)
    for key, value in (flags or {}).items():
        if value is not None and key in _SCALARS:
            values[key] = _coerce(key, value)
    routes = raw.get("routes", {})
    if not isinstance(routes, Mapping):
        raise ConfigError("config routes must be a table of model (or prefix*) = provider")
    for model, provider in routes.items():
        if provider not in PROVIDERS:
            raise ConfigError(f"config routes.{model}: unknown provider {provider!r}")
    cfg = Config(**values, routes=dict(routes), providers=_providers(raw.get("providers", {}), env))
    return _with_policy(_lay_out(cfg), raw.get("models", {}))


def adapt_policy(cfg: Config) -> Policy:
    """The policy :func:`load_config` built; a Config made directly gets the defaults."""
    return cfg.policy if cfg.policy is not None else Policy(routes=dict(cfg.routes))


def _with_policy(cfg: Config, models: Any) -> Config:
    """Build the model registry (packaged + ``[models]``) and the policy, once, at load time:
    a bad override stops the daemon here instead of mis-adapting requests later."""
    if not isinstance(models, Mapping):
        raise ConfigError('config models must be tables: [models."name-or-prefix*"]')
    if cfg.on_unsupported not in POLICIES:
        raise ConfigError(f"config on_unsupported must be one of {', '.join(POLICIES)}")
    if cfg.prompt_cache not in ("auto", "off"):
        raise ConfigError("config prompt_cache must be 'auto' or 'off'")
    try:
        registry = Registry.load(models)
    except RegistryError as exc:
        raise ConfigError(str(exc)) from None
    version = cfg.providers["anthropic"].options.get("api_version", ANTHROPIC_DEFAULT_API_VERSION)
    policy = Policy(registry, dict(cfg.routes), cfg.on_unsupported, str(version))
    return replace(cfg, policy=policy, models=dict(models))


def _lay_out(cfg: Config) -> Config:
    """Resolve relative folders against ``root`` (or the working directory)."""
    base = cfg.root or Path.cwd()
    resolved = {
        name: (p if p.is_absolute() else base / p)
        for name in ("inbox", "outbox", "processed", "state_dir")
        if (p := getattr(cfg, name)) is not None
    }
    if cfg.on_external_cancel not in ("requeue", "cancel"):
        raise ConfigError("config on_external_cancel must be 'requeue' or 'cancel'")
    return replace(cfg, **resolved)
