"""Provider facts the daemon and the adapters rely on, in one place, with no SDK import.

Each fact and its public source is recorded in ``docs/provider-notes.md``. The emulator keeps
its own copies on purpose (it is an independent witness) and never imports this module.
"""

from __future__ import annotations

from .base import ProviderLimits, ProviderName

# The providers batchd speaks to: the one list every module uses.
PROVIDERS: tuple[ProviderName, ...] = ("openai", "anthropic", "gemini")

MB = 1_000_000  # providers state their byte limits in decimal megabytes

# Hard caps per batch. Gemini states no item count: 100,000 keeps one batch's results (and the
# daemon's bookkeeping for it) the same order of size as Anthropic's cap, and its 2 GB file cap
# is still the limit that bites first for large prompts. Inline Gemini batches are further
# capped by the "inline_max_bytes" option (below the API's 20 MB request limit).
PROVIDER_LIMITS: dict[str, ProviderLimits] = {
    "openai": ProviderLimits(max_items=50_000, max_bytes=200 * MB),
    "anthropic": ProviderLimits(max_items=100_000, max_bytes=256 * MB),
    "gemini": ProviderLimits(max_items=100_000, max_bytes=2_000 * MB),
}

# How long a provider keeps a batch's results, in days, counted (conservatively) from the
# batch's creation: Anthropic keeps them 29 days after creation; OpenAI deletes output files 30
# days after the batch completes (completion comes after creation, so counting from creation
# warns early, never late). Gemini states no retention for batch outputs (its Files API keeps
# uploaded files 48 h; not confirmed for outputs): None, no warning. batchd warns loudly when an
# uncollected batch gets within a day of this (docs/provider-notes.md, "Common").
RESULTS_KEPT_DAYS: dict[str, float | None] = {"openai": 30.0, "anthropic": 29.0, "gemini": None}

# Gemini takes an inline batch in the create request itself, and refuses a request above this
# size; the "inline_max_bytes" option must stay below it.
GEMINI_INLINE_HARD_MAX_BYTES = 20 * MB

# Anthropic API version sent by default. 2023-06-01 keeps temperature/top_p/top_k, which the
# 2026-10-21 version refuses; the daemon's request adaptation assumes the version configured.
ANTHROPIC_DEFAULT_API_VERSION = "2023-06-01"
# Google's REST reference and batch guide document the batch endpoints under v1beta; the SDK's
# own default (v1) is not confirmed to serve them on the real service.
GEMINI_DEFAULT_API_VERSION = "v1beta"


def openai_base_url(base_url: str) -> str:
    """The OpenAI SDK appends paths to a base URL that ends in /v1; accept the root too."""
    base = base_url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


def root_url(base_url: str) -> str:
    """A server root (Anthropic, Gemini): no trailing slash, no /v1."""
    return base_url.rstrip("/").removesuffix("/v1")
