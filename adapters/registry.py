"""Which adapters exist, their hard limits, and how to build one.

Each provider's module is imported only when that provider is asked for (as saq loads its
backends), so a missing or broken SDK for one provider cannot stop the daemon from serving the
others.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn, cast

from .base import (
    AuthError,
    BatchItem,
    BatchStatus,
    ItemResult,
    ProviderAdapter,
    ProviderName,
    Submitted,
)
from .facts import (
    ANTHROPIC_DEFAULT_API_VERSION,
    GEMINI_DEFAULT_API_VERSION,
    PROVIDER_LIMITS,
    PROVIDERS,
)


def make_adapter(
    provider: str,
    *,
    base_url: str | None,
    api_key: str | None,
    timeout_s: float,
    spool_dir: Path,
    options: Mapping[str, Any],
) -> ProviderAdapter:
    """Build the adapter for ``provider``, importing only that provider's SDK.

    ``options`` are provider-specific: anthropic ``api_version``; gemini ``inline_max_bytes``
    and ``api_version``. Unknown option names are refused (a typo must not be a silent no-op).
    Raises AuthError when no API key is given: keys come only from the caller, never from the
    SDKs' environment variables (a provider without a key gets :func:`keyless_adapter`).
    """
    if provider not in PROVIDER_LIMITS:
        raise ValueError(f"unknown provider {provider!r}; one of {', '.join(PROVIDERS)}")
    if not api_key:
        raise AuthError(f"{provider}: no API key configured")
    limits = PROVIDER_LIMITS[provider]
    common: dict[str, Any] = {
        "base_url": base_url,
        "api_key": api_key,
        "timeout_s": timeout_s,
        "spool_dir": Path(spool_dir),
        "limits": limits,
    }
    if provider == "openai":
        _check_options(provider, options, set())
        from .openai_batch import OpenAIAdapter

        return OpenAIAdapter(**common)
    if provider == "anthropic":
        _check_options(provider, options, {"api_version"})
        from .anthropic_batch import AnthropicAdapter

        version = str(options.get("api_version", ANTHROPIC_DEFAULT_API_VERSION))
        return AnthropicAdapter(**common, api_version=version)
    _check_options(provider, options, {"api_version", "inline_max_bytes"})
    from .gemini_batch import DEFAULT_INLINE_MAX_BYTES, GeminiAdapter

    return GeminiAdapter(
        **common,
        api_version=str(options.get("api_version", GEMINI_DEFAULT_API_VERSION)),
        inline_max_bytes=int(options.get("inline_max_bytes", DEFAULT_INLINE_MAX_BYTES)),
    )


def _check_options(provider: str, options: Mapping[str, Any], known: set[str]) -> None:
    unknown = set(options) - known
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise ValueError(f"unknown {provider} option(s) {sorted(unknown)}; allowed: {allowed}")


class KeylessAdapter:
    """The stand-in for a provider that has no API key: it never reaches the network, and
    every call raises AuthError. The daemon holds such a provider (its requests wait) and
    does not call it; should a call happen anyway, it pauses the provider instead of sending
    anything without a key."""

    def __init__(self, provider: ProviderName, reason: str) -> None:
        self.name = provider
        self.limits = PROVIDER_LIMITS[provider]
        self.reason = reason

    def _refuse(self) -> NoReturn:
        raise AuthError(f"{self.name}: {self.reason}")

    async def submit(self, tag: str, model: str, items: Iterable[BatchItem]) -> Submitted:
        self._refuse()

    async def find(
        self,
        tag: str,
        model: str,
        n_items: int,
        since: float,
        exclude: Collection[str],
        keys: Collection[str] = (),
    ) -> str | None:
        self._refuse()

    async def poll(self, provider_batch_id: str) -> BatchStatus:
        self._refuse()

    def list_batches(self) -> AsyncIterator[list[BatchStatus]]:
        self._refuse()

    def results(self, provider_batch_id: str) -> AsyncIterator[ItemResult]:
        self._refuse()

    async def cancel(self, provider_batch_id: str) -> None:
        self._refuse()

    async def cleanup(self, provider_batch_id: str, input_file_id: str | None) -> None:
        self._refuse()

    async def close(self) -> None:
        return None


def keyless_adapter(provider: str, reason: str) -> ProviderAdapter:
    """The adapter of ``provider`` when it has no API key (see :class:`KeylessAdapter`)."""
    if provider not in PROVIDER_LIMITS:
        raise ValueError(f"unknown provider {provider!r}; one of {', '.join(PROVIDERS)}")
    return KeylessAdapter(cast(ProviderName, provider), reason)
