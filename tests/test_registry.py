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
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4*", "top-level", "max_tokens"),
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
        ('on_unsupported = "drop"\n', "on_unsupported must be one of adapt, reject"),
        ('prompt_cache = "always"\n', "prompt_cache must be 'auto' or 'off'"),
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
