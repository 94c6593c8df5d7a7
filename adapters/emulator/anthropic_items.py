"""Anthropic Message Batches: checking and running each request of a batch.

Each request's ``params`` is checked when the batch is processed (the create call itself only
checks the envelope and the custom_ids, in anthropic_api), so a bad body becomes an
``errored`` result in the provider's own words (docs/emulator-anthropic.md). Everything here is
pure computation plus file I/O, so a big batch can be processed in a worker thread without
touching the store or the event loop.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .answers import complete, estimate_tokens
from .faults import FaultSet
from .journal import FAILED, RETRYABLE, SUCCEEDED, item_digest
from .models import (
    ANTHROPIC_SAMPLING,
    ANTHROPIC_TEMPERATURE_RANGE,
    ANTHROPIC_VERSIONS,
    AnthropicModel,
    anthropic_model,
)

PROVIDER = "anthropic"
MAX_CACHE_BREAKPOINTS = 4
THINKING_MIN_BUDGET = 1024
# Lines of the results file are written in reversed runs of this size: the real service does
# not keep request order either, so clients must match results by custom_id.
SCRAMBLE_WINDOW = 16

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
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence"}
# Injected item errors: (error type, message, journal status).
INJECTED = {
    "rate_limit": (
        "rate_limit_error",
        "This request would exceed your organization's rate limit (injected by the emulator).",
        RETRYABLE,
    ),
    "overloaded": ("overloaded_error", "Overloaded (injected by the emulator).", RETRYABLE),
    "server": ("api_error", "Internal server error (injected by the emulator).", RETRYABLE),
    "invalid": ("invalid_request_error", "Invalid request (injected by the emulator).", FAILED),
}
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
    max_tokens = int(_number("max_tokens", params["max_tokens"], integer=True, lo=1))
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
        raise ItemError(f"{name}: Input should be greater than or equal to {lo:g}")
    if hi is not None and value > hi:
        raise ItemError(f"{name}: Input should be less than or equal to {hi:g}")
    return value


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
        _number("top_k", params["top_k"], integer=True, lo=0)


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
    ceiling = model.max_output_tokens
    if ceiling is not None and max_tokens > ceiling:
        raise ItemError(
            f"max_tokens: {max_tokens} > {ceiling}, which is the maximum allowed number of "
            f"output tokens for {params['model']}"
        )


# -- prompt text, cache prefixes and the answer --------------------------------------------


def _block_text(block: dict[str, Any]) -> str:
    if block.get("type") == "text":
        return str(block.get("text", ""))
    rest = {k: v for k, v in block.items() if k != "cache_control"}
    return json.dumps(rest, sort_keys=True, separators=(",", ":"))


def prompt_segments(params: dict[str, Any]) -> list[tuple[str, Any]]:
    """The prompt in cache order (tools, system, messages): (text, cache_control) per block."""
    segments: list[tuple[str, Any]] = []
    for tool in params.get("tools") or []:
        rest = {k: v for k, v in tool.items() if k != "cache_control"}
        segments.append((json.dumps(rest, sort_keys=True), tool.get("cache_control")))
    system = params.get("system")
    if isinstance(system, str) and system:
        segments.append((system, None))
    elif isinstance(system, list):
        segments.extend((_block_text(b), b.get("cache_control")) for b in system)
    for message in params["messages"]:
        content = message["content"]
        if isinstance(content, str):
            segments.append((content, None))
        else:
            segments.extend((_block_text(b), b.get("cache_control")) for b in content)
    top = params.get("cache_control")
    if top is not None and segments and segments[-1][1] is None:
        segments[-1] = (segments[-1][0], top)
    return segments


@dataclass
class CacheUsage:
    total: int
    read: int = 0
    created: int = 0
    ttl: str = "5m"


def cache_usage(
    model: str, segments: list[tuple[str, Any]], known: set[str], new: set[str]
) -> CacheUsage:
    """Token accounting with prompt caching: the longest cached breakpoint prefix is read,
    the part up to the last breakpoint is written, and every breakpoint becomes known."""
    texts = [text for text, _ in segments]
    usage = CacheUsage(total=estimate_tokens("\n".join(texts)) if texts else 0)
    points = [i for i, (_, cache_control) in enumerate(segments) if cache_control]
    if not points:
        return usage
    running = hashlib.blake2b(model.encode(), digest_size=16)
    digests: dict[int, str] = {}
    for index, text in enumerate(texts):
        running.update(b"\x00" + text.encode())
        if index in points:
            digests[index] = running.copy().hexdigest()
    read_at = max((i for i in points if digests[i] in known or digests[i] in new), default=-1)
    last = points[-1]
    prefix_tokens = {i: estimate_tokens("\n".join(texts[: i + 1])) for i in points}
    usage.read = prefix_tokens[read_at] if read_at >= 0 else 0
    usage.created = prefix_tokens[last] - usage.read if last > read_at else 0
    usage.ttl = segments[last][1].get("ttl", "5m")
    new.update(digests.values())
    return usage


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(b["text"] for b in content if b.get("type") == "text")


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return content_text(message["content"])
    return ""


def _stable_id(prefix: str, *parts: str) -> str:
    digest = hashlib.blake2b("\x00".join(parts).encode(), digest_size=12).hexdigest()
    return prefix + digest


def build_message(
    batch_id: str, custom_id: str, params: dict[str, Any], known: set[str], new: set[str]
) -> dict[str, Any]:
    """The succeeded result's Message, deterministic for a given batch and request."""
    model = params["model"]
    done = complete(
        model,
        last_user_text(params["messages"]),
        max_tokens=int(params["max_tokens"]),
        stop=params.get("stop_sequences"),
    )
    cache = cache_usage(model, prompt_segments(params), known, new)
    return {
        "id": _stable_id("msg_", batch_id, custom_id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": done.text, "citations": None}],
        "stop_reason": STOP_REASONS[done.finish],
        "stop_sequence": done.stop_sequence,
        "stop_details": None,
        "container": None,
        "usage": {
            "input_tokens": max(0, cache.total - cache.read - cache.created),
            "output_tokens": done.output_tokens,
            "cache_creation_input_tokens": cache.created,
            "cache_read_input_tokens": cache.read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": cache.created if cache.ttl == "5m" else 0,
                "ephemeral_1h_input_tokens": cache.created if cache.ttl == "1h" else 0,
            },
            "server_tool_use": None,
            "service_tier": "batch",
            "inference_geo": None,
        },
    }


def errored(kind: str, message: str, request_id: str) -> dict[str, Any]:
    return {
        "type": "errored",
        "error": {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": request_id,
        },
    }


# -- processing a whole batch --------------------------------------------------------------


@dataclass
class Plan:
    """Everything processing needs, owned by the worker thread (copies, not shared state)."""

    batch_id: str
    input_path: Path
    output_path: Path
    version: str
    run_limit: int  # requests from this index on are not run ...
    tail: str  # ... and end with this result type: "canceled" or "expired"
    fail_all: bool  # the batch_fail fate: every request that runs ends in api_error
    faults: FaultSet
    known_prefixes: set[str]


@dataclass
class Outcome:
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("processing", "succeeded", "errored", "canceled", "expired"), 0
        )
    )
    settled: list[tuple[str, str]] = field(default_factory=list)
    new_prefixes: set[str] = field(default_factory=set)


def process_batch(plan: Plan) -> Outcome:
    """Run every request of a batch, streaming its input file into its results file."""
    outcome = Outcome()
    tmp = plan.output_path.with_name(plan.output_path.name + ".part")
    window: list[str] = []
    with open(plan.input_path, encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as dst:
        for index, line in enumerate(src):
            request = json.loads(line)
            result, status = _run_one(plan, index, request, line, outcome.new_prefixes)
            params = request["params"]
            outcome.settled.append((item_digest(str(params.get("model", "")), params), status))
            outcome.counts[result["type"]] += 1
            record = {"custom_id": request["custom_id"], "result": result}
            window.append(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
            if len(window) >= SCRAMBLE_WINDOW:
                dst.write("\n".join(reversed(window)) + "\n")
                window.clear()
        if window:
            dst.write("\n".join(reversed(window)) + "\n")
    os.replace(tmp, plan.output_path)
    return outcome


def _run_one(
    plan: Plan, index: int, request: dict[str, Any], line: str, new: set[str]
) -> tuple[dict[str, Any], str]:
    custom_id, params = request["custom_id"], request["params"]
    request_id = _stable_id("req_", plan.batch_id, custom_id)
    if index >= plan.run_limit:
        return {"type": plan.tail}, RETRYABLE
    if plan.fail_all:
        return errored("api_error", "Internal server error", request_id), RETRYABLE
    try:
        check_params(params, plan.version)
    except ItemError as err:
        return errored(err.kind, err.message, request_id), FAILED
    injected = plan.faults.item_error(PROVIDER, params["model"], line)
    if injected is not None:
        kind, message, status = INJECTED[injected]
        return errored(kind, message, request_id), status
    reply = build_message(plan.batch_id, custom_id, params, plan.known_prefixes, new)
    return {"type": "succeeded", "message": reply}, SUCCEEDED
