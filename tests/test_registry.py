"""The capability registry: the packaged data, config overrides, lookup and routing."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import ConfigError, adapt_policy, load_config
from daemon.registry import Registry, RegistryError, default_registry

REQUIRED = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "o1",
    "o1-mini",
    "o1-preview",
    "o3",
    "o3-mini",
    "o4-mini",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "gpt-5.1",
    "gpt-5.2",
    "claude-opus-4-1",
    "claude-opus-4-5",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "claude-3-7-sonnet-latest",
    "claude-3-5-sonnet-latest",
    "claude-3-5-haiku-latest",
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-2.0-flash",
]


def test_packaged_registry_loads_and_knows_the_required_families() -> None:
    registry = Registry.load()
    for model in REQUIRED:
        info = registry.lookup(model)
        assert info is not None and info.known, model
        assert info.batch_discount == 0.5


@pytest.mark.parametrize(
    ("model", "pattern", "system", "output_field"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o*", "system", "max_tokens"),
        ("gpt-4o-mini", "gpt-4o-mini*", "system", "max_tokens"),  # longest prefix wins
        ("o1-2024-12-17", "o1*", "developer", "max_completion_tokens"),
        ("o1-mini-2024-09-12", "o1-mini*", "fold-into-user", "max_completion_tokens"),
        ("o3-mini-2025-01-31", "o3-mini*", "developer", "max_completion_tokens"),
        ("gpt-5-chat-latest", "gpt-5-chat*", "system", "max_tokens"),
        ("gpt-5.1-chat-latest", "gpt-5.1-chat*", "system", "max_tokens"),
        ("gpt-5.3", "gpt-5.*", "developer", "max_completion_tokens"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5*", "top-level", "max_tokens"),
        ("claude-sonnet-4-9", "claude-sonnet-4*", "top-level", "max_tokens"),  # a newer one
        ("claude-new-thing", "claude-*", "top-level", "max_tokens"),
        ("gemini-2.5-flash-lite-001", "gemini-2.5-flash-lite*", "systemInstruction", None),
    ],
)
def test_lookup_exact_then_longest_prefix(
    model: str, pattern: str, system: str, output_field: str | None
) -> None:
    info = default_registry().lookup(model)
    assert info is not None
    assert (info.pattern, info.system) == (pattern, system)
    assert info.output_field == (output_field or "maxOutputTokens")


def test_rules_carried_as_data() -> None:
    registry = default_registry()
    o3_mini, o3, gpt51 = (registry.lookup(m) for m in ("o3-mini", "o3", "gpt-5.1"))
    assert o3_mini is not None and o3 is not None and gpt51 is not None
    assert o3_mini.sampling == {} and o3_mini.defaults_only == {}
    assert o3.stop is False and o3.defaults_only["temperature"] == 1
    assert gpt51.sampling_efforts == ("none",) and gpt51.default_effort == "none"
    claude = registry.lookup("claude-haiku-4-5")
    assert claude is not None
    assert (claude.output_default, claude.sampling["temperature"]) == (1024, (0.0, 1.0))
    assert registry.unsupported_by_version("anthropic", "2023-06-01") == ()
    assert registry.unsupported_by_version("anthropic", "2026-10-21") == (
        "temperature",
        "top_p",
        "top_k",
    )
    assert registry.unsupported_by_version("anthropic", "2027-01-01") == (
        "temperature",
        "top_p",
        "top_k",
    )


# (model, family, sampling generation, thinking, output ceiling, minimum cacheable prefix)
CLAUDE_GENERATIONS = [
    ("claude-3-haiku-20240307", "claude-3-haiku*", "classic", "manual", 4096, 2048),
    ("claude-3-5-haiku-latest", "claude-3-5-haiku*", "classic", "manual", 8192, 2048),
    ("claude-3-5-sonnet-latest", "claude-3-5-sonnet*", "classic", "manual", 8192, 1024),
    ("claude-3-7-sonnet-latest", "claude-3-7-sonnet*", "classic", "manual", 64000, 1024),
    ("claude-opus-4-0", "claude-opus-4-0*", "classic", "manual", 32000, 1024),
    ("claude-opus-4-20250514", "claude-opus-4-2025*", "classic", "manual", 32000, 1024),
    ("claude-opus-4-1-20250805", "claude-opus-4-1*", "exclusive", "manual", 32000, 1024),
    ("claude-opus-4-5", "claude-opus-4-5*", "exclusive", "manual", None, 4096),
    ("claude-opus-4-6", "claude-opus-4-6*", "exclusive", "manual", None, 4096),
    ("claude-opus-4-7", "claude-opus-4-7*", "no temperature", "adaptive", None, 4096),
    ("claude-opus-4-8", "claude-opus-4-8*", "no temperature", "adaptive", None, 4096),
    ("claude-opus-4-9", "claude-opus-4*", "no temperature", "adaptive", None, 4096),
    ("claude-sonnet-4-0", "claude-sonnet-4-0*", "classic", "manual", 64000, 1024),
    ("claude-sonnet-4-20250514", "claude-sonnet-4-2025*", "classic", "manual", 64000, 1024),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5*", "exclusive", "manual", 64000, 1024),
    ("claude-sonnet-4-6", "claude-sonnet-4-6*", "no temperature", "manual", None, 2048),
    ("claude-sonnet-4-7", "claude-sonnet-4*", "no temperature", "manual", None, 2048),
    ("claude-haiku-4-5-20251001", "claude-haiku-4-5*", "exclusive", "manual", 64000, 4096),
    ("claude-opus-5", "claude-*", "no temperature", "adaptive", None, 4096),
]


@pytest.mark.parametrize(
    ("model", "family", "generation", "thinking", "ceiling", "cache_min"), CLAUDE_GENERATIONS
)
def test_claude_generations(
    model: str,
    family: str,
    generation: str,
    thinking: str,
    ceiling: int | None,
    cache_min: int,
) -> None:
    info = default_registry().lookup(model)
    assert info is not None and info.pattern == family
    if generation == "no temperature":
        assert info.sampling == {} and info.defaults_only == {"temperature": 1}
    else:
        assert info.sampling["temperature"] == (0.0, 1.0)  # the product rule still holds
        assert set(info.sampling) == {"temperature", "top_p", "top_k"}
        expected = ("temperature", "top_p") if generation == "exclusive" else ()
        assert info.sampling_exclusive == expected
    assert (info.thinking, info.output_max, info.cache_min_tokens) == (thinking, ceiling, cache_min)
    assert info.thinking_budget_min == 1024
    assert info.thinking_defaults_only == {"temperature": 1}
    assert info.thinking_sampling == {"top_p": (0.95, 1.0)}


@pytest.mark.parametrize(
    ("model", "stop", "ceiling"),
    [
        ("gpt-4o-2024-08-06", True, 16384),
        ("gpt-4o-mini", True, 16384),
        ("gpt-4.1-nano", True, 32768),
        ("o3", False, 100000),
        ("o3-pro", False, 100000),
        ("o4-mini", False, 100000),
        ("gpt-5", False, 128000),
        ("gpt-5-mini", False, 128000),
        ("gpt-5-nano", False, 128000),
        ("gpt-5-pro", False, 128000),
        ("gpt-5.1", False, 128000),
        ("gpt-5.2", False, 128000),
        ("gpt-5.4", False, 128000),
        ("gpt-5.5", False, 128000),  # accepting stop again is unconfirmed: removed by default
        ("gpt-5-chat-latest", True, None),
        ("o1", True, None),
        ("gemini-2.5-pro", True, None),
    ],
)
def test_stop_and_output_ceilings(model: str, stop: bool, ceiling: int | None) -> None:
    info = default_registry().lookup(model)
    assert info is not None
    assert (info.stop, info.output_max) == (stop, ceiling)


def test_gpt_5_5_can_be_told_it_takes_stop() -> None:
    registry = Registry.load({"gpt-5.5*": {"stop": True}})
    newer = registry.lookup("gpt-5.5")
    assert newer is not None and newer.stop is True and newer.sampling_efforts == ("none",)
    older = registry.lookup("gpt-5.4")
    assert older is not None and older.stop is False


def test_claude_cache_write_prices_follow_the_ttl_multipliers() -> None:
    """A 5-minute write costs 1.25 x input, a 1-hour write 2 x, a read 0.1 x (Claude 3
    Haiku's published figures are rounded to the cent, hence the tolerance)."""
    for info in default_registry().families.values():
        p = info.prices
        if info.provider != "anthropic" or p.input is None:
            continue
        cent = 0.013
        assert p.cache_write_5m == pytest.approx(p.input * 1.25, abs=cent), info.pattern
        assert p.cache_write == pytest.approx(p.input * 2, abs=cent), info.pattern
        assert p.cached_input == pytest.approx(p.input * 0.1, abs=cent), info.pattern


def test_notes_and_prices_are_not_inherited() -> None:
    registry = default_registry()
    newest = registry.lookup("claude-opus-4-9")
    assert newest is not None and newest.note and "newest" in newest.note
    assert newest.prices.input is None  # a model nobody priced yet: no price, never a guess
    opus48 = registry.lookup("claude-opus-4-8")
    assert opus48 is not None and opus48.note is None and opus48.prices.input == 5.0


def test_prices_have_a_date_and_a_source_or_are_absent() -> None:
    for info in default_registry().families.values():
        p = info.prices
        if p.input is None and p.output is None:
            assert p.cached_input is None
            continue
        assert p.date and p.source and p.source.startswith("https://"), info.pattern
    o1_preview = default_registry().lookup("o1-preview")
    assert o1_preview is not None and o1_preview.prices.input is None  # never a guess
    sonnet = default_registry().lookup("claude-sonnet-4-5")
    assert sonnet is not None
    assert (sonnet.prices.input, sonnet.prices.cached_input, sonnet.prices.cache_write) == (
        3.0,
        0.3,
        6.0,
    )


def test_prices_are_not_inherited_through_extends() -> None:
    registry = default_registry()
    pro = registry.lookup("gpt-5-pro")
    assert pro is not None and pro.prices.input is None
    assert pro.system == "developer"  # other fields are inherited


def test_overrides_change_a_field_add_a_model_and_merge_prices() -> None:
    registry = Registry.load(
        {
            "gpt-4o*": {"prices": {"input": 9.0}},
            "my-model": {"provider": "anthropic", "output_default": 64},
            "o3-mini-2099*": {"stop": False},
        }
    )
    gpt4o = registry.lookup("gpt-4o")
    assert gpt4o is not None and gpt4o.prices.input == 9.0
    assert gpt4o.prices.output == 10.0  # merged key by key
    mine = registry.lookup("my-model")
    assert mine is not None and (mine.provider, mine.output_default) == ("anthropic", 64)
    assert registry.lookup("my-model-2") is None  # exact means exact
    # A new name without a provider starts from the family it resolves to today.
    newer = registry.lookup("o3-mini-2099-01-01")
    assert newer is not None and newer.pattern == "o3-mini-2099*"
    assert newer.system == "developer" and newer.stop is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"x*": {"provider": "azure"}}, "provider must be one of"),
        ({"llama*": {"sampling": {}}}, "set 'provider'"),
        ({"gpt-4o*": {"temprature": 1}}, "unknown field(s) ['temprature']"),
        ({"gpt-4o*": {"system": "top-level"}}, "system must be one of system, developer"),
        ({"gpt-4o*": {"sampling": {"temperature": [0]}}}, "must be [low, high] or true"),
        ({"gpt-4o*": {"prices": {"input": -1}}}, "prices.input must be a number >= 0"),
        ({"gpt-4o*": {"extends": "nope*"}}, "extends unknown family 'nope*'"),
        ({"a*": {"extends": "b*"}, "b*": {"extends": "a*"}}, "'extends' loops"),
        ({"*": {"provider": "openai"}}, "expected a model name"),
        ({"gpt-4o*": {"thinking": "manual"}}, "thinking fields apply to anthropic models only"),
        ({"claude-x*": {"extends": "claude-3*", "thinking": "always"}}, "thinking must be one of"),
        ({"gpt-4o*": {"output_max": 0}}, "output_max must be a positive integer"),
        ({"gpt-4o*": {"output_default": 20000}}, "output_default 20000 is above output_max"),
        ({"claude-3*": {"cache_min_tokens": "1k"}}, "cache_min_tokens must be a positive"),
        ({"claude-3*": {"sampling_exclusive": ["seed"]}}, "expected a list of temperature"),
        ({"gpt-4o*": {"note": 5}}, "note must be a string"),
    ],
)
def test_bad_overrides_fail_loudly(overrides: dict, message: str) -> None:
    with pytest.raises(RegistryError) as info:
        Registry.load(overrides)
    assert message in str(info.value)


def test_routing_comes_from_the_registry_with_routes_and_line_provider_first() -> None:
    registry = Registry.load({"acme-*": {"provider": "gemini"}})
    assert registry.route("acme-1") == "gemini"
    assert registry.route("o4-mini") == "openai"
    assert registry.route("llama-3") is None
    routes = {"acme-1": "openai", "acme-2*": "anthropic"}
    assert registry.route("acme-1", routes=routes) == "openai"
    assert registry.route("acme-2x", routes=routes) == "anthropic"
    assert registry.route("acme-3", routes=routes) == "gemini"
    assert registry.route("acme-1", "anthropic", routes) == "anthropic"
    assert registry.route("acme-1", "azure", routes) is None


def test_config_models_tables_build_the_policy(tmp_path: Path) -> None:
    path = tmp_path / "batchd.toml"
    path.write_text(
        'on_unsupported = "reject"\n'
        "[providers.anthropic]\n"
        'api_version = "2026-10-21"\n'
        '[models."acme-*"]\n'
        'provider = "openai"\n'
        "[routes]\n"
        '"x-*" = "gemini"\n'
    )
    cfg = load_config(path, env={})
    policy = adapt_policy(cfg)
    assert policy is cfg.policy
    assert policy.reject and policy.anthropic_api_version == "2026-10-21"
    assert policy.registry.route("acme-9") == "openai"
    assert policy.routes == {"x-*": "gemini"} and dict(cfg.routes) == {"x-*": "gemini"}
    assert cfg.models == {"acme-*": {"provider": "openai"}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('on_unsupported = "drop"\n', "on_unsupported: must be one of adapt, reject"),
        ('prompt_cache = "always"\n', "prompt_cache: must be one of auto, off"),
        ('[models."gpt-4o*"]\nsystem = "nowhere"\n', "system must be one of"),
    ],
)
def test_config_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "batchd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert message in str(info.value)


# Routing under the packaged registry (these cases came with the routing wrapper, now removed:
# the registry is the one router).


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4o", "openai"),
        ("chatgpt-4o-latest", "openai"),
        ("o1", "openai"),
        ("o3-mini", "openai"),
        ("o4-mini", "openai"),
        ("claude-sonnet-4-5", "anthropic"),
        ("gemini-2.5-flash", "gemini"),
        ("llama-3", None),
        ("", None),
    ],
)
def test_default_routes(model: str, provider: str | None) -> None:
    assert default_registry().route(model) == provider


def test_routes_exact_then_longest_prefix_then_registry() -> None:
    route = default_registry().route
    routes = {"my-model": "anthropic", "gpt-*": "gemini", "gpt-4o*": "anthropic"}
    assert route("my-model", routes=routes) == "anthropic"
    assert route("my-model-2", routes=routes) is None  # exact means exact
    assert route("gpt-4o-mini", routes=routes) == "anthropic"  # longest prefix wins
    assert route("gpt-4.1", routes=routes) == "gemini"
    assert route("claude-x", routes=routes) == "anthropic"  # the registry still applies
    assert route("gpt-4o", "gemini", {"gpt-4o": "anthropic"}) == "gemini"  # the line's own
    assert route("anything", "openai") == "openai"
    assert route("gpt-4o", "azure") is None  # an unknown provider is not guessed
