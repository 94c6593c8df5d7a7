"""The emulator's own model catalogue and the request rules the real services enforce.

This is deliberately independent of the daemon's adaptation registry: the emulator must
catch the daemon's mistakes, so a bug shared by both would hide itself. Each rule and its public
source are listed in docs/emulator-openai.md, docs/emulator-anthropic.md and
docs/emulator-gemini.md.

Patterns are exact names, or prefixes ending in ``*``. The first match wins, so list the
specific names before the families.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TypeVar


@dataclass(frozen=True)
class OpenAIModel:
    pattern: str
    reasoning: bool = False  # max_tokens refused; sampling parameters only at their defaults
    temperature_unsupported: bool = False  # o3-mini: 'temperature' refused at any value
    system_role: bool = True  # o1-mini / o1-preview refuse system and developer messages
    stop: bool = True  # o3 / o4-mini refuse stop
    sampling_if_effort_none: bool = False  # gpt-5.1+: sampling allowed when reasoning_effort none
    efforts: tuple[str, ...] = ()  # accepted reasoning_effort values; () = parameter refused
    default_effort: str | None = None  # the effort applied when the request names none


@dataclass(frozen=True)
class AnthropicModel:
    pattern: str
    mid_conversation_system: bool = False  # Opus 4.8+: role "system" allowed after a user turn
    max_output_tokens: int | None = None  # max_tokens ceiling, where known (None: not checked)


@dataclass(frozen=True)
class GeminiModel:
    pattern: str
    # Implicit caching reports cachedContentTokenCount only for a repeated prompt prefix at
    # least this long (estimated tokens).
    implicit_cache_min_tokens: int = 1024


# reasoning_effort values of the o-series (o1-mini and o1-preview take none at all).
_O_EFFORTS = ("low", "medium", "high")

OPENAI_MODELS: tuple[OpenAIModel, ...] = (
    OpenAIModel("o1-mini*", reasoning=True, system_role=False),
    OpenAIModel("o1-preview*", reasoning=True, system_role=False),
    OpenAIModel("o1*", reasoning=True, efforts=_O_EFFORTS, default_effort="medium"),
    OpenAIModel(
        "o3-mini*",
        reasoning=True,
        temperature_unsupported=True,
        efforts=_O_EFFORTS,
        default_effort="medium",
    ),
    OpenAIModel("o3-pro*", reasoning=True, stop=False, efforts=_O_EFFORTS, default_effort="medium"),
    OpenAIModel("o3", reasoning=True, stop=False, efforts=_O_EFFORTS, default_effort="medium"),
    OpenAIModel("o3-2*", reasoning=True, stop=False, efforts=_O_EFFORTS, default_effort="medium"),
    OpenAIModel(
        "o4-mini*", reasoning=True, stop=False, efforts=_O_EFFORTS, default_effort="medium"
    ),
    OpenAIModel("gpt-5-chat*"),
    OpenAIModel("gpt-5.*-chat*"),
    OpenAIModel(
        "gpt-5.*-pro*", reasoning=True, efforts=("medium", "high", "xhigh"), default_effort="high"
    ),
    OpenAIModel(
        "gpt-5.*",
        reasoning=True,
        sampling_if_effort_none=True,
        efforts=("none", "low", "medium", "high", "xhigh"),
        default_effort="none",
    ),
    OpenAIModel(
        "gpt-5*",
        reasoning=True,
        efforts=("minimal", "low", "medium", "high"),
        default_effort="medium",
    ),
    OpenAIModel("gpt-4.1*"),
    OpenAIModel("gpt-4o*"),
    OpenAIModel("gpt-4-turbo*"),
    OpenAIModel("gpt-4"),
    OpenAIModel("gpt-4-0*"),
    OpenAIModel("gpt-3.5-turbo*"),
    OpenAIModel("chatgpt-4o-latest"),
)

ANTHROPIC_MODELS: tuple[AnthropicModel, ...] = (
    AnthropicModel("claude-opus-4-8*", mid_conversation_system=True),
    AnthropicModel("claude-opus-5*", mid_conversation_system=True),
    AnthropicModel("claude-opus-4*"),
    AnthropicModel("claude-sonnet-5*"),
    AnthropicModel("claude-sonnet-4*"),
    AnthropicModel("claude-haiku-5*"),
    AnthropicModel("claude-haiku-4*"),
    # Names the anthropic 2.14 SDK lists in ModelParam; no source documents their rules, so they
    # get the defaults (no mid-conversation system, no max_tokens ceiling).
    AnthropicModel("claude-fable-5*"),
    AnthropicModel("claude-mythos-5*"),
    AnthropicModel("claude-mythos-preview"),
    AnthropicModel("claude-3-7-sonnet*", max_output_tokens=64_000),
    AnthropicModel("claude-3-5-sonnet*", max_output_tokens=8_192),
    AnthropicModel("claude-3-5-haiku*", max_output_tokens=8_192),
    AnthropicModel("claude-3-opus*", max_output_tokens=4_096),
    AnthropicModel("claude-3-haiku*", max_output_tokens=4_096),
)

GEMINI_MODELS: tuple[GeminiModel, ...] = (
    GeminiModel("gemini-3*"),
    GeminiModel("gemini-2.5-pro*"),
    GeminiModel("gemini-2.5-flash*"),
    GeminiModel("gemini-2.0-flash*"),
    GeminiModel("gemini-1.5-*"),
)

# Ranges the real services check.
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


def openai_model(model: str) -> OpenAIModel | None:
    return _find(OPENAI_MODELS, model)


def anthropic_model(model: str) -> AnthropicModel | None:
    return _find(ANTHROPIC_MODELS, model)


def gemini_model(model: str) -> GeminiModel | None:
    name = model.removeprefix("models/")
    return _find(GEMINI_MODELS, name)
