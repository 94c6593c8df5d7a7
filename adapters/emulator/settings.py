"""Fault-free behaviours of the emulator that a test configures: quotas, lanes, open questions.

They come from the same configuration as the faults (the fault file, or the body of the
``/_emulator/faults`` control routes), as top-level keys::

    enqueued_token_limits = {"gpt-4o-mini" = 2000000, "gemini-2.5-*" = 500000}
    concurrent_batch_limits = {"gemini-2.5-flash" = 2}
    cache_lanes = 4
    gpt_5_5_accepts_stop = false

* ``enqueued_token_limits``: per model (exact name or glob; the first matching key wins, exact
  names before globs), the organisation's enqueued-token quota. OpenAI fails a batch at
  validation with ``token_limit_exceeded`` when it would exceed it (openai_batches); Gemini
  refuses the create call with 429 RESOURCE_EXHAUSTED (gemini_quota). No limit by default.
* ``concurrent_batch_limits``: per model, how many Gemini batches may be pending or running at
  once (429 at create above it). No limit by default.
* ``cache_lanes``: how many concurrent lanes run an Anthropic batch's requests (prompt caching
  is best-effort across lanes: see anthropic_cache). Default 4.
* ``gpt_5_5_accepts_stop``: whether gpt-5.5 and later accept ``stop`` (reports disagree and
  nothing confirms it; see docs/emulator-openai.md). Default false: refused, as by every
  confirmed gpt-5.x, so a client that relies on the unconfirmed report is caught.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

KEYS = (
    "enqueued_token_limits",
    "concurrent_batch_limits",
    "cache_lanes",
    "gpt_5_5_accepts_stop",
)
DEFAULT_LANES = 4
MAX_LANES = 256


class SettingsError(ValueError):
    pass


def _limits(name: str, raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise SettingsError(f"{name} must map model names (or globs) to integers")
    out: dict[str, int] = {}
    for model, value in raw.items():
        if not isinstance(model, str) or not model:
            raise SettingsError(f"{name}: model names must be non-empty strings")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SettingsError(f"{name}[{model!r}] must be a positive integer, got {value!r}")
        out[model] = value
    return out


@dataclass
class Settings:
    enqueued_token_limits: dict[str, int] = field(default_factory=dict)
    concurrent_batch_limits: dict[str, int] = field(default_factory=dict)
    cache_lanes: int = DEFAULT_LANES
    gpt_5_5_accepts_stop: bool = False

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Settings:
        """The settings among a configuration's top-level keys (others are ignored here)."""
        settings = cls()
        if "enqueued_token_limits" in data:
            raw = data["enqueued_token_limits"]
            settings.enqueued_token_limits = _limits("enqueued_token_limits", raw)
        if "concurrent_batch_limits" in data:
            raw = data["concurrent_batch_limits"]
            settings.concurrent_batch_limits = _limits("concurrent_batch_limits", raw)
        if "cache_lanes" in data:
            lanes = data["cache_lanes"]
            if isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= MAX_LANES:
                raise SettingsError(f"cache_lanes must be an integer in 1..{MAX_LANES}")
            settings.cache_lanes = lanes
        if "gpt_5_5_accepts_stop" in data:
            if not isinstance(data["gpt_5_5_accepts_stop"], bool):
                raise SettingsError("gpt_5_5_accepts_stop must be true or false")
            settings.gpt_5_5_accepts_stop = data["gpt_5_5_accepts_stop"]
        return settings

    def extend(self, other: Settings, given: set[str]) -> None:
        """Add ``other``'s limits; take its scalars where the configuration named them."""
        self.enqueued_token_limits.update(other.enqueued_token_limits)
        self.concurrent_batch_limits.update(other.concurrent_batch_limits)
        if "cache_lanes" in given:
            self.cache_lanes = other.cache_lanes
        if "gpt_5_5_accepts_stop" in given:
            self.gpt_5_5_accepts_stop = other.gpt_5_5_accepts_stop

    def describe(self) -> dict[str, Any]:
        return {
            "enqueued_token_limits": dict(self.enqueued_token_limits),
            "concurrent_batch_limits": dict(self.concurrent_batch_limits),
            "cache_lanes": self.cache_lanes,
            "gpt_5_5_accepts_stop": self.gpt_5_5_accepts_stop,
        }

    def token_limit(self, model: str) -> int | None:
        return _lookup(self.enqueued_token_limits, model)

    def concurrency_limit(self, model: str) -> int | None:
        return _lookup(self.concurrent_batch_limits, model)


def _lookup(table: dict[str, int], model: str) -> int | None:
    if model in table:
        return table[model]
    for pattern, value in table.items():
        if fnmatch.fnmatchcase(model, pattern):
            return value
    return None
