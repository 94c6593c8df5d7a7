"""Checking the fields of a registry table: each function returns the typed value of one
field, or raises :class:`RegistryError` naming the table, the field and what it must be.

Shared by the packaged ``models.toml`` and the config's ``[models]`` tables (see
:mod:`daemon.registry`), so a typo in either is refused the same way, at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SAMPLING_PARAMS = (
    "temperature",
    "top_p",
    "top_k",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
)
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
Range = tuple[float | None, float | None]


class RegistryError(ValueError):
    """The registry data (packaged or from the config) is not valid."""


def count(where: str, key: str, value: Any) -> int | None:
    """An optional positive whole number of tokens."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RegistryError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def choice(where: str, key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise RegistryError(f"{where}: {key} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def boolean(where: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise RegistryError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def fraction(where: str, value: Any) -> float:
    if not is_number(value) or not 0 < value <= 1:
        raise RegistryError(f"{where} must be a number in (0, 1], got {value!r}")
    return float(value)


def params(where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or any(p not in SAMPLING_PARAMS for p in value):
        raise RegistryError(f"{where}: expected a list of {', '.join(SAMPLING_PARAMS)}")
    return list(value)


def efforts(where: str, key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list | tuple) or any(v not in EFFORTS for v in value):
        raise RegistryError(f"{where}: {key} must be a list of {', '.join(EFFORTS)}")
    return list(value)


def sampling(where: str, table: Any) -> dict[str, Range | bool]:
    if not isinstance(table, Mapping):
        raise RegistryError(f"{where}: sampling must be a table")
    out: dict[str, Range | bool] = {}
    for param, spec in table.items():
        if param not in SAMPLING_PARAMS:
            raise RegistryError(f"{where}: sampling.{param}: not one of {SAMPLING_PARAMS}")
        if spec is True:
            out[param] = True
        elif (
            isinstance(spec, list)
            and len(spec) == 2
            and all(v is None or is_number(v) for v in spec)
        ):
            out[param] = (spec[0], spec[1])
        else:
            raise RegistryError(f"{where}: sampling.{param} must be [low, high] or true")
    return out


def defaults_only(where: str, table: Any) -> dict[str, Any]:
    if not isinstance(table, Mapping) or any(p not in SAMPLING_PARAMS for p in table):
        raise RegistryError(f"{where}: defaults_only must be a table of sampling parameters")
    return dict(table)
