"""OpenAI batch items: the Chat Completions rules a request body must pass, and the answers.

Everything here is pure computation (no store, no event loop), so the batch pipeline can run
it in a worker thread. The wording of every error copies the real API's (fact sheet §2.8-2.9):
the daemon's error classification is only tested if the emulator speaks the same words.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any

from .answers import answer_text, complete, estimate_tokens, short_hash
from .journal import item_digest
from .models import OPENAI_RANGES, OPENAI_REASONING_DEFAULTS, OpenAIModel, openai_model

ROLES = ("system", "assistant", "user", "function", "tool", "developer")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
SAMPLING = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "logprobs")
PART_TYPES = {
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
}
# Reasoning tokens spent per visible answer token, by reasoning_effort.
EFFORT_FACTOR = {"minimal": 0.25, "low": 0.5, "medium": 1.0, "high": 2.0, "xhigh": 3.0, "max": 4.0}
CACHE_MIN_TOKENS = 1024  # automatic prompt caching starts at this prompt length
CACHE_STEP = 128  # cached prefixes are counted in steps of this many tokens
MAX_STOP = 4

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
    "max_tokens": (_INT, 1, None),
    "max_completion_tokens": (_INT, 1, None),
    "seed": (_INT, None, None),
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


class ItemError(Exception):
    """A request the API answers with an error: one error-file line in a batch."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500


# -- the API's wording ----------------------------------------------------------------------


def json_kind(value: Any) -> str:
    """How the API names a JSON value's type in its messages ("an integer", "a string"...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def fmt(value: Any) -> str:
    """A value as the API prints it inside a message (JSON literals, no quotes on strings)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def supported(values: tuple[str, ...] | list[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def missing(param: str) -> ItemError:
    return ItemError(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def invalid_type(param: str, expected: str, value: Any) -> ItemError:
    return ItemError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {json_kind(value)} instead.",
        param=param,
        code="invalid_type",
    )


def invalid_value(param: str, value: Any, allowed: tuple[str, ...] | list[str]) -> ItemError:
    return ItemError(
        400,
        f"Invalid value: '{fmt(value)}'. Supported values are: {supported(allowed)}.",
        param=param,
        code="invalid_value",
    )


def out_of_range(
    param: str, value: float, bound: float, *, above: bool, integer: bool
) -> ItemError:
    number = "integer" if integer else "decimal"
    side, op = ("above maximum", "<=") if above else ("below minimum", ">=")
    code = f"{number}_{'above_max' if above else 'below_min'}_value"
    return ItemError(
        400,
        f"Invalid '{param}': {number} {side} value. Expected a value {op} {fmt(bound)}, "
        f"but got {fmt(value)} instead.",
        param=param,
        code=code,
    )


def unsupported_parameter(param: str, hint: str = "") -> ItemError:
    return ItemError(
        400,
        f"Unsupported parameter: '{param}' is not supported with this model.{hint}",
        param=param,
        code="unsupported_parameter",
    )


def unsupported_value(param: str, message: str) -> ItemError:
    return ItemError(400, f"Unsupported value: {message}", param=param, code="unsupported_value")


def model_not_found(model: str) -> ItemError:
    return ItemError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


def injected_error(kind: str, model: str) -> ItemError:
    """The genuine API error for an item-error fault kind."""
    if kind == "rate_limit":
        return ItemError(
            429,
            f"Rate limit reached for {model} in organization org-emulator on tokens per min "
            "(TPM): Limit 200000, Used 200000, Requested 1000. Please try again in 300ms. "
            "Visit https://platform.openai.com/account/rate-limits to learn more.",
            type="tokens",
            code="rate_limit_exceeded",
        )
    if kind == "overloaded":
        return ItemError(
            503,
            "The engine is currently overloaded, please try again later.",
            type="server_error",
        )
    if kind == "server":
        return ItemError(
            500,
            "The server had an error while processing your request. Sorry about that!",
            type="server_error",
        )
    return ItemError(
        400,
        "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 131072 tokens. Please reduce the length of the messages.",
        param="messages",
        code="context_length_exceeded",
    )


# -- request checks -------------------------------------------------------------------------


def check_chat(body: dict[str, Any]) -> OpenAIModel:
    """Validate a Chat Completions body the way the API does; the model's rules on success."""
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
    _check_model_rules(body, entry)
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


def _check_model_rules(body: dict[str, Any], entry: OpenAIModel) -> None:
    """What this particular model refuses (fact sheet §2.8)."""
    if not entry.system_role:
        for i, message in enumerate(body["messages"]):
            if message["role"] in ("system", "developer"):
                raise unsupported_value(
                    f"messages[{i}].role",
                    f"'messages[{i}].role' does not support '{message['role']}' with this model.",
                )
    effort = _effective_effort(body, entry)
    if entry.reasoning:
        if body.get("max_tokens") is not None:
            raise unsupported_parameter("max_tokens", " Use 'max_completion_tokens' instead.")
        if not (entry.sampling_if_effort_none and effort == "none"):
            _check_sampling_defaults(body, entry)
    if not entry.stop and body.get("stop") is not None:
        raise unsupported_parameter("stop")


def _effective_effort(body: dict[str, Any], entry: OpenAIModel) -> str | None:
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


# -- answers --------------------------------------------------------------------------------


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


@dataclass
class Answer:
    """A chat.completion body and what prompt caching needs to know about its prompt."""

    body: dict[str, Any]
    prefix_key: str | None  # identity of the prompt prefix (all messages but the last)
    prefix_tokens: int


def answer_chat(body: dict[str, Any], entry: OpenAIModel) -> Answer:
    """The deterministic chat.completion for a valid body."""
    model = body["model"]
    messages = body["messages"]
    counts = [estimate_tokens(message_text(m)) for m in messages]
    prompt_tokens = sum(counts)
    prefix_tokens = prompt_tokens - counts[-1]
    last_user = next((message_text(m) for m in reversed(messages) if m["role"] == "user"), "")
    effort = _effective_effort(body, entry)
    reasoning = 0
    if entry.reasoning and effort not in (None, "none"):
        full = estimate_tokens(answer_text(model, last_user))
        reasoning = max(1, math.ceil(full * EFFORT_FACTOR[effort]))
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop
    if limit is not None and reasoning >= limit:
        reasoning, text, visible, finish = limit, "", 0, "length"
    else:
        room = None if limit is None else limit - reasoning
        done = complete(model, last_user, max_tokens=room, stop=stops)
        text, visible = done.text, done.output_tokens
        finish = "length" if done.finish == "length" else "stop"
    n = body.get("n") or 1
    logprobs = _logprobs(text, body.get("top_logprobs") or 0) if body.get("logprobs") else None
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
            "logprobs": logprobs,
            "finish_reason": finish,
        }
        for i in range(n)
    ]
    completion = n * (visible + reasoning)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": n * reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    result = {
        "id": "chatcmpl-" + _token(29),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": "fp_" + short_hash(model)[:10],
    }
    key = None
    if prefix_tokens >= CACHE_MIN_TOKENS:
        canonical = json.dumps([model, messages[:-1]], sort_keys=True, separators=(",", ":"))
        key = hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()
    return Answer(result, key, prefix_tokens)


def cached_tokens(prefix_tokens: int) -> int:
    """What a cache hit on a prefix of this length reports."""
    return prefix_tokens // CACHE_STEP * CACHE_STEP


def _logprobs(text: str, top: int) -> dict[str, Any]:
    """Per-word log probabilities: a fixed, plausible shape, not a model's numbers."""
    tokens = []
    for word in text.split(" "):
        entry = {"token": word, "logprob": -0.01, "bytes": list(word.encode())}
        alternatives = [dict(entry) for _ in range(top)]
        tokens.append({**entry, "top_logprobs": alternatives})
    return {"content": tokens, "refusal": None}


def _token(n: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


# -- result lines ---------------------------------------------------------------------------


def success_line(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "batch_req_" + secrets.token_hex(16),
        "custom_id": custom_id,
        "response": {
            "status_code": 200,
            "request_id": "req_" + secrets.token_hex(16),
            "body": body,
        },
        "error": None,
    }


def error_line(custom_id: str, err: ItemError) -> dict[str, Any]:
    """A request the API refused: the HTTP error inside ``response``, top-level error null."""
    return {
        "id": "batch_req_" + secrets.token_hex(16),
        "custom_id": custom_id,
        "response": {
            "status_code": err.status,
            "request_id": "req_" + secrets.token_hex(16),
            "body": err.body(),
        },
        "error": None,
    }


UNRUN = {
    "batch_expired": "This request could not be executed before the completion window expired.",
    "batch_cancelled": "This request was not executed because the batch was cancelled.",
}


def unrun_line(custom_id: str, code: str) -> dict[str, Any]:
    """A request that never ran (window closed, batch cancelled): no response at all."""
    return {
        "id": "batch_req_" + secrets.token_hex(16),
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": UNRUN[code]},
    }


# -- the input file -------------------------------------------------------------------------

MAX_REQUESTS = 50_000
MAX_INPUT_BYTES = 200_000_000  # "200 MB"; decimal, the stricter reading
MAX_LINE_ERRORS = 100  # errors.data entries reported for one input file


@dataclass
class Scan:
    """What validation learnt from an input file: its items, or why the batch fails."""

    n: int
    model: str | None
    digests: list[str]
    errors: list[dict[str, Any]]


class LineError(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


def batch_error(code: str, message: str, line: int | None = None, param: str | None = None):
    return {"code": code, "line": line, "message": message, "param": param}


def parse_line(raw: bytes, endpoint: str) -> dict[str, Any]:
    """One input line as a request object, or the LineError the validator reports for it."""
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LineError("invalid_json_line", "This line is not parseable as valid JSON.") from None
    if not isinstance(obj, dict):
        raise LineError("invalid_request", "This line is not a JSON object.")
    for key in ("custom_id", "method", "url", "body"):
        if obj.get(key) is None:
            raise LineError("invalid_request", f"Missing required parameter: '{key}'.", key)
    if not isinstance(obj["custom_id"], str):
        raise LineError("invalid_request", invalid_type("custom_id", "a string", 0).message)
    if obj["method"] != "POST":
        err = invalid_value("method", obj["method"], ("POST",))
        raise LineError("invalid_request", err.message, "method")
    if obj["url"] != endpoint:
        raise LineError(
            "url_mismatch",
            f"The URL provided for this request ('{fmt(obj['url'])}') does not match the "
            f"batch endpoint ('{endpoint}').",
            "url",
        )
    if not isinstance(obj["body"], dict):
        err = invalid_type("body", "an object", obj["body"])
        raise LineError("invalid_request", err.message, "body")
    return obj


def scan_input(path: str, size: int, endpoint: str) -> Scan:
    """Validate an input file line by line (streaming); runs in a worker thread."""
    if size > MAX_INPUT_BYTES:
        msg = f"The input file is larger than the maximum of {MAX_INPUT_BYTES:,} bytes."
        return Scan(0, None, [], [batch_error("file_too_large", msg)])
    scan = Scan(0, None, [], [])
    seen: set[str] = set()
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            scan.n += 1
            if scan.n > MAX_REQUESTS:
                continue
            try:
                obj = parse_line(raw, endpoint)
                _check_unique(obj, seen)
                model = _check_model(obj, scan.model)
            except LineError as err:
                if len(scan.errors) < MAX_LINE_ERRORS:
                    scan.errors.append(batch_error(err.code, err.message, line_no, err.param))
                continue
            scan.model = scan.model or model
            scan.digests.append(item_digest(model or "", obj["body"]))
    return _verdict(scan)


def _check_unique(obj: dict[str, Any], seen: set[str]) -> None:
    if obj["custom_id"] in seen:
        raise LineError(
            "duplicate_custom_id",
            "The custom_id for this request is a duplicate of another request. The custom_id "
            "parameter must be unique for each request in a batch.",
            "custom_id",
        )
    seen.add(obj["custom_id"])


def _check_model(obj: dict[str, Any], batch_model: str | None) -> str | None:
    model = obj["body"].get("model")
    if not isinstance(model, str):
        return None  # a per-request problem, answered in the error file
    if batch_model is not None and model != batch_model:
        raise LineError(
            "model_mismatch",
            f"The model '{model}' of this request does not match the model '{batch_model}' of "
            "the other requests in the batch. A batch may only contain requests for one model.",
            "body.model",
        )
    return model


def _verdict(scan: Scan) -> Scan:
    if scan.n > MAX_REQUESTS:
        msg = (
            f"The batch input file contains {scan.n:,} requests, more than the maximum of "
            f"{MAX_REQUESTS:,} requests per batch."
        )
        scan.errors = [batch_error("too_many_tasks", msg)]
    elif scan.n == 0:
        msg = "The batch input file is empty. Please ensure that the batch contains requests."
        scan.errors = [batch_error("empty_file", msg)]
    if scan.errors:
        scan.digests = []
    return scan


@dataclass
class Planned:
    """One item of a batch being run: what it asks, and what the API would answer."""

    index: int
    custom_id: str
    digest: str
    model: str
    body_text: str
    error: ItemError | None = None
    answer: Answer | None = None


def plan_item(index: int, raw: bytes, run: bool) -> Planned:
    """Evaluate one (already validated) input line; only items that get to run are answered."""
    obj = json.loads(raw)
    body = obj["body"]
    model = body.get("model") if isinstance(body.get("model"), str) else ""
    item = Planned(
        index, obj["custom_id"], item_digest(model, body), model, json.dumps(body, sort_keys=True)
    )
    if run:
        try:
            item.answer = answer_chat(body, check_chat(body))
        except ItemError as err:
            item.error = err
    return item


class InputReader:
    """Reads a validated input file in chunks of items (each call: worker-thread I/O)."""

    def __init__(self, path: str) -> None:
        self._fh = open(path, "rb")
        self._index = 0

    def next_chunk(self, size: int, run_count: int) -> list[Planned]:
        items: list[Planned] = []
        while len(items) < size:
            raw = self._fh.readline()
            if not raw:
                break
            if not raw.strip():
                continue
            items.append(plan_item(self._index, raw, self._index < run_count))
            self._index += 1
        return items

    def close(self) -> None:
        self._fh.close()


class ResultWriter:
    """Appends JSONL result lines to a blob (each call: worker-thread I/O)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fh = open(path, "wb")
        self.lines = 0

    def write(self, lines: list[dict[str, Any]]) -> None:
        for line in lines:
            self._fh.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
        self.lines += len(lines)

    def close(self) -> int:
        self._fh.close()
        return self.lines
