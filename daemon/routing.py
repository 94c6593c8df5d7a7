"""Which provider serves a model: a thin wrapper over the capability registry.

Routing comes from the registry (:mod:`daemon.registry`), so adding a model family there (or in
the config's ``[models]``) routes it too. Precedence, strongest first:

1. the line's own ``provider`` field (the user said so explicitly);
2. an exact model name from the config ``[routes]``;
3. the longest matching ``prefix*`` from the config ``[routes]``;
4. the registry: the model's family (exact name, then longest prefix).
"""

from __future__ import annotations

from collections.abc import Mapping

from daemon.registry import PROVIDERS, default_registry

__all__ = ["PROVIDERS", "check_overrides", "route"]


def check_overrides(overrides: Mapping[str, str]) -> dict[str, str]:
    """Validate a config mapping (``"model"`` or ``"prefix*"`` → provider) once, at load time.

    ``route`` trusts its overrides, so a typo in a provider name must fail here, loudly,
    rather than silently sending a model nowhere.
    """
    checked: dict[str, str] = {}
    for pattern, provider in overrides.items():
        if not isinstance(pattern, str) or not pattern.strip("*"):
            raise ValueError(f"route {pattern!r}: expected a model name or a 'prefix*'")
        if provider not in PROVIDERS:
            raise ValueError(
                f"route {pattern!r}: unknown provider {provider!r} "
                f"(expected one of {', '.join(PROVIDERS)})"
            )
        checked[pattern] = provider
    return checked


def route(
    model: str, line_provider: str | None = None, overrides: Mapping[str, str] | None = None
) -> str | None:
    """The provider for ``model`` under the packaged registry, or None when nothing routes it.

    An unknown ``line_provider`` gives None rather than falling back to the registry: the user
    asked for a specific provider, and guessing another one would send their data elsewhere.
    """
    return default_registry().route(model, line_provider, overrides)
