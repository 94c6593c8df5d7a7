"""What each configuration key accepts: its type and range, checked once, at load time.

Every key of the configuration (top level, ``[providers.NAME]`` and its provider options,
``[routes]``) has one rule here. A value from the TOML file must already have the right TOML
type (``batch_size = "10"`` is refused); a value from a ``BATCHD_*`` variable or a flag is a
string and is parsed (``BATCHD_MAX_ATTEMPTS=3``, ``BATCHD_KEEP_PROVIDER_FILES=yes``). Every
refusal is a :class:`ConfigError` naming where the value came from, the key and the reason.
The ``[models."…"]`` tables are the model registry's to check (``daemon/registry.py``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.facts import GEMINI_INLINE_HARD_MAX_BYTES, PROVIDER_LIMITS, PROVIDERS

from .adapt import POLICIES


class ConfigError(ValueError):
    """A configuration that cannot be used: where it came from, the key, and why."""

    def __init__(self, source: str, key: str | None, reason: str) -> None:
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {reason}")
        self.source = source
        self.key = key
        self.reason = reason


# Longest duration a key accepts: a year (a longer one is a typo, and far-future deadlines
# overflow the event loop's and the threads' timers).
MAX_DURATION_S = 366 * 24 * 3600.0
MAX_RETENTION_DAYS = 36600.0  # a century: anything longer is a typo (0 keeps files for ever)
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})
_URL = re.compile(r"^https?://[^\s/?#]+(/[^\s]*)?$")
_LISTEN = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})")


@dataclass(frozen=True)
class Rule:
    """One key: ``kind`` is int, float, bool, str, path, url or listen (``host:port``); numbers
    within [low, high] (``low_open``: strictly above low); a str among ``choices`` when given."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False  # "" means unset (None)
    pattern: str | None = None  # a str must match this (full match)
    meaning: str = ""  # said when the pattern does not match


def _duration(*, positive: bool = False) -> Rule:
    return Rule("float", low=0.0, high=MAX_DURATION_S, low_open=positive)


def _count(low: int, high: int) -> Rule:
    return Rule("int", low=low, high=high)


SCALAR_RULES: dict[str, Rule] = {
    "root": Rule("path", optional=True),
    "inbox": Rule("path"),
    "outbox": Rule("path"),
    "processed": Rule("path"),
    "state_dir": Rule("path"),
    "once": Rule("bool"),
    "emulate": Rule("bool"),
    "emulator_url": Rule("url", optional=True),
    "log_json": Rule("bool"),
    "log_level": Rule("str", choices=LOG_LEVELS),
    "settle_s": _duration(),
    "scan_interval_s": _duration(positive=True),
    "batch_linger_s": _duration(),
    "poll_initial_s": _duration(positive=True),
    "poll_factor": Rule("float", low=1.0, high=100.0),
    "poll_max_s": _duration(positive=True),
    "retry_base_s": _duration(positive=True),
    "retry_max_s": _duration(positive=True),
    "max_attempts": _count(1, 1000),
    "request_timeout_s": _duration(positive=True),
    "reconcile_after_s": _duration(),
    "grace_s": _duration(),
    "auth_pause_s": _duration(positive=True),
    "keep_provider_files": Rule("bool"),
    "on_external_cancel": Rule("str", choices=("requeue", "cancel")),
    "max_request_bytes": _count(1, max(lim.max_bytes for lim in PROVIDER_LIMITS.values())),
    "min_free_disk_mb": _count(0, 1 << 40),
    "retention_days": Rule("float", low=0.0, high=MAX_RETENTION_DAYS),  # 0: kept forever
    "state_retention_days": Rule("float", low=0.0, high=MAX_RETENTION_DAYS),
    "on_unsupported": Rule("str", choices=tuple(POLICIES)),
    "prompt_cache": Rule("str", choices=("auto", "off")),
    "cache_priming": Rule("bool"),
    "cache_priming_max_wait_s": _duration(),
    "batch_sizing": Rule("str", choices=("adaptive", "fixed")),
    "canary_max_wait_s": _duration(),
    "canary_failure": Rule("str", choices=("fail", "hold", "send")),
    "canary_failure_share": Rule("float", low=0.0, high=1.0, low_open=True),
    "canary_memory_s": _duration(),
    "metrics_listen": Rule("listen", optional=True),
}

# [providers.NAME]: the keys every provider has, then each provider's own options.
PROVIDER_RULES: dict[str, Rule] = {
    "batch_size": _count(1, 1),  # the high bound is the provider's own (PROVIDER_LIMITS)
    "max_batch_size": _count(1, 1),  # the same
    "base_url": Rule("url"),
    "max_concurrent_submits": _count(1, 256),
    "creates_per_hour": _count(1, 1_000_000),
}
OPTION_RULES: dict[str, dict[str, Rule]] = {
    "openai": {},
    "anthropic": {
        "api_version": Rule(
            "str", pattern=r"\d{4}-\d{2}-\d{2}", meaning="an API version date such as 2023-06-01"
        ),
    },
    "gemini": {
        "api_version": Rule(
            "str", pattern=r"v\d+(alpha|beta)?\d*", meaning="an API version such as v1beta or v1"
        ),
        "inline_max_bytes": _count(0, GEMINI_INLINE_HARD_MAX_BYTES - 1),
    },
}


def provider_rule(provider: str, key: str) -> Rule | None:
    """The rule of ``key`` in ``[providers.<provider>]``, None for an unknown key."""
    if key in ("batch_size", "max_batch_size"):
        return _count(1, PROVIDER_LIMITS[provider].max_items)
    return PROVIDER_RULES.get(key) or OPTION_RULES[provider].get(key)


def provider_keys(provider: str) -> list[str]:
    return sorted({*PROVIDER_RULES, *OPTION_RULES[provider]})


def check_value(rule: Rule, value: Any, *, source: str, key: str | None, text: bool) -> Any:
    """``value`` checked against ``rule`` and converted; ``text``: it is a string from the
    environment or a flag, to be parsed (a TOML value must already have the right type)."""
    try:
        return _check(rule, value, text)
    except ValueError as exc:
        raise ConfigError(source, key, str(exc)) from None


def _check(rule: Rule, value: Any, text: bool) -> Any:
    kind = rule.kind
    if text and kind != "bool" and not isinstance(value, str):
        value = str(value)  # a flag given as a number or a Path
    if kind == "bool":
        return _bool(value, text)
    if kind in ("int", "float"):
        number = _number(kind, value, text)
        _in_range(rule, number)
        return number
    return _text(rule, value)


def _text(rule: Rule, value: Any) -> Any:
    kind = rule.kind
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {_shown(value)}")
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    if rule.optional and value == "":
        return None
    if kind == "path":
        if not value:
            raise ValueError("must be a folder path, got an empty string")
        expanded = os.path.expanduser(value)
        if expanded.startswith("~"):
            raise ValueError(f"cannot expand {value!r}: no such user's home folder")
        return Path(expanded)
    if kind in _TEXT_KINDS:
        return _TEXT_KINDS[kind](value)
    if rule.choices:
        chosen = value.upper() if rule.choices == LOG_LEVELS else value
        if chosen not in rule.choices:
            raise ValueError(f"must be one of {', '.join(rule.choices)}; got {value!r}")
        return chosen
    if rule.pattern is not None and not re.fullmatch(rule.pattern, value):
        raise ValueError(f"must be {rule.meaning}; got {value!r}")
    return value


def _url(value: str) -> str:
    if not _URL.match(value):
        raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
    return value


def _listen(value: str) -> str:
    """``host:port`` (an IPv6 address in brackets); port 0 picks a free one."""
    match = _LISTEN.fullmatch(value)
    if match is None or int(match.group(2)) > 65535:
        raise ValueError(
            f"must be host:port such as 127.0.0.1:9464 or [::1]:9464 (port 0 to 65535), "
            f"got {value!r}"
        )
    return value


_TEXT_KINDS: dict[str, Callable[[str], str]] = {"url": _url, "listen": _listen}


def _bool(value: Any, text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if text and isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ValueError(f"must be true or false (or yes/no, on/off, 1/0); got {value!r}")
    raise ValueError(f"must be true or false, got {_shown(value)}")


def _number(kind: str, value: Any, text: bool) -> int | float:
    if isinstance(value, str) and text:
        try:
            parsed: int | float = int(value.strip(), 0) if kind == "int" else float(value)
        except ValueError:
            raise ValueError(f"must be {_a(kind)}, got {value!r}") from None
        value = parsed
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be {_a(kind)}, got {_shown(value)}")
    if kind == "int":
        if isinstance(value, float):
            raise ValueError(f"must be a whole number, got {value!r}")
        return value
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, got {value!r}")
    return number


def _in_range(rule: Rule, number: float) -> None:
    low, high = rule.low, rule.high
    if low is not None and (number <= low if rule.low_open else number < low):
        bound = f"above {_fmt(low)}" if rule.low_open else f"at least {_fmt(low)}"
        raise ValueError(f"must be {bound}, got {_fmt(number)}")
    if high is not None and number > high:
        raise ValueError(f"must be at most {_fmt(high)}, got {_fmt(number)}")


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else repr(number)


def _a(kind: str) -> str:
    return "an integer" if kind == "int" else "a number"


def _shown(value: Any) -> str:
    kind = {bool: "a boolean", str: "a string", dict: "a table", list: "an array"}.get(type(value))
    return f"{kind} ({value!r})" if kind else repr(value)


def check_routes(routes: Any, source: str) -> dict[str, str]:
    """``[routes]``: ``"model-or-prefix*" = "provider"``."""
    if not isinstance(routes, Mapping):
        raise ConfigError(source, "routes", 'must be a table of "model-or-prefix*" = "provider"')
    for model, provider in routes.items():
        if provider not in PROVIDERS:
            reason = f"unknown provider {provider!r} (one of {', '.join(PROVIDERS)})"
            raise ConfigError(source, f"routes.{model!r}", reason)
    return dict(routes)


__all__ = [
    "OPTION_RULES",
    "PROVIDER_RULES",
    "SCALAR_RULES",
    "ConfigError",
    "Rule",
    "check_routes",
    "check_value",
    "provider_keys",
    "provider_rule",
]
