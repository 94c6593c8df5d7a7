"""The conformance matrix, part two: both catalogues probed, rule kind by rule kind.

Part one (tests/test_conformance.py) pairs the emulator's declared rules with the daemon's
adaptations. This part catches the rules neither list names: a model, a ceiling or a rule field
added to one side only. Every model family of the daemon's registry and every entry of the
emulator's catalogue must be probed by a model below (or be listed in ``UNPROBED`` with the
reason), and every field of a registry family must name the probes that exercise it
(``FIELDS``), so a new field is a failure until it is classified. Each model then gets one
probe per rule kind, on top of a body the daemon produced for it (so only the probed
parameter can be wrong), each sent twice to the emulator through the SDK, in one batch per
provider and model: raw, and as batchd adapts it (native lines, default policy).

For a model both sides know by name, a probe the emulator refuses raw must be changed by the
daemon with a lossy adaptation, and a probe the daemon changes lossily must be refused raw:
otherwise one side holds a rule the other lacks. Every adapted probe must succeed. Models of a
Claude line neither side's sources name (``UNKNOWN_LINES``) only need to succeed: the daemon
gives them the newest Claude rules (Opus 4.8), stricter than the emulator's per-line guesses.
The probe values of the ceilings are every ceiling either side knows, plus one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.emulator import Emulator
from adapters.emulator import models as emulated
from daemon.adapt import Policy, adapt_native, adapt_unified
from daemon.registry import FAMILY_FIELDS, default_registry

from .conformance import failure, run_batch

HI = [{"role": "user", "content": "Say hello."}]
MANUAL = {"type": "enabled", "budget_tokens": 2048}
ADAPTIVE = {"type": "adaptive"}
LOW_BUDGET = {"type": "enabled", "budget_tokens": 512}

OPENAI_MODELS = (
    "gpt-4o", "gpt-4o-mini", "chatgpt-4o-latest", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano",
    "gpt-4-turbo", "gpt-4", "gpt-4-0613", "gpt-3.5-turbo", "o1", "o1-mini", "o1-preview", "o3",
    "o3-2025-04-16", "o3-pro", "o3-mini", "o4-mini", "gpt-5", "gpt-5-mini", "gpt-5-nano",
    "gpt-5-pro", "gpt-5-chat-latest", "gpt-5.1", "gpt-5.1-chat-latest", "gpt-5.1-pro",
    "gpt-5.2", "gpt-5.2-chat-latest", "gpt-5.2-pro", "gpt-5.3", "gpt-5.4", "gpt-5.4-mini",
    "gpt-5.4-pro", "gpt-5.4-chat-latest",
    "gpt-5.5", "gpt-5.5-pro", "gpt-5.5-mini", "gpt-5.10", "gpt-5.10-pro", "gpt-5.10-mini",
)
ANTHROPIC_MODELS = (
    "claude-3-haiku-20240307", "claude-3-opus-20240229", "claude-3-5-haiku-20241022",
    "claude-3-5-sonnet-20241022", "claude-3-7-sonnet-20250219", "claude-opus-4-0",
    "claude-opus-4-20250514", "claude-opus-4-1", "claude-opus-4-5", "claude-opus-4-6",
    "claude-opus-4-7", "claude-opus-4-8", "claude-opus-4-9", "claude-opus-5", "claude-sonnet-4-0",
    "claude-sonnet-4-20250514", "claude-sonnet-4-5", "claude-sonnet-4-6", "claude-sonnet-4-7",
    "claude-haiku-4-5", "claude-haiku-4-6", "claude-fable-5",
)
UNKNOWN_LINES = ("claude-sonnet-5", "claude-haiku-5", "claude-mythos-5", "claude-mythos-preview")

# Families and catalogue entries no model above probes, and why.
UNPROBED = {
    "chatgpt-*": "no ChatGPT model besides chatgpt-4o (its own family); the emulator serves none",
    "ft:gpt-*": "fine-tuned models: the emulator serves none",
    "o4*": "no o4 model exists (o4-mini has its own family); the emulator serves none",
    "claude-3*": "Claude 3 Sonnet, retired: the emulator serves none",
}

# Every field of a registry family: the probes that exercise it, or the tests that do.
FIELDS: dict[str, tuple[str, ...]] = {
    "stop": ("stop",),
    "output_max": ("max_output", "int32"),
    "sampling": ("temperature", "top_p", "top_k", "pair"),
    "sampling_exclusive": ("pair",),
    "defaults_only": ("temperature", "temperature_1"),
    "thinking": ("manual_thinking", "adaptive_thinking"),
    "thinking_sampling": ("thinking_top_p",),
    "thinking_defaults_only": ("thinking_temperature", "adaptive_temperature"),
    "thinking_budget_min": ("budget_min", "budget_at_max"),
    "sampling_efforts": ("tests/test_adapt.py", "tests/test_e2e_adapt.py"),
    "reasoning_efforts": ("tests/test_adapt.py", "tests/test_e2e_adapt.py"),
    "default_effort": ("tests/test_adapt.py",),
    "system": ("tests/test_adapt.py", "tests/test_e2e_adapt.py"),
    "output_field": ("tests/test_adapt.py", "tests/test_e2e_adapt.py"),
    "output_default": ("tests/test_adapt.py", "tests/test_e2e_adapt.py"),
    "cache_min_tokens": ("tests/test_caching.py", "tests/test_e2e_adapt.py"),
    "enqueued_token_limit": ("not a request rule",),
    "prices": ("not a request rule",),
    "batch_discount": ("not a request rule",),
    "note": ("not a request rule",),
    "provider": ("not a request rule",),
    "extends": ("not a request rule",),
}


def _ceilings(provider: str) -> list[int]:
    """Every output ceiling either side knows for ``provider``."""
    daemon = {f.output_max for f in default_registry().families.values() if f.provider == provider}
    table = emulated.OPENAI_MODELS if provider == "openai" else emulated.ANTHROPIC_MODELS
    emulator = {m.max_output_tokens for m in table}
    return sorted(c for c in daemon | emulator if c is not None)


def openai_probes() -> dict[str, tuple[str, dict[str, Any]]]:
    """name -> (rule kind, parameters added to the base body)."""
    probes: dict[str, tuple[str, dict[str, Any]]] = {
        "stop": ("stop", {"stop": ["\n\n"]}),
        "temperature": ("temperature", {"temperature": 0.5}),
        "temperature_1": ("temperature_1", {"temperature": 1}),
        "top_p": ("top_p", {"top_p": 0.5}),
        "int32": ("int32", {"max_completion_tokens": 2**31}),
    }
    for c in _ceilings("openai"):
        probes[f"max_output_{c + 1}"] = ("max_output", {"max_completion_tokens": c + 1})
    return probes


def anthropic_probes() -> dict[str, tuple[str, dict[str, Any]]]:
    think = {"max_tokens": 4096, "thinking": MANUAL}
    probes: dict[str, tuple[str, dict[str, Any]]] = {
        "temperature": ("temperature", {"temperature": 0.5}),
        "temperature_1": ("temperature_1", {"temperature": 1.0}),
        "pair": ("pair", {"temperature": 0.5, "top_p": 0.9}),
        "top_p": ("top_p", {"top_p": 0.9}),
        "top_k": ("top_k", {"top_k": 5}),
        "manual_thinking": ("manual_thinking", think),
        "adaptive_thinking": ("adaptive_thinking", {"max_tokens": 4096, "thinking": ADAPTIVE}),
        "thinking_temperature": ("thinking_temperature", think | {"temperature": 0.5}),
        "adaptive_temperature": (
            "adaptive_temperature",
            {"max_tokens": 4096, "thinking": ADAPTIVE, "temperature": 0.5},
        ),
        "thinking_top_k": ("thinking_top_k", think | {"top_k": 5}),
        "thinking_top_p": ("thinking_top_p", think | {"top_p": 0.5}),
        "budget_min": ("budget_min", {"max_tokens": 4096, "thinking": LOW_BUDGET}),
        "budget_at_max": ("budget_at_max", {"max_tokens": 2048, "thinking": MANUAL}),
        "int32": ("int32", {"max_tokens": 2**31}),
    }
    for c in _ceilings("anthropic"):
        probes[f"max_output_{c + 1}"] = ("max_output", {"max_tokens": c + 1})
    return probes


PROBE_KINDS = {kind for kind, _ in (openai_probes() | anthropic_probes()).values()}


def test_every_registry_field_names_its_probes() -> None:
    assert set(FIELDS) == set(FAMILY_FIELDS), set(FIELDS) ^ set(FAMILY_FIELDS)
    for name, covered_by in FIELDS.items():
        probes = [c for c in covered_by if not c.startswith(("tests/", "not a"))]
        assert set(probes) <= PROBE_KINDS, (name, set(probes) - PROBE_KINDS)
        for ref in covered_by:
            assert not ref.startswith("tests/") or Path(ref).is_file(), ref


def test_every_family_of_either_side_is_probed() -> None:
    registry = default_registry()
    probed = OPENAI_MODELS + ANTHROPIC_MODELS + UNKNOWN_LINES
    families = {registry.lookup(m).pattern for m in probed}  # type: ignore[union-attr]
    listed = {p for p, f in registry.families.items() if f.provider != "gemini"}
    missing = listed - families - set(UNPROBED)
    assert not missing, f"registry families no probe model reaches: {sorted(missing)}"
    for table, find in (
        (emulated.OPENAI_MODELS, emulated.openai_model),
        (emulated.ANTHROPIC_MODELS, emulated.anthropic_model),
    ):
        reached = {getattr(find(m), "pattern", None) for m in probed}
        missing = {e.pattern for e in table} - reached
        assert not missing, f"emulator entries no probe model reaches: {sorted(missing)}"
    for model in probed:
        known = emulated.openai_model(model) or emulated.anthropic_model(model)
        assert known is not None and registry.lookup(model) is not None, model


def _probe(
    provider: str, model: str, probes: dict[str, tuple[str, dict[str, Any]]]
) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """(bodies to send: raw and adapted per probe, the daemon's lossy notes per probe)."""
    policy = Policy()
    base, _ = adapt_unified({"model": model, "messages": HI}, model, provider, policy)
    bodies: dict[str, dict[str, Any]] = {}
    notes: dict[str, list[str]] = {}
    for name, (_, extra) in probes.items():
        raw = base | extra
        changed, recorded = adapt_native(raw, model, provider, policy)
        bodies[f"raw-{name}"], bodies[f"adapted-{name}"] = raw, changed
        notes[name] = [n for n in recorded if n.lossy]
    return bodies, notes


def _disagreements(
    model: str, notes: dict[str, list[str]], results: dict[str, Any], *, named: bool
) -> list[str]:
    out = []
    for name, lossy in notes.items():
        raw, adapted = results.get(f"raw-{name}"), results.get(f"adapted-{name}")
        refused = raw is None or raw.outcome != "succeeded"
        if adapted is None or adapted.outcome != "succeeded":
            out.append(f"{model} {name}: adapted probe failed ({failure(adapted)}; {lossy})")
        elif named and refused and not lossy:
            out.append(f"{model} {name}: the emulator refuses it, the daemon sends it unchanged")
        elif named and lossy and not refused:
            out.append(f"{model} {name}: the daemon changes it ({lossy}), the emulator accepts it")
    return out


async def test_openai_catalogues_agree(emulator: Emulator, tmp_path: Path) -> None:
    problems: list[str] = []
    for model in OPENAI_MODELS:  # one model per OpenAI batch
        bodies, notes = _probe("openai", model, openai_probes())
        results = await run_batch(emulator.url, tmp_path, "openai", model, bodies)
        problems += _disagreements(model, notes, results, named=True)
    assert not problems, "\n".join(problems)


async def test_anthropic_catalogues_agree(emulator: Emulator, tmp_path: Path) -> None:
    bodies: dict[str, dict[str, Any]] = {}
    notes: dict[str, dict[str, list[str]]] = {}
    keys: dict[str, str] = {}
    for m, model in enumerate(ANTHROPIC_MODELS + UNKNOWN_LINES):
        sent, notes[model] = _probe("anthropic", model, anthropic_probes())
        for key, body in sent.items():
            keys[f"m{m}-{key}"] = key
            bodies[f"m{m}-{key}"] = body
    results = await run_batch(emulator.url, tmp_path, "anthropic", "claude", bodies)
    problems: list[str] = []
    for m, model in enumerate(ANTHROPIC_MODELS + UNKNOWN_LINES):
        mine = {keys[k]: r for k, r in results.items() if k.startswith(f"m{m}-")}
        named = model not in UNKNOWN_LINES
        problems += _disagreements(model, notes[model], mine, named=named)
    assert not problems, "\n".join(problems)

