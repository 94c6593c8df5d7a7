"""Anthropic Message Batches: running each request of a batch and writing its result.

Each request is checked (anthropic_checks), answered deterministically (answers.complete), its
prompt-cache use accounted (anthropic_cache: lanes, minimum prefix, TTL), and its result line
written. Everything here is pure computation plus file I/O, so a big batch can be processed in
a worker thread without touching the store or the event loop.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .answers import complete
from .anthropic_cache import PromptCache, prompt_segments
from .anthropic_checks import ItemError, check_params
from .faults import FaultSet
from .journal import FAILED, RETRYABLE, SUCCEEDED, item_digest

PROVIDER = "anthropic"
# Lines of the results file are written in reversed runs of this size: the real service does
# not keep request order either, so clients must match results by custom_id.
SCRAMBLE_WINDOW = 16

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
    batch_id: str, custom_id: str, params: dict[str, Any], cache: PromptCache, min_tokens: int
) -> dict[str, Any]:
    """The succeeded result's Message, deterministic for a given batch, request and cache."""
    model = params["model"]
    done = complete(
        model,
        last_user_text(params["messages"]),
        max_tokens=int(params["max_tokens"]),
        stop=params.get("stop_sequences"),
    )
    usage = cache.usage(model, prompt_segments(params), min_tokens)
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
            "input_tokens": max(0, usage.total - usage.read - usage.created),
            "output_tokens": done.output_tokens,
            "cache_creation_input_tokens": usage.created,
            "cache_read_input_tokens": usage.read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": usage.created_5m,
                "ephemeral_1h_input_tokens": usage.created_1h,
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
    cache: PromptCache  # the prompt cache as this run sees it; its changes are the caller's


@dataclass
class Outcome:
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("processing", "succeeded", "errored", "canceled", "expired"), 0
        )
    )
    settled: list[tuple[str, str]] = field(default_factory=list)


def process_batch(plan: Plan) -> Outcome:
    """Run every request of a batch, streaming its input file into its results file."""
    outcome = Outcome()
    tmp = plan.output_path.with_name(plan.output_path.name + ".part")
    window: list[str] = []
    with open(plan.input_path, encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as dst:
        for index, line in enumerate(src):
            request = json.loads(line)
            result, status = _run_one(plan, index, request, line)
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
    plan: Plan, index: int, request: dict[str, Any], line: str
) -> tuple[dict[str, Any], str]:
    custom_id, params = request["custom_id"], request["params"]
    request_id = _stable_id("req_", plan.batch_id, custom_id)
    if index >= plan.run_limit:
        return {"type": plan.tail}, RETRYABLE
    if plan.fail_all:
        return errored("api_error", "Internal server error", request_id), RETRYABLE
    try:
        model = check_params(params, plan.version)
    except ItemError as err:
        return errored(err.kind, err.message, request_id), FAILED
    injected = plan.faults.item_error(PROVIDER, params["model"], line)
    if injected is not None:
        kind, message, status = INJECTED[injected]
        return errored(kind, message, request_id), status
    reply = build_message(plan.batch_id, custom_id, params, plan.cache, model.cache_min_tokens)
    return {"type": "succeeded", "message": reply}, SUCCEEDED
