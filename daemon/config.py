"""Configuration: one frozen dataclass, built by one pure function from file, environment and flags.

Precedence: command-line flag > ``BATCHD_*`` environment variable > TOML file > default.
The file: ``--config``, else ``BATCHD_CONFIG`` (set but empty: none), else
``/etc/batchd/batchd.toml`` when it exists (a server's ``status`` and ``submit`` need no flag).
Every value is checked once, here, against its rule in ``daemon/config_rules.py``.
API keys never come from here: only from the providers' usual environment variables.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from adapters.facts import ANTHROPIC_DEFAULT_API_VERSION, PROVIDERS

from .adapt import Policy
from .config_rules import (
    PROVIDER_RULES,
    SCALAR_RULES,
    ConfigError,
    check_routes,
    check_value,
    provider_keys,
    provider_rule,
)
from .registry import Registry, RegistryError

KEY_ENV = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
}
__all__ = [
    "DEFAULT_CONFIG",
    "Config",
    "ConfigError",
    "ProviderConfig",
    "adapt_policy",
    "config_path",
    "load_config",
]

DEFAULT_CONFIG = Path("/etc/batchd/batchd.toml")  # used when it exists and nothing else is named

BASE_URL_ENV = {
    "openai": "OPENAI_BASE_URL",
    "anthropic": "ANTHROPIC_BASE_URL",
    "gemini": "GOOGLE_GEMINI_BASE_URL",
}


@dataclass(frozen=True)
class ProviderConfig:
    batch_size: int
    base_url: str | None = None
    max_concurrent_submits: int = 4
    creates_per_hour: int = 1000
    max_batch_size: int | None = None  # adaptive sizing's ceiling (None: the provider's cap)
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
    poll_max_s: float = 1800.0
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
    retention_days: float = 30.0  # finished jobs' outbox and processed files (0: kept forever)
    state_retention_days: float = 30.0  # finished jobs' rows in the database (0: kept forever)
    # Model adaptation (daemon/adapt.py) and prompt caching (daemon/caching.py).
    on_unsupported: str = "adapt"  # or "reject": a line needing a removal/clamp is invalid
    prompt_cache: str = "auto"  # or "off": cache_control on Claude system prompts shared in a batch
    cache_priming: bool = False
    cache_priming_max_wait_s: float = 900.0  # how long a batch waits for its primer
    # Batch sizes (daemon/sizing.py): "adaptive" starts each model of a file with a canary
    # batch of [providers.X] batch_size and grows after batches that end well; "fixed" sends
    # every batch at batch_size.
    batch_sizing: str = "adaptive"
    canary_max_wait_s: float = 3600.0  # the rest of a file waits for its canary this long
    canary_failure: str = "fail"  # a failed canary: "fail" the rest, "hold" it, or "send" it
    canary_failure_share: float = 0.5  # failed items (request-level) that fail a canary
    canary_memory_s: float = 86400.0  # a model that ended well this recently starts larger
    # The Prometheus endpoint (daemon/metrics.py): "host:port", off when None.
    metrics_listen: str | None = None
    models: Mapping[str, Any] = field(default_factory=dict)  # [models."name*"] registry overrides
    routes: Mapping[str, str] = field(default_factory=dict)
    # The registry + routes + adaptation settings, built once by load_config (see adapt_policy).
    policy: Policy | None = field(default=None, compare=False, repr=False)
    providers: Mapping[str, ProviderConfig] = field(default_factory=_default_providers)
    # The keys given by the file, the environment or a flag (the rest are defaults).
    explicit: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def api_key(self, provider: str, env: Mapping[str, str] | None = None) -> str | None:
        env = os.environ if env is None else env
        for name in KEY_ENV[provider]:
            if env.get(name):
                return env[name]
        return None




_TABLES = ("routes", "providers", "models")
_NOT_KEYS = (*_TABLES, "policy", "explicit")
_SCALARS = [f.name for f in fields(Config) if f.name not in _NOT_KEYS]


def load_config(
    path: str | os.PathLike[str] | None = None,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Build the configuration: defaults < TOML file < BATCHD_* environment < flags.

    Everything is checked here, once (``daemon/config_rules.py``): an unknown key anywhere, a
    value of the wrong type or out of range, a bad ``[models]`` table. Raises ConfigError,
    naming the file (or variable, or flag), the key and the reason; nothing else escapes.
    """
    env = dict(os.environ if env is None else env)
    path = config_path(path, env)
    source = f"config file {path}"
    raw = _read(path, source) if path else {}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _TABLES:
            continue
        if key not in SCALAR_RULES:
            raise ConfigError(source, key, f"unknown key{_suggest(key, SCALAR_RULES)}")
        values[key] = check_value(SCALAR_RULES[key], value, source=source, key=key, text=False)
    for key in _SCALARS:
        variable = f"BATCHD_{key.upper()}"
        if (text := env.get(variable)) is not None:
            where = f"environment variable {variable}"
            values[key] = check_value(SCALAR_RULES[key], text, source=where, key=key, text=True)
    for key, value in (flags or {}).items():
        if value is not None and key in SCALAR_RULES:
            where = f"option --{key.replace('_', '-')}"
            values[key] = check_value(SCALAR_RULES[key], value, source=where, key=key, text=True)
    routes = check_routes(raw.get("routes", {}), source)
    providers = _providers(raw.get("providers", {}), env, source)
    explicit = frozenset(values) | {f"providers.{p}" for p in raw.get("providers", {})}
    cfg = Config(**values, routes=routes, providers=providers, explicit=explicit)
    return _with_policy(_lay_out(cfg), raw.get("models", {}), source)


def config_path(
    path: str | os.PathLike[str] | None, env: Mapping[str, str]
) -> str | os.PathLike[str] | None:
    """The configuration file to read: ``path`` (``--config``), else ``BATCHD_CONFIG`` (an
    empty value: no file at all), else :data:`DEFAULT_CONFIG` when it exists, else none."""
    if path:
        return path
    if "BATCHD_CONFIG" in env:
        return env["BATCHD_CONFIG"] or None
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def _read(path: str | os.PathLike[str], source: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, ValueError) as exc:  # TOMLDecodeError, and bytes that are not UTF-8
        raise ConfigError(source, None, _reason(exc)) from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"not valid TOML: {exc}"


def _suggest(key: str, known: Mapping[str, Any] | list[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _providers(raw: Any, env: Mapping[str, str], source: str) -> dict[str, ProviderConfig]:
    if not isinstance(raw, Mapping):
        raise ConfigError(source, "providers", "must be tables: [providers.NAME]")
    out = _default_providers()
    for name, table in raw.items():
        where = f"providers.{name}"
        if name not in PROVIDERS:
            raise ConfigError(source, where, f"unknown provider (one of {', '.join(PROVIDERS)})")
        if not isinstance(table, Mapping):
            raise ConfigError(source, where, "must be a table")
        checked: dict[str, Any] = {}
        for key, value in table.items():
            rule = provider_rule(name, key)
            if rule is None:
                allowed = provider_keys(name)
                reason = f"unknown key{_suggest(key, allowed)} (allowed: {', '.join(allowed)})"
                raise ConfigError(source, f"{where}.{key}", reason)
            checked[key] = check_value(rule, value, source=source, key=f"{where}.{key}", text=False)
        common = {k: checked.pop(k) for k in list(checked) if k in PROVIDER_RULES}
        out[name] = replace(out[name], **common, options={**out[name].options, **checked})
    for name in PROVIDERS:
        url = out[name].base_url or env.get(BASE_URL_ENV[name]) or None
        if url is not None and url != out[name].base_url:
            where = f"environment variable {BASE_URL_ENV[name]}"
            url = check_value(PROVIDER_RULES["base_url"], url, source=where, key=None, text=True)
        out[name] = replace(out[name], base_url=url)
    return out


def adapt_policy(cfg: Config) -> Policy:
    """The policy :func:`load_config` built; a Config made directly gets the defaults."""
    return cfg.policy if cfg.policy is not None else Policy(routes=dict(cfg.routes))


def _with_policy(cfg: Config, models: Any, source: str) -> Config:
    """Build the model registry (packaged + ``[models]``) and the policy, once, at load time:
    a bad override stops the daemon here instead of mis-adapting requests later."""
    if not isinstance(models, Mapping):
        raise ConfigError(source, "models", 'must be tables: [models."name-or-prefix*"]')
    try:
        registry = Registry.load(models)
    except RegistryError as exc:
        raise ConfigError(source, None, str(exc)) from None
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
    return replace(cfg, **resolved)
