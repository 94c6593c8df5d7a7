"""Prompt caching for Claude batches: mark a system prompt that several requests share.

Anthropic caches a prompt prefix only where the request marks it (``cache_control``); inside a
batch, requests run concurrently in any order, so the provider advises the 1-hour TTL for
batches (fact sheet §3.7). Which requests share a system prompt is only known once a batch is
put together, so this runs at submit time, as a pure function of the batch's items: the
stored request bodies stay as ingested, and a resubmission marks them again the same way.

The change is recorded on each result, from the provider's own cache counters, when the
outbox is written (:func:`cache_note`): batchd marks nothing it does not report, and what it
reports is what the provider says it did.

``cache_priming`` (off by default) is implemented minimally, inside the same submit-time call:
before a batch whose requests share a marked system prompt goes out, one small request with
that prefix (``max_tokens`` 1) is submitted as a batch of its own and waited for (bounded by
``cache_priming_max_wait_s``), so the batch's requests read the cache instead of racing to
write it. The primer is not a request of the user's: it is not stored, has no result line, and
is not reconciled after a crash (a lost primer costs one tiny request and the batch simply
goes out unprimed). A prefix primed in the last 55 minutes (the cache lives an hour) is not
primed again by this process. Whether it paid off is in the summary's ``prompt_cache``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from loguru import logger

from adapters.base import AdapterError, BatchItem, ProviderAdapter

if TYPE_CHECKING:
    from .config import Config

CACHE_CONTROL = {"type": "ephemeral", "ttl": "1h"}
MODES = ("auto", "off")
PRIME_KEY = "cache-prime"
PRIME_AGAIN_AFTER_S = 55 * 60
# (model, prefix digest) -> when this process primed it (monotonic seconds).
_primed: dict[tuple[str, str], float] = {}


async def prepare_items(
    provider: str, model: str, items: Sequence[BatchItem], cfg: Config, adapter: ProviderAdapter
) -> list[BatchItem]:
    """A batch's items as they go out: shared Claude system prompts marked for caching and,
    with ``cache_priming``, the cache warmed first (see the module docstring)."""
    marked = mark_shared_system_prompts(provider, items, cfg.prompt_cache)
    if provider == "anthropic" and cfg.prompt_cache == "auto" and cfg.cache_priming:
        await _prime(adapter, model, marked, cfg)
    return marked


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


def _shared_marked_system(items: Sequence[BatchItem]) -> list[dict[str, Any]] | None:
    """The marked system prompt most requests of the batch share, if any was marked."""
    marked = [i.body["system"] for i in items if _is_marked_system(i.body.get("system"))]
    if len(marked) < 2:
        return None
    keys = Counter(json.dumps(m, sort_keys=True) for m in marked)
    return json.loads(keys.most_common(1)[0][0])


def _is_marked_system(system: Any) -> bool:
    return (
        isinstance(system, list)
        and bool(system)
        and system[-1].get("cache_control") == CACHE_CONTROL
    )


async def _prime(
    adapter: ProviderAdapter, model: str, items: Sequence[BatchItem], cfg: Config
) -> None:
    system = _shared_marked_system(items)
    if system is None:
        return
    digest = hashlib.sha256(json.dumps([model, system], sort_keys=True).encode()).hexdigest()
    last = _primed.get((model, digest))
    if last is not None and time.monotonic() - last < PRIME_AGAIN_AFTER_S:
        return
    log = logger.bind(provider="anthropic", model=model)
    body = {
        "model": model,
        "max_tokens": 1,
        "system": system,
        "messages": [{"role": "user", "content": "ok"}],
    }
    started = time.monotonic()
    try:
        submitted = await asyncio.wait_for(
            adapter.submit(f"batchd-prime-{digest[:12]}", model, [BatchItem(PRIME_KEY, body)]),
            cfg.request_timeout_s,
        )
        state = await _wait_ended(adapter, submitted.provider_batch_id, cfg)
    except (AdapterError, TimeoutError) as err:
        log.warning("cache priming skipped ({}); the batch goes out unprimed", err)
        return
    if state != "ended":
        what = (
            f"ended {state}"
            if state
            else f"still running after {cfg.cache_priming_max_wait_s:.0f}s"
        )
        log.warning("cache priming: primer batch {}; the batch goes out unprimed", what)
        return
    _primed[(model, digest)] = time.monotonic()
    log.info(
        "cache primed: batch {} ended in {:.1f}s",
        submitted.provider_batch_id,
        time.monotonic() - started,
    )
    with contextlib.suppress(AdapterError, TimeoutError):  # best effort, as for every batch
        await asyncio.wait_for(
            adapter.cleanup(submitted.provider_batch_id, None), cfg.request_timeout_s
        )


async def _wait_ended(adapter: ProviderAdapter, batch_id: str, cfg: Config) -> str | None:
    """Poll the primer with the batch poll backoff until it ends, at most
    ``cache_priming_max_wait_s``; its final state, or None when it is still running."""
    deadline = time.monotonic() + cfg.cache_priming_max_wait_s
    interval = cfg.poll_initial_s
    while True:
        status = await asyncio.wait_for(adapter.poll(batch_id), cfg.request_timeout_s)
        if status.state != "running":
            return status.state
        if time.monotonic() + interval > deadline:
            return None
        await asyncio.sleep(interval)
        interval = min(interval * cfg.poll_factor, cfg.poll_max_s)
