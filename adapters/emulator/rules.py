"""The newest provider rules the emulator enforces, each with a request that breaks it.

One entry per rule (and per model where a rule names models): the raw request that breaks it,
the same request made compliant, and the refusal the real API gives, so a test can iterate over
every rule the emulator enforces (tests/test_emulator_rules.py does, through the official SDKs;
a conformance test can pair each id with what the daemon does to the same request). Sources and
wording are in docs/emulator-openai.md, docs/emulator-anthropic.md and docs/emulator-gemini.md.

Shapes: ``breaking`` and ``compliant`` are an OpenAI Chat Completions ``body``, an Anthropic
Messages ``params``, or a Gemini ``GenerateContentRequest`` in REST (camelCase) form. ``where``
says how the refusal shows:

* ``item``: that request's result (OpenAI error-file line with ``response.status_code``,
  Anthropic ``errored`` result, Gemini per-item ``error``), the rest of the batch unaffected;
* ``batch``: the batch ends ``failed`` with ``errors.data[0]`` (OpenAI);
* ``create``: the create call is refused (Gemini), nothing is created;
* ``upload``: the Files API refuses the upload (Gemini; ``breaking``/``compliant`` hold
  ``{"mime_type": ...}``);
* ``file_input``: the batch create refuses the uploaded input file (Gemini; same shape).

``settings`` is emulator configuration the rule needs (keys of the fault configuration, see
settings.py); ``copies`` how many copies of the request one batch holds; ``batches_before``
how many compliant batches of the model must still be pending when the breaking one is
created.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ITEM, BATCH, CREATE, UPLOAD, FILE_INPUT = "item", "batch", "create", "upload", "file_input"
ANTHROPIC_2023 = "2023-06-01"


@dataclass(frozen=True)
class Refusal:
    status: int  # the HTTP status the real API answers (in the item, or of the call)
    type: str  # OpenAI error.type / batch error code; Anthropic error.type; Gemini status name
    message: str  # the message, exactly (or a part of it when ``exact`` is false)
    code: str | None = None  # OpenAI error.code
    param: str | None = None  # OpenAI error.param
    exact: bool = True


@dataclass(frozen=True)
class Rule:
    id: str
    provider: str  # "openai" | "anthropic" | "gemini"
    model: str
    where: str
    breaking: dict[str, Any]
    compliant: dict[str, Any]
    refusal: Refusal
    settings: dict[str, Any] = field(default_factory=dict)
    copies: int = 1
    batches_before: int = 0
    anthropic_version: str | None = None


# -- OpenAI ----------------------------------------------------------------------------------

_USER = [{"role": "user", "content": "Say hello."}]


def _chat(model: str, **params: Any) -> dict[str, Any]:
    return {"model": model, "messages": _USER, **params}


def _openai_stop(model: str, **settings: Any) -> Rule:
    return Rule(
        f"openai.stop.{model}",
        "openai",
        model,
        ITEM,
        _chat(model, stop=["\n\n"]),
        _chat(model),
        Refusal(
            400,
            "invalid_request_error",
            "Unsupported parameter: 'stop' is not supported with this model.",
            code="unsupported_parameter",
            param="stop",
        ),
        settings=settings,
    )


def _openai_ceiling(model: str, param: str, ceiling: int, asked: int) -> Rule:
    return Rule(
        f"openai.max_output.{model}",
        "openai",
        model,
        ITEM,
        _chat(model, **{param: asked}),
        _chat(model, **{param: ceiling}),
        Refusal(
            400,
            "invalid_request_error",
            f"{param} is too large: {asked}. This model supports at most {ceiling} completion "
            f"tokens, whereas you provided {asked}.",
            code="invalid_value",
            param=param,
        ),
    )


def _openai_integer(rule: str, value: Any, message: str, code: str) -> Rule:
    return Rule(
        f"openai.integer.{rule}",
        "openai",
        "gpt-4o-mini",
        ITEM,
        _chat("gpt-4o-mini", max_tokens=value),
        _chat("gpt-4o-mini", max_tokens=100),
        Refusal(400, "invalid_request_error", message, code=code, param="max_tokens"),
    )


OPENAI_RULES: tuple[Rule, ...] = (
    *(
        _openai_stop(m)
        for m in ("gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-5.1", "gpt-5.2", "gpt-5.4")
    ),
    # gpt-5.5 and later accepting stop again is unconfirmed: refused unless the setting says so.
    _openai_stop("gpt-5.5", gpt_5_5_accepts_stop=False),
    _openai_ceiling("gpt-4o", "max_tokens", 16_384, 20_000),
    _openai_ceiling("gpt-4o-mini", "max_tokens", 16_384, 1_000_000),
    _openai_ceiling("gpt-4.1", "max_tokens", 32_768, 40_000),
    _openai_ceiling("gpt-4.1-mini", "max_completion_tokens", 32_768, 40_000),
    _openai_ceiling("o3", "max_completion_tokens", 100_000, 150_000),
    _openai_ceiling("o4-mini", "max_completion_tokens", 100_000, 150_000),
    _openai_ceiling("gpt-5", "max_completion_tokens", 128_000, 200_000),
    _openai_ceiling("gpt-5.2", "max_completion_tokens", 128_000, 200_000),
    _openai_integer(
        "huge",
        10**20,
        "Invalid 'max_tokens': integer above maximum value. Expected a value <= 2147483647, "
        "but got 100000000000000000000 instead.",
        "integer_above_max_value",
    ),
    _openai_integer(
        "negative",
        -5,
        "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got -5 "
        "instead.",
        "integer_below_min_value",
    ),
    _openai_integer(
        "fraction",
        100.5,
        "Invalid type for 'max_tokens': expected an integer, but got a decimal instead.",
        "invalid_type",
    ),
    Rule(
        "openai.enqueued_tokens",
        "openai",
        "gpt-4o-mini",
        BATCH,
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 8000}]},
        {"model": "gpt-4o-mini", "messages": _USER},
        Refusal(
            400,
            "token_limit_exceeded",
            "Enqueued token limit reached for gpt-4o-mini in organization org-emulator. Limit: "
            "1,000 enqueued tokens. Please try again once some in_progress batches have been "
            "completed.",
        ),
        settings={"enqueued_token_limits": {"gpt-4o-mini": 1000}},
    ),
)

# -- Anthropic -------------------------------------------------------------------------------

_ANTHROPIC_INVALID = "invalid_request_error"


def _msg(model: str, max_tokens: int = 1024, **params: Any) -> dict[str, Any]:
    body = {"model": model, "max_tokens": max_tokens, "messages": _USER}
    return body | params


def _anthropic(
    rule: str, model: str, breaking: dict[str, Any], compliant: dict[str, Any], message: str
) -> Rule:
    return Rule(
        f"anthropic.{rule}.{model}",
        "anthropic",
        model,
        ITEM,
        breaking,
        compliant,
        Refusal(400, _ANTHROPIC_INVALID, message),
        anthropic_version=ANTHROPIC_2023,
    )


_THINKING = {"type": "enabled", "budget_tokens": 2048}
_THINKING_DOCS = (
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
    "#important-considerations-when-using-extended-thinking"
)
_ONE_OF = ("claude-opus-4-1", "claude-opus-4-5", "claude-opus-4-6", "claude-sonnet-4-5")
_NO_SAMPLING = ("claude-sonnet-4-6", "claude-opus-4-7", "claude-opus-4-8")
_CEILINGS = (
    ("claude-3-haiku-20240307", 4_096),
    ("claude-3-5-haiku-20241022", 8_192),
    ("claude-3-5-sonnet-20241022", 8_192),
    ("claude-opus-4-0", 32_000),
    ("claude-opus-4-1", 32_000),
    ("claude-sonnet-4-0", 64_000),
    ("claude-sonnet-4-5", 64_000),
    ("claude-haiku-4-5", 64_000),
)

ANTHROPIC_RULES: tuple[Rule, ...] = (
    *(
        _anthropic(
            "temperature_with_top_p",
            m,
            _msg(m, temperature=0.5, top_p=0.9),
            _msg(m, temperature=0.5),
            "`temperature` and `top_p` cannot both be specified for this model. Please use "
            "only one.",
        )
        for m in (*_ONE_OF, "claude-haiku-4-5")
    ),
    *(
        _anthropic(
            "temperature",
            m,
            _msg(m, temperature=0.5),
            _msg(m, temperature=1.0),
            "`temperature` is deprecated for this model.",
        )
        for m in _NO_SAMPLING
    ),
    *(
        _anthropic(
            name, m, _msg(m) | {name: value}, _msg(m), f"`{name}` is deprecated for this model."
        )
        for m in _NO_SAMPLING
        for name, value in (("top_p", 0.9), ("top_k", 5))
    ),
    *(
        _anthropic(
            "manual_thinking",
            m,
            _msg(m, 4096, thinking=_THINKING),
            _msg(m, 4096, thinking={"type": "adaptive"}),
            '"thinking.type.enabled" is not supported for this model. Use '
            '"thinking.type.adaptive" and "output_config.effort" to control thinking behavior.',
        )
        for m in ("claude-opus-4-7", "claude-opus-4-8")
    ),
    _anthropic(
        "thinking_temperature",
        "claude-sonnet-4-5",
        _msg("claude-sonnet-4-5", 4096, thinking=_THINKING, temperature=0.5),
        _msg("claude-sonnet-4-5", 4096, thinking=_THINKING),
        "`temperature` may only be set to 1 when thinking is enabled or in adaptive mode.",
    ),
    _anthropic(
        "thinking_top_k",
        "claude-sonnet-4-5",
        _msg("claude-sonnet-4-5", 4096, thinking=_THINKING, top_k=5),
        _msg("claude-sonnet-4-5", 4096, thinking=_THINKING),
        f"`top_k` must be unset when thinking is enabled. Please consult our documentation at "
        f"{_THINKING_DOCS}",
    ),
    _anthropic(
        "thinking_top_p",
        "claude-sonnet-4-5",
        _msg("claude-sonnet-4-5", 4096, thinking=_THINKING, top_p=0.5),
        _msg("claude-sonnet-4-5", 4096, thinking=_THINKING, top_p=0.95),
        f"`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled. "
        f"Please consult our documentation at {_THINKING_DOCS}",
    ),
    _anthropic(
        "thinking_budget_min",
        "claude-sonnet-4-5",
        _msg("claude-sonnet-4-5", 4096, thinking={"type": "enabled", "budget_tokens": 512}),
        _msg("claude-sonnet-4-5", 4096, thinking={"type": "enabled", "budget_tokens": 1024}),
        "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
    ),
    _anthropic(
        "thinking_budget_below_max_tokens",
        "claude-sonnet-4-5",
        _msg("claude-sonnet-4-5", 2048, thinking=_THINKING),
        _msg("claude-sonnet-4-5", 2049, thinking=_THINKING),
        "`max_tokens` must be greater than `thinking.budget_tokens`.",
    ),
    *(
        _anthropic(
            "max_tokens",
            m,
            _msg(m, ceiling + 1),
            _msg(m, ceiling),
            f"max_tokens: {ceiling + 1} > {ceiling}, which is the maximum allowed number of "
            f"output tokens for {m}",
        )
        for m, ceiling in _CEILINGS
    ),
    _anthropic(
        "integer_range",
        "claude-opus-4-7",
        _msg("claude-opus-4-7", 10**20),
        _msg("claude-opus-4-7", 32_000),
        "max_tokens: Input should be less than or equal to 2147483647",
    ),
)

# -- Gemini ----------------------------------------------------------------------------------

_GEMINI = "gemini-2.5-flash"


def _gen(text: str, **config: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    if config:
        request["generationConfig"] = config
    return request


_QUOTA = Refusal(
    429,
    "RESOURCE_EXHAUSTED",
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To "
    "monitor your current usage, head to: https://ai.dev/rate-limit. ",
)

GEMINI_RULES: tuple[Rule, ...] = (
    Rule(
        "gemini.inline_size",
        "gemini",
        _GEMINI,
        CREATE,
        # CJK text goes on the wire as 6-byte \uXXXX escapes: 4 copies are about 20.4 MB ...
        _gen("字" * 850_000, maxOutputTokens=8),
        _gen("字" * 750_000, maxOutputTokens=8),  # ... and 18 MB
        Refusal(400, "INVALID_ARGUMENT", "Request payload size exceeds the limit: 20000000 bytes."),
        copies=4,
    ),
    Rule(
        "gemini.enqueued_tokens",
        "gemini",
        _GEMINI,
        CREATE,
        _gen("x" * 8000),
        _gen("Say hello."),
        _QUOTA,
        settings={"enqueued_token_limits": {_GEMINI: 1000}},
    ),
    Rule(
        "gemini.concurrent_batches",
        "gemini",
        _GEMINI,
        CREATE,
        _gen("Say hello."),
        _gen("Say hello."),
        _QUOTA,
        settings={"concurrent_batch_limits": {_GEMINI: 1}},
        batches_before=1,
    ),
    Rule(
        "gemini.integer_range",
        "gemini",
        _GEMINI,
        CREATE,
        _gen("Say hello.", maxOutputTokens=10**20),
        _gen("Say hello.", maxOutputTokens=8192),
        Refusal(400, "INVALID_ARGUMENT", "(TYPE_INT32), 100000000000000000000", exact=False),
    ),
    Rule(
        "gemini.upload_mime",
        "gemini",
        _GEMINI,
        UPLOAD,
        {"mime_type": "json lines"},
        {"mime_type": "jsonl"},
        Refusal(400, "INVALID_ARGUMENT", "Unsupported MIME type: json lines"),
    ),
    Rule(
        "gemini.batch_input_mime",
        "gemini",
        _GEMINI,
        FILE_INPUT,
        {"mime_type": "image/png"},
        {"mime_type": "application/jsonl"},
        Refusal(400, "INVALID_ARGUMENT", "a batch input file must be JSON Lines", exact=False),
    ),
)

RULES: tuple[Rule, ...] = OPENAI_RULES + ANTHROPIC_RULES + GEMINI_RULES


def rule(rule_id: str) -> Rule:
    """The rule with this id (KeyError when there is none)."""
    for entry in RULES:
        if entry.id == rule_id:
            return entry
    raise KeyError(rule_id)
