"""Answer lines of the usual shape, read for the few fields an ItemResult takes.

Almost every line of a results file is a plain answer: a 2xx response (OpenAI), a
``succeeded`` result (Anthropic), a response with candidates (Gemini). Decoding such a line
whole makes a few dozen Python objects of which the result keeps five values; msgspec reads the
line against a schema of just those fields instead (everything else is skipped, never made into
Python objects): several times less CPU a line (``bench/stages.py``, "results").

Each reader gives the ItemResult the adapter's own parser gives for the whole decoded line
(``raw`` kept; ``response`` decoded from it only when asked for), as a ``ReadResult`` (its
fields of the types the schema says: ``outcomes.answered`` relies on them), or None when the
line is not of the usual shape: not JSON, another outcome, or a field of another type than the
schema says (a token count that is not an integer, a block that is not an object, ...). The
adapter then reads the line whole as before, so its values and its errors are unchanged.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from .base import ReadResult, Usage

# A token count as the whole-line decoder (orjson) reads it to the same integer: beyond 64 bits
# it reads a float; a line with such a count is not of the usual shape.
Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]

# -- OpenAI: {"custom_id", "response": {"status_code", "body": chat.completion}, "error"} ------


class _Details(msgspec.Struct, gc=False):
    cached_tokens: Count | None = None


class _OpenAIUsage(msgspec.Struct, gc=False):
    prompt_tokens: Count | None = None
    completion_tokens: Count | None = None
    prompt_tokens_details: _Details | None = None


class _Message(msgspec.Struct, gc=False):
    content: str | None = None


class _Choice(msgspec.Struct, gc=False):
    message: _Message | None = None
    finish_reason: str | None = None


class _Body(msgspec.Struct, gc=False):
    choices: list[_Choice] | None = None
    usage: _OpenAIUsage | None = None


class _Response(msgspec.Struct, gc=False):
    status_code: int | None = None
    body: _Body | None = None


class _OpenAILine(msgspec.Struct, gc=False):
    custom_id: str | None = None
    response: _Response | None = None
    error: None = None  # a line with an error is not of the usual shape


_read_openai = msgspec.json.Decoder(_OpenAILine).decode
_NO_BODY = _Body()
_NO_CHOICE = _Choice()
_NO_MESSAGE = _Message()
_NO_OPENAI_USAGE = _OpenAIUsage()
_NO_DETAILS = _Details()


def openai_answer(raw: str) -> ReadResult | None:
    """An OpenAI output-file line with a 2xx response (see the module docstring)."""
    try:
        line = _read_openai(raw)
    except (msgspec.DecodeError, UnicodeError):
        return None
    response = line.response
    if response is None or not 200 <= (response.status_code or 0) < 300:
        return None
    body = response.body or _NO_BODY
    choice = body.choices[0] if body.choices else _NO_CHOICE
    message = choice.message or _NO_MESSAGE
    usage = body.usage or _NO_OPENAI_USAGE
    cached = (usage.prompt_tokens_details or _NO_DETAILS).cached_tokens or 0
    return ReadResult(
        str(line.custom_id),
        "succeeded",
        message.content,
        choice.finish_reason,
        Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0, cached),
        None,
        None,
        raw,
    )


# -- Anthropic: {"custom_id", "result": {"type", "message"}}, the type "succeeded" -----------


class _Block(msgspec.Struct, gc=False):
    type: str | None = None
    text: str | None = None


class _AnthropicUsage(msgspec.Struct, gc=False):
    input_tokens: Count | None = None
    output_tokens: Count | None = None
    cache_read_input_tokens: Count | None = None
    cache_creation_input_tokens: Count | None = None


class _AnthropicMessage(msgspec.Struct, gc=False):
    content: list[_Block] | None = None
    stop_reason: str | None = None
    usage: _AnthropicUsage | None = None


class _AnthropicResult(msgspec.Struct, gc=False):
    type: str | None = None
    message: _AnthropicMessage | None = None


class _AnthropicLine(msgspec.Struct, gc=False):
    custom_id: str | None = None
    result: _AnthropicResult | None = None


_read_anthropic = msgspec.json.Decoder(_AnthropicLine).decode
_NO_ANTHROPIC_MESSAGE = _AnthropicMessage()
_NO_ANTHROPIC_USAGE = _AnthropicUsage()


def anthropic_answer(raw: str) -> ReadResult | None:
    """An Anthropic results line with a ``succeeded`` result (see the module docstring);
    usage normalised as ``anthropic_batch`` does (input counts cache reads and writes)."""
    try:
        line = _read_anthropic(raw)
    except (msgspec.DecodeError, UnicodeError):
        return None
    result = line.result
    if result is None or result.type != "succeeded":
        return None
    message = result.message or _NO_ANTHROPIC_MESSAGE
    blocks = message.content or ()
    usage = message.usage or _NO_ANTHROPIC_USAGE
    cache_read = usage.cache_read_input_tokens or 0
    cache_write = usage.cache_creation_input_tokens or 0
    return ReadResult(
        str(line.custom_id),
        "succeeded",
        "".join(b.text or "" for b in blocks if b.type == "text"),
        message.stop_reason,
        Usage(
            (usage.input_tokens or 0) + cache_read + cache_write,
            usage.output_tokens or 0,
            cache_read,
            cache_write,
        ),
        None,
        None,
        raw,
    )


# -- Gemini: {"key", "response": GenerateContentResponse} -------------------------------------


class _Part(msgspec.Struct, gc=False):
    text: str | None = None
    thought: bool | None = None


class _Content(msgspec.Struct, gc=False):
    parts: list[_Part] | None = None


# Field names as on the wire (camelCase).
class _Candidate(msgspec.Struct, gc=False):
    content: _Content | None = None
    finishReason: str | None = None


class _GeminiUsage(msgspec.Struct, gc=False):
    promptTokenCount: Count | None = None
    candidatesTokenCount: Count | None = None
    thoughtsTokenCount: Count | None = None
    cachedContentTokenCount: Count | None = None


class _GeminiResponse(msgspec.Struct, gc=False):
    candidates: list[_Candidate] | None = None
    usageMetadata: _GeminiUsage | None = None


class _GeminiLine(msgspec.Struct, gc=False):
    key: str | None = None
    response: _GeminiResponse | None = None
    error: None = None  # a line with an error is not of the usual shape


_read_gemini = msgspec.json.Decoder(_GeminiLine).decode
_NO_CONTENT = _Content()
_NO_GEMINI_USAGE = _GeminiUsage()


def gemini_answer(raw: str) -> ReadResult | None:
    """A Gemini responses-file line with a keyed response that has candidates (see the
    module docstring)."""
    try:
        line = _read_gemini(raw)
    except (msgspec.DecodeError, UnicodeError):
        return None
    response = line.response
    if not line.key or response is None or not response.candidates:
        return None
    candidate = response.candidates[0]
    parts = (candidate.content or _NO_CONTENT).parts or ()
    usage = response.usageMetadata or _NO_GEMINI_USAGE
    return ReadResult(
        line.key,
        "succeeded",
        "".join(p.text or "" for p in parts if not p.thought),
        candidate.finishReason,
        Usage(
            usage.promptTokenCount or 0,
            (usage.candidatesTokenCount or 0) + (usage.thoughtsTokenCount or 0),
            usage.cachedContentTokenCount or 0,
        ),
        None,
        None,
        raw,
    )
