"""OpenAI answers: the deterministic chat.completion for a valid body, and the result lines.

A success line carries the completion; an error line the HTTP error the API would have answered;
an "unrun" line a request that never ran (window closed, batch cancelled). Pure computation, run
in a worker thread by the batch pipeline.
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
from .models import OpenAIModel
from .openai_chat import effective_effort, message_text
from .openai_errors import ItemError

# Reasoning tokens spent per visible answer token, by reasoning_effort.
EFFORT_FACTOR = {"minimal": 0.25, "low": 0.5, "medium": 1.0, "high": 2.0, "xhigh": 3.0, "max": 4.0}
CACHE_MIN_TOKENS = 1024  # automatic prompt caching starts at this prompt length
CACHE_STEP = 128  # cached prefixes are counted in steps of this many tokens


@dataclass
class Answer:
    """A chat.completion body and what prompt caching needs to know about its prompt."""

    body: dict[str, Any]
    prefix_key: str | None  # identity of the prompt prefix (all messages but the last)
    prefix_tokens: int


def prompt_tokens(body: dict[str, Any]) -> int:
    """Estimated prompt tokens of a request body (0 for what is not a list of messages)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    return sum(estimate_tokens(message_text(m)) for m in messages if isinstance(m, dict))


def answer_chat(body: dict[str, Any], entry: OpenAIModel) -> Answer:
    """The deterministic chat.completion for a valid body."""
    model = body["model"]
    messages = body["messages"]
    counts = [estimate_tokens(message_text(m)) for m in messages]
    prompt_tokens = sum(counts)
    prefix_tokens = prompt_tokens - counts[-1]
    last_user = next((message_text(m) for m in reversed(messages) if m["role"] == "user"), "")
    effort = effective_effort(body, entry)
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
    choices: list[dict[str, Any]] = [
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

