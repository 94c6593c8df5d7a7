"""Which provider serves a model: a small table of name prefixes, overridable from config.

The table is data, not code, so the later model capability registry can grow it (or replace
``DEFAULT_ROUTES``) without touching the lookup. Precedence, strongest first:

1. the line's own ``provider`` field (the user said so explicitly);
2. an exact model name from the config overrides;
3. the longest matching ``prefix*`` from the config overrides;
4. the longest matching built-in prefix.
"""

from __future__ import annotations

from collections.abc import Mapping

PROVIDERS: tuple[str, ...] = ("openai", "anthropic", "gemini")

# Built-in prefixes. "o1"/"o3"/"o4" have no dash on purpose: "o1", "o1-mini", "o3-pro"...
DEFAULT_ROUTES: Mapping[str, str] = {
    "gpt-": "openai",
    "chatgpt-": "openai",
    "o1": "openai",
    "o3": "openai",
    "o4": "openai",
    "claude-": "anthropic",
    "gemini-": "gemini",
}


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


def _longest_prefix(model: str, prefixes: Mapping[str, str]) -> str | None:
    best: str | None = None
    best_len = -1
    for prefix, provider in prefixes.items():
        if len(prefix) > best_len and model.startswith(prefix):
            best, best_len = provider, len(prefix)
    return best


def route(
    model: str, line_provider: str | None = None, overrides: Mapping[str, str] | None = None
) -> str | None:
    """The provider for ``model``, or None when nothing routes it.

    An unknown ``line_provider`` gives None rather than falling back to the table: the user
    asked for a specific provider, and guessing another one would send their data elsewhere.
    """
    if line_provider is not None:
        return line_provider if line_provider in PROVIDERS else None
    overrides = overrides or {}
    exact = overrides.get(model)
    if exact is not None:
        return exact
    prefixes = {p[:-1]: prov for p, prov in overrides.items() if p.endswith("*")}
    return _longest_prefix(model, prefixes) or _longest_prefix(model, DEFAULT_ROUTES)
