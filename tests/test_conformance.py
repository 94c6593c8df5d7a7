"""The conformance matrix: every provider rule, held by both the daemon and the emulator.

The daemon (``daemon/models.toml`` + ``daemon/adapt_rules.py``) and the emulator
(``adapters/emulator/models.py`` + ``rules.py``) learn the providers' rules separately, from the
same public sources. A rule only one of them holds is a test that lies: the emulator would
accept what the real service refuses, or the daemon would send what the emulator (and the real
service) refuses. This matrix makes "either side loses a rule" a failure, in three ways:

1. **The emulator's declared rules** (``RULES``: one breaking request per rule and model).
   ``DAEMON`` below is the daemon's side of the table, written by hand from the provider facts:
   for every rule id, the adaptations batchd records (``Adapted``), the reason it refuses the
   line itself (``Refused``: a request no adaptation can fix), or the tests that cover a rule
   that is not about a request body (``Elsewhere``: quotas, wire size, MIME types). The ids
   must be exactly ``RULES``' ids, so a rule the emulator adds without a daemon entry, or
   drops while the daemon still lists it, fails ``test_every_emulator_rule_has_a_daemon_entry``.
   For each ``Adapted`` rule the breaking request, as a batchd line (native form, and unified
   form where every field has a unified name), must come out of batchd's line reader with
   exactly those adaptations, and the adapted body must succeed on the emulator through the
   official SDK (configured with the rule's settings). The raw breaking request being refused
   is tests/test_emulator_rules.py's job; it iterates the same ``RULES``. So a daemon that loses
   the rule sends the breaking request (refused here), and an emulator that loses it fails there.
2. **The catalogues, probed** (tests/test_conformance_grid.py): every model family either side
   lists is probed with one request per rule kind; a probe the emulator refuses raw must be
   changed (lossily) by the daemon and vice versa. That catches the rules neither ``RULES``
   nor ``DAEMON`` names: a ceiling, a model or a rule field added on one side only.
3. **The facts themselves** (``SECTION_7`` below): each fact of the provider sheet's newest
   section (stop on the gpt-5 family, Claude's sampling regimes and thinking, output ceilings,
   enqueued-token quotas, caching in lanes and its minimum prefix, Gemini's inline wire size and
   error bodies) names the ``RULES`` ids, grid probes or tests that cover it; each must exist.

The end-to-end subset (every affected family through ``batchd run --once``) is
tests/test_e2e_adapt.py; Gemini's inline limit end to end is tests/test_gemini_inline_e2e.py.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from adapters.base import BatchItem, PermanentError, TransientError
from adapters.emulator import Emulator, FaultSet
from adapters.emulator.rules import RULES, Rule
from adapters.registry import make_adapter
from daemon.adapt import Policy
from daemon.validate import Invalid, Request

from .conformance import failure, native_line, read_line, run_batch, unified_line
from .daemon_harness import TEST_KEY

HUGE = 10**20
INT_MAX = 2_147_483_647


@dataclass(frozen=True)
class Adapted:
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Refused:
    reason: str  # batchd's reason, after the field name (the prefix differs by line form)


@dataclass(frozen=True)
class Elsewhere:
    tests: tuple[str, ...]  # "tests/test_x.py::test_name": the daemon side and the emulator side
    missing: str | None = None  # what is not built yet (the entry is then an expected failure)


def adapted(*notes: str) -> Adapted:
    return Adapted(notes)


def clamped(name: str, value: int, limit: int, model: str) -> Adapted:
    return adapted(
        f"{name} {value} clamped to {limit} ({model} writes at most {limit} output tokens)"
    )


MCT = "max_completion_tokens"
GPT5_STOP = ("gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-5.1", "gpt-5.2", "gpt-5.4", "gpt-5.5")
CLAUDE_PAIRS = (
    "claude-opus-4-1", "claude-opus-4-5", "claude-opus-4-6", "claude-sonnet-4-5", "claude-haiku-4-5"
)
CLAUDE_NO_SAMPLING = ("claude-sonnet-4-6", "claude-opus-4-7", "claude-opus-4-8")
CLAUDE_CEILINGS = {
    "claude-3-haiku-20240307": 4096,
    "claude-3-5-haiku-20241022": 8192,
    "claude-3-5-sonnet-20241022": 8192,
    "claude-opus-4-0": 32000,
    "claude-opus-4-1": 32000,
    "claude-sonnet-4-0": 64000,
    "claude-sonnet-4-5": 64000,
    "claude-haiku-4-5": 64000,
}
S45 = "claude-sonnet-4-5"
INLINE_TESTS = (
    "tests/test_gemini_inline.py::test_inline_just_under_and_file_just_over",
    "tests/test_gemini_inline_e2e.py::test_cjk_and_emoji_around_the_inline_limit",
    "tests/test_emulator_rules.py::test_gemini_create_rule",
    "tests/test_emulator_gemini.py::test_inline_limit_is_measured_on_the_wire",
)
QUOTA_TESTS = (
    "tests/test_emulator_rules.py::test_gemini_create_rule",
    "tests/test_sizing_e2e.py::test_gemini_quota_refusals_at_create_hold_without_attempts",
)

# The daemon's side of every rule in adapters/emulator/rules.py, by rule id.
DAEMON: dict[str, Adapted | Refused | Elsewhere] = {
    **{f"openai.stop.{m}": adapted(f"stop removed: {m} does not support it") for m in GPT5_STOP},
    "openai.max_output.gpt-4o": clamped("max_tokens", 20000, 16384, "gpt-4o"),
    "openai.max_output.gpt-4o-mini": clamped("max_tokens", 1_000_000, 16384, "gpt-4o-mini"),
    "openai.max_output.gpt-4.1": clamped("max_tokens", 40000, 32768, "gpt-4.1"),
    "openai.max_output.gpt-4.1-mini": clamped(MCT, 40000, 32768, "gpt-4.1-mini"),
    "openai.max_output.o3": clamped(MCT, 150_000, 100_000, "o3"),
    "openai.max_output.o4-mini": clamped(MCT, 150_000, 100_000, "o4-mini"),
    "openai.max_output.gpt-5": clamped(MCT, 200_000, 128_000, "gpt-5"),
    "openai.max_output.gpt-5.2": clamped(MCT, 200_000, 128_000, "gpt-5.2"),
    "openai.integer.huge": clamped("max_tokens", HUGE, 16384, "gpt-4o-mini"),
    "openai.integer.negative": Refused("max_tokens' must be a positive integer, got -5"),
    "openai.integer.fraction": Refused("max_tokens' must be a positive integer, got 100.5"),
    "openai.enqueued_tokens": Elsewhere(
        (
            "tests/test_emulator_rules.py::test_openai_batch_rule",
            "tests/test_emulator_quotas.py::test_openai_token_limit_refuses_then_clears",
            "tests/test_sizing_e2e.py::test_enqueued_token_limit_smaller_than_the_workload",
        ),
    ),
    **{
        f"anthropic.temperature_with_top_p.{m}": adapted(
            f"top_p removed: {m} does not accept temperature and top_p together (temperature kept)"
        )
        for m in CLAUDE_PAIRS
    },
    **{
        f"anthropic.temperature.{m}": adapted(
            f"temperature 0.5 removed: {m} accepts only the default (1)"
        )
        for m in CLAUDE_NO_SAMPLING
    },
    **{
        f"anthropic.{p}.{m}": adapted(f"{p} removed: {m} does not support it")
        for m in CLAUDE_NO_SAMPLING
        for p in ("top_p", "top_k")
    },
    **{
        f"anthropic.manual_thinking.{m}": adapted(
            'thinking {"type": "enabled", "budget_tokens": 2048} sent as {"type": "adaptive"}: '
            f"{m} does not accept manual extended thinking (budget_tokens dropped)"
        )
        for m in ("claude-opus-4-7", "claude-opus-4-8")
    },
    f"anthropic.thinking_temperature.{S45}": adapted(
        f"temperature 0.5 removed: with extended thinking {S45} accepts only 1"
    ),
    f"anthropic.thinking_top_k.{S45}": adapted(
        f"top_k removed: {S45} does not accept it with extended thinking"
    ),
    f"anthropic.thinking_top_p.{S45}": adapted(
        "top_p 0.5 clamped to 0.95 (Claude range with extended thinking 0.95-1)"
    ),
    f"anthropic.thinking_budget_min.{S45}": adapted(
        "thinking budget_tokens 512 raised to 1024 (Claude's minimum)"
    ),
    f"anthropic.thinking_budget_below_max_tokens.{S45}": adapted(
        "max_tokens 2048 raised to 4096: with extended thinking max_tokens counts the thinking "
        "and must exceed budget_tokens (2048)"
    ),
    **{
        f"anthropic.max_tokens.{m}": clamped("max_tokens", c + 1, c, m)
        for m, c in CLAUDE_CEILINGS.items()
    },
    "anthropic.integer_range.claude-opus-4-7": adapted(
        f"max_tokens {HUGE} clamped to {INT_MAX} (the largest integer the API accepts)"
    ),
    "gemini.integer_range": adapted(
        f"max_tokens {HUGE} clamped to {INT_MAX} (the largest integer the API accepts)"
    ),
    "gemini.inline_size": Elsewhere(INLINE_TESTS),
    "gemini.enqueued_tokens": Elsewhere(QUOTA_TESTS),
    "gemini.concurrent_batches": Elsewhere(QUOTA_TESTS),
    "gemini.upload_mime": Elsewhere(
        ("tests/test_emulator_rules.py::test_gemini_upload_rule", *INLINE_TESTS[:2])
    ),
    "gemini.batch_input_mime": Elsewhere(
        ("tests/test_emulator_rules.py::test_gemini_file_input_rule", *INLINE_TESTS[:2])
    ),
}

# The provider sheet's newest facts (and the limits the emulator enforces with them), each with
# what covers it: RULES id prefixes, grid probe kinds (tests/test_conformance_grid.py) and tests.
SECTION_7: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "openai: stop refused by gpt-5, -mini, -nano, 5.1, 5.2, 5.4 (5.5+ unconfirmed)": (
        ("openai.stop.",),
        ("stop",),
        ("tests/test_e2e_adapt.py::test_every_rule_succeeds_against_the_strict_emulator",),
    ),
    "openai: enqueued-token limit (token_limit_exceeded)": (("openai.enqueued_tokens",), (), ()),
    "openai: per-model output ceilings": (("openai.max_output.",), ("max_output",), ()),
    "claude: temperature and top_p refused together": (
        ("anthropic.temperature_with_top_p.",), ("pair",), ()
    ),
    "claude: no temperature/top_p/top_k after Opus 4.6; manual thinking refused on Opus 4.7+": (
        ("anthropic.temperature.", "anthropic.top_p.", "anthropic.top_k.",
         "anthropic.manual_thinking."),
        ("temperature", "temperature_1", "top_p", "top_k", "manual_thinking"),
        (),
    ),
    "claude: thinking limits (temperature 1, no top_k, top_p 0.95-1, budget)": (
        ("anthropic.thinking_",),
        ("thinking_temperature", "adaptive_temperature", "thinking_top_k", "thinking_top_p",
         "budget_min", "budget_at_max"),
        (),
    ),
    "claude: per-model output ceilings": (("anthropic.max_tokens.",), ("max_output",), ()),
    "all: token limits are 32-bit integers (10^20 refused, by Gemini for the whole batch)": (
        ("openai.integer.", "anthropic.integer_range.", "gemini.integer_range"), ("int32",), ()
    ),
    "claude: caching in a batch is best-effort (lanes); 1h write 2x, 5m 1.25x": (
        (),
        (),
        ("tests/test_emulator_caching.py::test_lanes_make_early_requests_miss",
         "tests/test_emulator_caching.py::test_ttl_split_and_expiry",
         "tests/test_caching.py::test_expected_costs_follow_the_documented_model",
         "tests/test_e2e_adapt.py::test_claude_shared_system_prompt_is_cached",
         "tests/test_e2e_adapt.py::test_cache_priming_warms_the_cache_before_the_batch"),
    ),
    "claude: minimum cacheable prefix 1,024 / 2,048 / 4,096": (
        (),
        (),
        ("tests/test_emulator_caching.py::test_minimum_cacheable_prefix",
         "tests/test_caching.py::test_the_minimum_comes_from_the_model",
         "tests/test_e2e_adapt.py::test_prompt_below_the_minimum_is_not_marked"),
    ),
    "gemini: inline size measured on the bytes the SDK sends": (("gemini.inline_size",), (), ()),
    "gemini: 429 RESOURCE_EXHAUSTED at create (enqueued tokens, concurrency)": (
        ("gemini.enqueued_tokens", "gemini.concurrent_batches"), (), ()
    ),
    "gemini: the Files API and the batch create check the MIME type": (
        ("gemini.upload_mime", "gemini.batch_input_mime"), (), ()
    ),
    "gemini: an error body may be a string or HTML": (
        (), (), ("tests/test_conformance.py::test_error_bodies_that_are_not_json",)
    ),
}


def _params(kind: type) -> list[Any]:
    return [pytest.param(r, id=r.id) for r in RULES if isinstance(DAEMON.get(r.id), kind)]


def test_every_emulator_rule_has_a_daemon_entry() -> None:
    ids = {r.id for r in RULES}
    assert not ids - set(DAEMON), f"emulator rules without a daemon entry: {ids - set(DAEMON)}"
    assert not set(DAEMON) - ids, f"daemon entries without an emulator rule: {set(DAEMON) - ids}"


def _lines(rule: Rule) -> dict[str, dict[str, Any]]:
    forms = {
        "native": native_line(rule.provider, rule.breaking),
        "unified": unified_line(rule.provider, rule.model, rule.breaking),
    }
    return {form: line for form, line in forms.items() if line is not None}


@pytest.mark.parametrize("rule", _params(Adapted))
async def test_the_daemon_adapts_what_the_emulator_refuses(
    rule: Rule, emulator: Emulator, tmp_path: Path
) -> None:
    expected = DAEMON[rule.id]
    assert isinstance(expected, Adapted)
    bodies: dict[str, dict[str, Any]] = {}
    for form, line in _lines(rule).items():
        got = read_line(tmp_path, line)
        assert isinstance(got, Request), got
        assert tuple(got.adaptations) == expected.notes, form
        assert all(note.lossy for note in got.adaptations), form
        bodies[form] = got.body
        refused = read_line(tmp_path, line, Policy(on_unsupported="reject"))
        assert isinstance(refused, Invalid) and "; ".join(expected.notes) in refused.reason
    assert emulator.ctx is not None
    emulator.ctx.faults = FaultSet.parse(rule.settings)
    results = await run_batch(emulator.url, tmp_path / "spool", rule.provider, rule.model, bodies)
    for form in bodies:
        assert results[form].outcome == "succeeded", (form, failure(results.get(form)))


@pytest.mark.parametrize("rule", _params(Refused))
def test_the_daemon_refuses_what_no_adaptation_fixes(rule: Rule, tmp_path: Path) -> None:
    expected = DAEMON[rule.id]
    assert isinstance(expected, Refused)
    for form, line in _lines(rule).items():
        got = read_line(tmp_path, line)
        assert isinstance(got, Invalid), (form, got)
        assert expected.reason in got.reason, (form, got.reason)


def _test_exists(ref: str) -> bool:
    path, _, name = ref.partition("::")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return callable(getattr(module, name, None))


def _elsewhere() -> list[Any]:
    out = []
    for rule_id, entry in DAEMON.items():
        if isinstance(entry, Elsewhere):
            marks = [pytest.mark.xfail(strict=True, reason=entry.missing)] if entry.missing else []
            out.append(pytest.param(entry, id=rule_id, marks=marks))
    return out


@pytest.mark.parametrize("entry", _elsewhere())
def test_rules_covered_elsewhere(entry: Elsewhere) -> None:
    """The tests named for a non-request rule exist; an entry whose daemon side is not built is
    an expected failure until it is (strict: it must then be updated)."""
    assert entry.tests and all(_test_exists(t) for t in entry.tests), entry.tests
    assert entry.missing is None, entry.missing


def test_every_fact_is_covered() -> None:
    from .test_conformance_grid import PROBE_KINDS

    ids = [r.id for r in RULES]
    covered: set[str] = set()
    for fact, (prefixes, probes, tests) in SECTION_7.items():
        assert prefixes or probes or tests, fact
        for prefix in prefixes:
            hits = [i for i in ids if i.startswith(prefix)]
            assert hits, (fact, prefix)
            covered.update(hits)
        assert set(probes) <= PROBE_KINDS, (fact, set(probes) - PROBE_KINDS)
        assert all(_test_exists(t) for t in tests), (fact, tests)
    assert covered == set(ids), f"rules under no fact: {set(ids) - covered}"


async def test_gpt_5_5_stop_is_configurable_on_both_sides(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Unconfirmed upstream: both sides refuse/remove by default (rule openai.stop.gpt-5.5);
    told that gpt-5.5 takes stop, the daemon keeps it and the emulator accepts it."""
    from daemon.registry import Registry

    policy = Policy(registry=Registry.load({"gpt-5.5*": {"stop": True}}))
    line = {"custom_id": "u", "model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]}
    got = read_line(tmp_path, line | {"stop": ["\n\n"]}, policy)
    assert isinstance(got, Request) and got.adaptations == [] and got.body["stop"] == ["\n\n"]
    assert emulator.ctx is not None
    emulator.ctx.faults = FaultSet.parse({"gpt_5_5_accepts_stop": True})
    results = await run_batch(emulator.url, tmp_path, "openai", "gpt-5.5", {"u": got.body})
    assert results["u"].outcome == "succeeded", failure(results["u"])


# -- error bodies that are not JSON objects (a proxy or gateway in between) ----------------------

BODIES = {
    "html-502": (502, "text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
    "string-400": (400, "application/json", b'"upstream said no"'),
    "empty-503": (503, "text/plain", b""),
}


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[str, list[str]]]:
    """A stand-in for a gateway in front of the providers: every call gets the body named by
    the first path segment."""
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        seen.append(name)
        status, kind, body = BODIES[name]
        return web.Response(status=status, body=body, content_type=kind)

    app = web.Application()
    app.router.add_route("*", "/{name}/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("name", list(BODIES))
async def test_error_bodies_that_are_not_json(
    gateway: tuple[str, list[str]], tmp_path: Path, provider: str, name: str
) -> None:
    """Whatever the body, the adapter classifies the status: 5xx transient, 400 permanent."""
    url, seen = gateway
    adapter = make_adapter(
        provider, base_url=f"{url}/{name}", api_key=TEST_KEY, timeout_s=10, spool_dir=tmp_path,
        options={},
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    if provider == "gemini":
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    expected = PermanentError if BODIES[name][0] == 400 else TransientError
    try:
        with pytest.raises(expected):
            await adapter.submit("gw", "gemini-2.5-flash", [BatchItem("k", body)])
    finally:
        await adapter.close()
    assert seen, "the adapter never reached the gateway"
