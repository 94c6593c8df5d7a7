"""The emulator's own model catalogue and the request rules the real services enforce.

This is deliberately independent of the daemon's adaptation registry: the emulator must
catch the daemon's mistakes, so a bug shared by both would hide itself. Each rule and its public
source are listed in docs/emulator-openai.md, docs/emulator-anthropic.md and
docs/emulator-gemini.md; rules.py lists the newest ones with a request that breaks each.

Patterns are exact names, or fnmatch globs. The first match wins, so list the specific names
before the families. A model the sources do not know yet but whose family they do (say
``claude-opus-4-9``) falls to the family's catch-all entry, which carries the newest rules of
that family.
"""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass
from typing import TypeVar


@dataclass(frozen=True)
class OpenAIModel:
    pattern: str
    reasoning: bool = False  # max_tokens refused; sampling parameters only at their defaults
    temperature_unsupported: bool = False  # o3-mini: 'temperature' refused at any value
    system_role: bool = True  # o1-mini / o1-preview refuse system and developer messages
    # stop: True accepted, False refused (o3, o4-mini, gpt-5 to gpt-5.4), None unconfirmed
    # (gpt-5.5 and later: Settings.gpt_5_5_accepts_stop decides).
    stop: bool | None = True
    sampling_if_effort_none: bool = False  # gpt-5.1+: sampling allowed when reasoning_effort none
    efforts: tuple[str, ...] = ()  # accepted reasoning_effort values; () = parameter refused
    default_effort: str | None = None  # the effort applied when the request names none
    # Ceiling of max_tokens / max_completion_tokens (None: not published, not checked).
    max_output_tokens: int | None = None


# Anthropic sampling regimes.
SAMPLING_ANY = "any"  # temperature, top_p and top_k, each within its range
SAMPLING_ONE_OF = "one_of"  # temperature and top_p cannot both be given (Opus 4.1+, 4.5 models)
SAMPLING_NONE = "none"  # temperature only at 1.0; top_p and top_k refused (after Opus 4.6)


@dataclass(frozen=True)
class AnthropicModel:
    pattern: str
    mid_conversation_system: bool = False  # Opus 4.8+: role "system" allowed after a user turn
    max_output_tokens: int | None = None  # max_tokens ceiling, where known (None: not checked)
    sampling: str = SAMPLING_ANY
    manual_thinking: bool = True  # False: thinking {"type": "enabled"} refused (Opus 4.7+)
    cache_min_tokens: int = 1024  # shortest prompt prefix that prompt caching writes or reads


@dataclass(frozen=True)
class GeminiModel:
    pattern: str
    # Implicit caching reports cachedContentTokenCount only for a repeated prompt prefix at
    # least this long (estimated tokens).
    implicit_cache_min_tokens: int = 1024


# reasoning_effort values of the o-series (o1-mini and o1-preview take none at all).
_O_EFFORTS = ("low", "medium", "high")
_GPT5_OUT = 128_000  # gpt-5 family output ceiling


def _gpt5_point(versions: str, stop: bool | None) -> tuple[OpenAIModel, ...]:
    """gpt-5.<minor> models (and their -pro and other suffixed variants) of ``versions``, a glob
    for the minor version ("[1-4]": 5.1 to 5.4)."""
    base = f"gpt-5.{versions}"
    efforts = ("none", "low", "medium", "high", "xhigh")

    def point(pattern: str) -> OpenAIModel:
        return OpenAIModel(
            pattern,
            reasoning=True,
            stop=stop,
            sampling_if_effort_none=True,
            efforts=efforts,
            default_effort="none",
            max_output_tokens=_GPT5_OUT,
        )

    pro = OpenAIModel(
        base + "-pro*",
        reasoning=True,
        stop=stop,
        efforts=("medium", "high", "xhigh"),
        default_effort="high",
        max_output_tokens=_GPT5_OUT,
    )
    return pro, point(base), point(base + "-*")


OPENAI_MODELS: tuple[OpenAIModel, ...] = (
    # The o1 family's output ceilings are not in the sources the emulator follows: unchecked.
    OpenAIModel("o1-mini*", reasoning=True, system_role=False),
    OpenAIModel("o1-preview*", reasoning=True, system_role=False),
    OpenAIModel("o1*", reasoning=True, efforts=_O_EFFORTS, default_effort="medium"),
    OpenAIModel(
        "o3-mini*",
        reasoning=True,
        temperature_unsupported=True,
        efforts=_O_EFFORTS,
        default_effort="medium",
        max_output_tokens=100_000,
    ),
    *(
        OpenAIModel(
            pattern,
            reasoning=True,
            stop=False,
            efforts=_O_EFFORTS,
            default_effort="medium",
            max_output_tokens=100_000,
        )
        for pattern in ("o3-pro*", "o3", "o3-2*", "o4-mini*")
    ),
    # Chat snapshots of the gpt-5 family take sampling and stop; their ceiling is not sourced.
    OpenAIModel("gpt-5-chat*"),
    OpenAIModel("gpt-5.*-chat*"),
    # gpt-5.5 and later: stop unconfirmed (two-digit minors first, so 5.10 is not read as 5.1).
    *_gpt5_point("[1-9][0-9]", None),
    *_gpt5_point("[5-9]", None),
    # gpt-5.1 to gpt-5.4 refuse stop.
    *_gpt5_point("[1-4]", False),
    # gpt-5, gpt-5-mini, gpt-5-nano (and gpt-5-pro) refuse stop.
    OpenAIModel(
        "gpt-5*",
        reasoning=True,
        stop=False,
        efforts=("minimal", "low", "medium", "high"),
        default_effort="medium",
        max_output_tokens=_GPT5_OUT,
    ),
    OpenAIModel("gpt-4.1*", max_output_tokens=32_768),
    OpenAIModel("gpt-4o*", max_output_tokens=16_384),
    OpenAIModel("chatgpt-4o-latest", max_output_tokens=16_384),
    OpenAIModel("gpt-4-turbo*"),
    OpenAIModel("gpt-4"),
    OpenAIModel("gpt-4-0*"),
    OpenAIModel("gpt-3.5-turbo*"),
)

# Claude rule sets, newest first within each family. A family's catch-all carries its newest
# rules, so a model the sources do not know yet is checked like the newest they do.
_ONE_OF = SAMPLING_ONE_OF


def _no_sampling(pattern: str, *, mid_conversation_system: bool = False) -> AnthropicModel:
    """Models after Opus 4.6: temperature only 1.0, no top_p/top_k, no manual thinking."""
    return AnthropicModel(
        pattern,
        mid_conversation_system=mid_conversation_system,
        sampling=SAMPLING_NONE,
        manual_thinking=False,
        cache_min_tokens=4096,
    )


ANTHROPIC_MODELS: tuple[AnthropicModel, ...] = (
    # Opus: 4.8 (and later), 4.7 take no sampling parameters and no manual thinking; their
    # minimum cacheable prefix is not published, so they are taken like Opus 4.6 (4,096).
    _no_sampling("claude-opus-4-8*", mid_conversation_system=True),
    _no_sampling("claude-opus-5*", mid_conversation_system=True),
    _no_sampling("claude-opus-4-7*"),
    AnthropicModel("claude-opus-4-6*", sampling=_ONE_OF, cache_min_tokens=4096),
    AnthropicModel("claude-opus-4-5*", sampling=_ONE_OF, cache_min_tokens=4096),
    AnthropicModel("claude-opus-4-1*", sampling=_ONE_OF, max_output_tokens=32_000),
    AnthropicModel("claude-opus-4-0", max_output_tokens=32_000),
    AnthropicModel("claude-opus-4-2025*", max_output_tokens=32_000),  # Opus 4 snapshots
    _no_sampling("claude-opus-4*", mid_conversation_system=True),
    # Sonnet: 4.6 takes no sampling parameters but still takes manual thinking.
    AnthropicModel(
        "claude-sonnet-4-6*", sampling=SAMPLING_NONE, manual_thinking=True, cache_min_tokens=2048
    ),
    AnthropicModel("claude-sonnet-4-5*", sampling=_ONE_OF, max_output_tokens=64_000),
    AnthropicModel("claude-sonnet-4-0", max_output_tokens=64_000),
    AnthropicModel("claude-sonnet-4-2025*", max_output_tokens=64_000),  # Sonnet 4 snapshots
    AnthropicModel("claude-sonnet-5*", sampling=SAMPLING_NONE, cache_min_tokens=2048),
    AnthropicModel("claude-sonnet-4*", sampling=SAMPLING_NONE, cache_min_tokens=2048),
    # Haiku: 4.5 takes temperature or top_p, not both; a later Haiku 4.x has its rules and
    # ceiling (the newest of the line).
    AnthropicModel(
        "claude-haiku-4-5*", sampling=_ONE_OF, max_output_tokens=64_000, cache_min_tokens=4096
    ),
    AnthropicModel("claude-haiku-5*", sampling=_ONE_OF, cache_min_tokens=4096),
    AnthropicModel(
        "claude-haiku-4*", sampling=_ONE_OF, max_output_tokens=64_000, cache_min_tokens=4096
    ),
    # Names the anthropic 2.14 SDK lists in ModelParam. Fable 5 refuses the sampling parameters
    # like Opus 4.7 (user reports, see docs); nothing is published about Mythos, which gets the
    # defaults.
    _no_sampling("claude-fable-5*"),
    AnthropicModel("claude-mythos-5*"),
    AnthropicModel("claude-mythos-preview"),
    AnthropicModel("claude-3-7-sonnet*", max_output_tokens=64_000),
    AnthropicModel("claude-3-5-sonnet*", max_output_tokens=8_192),
    AnthropicModel("claude-3-5-haiku*", max_output_tokens=8_192, cache_min_tokens=2048),
    AnthropicModel("claude-3-opus*", max_output_tokens=4_096),
    AnthropicModel("claude-3-haiku*", max_output_tokens=4_096, cache_min_tokens=2048),
)

GEMINI_MODELS: tuple[GeminiModel, ...] = (
    GeminiModel("gemini-3*"),
    GeminiModel("gemini-2.5-pro*"),
    GeminiModel("gemini-2.5-flash*"),
    GeminiModel("gemini-2.0-flash*"),
    GeminiModel("gemini-1.5-*"),
)

# Ranges the real services check.
INT32_MAX = 2_147_483_647
OPENAI_RANGES = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
    "top_logprobs": (0, 20),
}
# Defaults a reasoning model still accepts ("Only the default (1) value is supported").
OPENAI_REASONING_DEFAULTS = {
    "temperature": 1,
    "top_p": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logprobs": False,
}
ANTHROPIC_TEMPERATURE_RANGE = (0.0, 1.0)
ANTHROPIC_SAMPLING = ("temperature", "top_p", "top_k")
ANTHROPIC_THINKING_TOP_P_MIN = 0.95  # with thinking on, top_p only in 0.95-1
# anthropic-version values and whether they allow the sampling parameters.
ANTHROPIC_VERSIONS = {"2023-06-01": True, "2023-01-01": True, "2026-10-21": False}
GEMINI_TEMPERATURE_RANGE = (0.0, 2.0)
GEMINI_TOP_P_RANGE = (0.0, 1.0)
GEMINI_ROLES = ("user", "model")


_M = TypeVar("_M", OpenAIModel, AnthropicModel, GeminiModel)


def _find(table: tuple[_M, ...], model: str) -> _M | None:
    for entry in table:
        if fnmatch.fnmatchcase(model, entry.pattern):
            return entry
    return None


# The tables are constant, so a model's entry is looked up once (a batch repeats its model).
@functools.lru_cache(maxsize=1024)
def openai_model(model: str) -> OpenAIModel | None:
    return _find(OPENAI_MODELS, model)


@functools.lru_cache(maxsize=1024)
def anthropic_model(model: str) -> AnthropicModel | None:
    return _find(ANTHROPIC_MODELS, model)


@functools.lru_cache(maxsize=1024)
def gemini_model(model: str) -> GeminiModel | None:
    name = model.removeprefix("models/")
    return _find(GEMINI_MODELS, name)
