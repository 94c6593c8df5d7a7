"""Prompt caching for Claude batches: mark a system prompt that several requests share.

Anthropic caches a prompt prefix only where the request marks it (``cache_control``); inside a
batch, requests run concurrently in any order, so the provider advises the 1-hour TTL for
batches (fact sheet §3.7). Which requests share a system prompt is only known once a batch is
put together, so this runs at submit time, as a pure function of the batch's items: the
stored request bodies stay as ingested, and a resubmission marks them again the same way.

The change is recorded on each result, from the provider's own cache counters, when the
outbox is written (:func:`cache_note`): batchd marks nothing it does not report, and what it
reports is what the provider says it did.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from adapters.base import BatchItem

CACHE_CONTROL = {"type": "ephemeral", "ttl": "1h"}
MODES = ("auto", "off")


def mark_shared_system_prompts(
    provider: str, items: Sequence[BatchItem], mode: str = "auto"
) -> list[BatchItem]:
    """``items`` with ``cache_control`` on every Claude system prompt that two or more items
    of this batch share. A body that already carries a ``cache_control`` anywhere is left
    alone: the user placed their own breakpoints (at most 4 are allowed per request)."""
    if provider != "anthropic" or mode != "auto":
        return list(items)
    keys = [_system_key(item.body) for item in items]
    shared = Counter(k for k in keys if k is not None)
    out: list[BatchItem] = []
    for item, key in zip(items, keys, strict=True):
        if key is None or shared[key] < 2 or has_cache_control(item.body):
            out.append(item)
            continue
        body = {**item.body, "system": _marked(item.body["system"])}
        out.append(BatchItem(key=item.key, body=body))
    return out


def _system_key(body: Mapping[str, Any]) -> str | None:
    system = body.get("system")
    if isinstance(system, str):
        return system or None
    if isinstance(system, list) and system:
        return json.dumps(system, sort_keys=True, separators=(",", ":"))
    return None


def _marked(system: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The system prompt as blocks, the last one marked (the cache covers everything up to
    and including the marked block)."""
    blocks = [{"type": "text", "text": system}] if isinstance(system, str) else list(system)
    return [*blocks[:-1], {**blocks[-1], "cache_control": dict(CACHE_CONTROL)}]


def has_cache_control(value: Any) -> bool:
    """Whether a body (or any part of it) carries a ``cache_control`` mark."""
    if isinstance(value, Mapping):
        return "cache_control" in value or any(has_cache_control(v) for v in value.values())
    if isinstance(value, list):
        return any(has_cache_control(v) for v in value)
    return False


def cache_note(
    provider: str | None, body: Mapping[str, Any] | None, usage: Mapping[str, Any] | None
) -> str | None:
    """The adaptation sentence for a Claude request whose shared system prompt batchd marked
    for caching, from the result's cache counters; None when batchd did not mark it."""
    if provider != "anthropic" or not body or has_cache_control(body) or not usage:
        return None
    written = int(usage.get("cache_creation_input_tokens") or 0)
    read = int(usage.get("cached_input_tokens") or 0)
    if not (written or read):
        return None
    done = []
    if written:
        done.append(f"{written} tokens written to the cache")
    if read:
        done.append(f"{read} tokens read from the cache")
    return (
        "system prompt shared in its batch marked for prompt caching (cache_control, 1h TTL): "
        + ", ".join(done)
    )
