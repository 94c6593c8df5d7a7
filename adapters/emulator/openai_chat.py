"""OpenAI Chat Completions request rules: what a batch item's body must pass, model by model.

Pure computation (no store, no event loop), so the batch pipeline can run it in a worker thread.
The general checks (parameters, types, ranges, messages, tool-call sequences) come first, then the
rules of the request's model from the emulator's own catalogue (models.py). Refusals are
:class:`ItemError` s worded as the real API words them (docs/emulator-openai.md).
"""

from __future__ import annotations

import json
from typing import Any

from .models import (
    INT32_MAX,
    OPENAI_RANGES,
    OPENAI_REASONING_DEFAULTS,
    OpenAIModel,
    openai_model,
)
from .openai_errors import (
    ItemError,
    fmt,
    invalid_type,
    invalid_value,
    missing,
    model_not_found,
    out_of_range,
    supported,
    unsupported_parameter,
    unsupported_value,
)

ROLES = ("system", "assistant", "user", "function", "tool", "developer")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
SAMPLING = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "logprobs")
PART_TYPES = {
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
}
MAX_STOP = 4
INT64 = (-(2**63), 2**63 - 1)

# Top-level Chat Completions parameters (openai SDK CompletionCreateParams), with the JSON
# type and range checked for each scalar one. Anything else is "Unrecognized".
_NUM, _INT, _BOOL, _STR, _OBJ, _ARR = "number", "integer", "boolean", "string", "object", "array"
PARAMS: dict[str, tuple[str | None, float | None, float | None]] = {
    "messages": (None, None, None),
    "model": (None, None, None),
    "temperature": (_NUM, *OPENAI_RANGES["temperature"]),
    "top_p": (_NUM, *OPENAI_RANGES["top_p"]),
    "presence_penalty": (_NUM, *OPENAI_RANGES["presence_penalty"]),
    "frequency_penalty": (_NUM, *OPENAI_RANGES["frequency_penalty"]),
    "top_logprobs": (_INT, *OPENAI_RANGES["top_logprobs"]),
    "n": (_INT, 1, 128),
    # Token counts are 32-bit integers: 10**20 is refused whatever the model.
    "max_tokens": (_INT, 1, INT32_MAX),
    "max_completion_tokens": (_INT, 1, INT32_MAX),
    "seed": (_INT, *INT64),
    "logprobs": (_BOOL, None, None),
    "stream": (_BOOL, None, None),
    "store": (_BOOL, None, None),
    "parallel_tool_calls": (_BOOL, None, None),
    "user": (_STR, None, None),
    "safety_identifier": (_STR, None, None),
    "prompt_cache_key": (_STR, None, None),
    "prompt_cache_retention": (_STR, None, None),
    "reasoning_effort": (_STR, None, None),
    "service_tier": (_STR, None, None),
    "verbosity": (_STR, None, None),
    "metadata": (_OBJ, None, None),
    "logit_bias": (_OBJ, None, None),
    "response_format": (_OBJ, None, None),
    "audio": (_OBJ, None, None),
    "prediction": (_OBJ, None, None),
    "stream_options": (_OBJ, None, None),
    "web_search_options": (_OBJ, None, None),
    "prompt_cache_options": (_OBJ, None, None),
    "moderation": (_OBJ, None, None),
    "tools": (_ARR, None, None),
    "functions": (_ARR, None, None),
    "modalities": (_ARR, None, None),
    "stop": (None, None, None),
    "tool_choice": (None, None, None),
    "function_call": (None, None, None),
}


# -- request checks -------------------------------------------------------------------------


def check_chat(body: dict[str, Any], *, gpt_5_5_stop: bool = True) -> OpenAIModel:
    """Validate a Chat Completions body the way the API does; the model's rules on success.

    ``gpt_5_5_stop``: whether models whose ``stop`` support is unconfirmed accept it.
    """
    model = body.get("model")
    if model is None:
        raise ItemError(400, "you must provide a model parameter")
    if not isinstance(model, str):
        raise invalid_type("model", "a string", model)
    for key in body:
        if key not in PARAMS:
            raise ItemError(400, f"Unrecognized request argument supplied: {key}")
    _check_messages(body.get("messages"))
    for name, (kind, low, high) in PARAMS.items():
        if kind is not None and body.get(name) is not None:
            _check_scalar(name, body[name], kind, low, high)
    _check_stop(body.get("stop"))
    _check_misc(body)
    entry = openai_model(model)
    if entry is None:
        raise model_not_found(model)
    _check_model_rules(body, entry, gpt_5_5_stop)
    return entry


def _check_scalar(name: str, value: Any, kind: str, low: float | None, high: float | None) -> None:
    ok = {
        _NUM: isinstance(value, int | float) and not isinstance(value, bool),
        _INT: isinstance(value, int) and not isinstance(value, bool),
        _BOOL: isinstance(value, bool),
        _STR: isinstance(value, str),
        _OBJ: isinstance(value, dict),
        _ARR: isinstance(value, list),
    }[kind]
    if not ok:
        expected = {_NUM: "a decimal", _INT: "an integer", _BOOL: "a boolean"}.get(kind)
        raise invalid_type(name, expected or f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}", value)
    if kind in (_NUM, _INT):
        if high is not None and value > high:
            raise out_of_range(name, value, high, above=True, integer=kind == _INT)
        if low is not None and value < low:
            raise out_of_range(name, value, low, above=False, integer=kind == _INT)


def _check_stop(stop: Any) -> None:
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise invalid_type("stop", "one of a string or array of strings", stop)
    if len(stop) > MAX_STOP:
        raise ItemError(
            400,
            f"Invalid 'stop': array too long. Expected an array with maximum length {MAX_STOP}, "
            f"but got an array with length {len(stop)} instead.",
            param="stop",
            code="array_above_max_length",
        )


def _check_misc(body: dict[str, Any]) -> None:
    """Enumerations, streaming and JSON mode."""
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in EFFORTS:
        raise invalid_value("reasoning_effort", effort, EFFORTS)
    if body.get("stream") is True:
        raise ItemError(
            400,
            "Streaming is not supported in the Batch API.",
            param="stream",
            code="invalid_value",
        )
    fmt_ = body.get("response_format")
    if fmt_ is None:
        return
    kind = fmt_.get("type")
    if kind is None:
        raise missing("response_format.type")
    if kind not in ("text", "json_object", "json_schema"):
        raise invalid_value("response_format.type", kind, ("text", "json_object", "json_schema"))
    if kind == "json_schema" and not isinstance(fmt_.get("json_schema"), dict):
        raise missing("response_format.json_schema")
    if kind == "json_object":
        texts = " ".join(message_text(m) for m in body["messages"]).lower()
        if "json" not in texts:
            raise ItemError(
                400,
                "'messages' must contain the word 'json' in some form, to use "
                "'response_format' of type 'json_object'.",
                param="messages",
            )


def _check_messages(messages: Any) -> None:
    if messages is None:
        raise missing("messages")
    if not isinstance(messages, list):
        raise invalid_type("messages", "an array", messages)
    if not messages:
        raise ItemError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got "
            "an empty array instead.",
            param="messages",
            code="empty_array",
        )
    for i, message in enumerate(messages):
        _check_message(f"messages[{i}]", message)
    _check_tool_sequence(messages)


def _check_message(path: str, message: Any) -> None:
    if not isinstance(message, dict):
        raise invalid_type(path, "an object", message)
    role = message.get("role")
    if role is None:
        raise missing(f"{path}.role")
    if role not in ROLES:
        raise invalid_value(f"{path}.role", role, ROLES)
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise missing(f"{path}.tool_call_id")
    if role == "function" and not isinstance(message.get("name"), str):
        raise missing(f"{path}.name")
    content = message.get("content")
    if content is None:
        calls = message.get("tool_calls") or message.get("function_call")
        if role == "assistant" and calls:
            return
        raise missing(f"{path}.content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid_type(f"{path}.content", "one of a string or array of objects", content)
    allowed = PART_TYPES.get(role, ("text",))
    for j, part in enumerate(content):
        _check_part(f"{path}.content[{j}]", part, allowed)


def _check_part(path: str, part: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(part, dict):
        raise invalid_type(path, "an object", part)
    kind = part.get("type")
    if kind is None:
        raise missing(f"{path}.type")
    if kind not in allowed:
        raise invalid_value(f"{path}.type", kind, allowed)
    if kind == "text" and not isinstance(part.get("text"), str):
        raise missing(f"{path}.text")


def _check_tool_sequence(messages: list[dict[str, Any]]) -> None:
    """Tool results must answer the assistant's tool calls, all of them, right after them."""
    calls: set[str] | None = None  # ids of the open assistant turn's calls (None: no such turn)
    unanswered: set[str] = set()
    opened_at = 0
    for i, message in enumerate(messages):
        if message["role"] == "tool":
            call_id = message["tool_call_id"]
            if calls is None:
                raise ItemError(
                    400,
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    param=f"messages.[{i}].role",
                )
            if call_id not in calls:
                raise ItemError(
                    400,
                    f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in "
                    "'tool_calls' of previous message.",
                    param=f"messages.[{i}].tool_call_id",
                )
            unanswered.discard(call_id)
            continue
        _require_answered(unanswered, opened_at)
        calls = None
        tool_calls = message.get("tool_calls") if message["role"] == "assistant" else None
        if tool_calls:
            ids = [c.get("id") for c in tool_calls if isinstance(c, dict)]
            calls = {c for c in ids if isinstance(c, str)}
            unanswered = set(calls)
            opened_at = i
    _require_answered(unanswered, opened_at)


def _require_answered(unanswered: set[str], index: int) -> None:
    if unanswered:
        raise ItemError(
            400,
            "An assistant message with 'tool_calls' must be followed by tool messages responding "
            "to each 'tool_call_id'. The following tool_call_ids did not have response "
            f"messages: {', '.join(sorted(unanswered))}",
            param=f"messages.[{index}].role",
        )


def _check_model_rules(body: dict[str, Any], entry: OpenAIModel, gpt_5_5_stop: bool) -> None:
    """What this particular model refuses (its entry in models.OPENAI_MODELS)."""
    if not entry.system_role:
        for i, message in enumerate(body["messages"]):
            if message["role"] in ("system", "developer"):
                raise unsupported_value(
                    f"messages[{i}].role",
                    f"'messages[{i}].role' does not support '{message['role']}' with this model.",
                )
    effort = effective_effort(body, entry)
    if entry.reasoning:
        if body.get("max_tokens") is not None:
            raise unsupported_parameter("max_tokens", " Use 'max_completion_tokens' instead.")
        if not (entry.sampling_if_effort_none and effort == "none"):
            _check_sampling_defaults(body, entry)
    stop_accepted = gpt_5_5_stop if entry.stop is None else entry.stop
    if not stop_accepted and body.get("stop") is not None:
        raise unsupported_parameter("stop")
    _check_output_ceiling(body, entry)


def _check_output_ceiling(body: dict[str, Any], entry: OpenAIModel) -> None:
    """max_tokens / max_completion_tokens above the model's output ceiling."""
    ceiling = entry.max_output_tokens
    if ceiling is None:
        return
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is not None and value > ceiling:
            raise ItemError(
                400,
                f"{name} is too large: {value}. This model supports at most {ceiling} completion "
                f"tokens, whereas you provided {value}.",
                param=name,
                code="invalid_value",
            )


def effective_effort(body: dict[str, Any], entry: OpenAIModel) -> str | None:
    effort = body.get("reasoning_effort")
    if effort is None:
        return entry.default_effort
    if not entry.efforts:
        raise unsupported_parameter("reasoning_effort")
    if effort not in entry.efforts:
        raise unsupported_value(
            "reasoning_effort",
            f"'reasoning_effort' does not support '{effort}' with this model. Supported values "
            f"are: {supported(entry.efforts)}.",
        )
    return str(effort)


def _check_sampling_defaults(body: dict[str, Any], entry: OpenAIModel) -> None:
    for name in SAMPLING:
        value = body.get(name)
        if value is None:
            continue
        if entry.temperature_unsupported:
            raise unsupported_parameter(name)
        default = OPENAI_REASONING_DEFAULTS[name]
        if value != default or isinstance(value, bool) != isinstance(default, bool):
            raise unsupported_value(
                name,
                f"'{name}' does not support {fmt(value)} with this model. Only the default "
                f"({fmt(default)}) value is supported.",
            )


def message_text(message: dict[str, Any]) -> str:
    """The text a message carries (text parts joined; tool calls as their JSON)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text") or p.get("refusal") or "") for p in content if isinstance(p, dict)
        )
    calls = message.get("tool_calls") or message.get("function_call")
    return json.dumps(calls, sort_keys=True) if calls else ""

