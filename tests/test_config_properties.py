"""Property-based tests (hypothesis) of the configuration loader: any TOML document, any text
and any bytes as a config file become a ``Config`` or a ``ConfigError``, never another
exception; every ``BATCHD_*`` variable's text likewise.

The documents are built from the real key names (top level, ``[providers.X]`` with its
options, ``[routes]``, ``[models."…"]`` with the registry's fields) and values of every TOML
type, so most examples reach the checks of one key rather than stopping at the first unknown
one. Short profile in ``make test``; the long one: ``HYPOTHESIS_PROFILE=long``.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.config import Config, ConfigError, load_config
from daemon.config_rules import OPTION_RULES, PROVIDER_RULES, SCALAR_RULES
from daemon.registry import FAMILY_FIELDS

settings.register_profile(
    "long", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])

PROVIDER_NAMES = ["openai", "anthropic", "gemini", "azure", ""]
PROVIDER_KEYS = sorted({*PROVIDER_RULES, *(k for o in OPTION_RULES.values() for k in o)})

# Text without lone surrogates (TOML cannot carry them).
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
words = st.sampled_from(
    ["", "auto", "off", "adapt", "reject", "cancel", "requeue", "INFO", "debug", "openai",
     "anthropic", "gemini", "http://127.0.0.1:9", "https://x", "v1beta", "2023-06-01",
     "gpt-4o-mini", "claude-*", "inbox", "/tmp", "~", "x\x00y"]
)  # fmt: skip
numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 2**40, 10**20]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 1e308, math.inf, -math.inf, math.nan]),
)
scalars = st.one_of(st.booleans(), numbers, text, words, st.dates(), st.datetimes())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.one_of(text, words), inner, max_size=3)
    ),
    max_leaves=8,
)


def _table(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.one_of(st.sampled_from(keys), text), values, max_size=4)


providers = st.dictionaries(
    st.sampled_from(PROVIDER_NAMES), st.one_of(_table(PROVIDER_KEYS), values), max_size=3
)
models = st.dictionaries(
    st.one_of(st.sampled_from(["gpt-4o-mini", "my-ft*", "claude-x*", "*", ""]), text),
    st.one_of(_table(sorted(FAMILY_FIELDS)), values),
    max_size=2,
)
routes = st.dictionaries(st.one_of(words, text), st.one_of(words, values), max_size=3)
documents = st.fixed_dictionaries(
    {},
    optional={
        **{key: values for key in SCALAR_RULES},
        "providers": st.one_of(providers, values),
        "routes": st.one_of(routes, values),
        "models": st.one_of(models, values),
        "unknown_key": values,
    },
)


def _string(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\' or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml(value: Any) -> str:
    """A TOML value (inline tables for tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_string(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return value.isoformat()  # a date or a datetime


def _load(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.toml"
        path.write_bytes(data)
        try:
            cfg = load_config(path, {"root": folder}, env={})
        except ConfigError as exc:
            assert str(exc).startswith(f"config file {path}")
            return
        assert isinstance(cfg, Config) and cfg.policy is not None


@given(documents)
def test_any_toml_document_is_a_config_or_a_config_error(doc: dict[str, Any]) -> None:
    _load("\n".join(f"{_string(k)} = {_toml(v)}" for k, v in doc.items()).encode())


@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_any_bytes_as_a_config_file_are_a_config_or_a_config_error(data: bytes) -> None:
    _load(data)


@given(st.sampled_from(sorted(SCALAR_RULES)), st.text(max_size=30))
def test_any_environment_value_is_a_config_or_a_config_error(key: str, value: str) -> None:
    variable = f"BATCHD_{key.upper()}"
    with tempfile.TemporaryDirectory() as folder:
        try:
            cfg = load_config(None, {"root": folder}, env={variable: value})
        except ConfigError as exc:
            assert f"environment variable {variable}: {key}:" in str(exc)
            return
        assert isinstance(cfg, Config)
