"""The model capability registry: the packaged ``models.toml`` plus the user's overrides.

Capabilities are data so that a new model, or a provider changing its mind, is a TOML edit
(in the package or in the config), not a code change. This module loads and checks that data,
merges the config's ``[models."name-or-prefix*"]`` tables over it, and answers two questions:
which family describes a model (exact name, then longest prefix) and which provider serves
it. :mod:`daemon.adapt` turns the answers into request changes.

Loading fails loudly (``RegistryError``) on an unknown field or a bad value: a typo in a
config override must stop the daemon at start-up, not silently send requests unadapted.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar

from adapters.facts import PROVIDERS

from . import registry_fields as fields
from .registry_fields import EFFORTS, SAMPLING_PARAMS, Range, RegistryError

__all__ = [
    "EFFORTS",
    "PROVIDERS",
    "SAMPLING_PARAMS",
    "ModelInfo",
    "Prices",
    "Range",
    "Registry",
    "RegistryError",
    "add_model_hint",
    "default_registry",
]

SYSTEM_MODES = ("system", "developer", "top-level", "fold-into-user", "systemInstruction")
OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens", "maxOutputTokens")
# What each provider's wire format can express.
SYSTEM_BY_PROVIDER = {
    "openai": ("system", "developer", "fold-into-user"),
    "anthropic": ("top-level", "fold-into-user"),
    "gemini": ("systemInstruction", "fold-into-user"),
}
OUTPUT_BY_PROVIDER = {
    "openai": ("max_tokens", "max_completion_tokens"),
    "anthropic": ("max_tokens",),
    "gemini": ("maxOutputTokens",),
}
THINKING_MODES = ("manual", "adaptive")
PRICE_FIELDS = ("input", "output", "cached_input", "cache_write_5m", "cache_write")
FAMILY_FIELDS = frozenset(
    {
        "provider",
        "extends",
        "note",
        "system",
        "output_field",
        "output_default",
        "output_max",
        "stop",
        "sampling",
        "sampling_exclusive",
        "defaults_only",
        "reasoning_efforts",
        "default_effort",
        "sampling_efforts",
        "thinking",
        "thinking_sampling",
        "thinking_defaults_only",
        "thinking_budget_min",
        "cache_min_tokens",
        "enqueued_token_limit",
        "prices",
        "batch_discount",
    }
)
# Fields that describe one family only: ``extends`` does not pass them on.
NOT_INHERITED = frozenset({"prices", "note"})
# Extended thinking is a Claude request parameter.
ANTHROPIC_ONLY = frozenset(
    {"thinking", "thinking_sampling", "thinking_defaults_only", "thinking_budget_min"}
)
DEFAULT_BATCH_DISCOUNT = 0.5

T = TypeVar("T")


@dataclass(frozen=True)
class Prices:
    """USD per million tokens; None where the registry does not know the figure.

    ``cache_write`` is the price of a 1-hour cache write (Anthropic: 2 x input),
    ``cache_write_5m`` of a 5-minute one (1.25 x input); ``cached_input`` of a cache read."""

    input: float | None = None
    output: float | None = None
    cached_input: float | None = None
    cache_write_5m: float | None = None
    cache_write: float | None = None
    date: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What one model family accepts and costs (see the header of ``models.toml``)."""

    pattern: str
    provider: str
    system: str
    output_field: str
    stop: bool
    sampling: Mapping[str, Range | bool]
    output_default: int | None = None
    output_max: int | None = None
    sampling_exclusive: tuple[str, ...] = ()
    defaults_only: Mapping[str, Any] = field(default_factory=dict)
    reasoning_efforts: tuple[str, ...] = ()
    default_effort: str | None = None
    sampling_efforts: tuple[str, ...] = ()
    thinking: str | None = None  # Claude only: "manual" or "adaptive"
    thinking_sampling: Mapping[str, Range | bool] = field(default_factory=dict)
    thinking_defaults_only: Mapping[str, Any] = field(default_factory=dict)
    thinking_budget_min: int | None = None
    cache_min_tokens: int | None = None
    # The account's enqueued-token limit for the model (batch prompt tokens queued at once);
    # set to skip learning it from the provider's refusal (daemon/budgets.py).
    enqueued_token_limit: int | None = None
    prices: Prices = field(default_factory=Prices)
    batch_discount: float = DEFAULT_BATCH_DISCOUNT
    note: str | None = None
    known: bool = True  # False: a provider's defaults for a model the registry does not list


@dataclass(frozen=True)
class Registry:
    """Model families by pattern, the provider defaults, and per-version request rules."""

    families: Mapping[str, ModelInfo]
    defaults: Mapping[str, ModelInfo]
    api_versions: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    # Lookups memoised: a file names a handful of models over many lines.
    _memo: dict[str, ModelInfo | None] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None) -> Registry:
        """The packaged registry with the config's ``[models]`` tables merged over it."""
        raw = _packaged()
        if overrides:
            raw = {**raw, "models": _merge_overrides(raw["models"], overrides)}
        return _build(raw)

    def lookup(self, model: str) -> ModelInfo | None:
        """The family of ``model``: its exact name first, then the longest matching prefix."""
        if model in self._memo:
            return self._memo[model]
        found = self.families.get(model) or _longest(model, self.families)
        if len(self._memo) > 4096:
            self._memo.clear()
        self._memo[model] = found
        return found

    def info(self, model: str, provider: str) -> ModelInfo:
        """What to apply to ``model`` sent to ``provider``: its family when that family is
        the provider's, else the provider's defaults (the standard format), marked unknown."""
        found = self.lookup(model)
        if found is not None and found.provider == provider:
            return found
        return self.defaults[provider]

    def route(
        self,
        model: str,
        line_provider: str | None = None,
        routes: Mapping[str, str] | None = None,
    ) -> str | None:
        """The provider for ``model``: the line's ``provider``, then the config ``[routes]``
        (exact, then longest prefix), then the registry. None when nothing routes it."""
        if line_provider is not None:
            return line_provider if line_provider in PROVIDERS else None
        routes = routes or {}
        exact = routes.get(model)
        if exact is not None:
            return exact
        prefixes = {p: prov for p, prov in routes.items() if p.endswith("*")}
        routed = _longest(model, prefixes)
        if routed is not None:
            return routed
        found = self.lookup(model)
        return found.provider if found is not None else None

    def unsupported_by_version(self, provider: str, version: str) -> tuple[str, ...]:
        """Parameters refused for every model under API ``version`` (dates compare as text):
        the rules of the newest listed version at or before it."""
        versions = self.api_versions.get(provider, {})
        applicable = [v for v in versions if v <= version]
        return versions[max(applicable)] if applicable else ()


def _longest(model: str, patterns: Mapping[str, T]) -> T | None:
    """The value of the most specific pattern ``model`` matches: a ``prefix*`` (``model``
    starts with it) or a pattern with ``*`` inside as well (``gpt-5.*-pro*``: any text
    there). The pattern with the most characters besides its ``*`` wins, so for prefixes the
    longest one does."""
    best: T | None = None
    best_len = -1
    for pattern, value in patterns.items():
        if not pattern.endswith("*"):
            continue
        literal = len(pattern) - pattern.count("*")
        if literal > best_len and _matches(model, pattern):
            best, best_len = value, literal
    return best


def _matches(model: str, pattern: str) -> bool:
    head, *rest = pattern.split("*")
    if rest == [""]:
        return model.startswith(head)
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), model) is not None


# ---------------------------------------------------------------------------------------------
# Loading


@functools.cache
def _packaged() -> dict[str, Any]:
    text = resources.files("daemon").joinpath("models.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


@functools.cache
def default_registry() -> Registry:
    """The packaged registry without overrides, built once per process."""
    return Registry.load()


def _merge_overrides(
    packaged: Mapping[str, Any], overrides: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Config tables over packaged ones: a known name has the given fields replaced (tables
    such as ``prices`` merged key by key); a new name starts from the family the name
    resolves to today unless it names its own ``provider`` or ``extends``."""
    merged = {name: dict(table) for name, table in packaged.items()}
    for name, table in overrides.items():
        if not isinstance(name, str) or not name.strip("*"):
            raise RegistryError(f"config models.{name!r}: expected a model name or a 'prefix*'")
        if not isinstance(table, Mapping):
            raise RegistryError(f"config models.{name!r} must be a table")
        _check_keys(f"config models.{name!r}", table)
        if name in merged:
            base = merged[name]
        elif "provider" in table or "extends" in table:
            base = {}
        else:
            parent = _longest(name.rstrip("*"), {k: k for k in packaged})
            if parent is None:
                raise RegistryError(
                    f"config models.{name!r}: set 'provider' (one of {', '.join(PROVIDERS)}); "
                    "no packaged family matches this name"
                )
            base = {"extends": parent}
        entry = dict(base)
        entry.update(table)
        if isinstance(table.get("prices"), Mapping) and isinstance(base.get("prices"), Mapping):
            entry["prices"] = {**base["prices"], **table["prices"]}
        merged[name] = entry
    return merged


def _check_keys(where: str, table: Mapping[str, Any]) -> None:
    unknown = set(table) - FAMILY_FIELDS
    if unknown:
        allowed = ", ".join(sorted(FAMILY_FIELDS))
        raise RegistryError(f"{where}: unknown field(s) {sorted(unknown)} (allowed: {allowed})")


def _build(raw: Mapping[str, Any]) -> Registry:
    discount = fields.fraction("batch_discount", raw.get("batch_discount", DEFAULT_BATCH_DISCOUNT))
    provider_tables = raw.get("providers", {})
    defaults: dict[str, ModelInfo] = {}
    for provider in PROVIDERS:
        table = {"provider": provider, "batch_discount": discount, **provider_tables[provider]}
        _check_keys(f"providers.{provider}", table)
        defaults[provider] = _family(f"{provider} (defaults)", table, known=False)
    tables = raw.get("models", {})
    resolved: dict[str, dict[str, Any]] = {}
    families = {
        name: _family(name, _resolve(name, tables, provider_tables, discount, resolved, ()))
        for name in tables
    }
    versions = {
        provider: {
            version: tuple(
                fields.params(f"api_versions.{provider}.{version}", rules.get("unsupported"))
            )
            for version, rules in table.items()
        }
        for provider, table in raw.get("api_versions", {}).items()
    }
    return Registry(families, defaults, versions)


def _resolve(
    name: str,
    tables: Mapping[str, Any],
    provider_tables: Mapping[str, Any],
    discount: float,
    done: dict[str, dict[str, Any]],
    chain: tuple[str, ...],
) -> dict[str, Any]:
    """A family's full field table: provider defaults < extended family < its own fields."""
    if name in done:
        return done[name]
    if name in chain:
        raise RegistryError(f"models.{name!r}: 'extends' loops ({' -> '.join((*chain, name))})")
    table = tables[name]
    _check_keys(f"models.{name!r}", table)
    parent = table.get("extends")
    if parent is not None:
        if parent not in tables:
            raise RegistryError(f"models.{name!r}: extends unknown family {parent!r}")
        base = _resolve(parent, tables, provider_tables, discount, done, (*chain, name))
        base = {k: v for k, v in base.items() if k not in NOT_INHERITED}
    else:
        provider = table.get("provider")
        if provider not in PROVIDERS:
            raise RegistryError(
                f"models.{name!r}: provider must be one of {', '.join(PROVIDERS)}, got {provider!r}"
            )
        base = {"provider": provider, "batch_discount": discount, **provider_tables[provider]}
    own = {k: v for k, v in table.items() if k != "extends"}
    if own.get("provider", base["provider"]) != base["provider"]:
        raise RegistryError(f"models.{name!r}: extends a family of another provider")
    done[name] = {**base, **own}
    return done[name]


def _family(name: str, table: Mapping[str, Any], *, known: bool = True) -> ModelInfo:
    where = f"models.{name!r}" if known else f"providers.{table.get('provider')}"
    provider = table.get("provider")
    if provider not in PROVIDERS:
        raise RegistryError(f"{where}: provider must be one of {', '.join(PROVIDERS)}")
    system = fields.choice(where, "system", table.get("system"), SYSTEM_BY_PROVIDER[provider])
    output_field = fields.choice(
        where, "output_field", table.get("output_field"), OUTPUT_BY_PROVIDER[provider]
    )
    efforts = tuple(fields.efforts(where, "reasoning_efforts", table.get("reasoning_efforts")))
    default_effort = table.get("default_effort")
    if default_effort is not None:
        fields.choice(where, "default_effort", default_effort, EFFORTS)
    output_default = fields.count(where, "output_default", table.get("output_default"))
    output_max = fields.count(where, "output_max", table.get("output_max"))
    if output_default is not None and output_max is not None and output_default > output_max:
        raise RegistryError(f"{where}: output_default {output_default} is above output_max")
    thinking = table.get("thinking")
    if thinking is not None:
        fields.choice(where, "thinking", thinking, THINKING_MODES)
    if provider != "anthropic" and ANTHROPIC_ONLY & set(table):
        raise RegistryError(f"{where}: thinking fields apply to anthropic models only")
    note = table.get("note")
    if note is not None and not isinstance(note, str):
        raise RegistryError(f"{where}: note must be a string")
    get = table.get
    return ModelInfo(
        pattern=name,
        provider=provider,
        system=system,
        output_field=output_field,
        stop=fields.boolean(where, "stop", get("stop", True)),
        sampling=fields.sampling(where, get("sampling", {})),
        output_default=output_default,
        output_max=output_max,
        sampling_exclusive=tuple(
            fields.params(f"{where}: sampling_exclusive", get("sampling_exclusive", []))
        ),
        defaults_only=fields.defaults_only(where, get("defaults_only", {})),
        reasoning_efforts=efforts,
        default_effort=default_effort,
        sampling_efforts=tuple(fields.efforts(where, "sampling_efforts", get("sampling_efforts"))),
        thinking=thinking,
        thinking_sampling=fields.sampling(f"{where} thinking", get("thinking_sampling", {})),
        thinking_defaults_only=fields.defaults_only(
            f"{where} thinking", get("thinking_defaults_only", {})
        ),
        thinking_budget_min=fields.count(where, "thinking_budget_min", get("thinking_budget_min")),
        cache_min_tokens=fields.count(where, "cache_min_tokens", get("cache_min_tokens")),
        enqueued_token_limit=fields.count(
            where, "enqueued_token_limit", get("enqueued_token_limit")
        ),
        prices=_prices(where, get("prices", {})),
        batch_discount=fields.fraction(f"{where} batch_discount", get("batch_discount", 0.5)),
        note=note,
        known=known,
    )


def _prices(where: str, table: Any) -> Prices:
    if not isinstance(table, Mapping):
        raise RegistryError(f"{where}: prices must be a table")
    unknown = set(table) - {*PRICE_FIELDS, "date", "source"}
    if unknown:
        raise RegistryError(f"{where}: prices has unknown field(s) {sorted(unknown)}")
    for key in PRICE_FIELDS:
        value = table.get(key)
        if value is not None and (not fields.is_number(value) or value < 0):
            raise RegistryError(f"{where}: prices.{key} must be a number >= 0, got {value!r}")
    return Prices(
        **{k: (float(table[k]) if k in table else None) for k in PRICE_FIELDS},
        date=str(table["date"]) if "date" in table else None,
        source=str(table["source"]) if "source" in table else None,
    )


def add_model_hint(model: str) -> str:
    """The config snippet that teaches batchd a model, for error messages."""
    return f'[models."{model}"] provider = "openai" | "anthropic" | "gemini"'
