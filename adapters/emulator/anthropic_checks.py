"""Anthropic Message Batches: the checks each request's ``params`` must pass.

Each request is checked when its batch is processed (the create call itself only checks the
envelope and the custom_ids, in anthropic_api), so a bad body becomes an ``errored`` result in
the provider's own words. The general checks (pydantic-style body validation, under the
``anthropic-version`` the batch was created with) come first, then the rules of the request's
model from the emulator's own catalogue (models.py): sampling parameters, extended thinking,
output ceilings. Pure computation. Sources and wording: docs/emulator-anthropic.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .anthropic_cache import prompt_segments
from .models import (
    ANTHROPIC_SAMPLING,
    ANTHROPIC_TEMPERATURE_RANGE,
    ANTHROPIC_THINKING_TOP_P_MIN,
    ANTHROPIC_VERSIONS,
    INT32_MAX,
    SAMPLING_NONE,
    SAMPLING_ONE_OF,
    AnthropicModel,
    anthropic_model,
)

MAX_CACHE_BREAKPOINTS = 4
THINKING_MIN_BUDGET = 1024
THINKING_DOCS = (
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
    "#important-considerations-when-using-extended-thinking"
)

# Body keys of a Messages request outside the sampling parameters (spec CreateMessageParams
# and the SDK's MessageCreateParams); anything else is "Extra inputs are not permitted".
BASE_PARAMS = frozenset(
    "model messages max_tokens cache_control container diagnostics inference_geo metadata "
    "output_config service_tier speed stop_sequences stream system thinking tool_choice "
    "tools".split()
)
# Content block types a request may carry (the SDK's ContentBlockParam union).
BLOCK_TYPES = tuple(
    "text image document search_result thinking redacted_thinking tool_use tool_result "
    "server_tool_use web_search_tool_result web_fetch_tool_result code_execution_tool_result "
    "bash_code_execution_tool_result text_editor_code_execution_tool_result "
    "tool_search_tool_result container_upload".split()
)
NOT_A_DICT = "Input should be a valid dictionary or object to extract fields from"


class ItemError(Exception):
    """A request of a batch that the API answers with an error instead of a message."""

    def __init__(self, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


# -- checking one request's params ---------------------------------------------------------


def check_params(params: dict[str, Any], version: str) -> AnthropicModel:
    """Validate a Messages body under ``version``; returns the model's catalogue entry."""
    allowed = BASE_PARAMS | (set(ANTHROPIC_SAMPLING) if ANTHROPIC_VERSIONS[version] else set())
    for key in params:
        if key not in allowed:
            raise ItemError(f"{key}: Extra inputs are not permitted")
    for key in ("max_tokens", "messages", "model"):
        if key not in params:
            raise ItemError(f"{key}: Field required")
    if not isinstance(params["model"], str):
        raise ItemError("model: Input should be a valid string")
    max_tokens = int(
        _number("max_tokens", params["max_tokens"], integer=True, lo=1, hi=INT32_MAX)
    )
    _check_messages(params["messages"])
    _check_optional_fields(params, max_tokens)
    _check_cache_controls(params)
    model = anthropic_model(params["model"])
    if model is None:
        raise ItemError(f"model: {params['model']}", "not_found_error")
    _check_model_rules(params, model, max_tokens)
    return model


def _number(
    name: str,
    value: Any,
    *,
    integer: bool = False,
    lo: float | None = None,
    hi: float | None = None,
) -> float:
    kind = "integer" if integer else "number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ItemError(f"{name}: Input should be a valid {kind}")
    if integer and isinstance(value, float) and not value.is_integer():
        raise ItemError(
            f"{name}: Input should be a valid integer, got a number with a fractional part"
        )
    if lo is not None and value < lo:
        raise ItemError(f"{name}: Input should be greater than or equal to {_bound(lo)}")
    if hi is not None and value > hi:
        raise ItemError(f"{name}: Input should be less than or equal to {_bound(hi)}")
    return value


def _bound(value: float) -> str:
    """A bound as pydantic prints it: 1, 0.5, 2147483647 (never 2.14748e+09)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list):
        raise ItemError("messages: Input should be a valid list")
    if not messages:
        raise ItemError("messages: at least one message is required")
    last = len(messages) - 1
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(message, dict):
            raise ItemError(f"{where}: {NOT_A_DICT}")
        extra = sorted(set(message) - {"role", "content"})
        if extra:
            raise ItemError(f"{where}.{extra[0]}: Extra inputs are not permitted")
        for key in ("role", "content"):
            if key not in message:
                raise ItemError(f"{where}.{key}: Field required")
        role = message["role"]
        if role not in ("user", "assistant", "system"):
            raise ItemError(f"{where}.role: Input should be 'user' or 'assistant'")
        final_assistant = index == last and role == "assistant"
        _check_content(where, message["content"], may_be_empty=final_assistant)
    if messages[0]["role"] != "user":
        raise ItemError('messages: first message must use the "user" role')


def _check_content(where: str, content: Any, *, may_be_empty: bool) -> None:
    empty = (
        f"{where}: all messages must have non-empty content except for the optional final "
        "assistant message"
    )
    if isinstance(content, str):
        if not content and not may_be_empty:
            raise ItemError(empty)
        return
    if not isinstance(content, list):
        raise ItemError(f"{where}.content: Input should be a valid list")
    if not content and not may_be_empty:
        raise ItemError(empty)
    for index, block in enumerate(content):
        _check_block(f"{where}.content.{index}", block)


def _check_block(where: str, block: Any) -> None:
    if not isinstance(block, dict):
        raise ItemError(f"{where}: {NOT_A_DICT}")
    kind = block.get("type")
    if kind is None:
        raise ItemError(f"{where}: Unable to extract tag using discriminator 'type'")
    if kind not in BLOCK_TYPES:
        tags = ", ".join(f"'{t}'" for t in BLOCK_TYPES)
        raise ItemError(
            f"{where}: Input tag {kind!r} found using 'type' does not match any of the "
            f"expected tags: {tags}"
        )
    if kind == "text":
        _check_text_block(where, block, "messages")


def _check_text_block(where: str, block: dict[str, Any], field_name: str) -> None:
    if "text" not in block:
        raise ItemError(f"{where}.text: Field required")
    if not isinstance(block["text"], str):
        raise ItemError(f"{where}.text: Input should be a valid string")
    if not block["text"]:
        raise ItemError(f"{field_name}: text content blocks must be non-empty")


def _check_optional_fields(params: dict[str, Any], max_tokens: int) -> None:
    if "system" in params:
        _check_system(params["system"])
    if "stop_sequences" in params:
        stops = params["stop_sequences"]
        if not isinstance(stops, list):
            raise ItemError("stop_sequences: Input should be a valid list")
        for index, stop in enumerate(stops):
            if not isinstance(stop, str):
                raise ItemError(f"stop_sequences.{index}: Input should be a valid string")
    if params.get("stream") not in (None, False):
        raise ItemError("stream: Input should be False")
    if "tools" in params:
        tools = params["tools"]
        if not isinstance(tools, list):
            raise ItemError("tools: Input should be a valid list")
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict):
                raise ItemError(f"tools.{index}: {NOT_A_DICT}")
    _check_sampling(params)
    if "thinking" in params:
        _check_thinking(params["thinking"], max_tokens)


def _check_system(system: Any) -> None:
    if isinstance(system, str):
        return
    if not isinstance(system, list):
        raise ItemError("system: Input should be a valid string")
    for index, block in enumerate(system):
        where = f"system.{index}"
        if not isinstance(block, dict):
            raise ItemError(f"{where}: {NOT_A_DICT}")
        if block.get("type") != "text":
            raise ItemError(f"{where}.type: Input should be 'text'")
        _check_text_block(where, block, "system")


def _check_sampling(params: dict[str, Any]) -> None:
    """The 2023-era ranges (only reached when the version allows the keys at all)."""
    lo, hi = ANTHROPIC_TEMPERATURE_RANGE
    if "temperature" in params:
        _number("temperature", params["temperature"], lo=lo, hi=hi)
    if "top_p" in params:
        _number("top_p", params["top_p"], lo=0.0, hi=1.0)
    if "top_k" in params:
        _number("top_k", params["top_k"], integer=True, lo=0, hi=INT32_MAX)


def _check_thinking(thinking: Any, max_tokens: int) -> None:
    if not isinstance(thinking, dict):
        raise ItemError(f"thinking: {NOT_A_DICT}")
    kind = thinking.get("type")
    if kind not in ("enabled", "disabled", "adaptive"):
        raise ItemError(
            f"thinking: Input tag {kind!r} found using 'type' does not match any of the "
            "expected tags: 'enabled', 'disabled', 'adaptive'"
        )
    if kind != "enabled":
        return
    if "budget_tokens" not in thinking:
        raise ItemError("thinking.enabled.budget_tokens: Field required")
    budget = _number(
        "thinking.enabled.budget_tokens",
        thinking["budget_tokens"],
        integer=True,
        lo=THINKING_MIN_BUDGET,
        hi=INT32_MAX,
    )
    if max_tokens <= budget:
        raise ItemError("`max_tokens` must be greater than `thinking.budget_tokens`.")


def _check_cache_controls(params: dict[str, Any]) -> None:
    marks = list(_cache_marks(params))
    for where, cache_control in marks:
        _check_cache_control(where, cache_control)
    found = len(marks)
    if params.get("cache_control") is not None:
        segments = prompt_segments(params)
        if segments and segments[-1][1] is None:
            found += 1
    if found > MAX_CACHE_BREAKPOINTS:
        raise ItemError(
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {found}."
        )


def _cache_marks(params: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    if params.get("cache_control") is not None:
        _check_cache_control("cache_control", params["cache_control"])
    for index, tool in enumerate(params.get("tools") or []):
        if tool.get("cache_control") is not None:
            yield f"tools.{index}.cache_control", tool["cache_control"]
    system = params.get("system")
    if isinstance(system, list):
        for index, block in enumerate(system):
            if block.get("cache_control") is not None:
                yield f"system.{index}.cache_control", block["cache_control"]
    for m, message in enumerate(params["messages"]):
        if isinstance(message["content"], list):
            for b, block in enumerate(message["content"]):
                if block.get("cache_control") is not None:
                    yield f"messages.{m}.content.{b}.cache_control", block["cache_control"]


def _check_cache_control(where: str, cache_control: Any) -> None:
    if not isinstance(cache_control, dict):
        raise ItemError(f"{where}: {NOT_A_DICT}")
    if cache_control.get("type") != "ephemeral":
        raise ItemError(f"{where}.type: Input should be 'ephemeral'")
    if cache_control.get("ttl", "5m") not in ("5m", "1h"):
        raise ItemError(f"{where}.ttl: Input should be '5m' or '1h'")
    extra = sorted(set(cache_control) - {"type", "ttl"})
    if extra:
        raise ItemError(f"{where}.{extra[0]}: Extra inputs are not permitted")


def _check_model_rules(params: dict[str, Any], model: AnthropicModel, max_tokens: int) -> None:
    """What this particular model refuses (its entry in models.ANTHROPIC_MODELS)."""
    seen_user = False
    for message in params["messages"]:
        if message["role"] == "system":
            if not model.mid_conversation_system:
                raise ItemError("role 'system' is not supported on this model")
            if not seen_user:
                raise ItemError(
                    "messages: a message with role 'system' must come after a user turn"
                )
        seen_user = seen_user or message["role"] == "user"
    _check_model_sampling(params, model)
    _check_thinking_rules(params, model)
    ceiling = model.max_output_tokens
    if ceiling is not None and max_tokens > ceiling:
        raise ItemError(
            f"max_tokens: {max_tokens} > {ceiling}, which is the maximum allowed number of "
            f"output tokens for {params['model']}"
        )


def _check_model_sampling(params: dict[str, Any], model: AnthropicModel) -> None:
    """Models after Opus 4.6 take no sampling parameters (temperature only at 1.0); Opus 4.1+
    and the 4.5 models take temperature or top_p, not both. Only reached under an
    anthropic-version that allows the keys at all."""
    if model.sampling == SAMPLING_NONE:
        if "temperature" in params and params["temperature"] != 1:
            raise ItemError("`temperature` is deprecated for this model.")
        for name in ("top_p", "top_k"):
            if name in params:
                raise ItemError(f"`{name}` is deprecated for this model.")
    elif model.sampling == SAMPLING_ONE_OF and "temperature" in params and "top_p" in params:
        raise ItemError(
            "`temperature` and `top_p` cannot both be specified for this model. Please use "
            "only one."
        )


def _check_thinking_rules(params: dict[str, Any], model: AnthropicModel) -> None:
    """Manual thinking where the model has only adaptive thinking; the sampling constraints
    while thinking is on (enabled or adaptive)."""
    kind = (params.get("thinking") or {}).get("type")
    if kind == "enabled" and not model.manual_thinking:
        raise ItemError(
            '"thinking.type.enabled" is not supported for this model. Use '
            '"thinking.type.adaptive" and "output_config.effort" to control thinking behavior.'
        )
    if kind not in ("enabled", "adaptive"):
        return
    if "temperature" in params and params["temperature"] != 1:
        raise ItemError(
            "`temperature` may only be set to 1 when thinking is enabled or in adaptive mode."
        )
    if "top_k" in params:
        raise ItemError(
            f"`top_k` must be unset when thinking is enabled. Please consult our documentation "
            f"at {THINKING_DOCS}"
        )
    if "top_p" in params and params["top_p"] < ANTHROPIC_THINKING_TOP_P_MIN:
        raise ItemError(
            f"`top_p` must be greater than or equal to {ANTHROPIC_THINKING_TOP_P_MIN} or unset "
            f"when thinking is enabled. Please consult our documentation at {THINKING_DOCS}"
        )
