"""Prompt caching for Claude batches: mark a shared system prompt only where it pays.

Anthropic caches a prompt prefix only where the request marks it (``cache_control``). Which
requests share a system prompt is only known once a batch is put together, so this runs at
submit time, as a function of the batch's items: the stored request bodies stay as ingested,
and a resubmission decides again the same way.

``prompt_cache = "auto"`` marks a system prompt that two or more requests of the batch share
when all of these hold:

* the prefix (tools and system prompt, estimated at 4 characters per token) reaches the
  model's minimum cacheable prefix (``cache_min_tokens`` in the registry: 1,024, 2,048 or
  4,096 tokens). Below it the provider neither writes nor reads the cache, so a mark would
  promise a saving that cannot happen;
* caching is expected to cost less than not caching, with the time to live (5 minutes or 1
  hour) whose expected cost is lower for the batch's size. The cost model, in units of "the
  prefix once at the input price", with the model's own prices where the registry has them
  (a 5-minute write costs w5 = 1.25, a 1-hour write w1h = 2, a read r = 0.1):

  - off: ``n`` (every request pays the prefix in full);
  - a batch's requests run concurrently, in any order, best effort. Assume ``L`` lanes
    (``ASSUMED_LANES`` = 8): the first ``min(n, L)`` requests start before any write has
    finished, so each of them writes;
  - every later request reads: each lane runs its requests back to back and every read
    refreshes the entry, so it does not lapse while the batch runs;
  - cost(TTL) = ``min(n, L) * w + (n - min(n, L)) * r``.

  So the 5-minute TTL, whose writes are cheaper, always wins without priming, and a prompt
  shared by 10 requests or fewer is not marked (8 of them may write: for 10 requests off
  10.0, 5m 10.2; for 11 off 11.0, 5m 10.3; for 100 off 100, 5m 19.2, 1h 25.2).
  ``bench/caching_cost.py`` measures this on the emulator, which runs a batch in lanes the
  same way: with 8 lanes the measured costs are these figures exactly, and 11 or 12 requests
  already save (6% and 13%), which a model that also let the entry lapse between requests
  spread over an hour did not mark.
* with ``cache_priming`` on, one small request with the prefix runs first as a batch of its
  own and the batch waits for it, so every request reads: cost = ``w1h + n * r``. Priming
  uses the 1-hour TTL, because the batch may start more than 5 minutes after the primer
  ended (it queues like any batch), which would lose a 5-minute entry.

The decision and its figures are logged once per batch (``prompt cache: ...``). What the
provider then did is recorded on each result from its own counters (:func:`cache_note`),
and the summary's ``prompt_cache.paid_off`` is computed from what was charged (reads at the
read price, writes at their TTL's write price: :mod:`daemon.cost`), not from this estimate.

The primer is implemented minimally: it is not a request of the user's (no result line, not
stored, not reconciled after a crash: a lost primer costs one tiny request and the batch goes
out unprimed), a failed or slow primer never holds the batch back beyond
``cache_priming_max_wait_s``, and a prefix primed in the last 55 minutes is not primed again
by this process. Its own cost (one 1-hour write of the prefix) is logged, and is in no
file's summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loguru import logger

from adapters.base import AdapterError, BatchItem, ProviderAdapter

from .config import Config, adapt_policy
from .cost import cache_writes
from .logs import call_error_kind
from .packing import CHARS_PER_TOKEN
from .registry import ModelInfo

MODES = ("auto", "off")
TTLS = ("5m", "1h")
# The provider's multipliers of the input price, used where the registry has no prices.
WRITE_MULTIPLIER = {"5m": 1.25, "1h": 2.0}
READ_MULTIPLIER = 0.1
ASSUMED_LANES = 8
PRIME_KEY = "cache-prime"
PRIME_AGAIN_AFTER_S = 55 * 60
# (model, prefix digest) -> when this process primed it (monotonic seconds).
_primed: dict[tuple[str, str], float] = {}


@dataclass(frozen=True)
class CachePlan:
    """The decision for one system prompt shared in a batch, with the figures behind it."""

    shared: int  # requests of the batch sharing the prompt
    prefix_tokens: int  # estimated (characters / CHARS_PER_TOKEN)
    min_tokens: int
    ttl: str | None  # "5m", "1h", or None: not marked
    prime: bool
    costs: Mapping[str, float]  # expected cost per option, in "prefix at input price" units

    def explain(self, model: str) -> str:
        """One log line: what was decided and why."""
        head = f"{self.shared} requests share a system prompt of ~{self.prefix_tokens} tokens"
        if self.prefix_tokens < self.min_tokens:
            return (
                f"{head}: not marked, below {model}'s minimum cacheable prefix of "
                f"{self.min_tokens} tokens"
            )
        figures = ", ".join(f"{k} {v:.1f}" for k, v in self.costs.items())
        what = f"marked with the {self.ttl} TTL" if self.ttl else "not marked"
        if self.prime:
            what += ", primed first"
        return f"{head}: {what} (expected cost in units of the prefix at input price: {figures})"


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """The cacheable prefix of a Claude body (tools, then system) at 4 characters a token."""
    system = body.get("system")
    if isinstance(system, list):
        chars = sum(len(str(b.get("text", ""))) for b in system if isinstance(b, Mapping))
    else:
        chars = len(system) if isinstance(system, str) else 0
    if body.get("tools"):
        chars += len(json.dumps(body["tools"], separators=(",", ":")))
    return chars // CHARS_PER_TOKEN


def _multipliers(info: ModelInfo | None) -> tuple[dict[str, float], float]:
    p = info.prices if info is not None else None
    if p is None or not p.input or None in (p.cache_write_5m, p.cache_write, p.cached_input):
        return dict(WRITE_MULTIPLIER), READ_MULTIPLIER
    writes = {"5m": (p.cache_write_5m or 0.0) / p.input, "1h": (p.cache_write or 0.0) / p.input}
    return writes, (p.cached_input or 0.0) / p.input


def expected_cost(n: int, write: float, read: float) -> float:
    """Expected cost of a prefix shared by ``n`` concurrent requests, for the TTL whose write
    costs ``write`` (see the module doc)."""
    first = min(n, ASSUMED_LANES)
    return first * write + (n - first) * read


def plan_cache(
    shared: int,
    prefix_tokens: int,
    min_tokens: int,
    *,
    priming: bool = False,
    info: ModelInfo | None = None,
) -> CachePlan:
    """Whether to mark a prefix ``shared`` requests of a batch use, and with which TTL."""
    writes, read = _multipliers(info)
    costs = {"off": float(shared)}
    for option in TTLS:
        costs[option] = expected_cost(shared, writes[option], read)
    costs["primed 1h"] = writes["1h"] + shared * read
    ttl: str | None = None
    prime = False
    if shared >= 2 and prefix_tokens >= min_tokens:
        if priming:
            prime = costs["primed 1h"] < costs["off"]
            ttl = "1h" if prime else None
        else:
            best = min(("off", *TTLS), key=lambda k: costs[k])
            ttl = None if best == "off" else best
    rounded = {k: round(v, 2) for k, v in costs.items()}
    return CachePlan(shared, prefix_tokens, min_tokens, ttl, prime, rounded)


async def prepare_items(
    provider: str, model: str, items: Sequence[BatchItem], cfg: Config, adapter: ProviderAdapter
) -> Sequence[BatchItem]:
    """A batch's items as they go out: shared Claude system prompts marked for caching where
    it pays and, with ``cache_priming``, the cache warmed first (see the module docstring).
    ``items`` are returned as they are when there is nothing to mark (a claimed batch's items
    are read from the store as they are sent, never all held in memory)."""
    if provider != "anthropic" or cfg.prompt_cache != "auto":
        return items
    items = await asyncio.to_thread(list, items)  # read once, looked at several times
    info = adapt_policy(cfg).registry.info(model, provider)
    plans = plan_batch(items, info, priming=cfg.cache_priming)
    log = logger.bind(provider=provider, model=model, event="cache.plan")
    for plan in plans.values():
        log.info("prompt cache: {}", plan.explain(model))
    marked = mark(items, plans)
    primed = [k for k, plan in plans.items() if plan.prime]
    if primed:
        best = max(primed, key=lambda k: plans[k].shared)
        at = next(n for n, i in enumerate(items) if _system_key(i.body) == best)
        await _prime(adapter, model, marked[at].body["system"], cfg)
    return marked


def plan_batch(
    items: Sequence[BatchItem], info: ModelInfo, *, priming: bool = False
) -> dict[str, CachePlan]:
    """A plan per system prompt that two or more items share (bodies carrying their own
    ``cache_control`` are left out: the user placed their own breakpoints)."""
    keys = [None if has_cache_control(i.body) else _system_key(i.body) for i in items]
    shared = Counter(k for k in keys if k is not None)
    min_tokens = info.cache_min_tokens or 0
    plans: dict[str, CachePlan] = {}
    for item, key in zip(items, keys, strict=True):
        if key is None or shared[key] < 2 or key in plans:
            continue
        tokens = estimate_tokens(item.body)
        plans[key] = plan_cache(shared[key], tokens, min_tokens, priming=priming, info=info)
    return plans


def mark(items: Sequence[BatchItem], plans: Mapping[str, CachePlan]) -> list[BatchItem]:
    """``items`` with ``cache_control`` (the plan's TTL) on the system prompts to cache."""
    out: list[BatchItem] = []
    for item in items:
        key = None if has_cache_control(item.body) else _system_key(item.body)
        plan = plans.get(key) if key is not None else None
        if plan is None or plan.ttl is None:
            out.append(item)
            continue
        body = {**item.body, "system": _marked(item.body["system"], plan.ttl)}
        out.append(BatchItem(key=item.key, body=body))
    return out


def _system_key(body: Mapping[str, Any]) -> str | None:
    system = body.get("system")
    if isinstance(system, str):
        return system or None
    if isinstance(system, list) and system:
        return json.dumps(system, sort_keys=True, separators=(",", ":"))
    return None


def _marked(system: str | list[dict[str, Any]], ttl: str) -> list[dict[str, Any]]:
    """The system prompt as blocks, the last one marked (the cache covers everything up to
    and including the marked block)."""
    blocks = [{"type": "text", "text": system}] if isinstance(system, str) else list(system)
    control = {"type": "ephemeral", "ttl": ttl}
    return [*blocks[:-1], {**blocks[-1], "cache_control": control}]


def has_cache_control(value: Any) -> bool:
    """Whether a body (or any part of it) carries a ``cache_control`` mark."""
    if isinstance(value, Mapping):
        return "cache_control" in value or any(has_cache_control(v) for v in value.values())
    if isinstance(value, list):
        return any(has_cache_control(v) for v in value)
    return False


def cache_note(
    provider: str | None,
    body: Mapping[str, Any] | None,
    usage: Mapping[str, Any] | None,
    response: Mapping[str, Any] | None = None,
) -> str | None:
    """The adaptation sentence for a Claude request whose shared system prompt batchd marked
    for caching, from the provider's own counters (``response`` is its raw answer, which
    says the TTL of a write); None when batchd did not mark it."""
    if provider != "anthropic" or not body or has_cache_control(body) or not usage:
        return None
    writes = cache_writes(usage, response)
    read = int(usage.get("cached_input_tokens") or 0)
    done = [
        f"{tokens} tokens written to the cache{ttl}"
        for tokens, ttl in (
            (writes.five_m, " (5m TTL)"),
            (writes.one_h, " (1h TTL)"),
            (writes.unsplit, ""),
        )
        if tokens
    ]
    if read:
        done.append(f"{read} tokens read from the cache")
    if not done:
        return None
    return "system prompt shared in its batch marked for prompt caching: " + ", ".join(done)


async def _prime(adapter: ProviderAdapter, model: str, system: Any, cfg: Config) -> None:
    digest = hashlib.sha256(json.dumps([model, system], sort_keys=True).encode()).hexdigest()
    last = _primed.get((model, digest))
    if last is not None and time.monotonic() - last < PRIME_AGAIN_AFTER_S:
        return
    log = logger.bind(provider="anthropic", model=model, event="cache.prime")
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
        log.bind(error_kind=call_error_kind(err)).warning(
            "cache priming skipped ({}); the batch goes out unprimed", err
        )
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
    written = await _primer_writes(adapter, submitted.provider_batch_id, cfg)
    log.bind(elapsed_s=time.monotonic() - started).info(
        "cache primed: batch {} ended in {:.1f}s; it wrote {} tokens to the cache (its cost is "
        "in no file's summary)",
        submitted.provider_batch_id,
        time.monotonic() - started,
        "an unknown number of" if written is None else written,
    )
    with contextlib.suppress(AdapterError, TimeoutError):  # best effort, as for every batch
        await asyncio.wait_for(
            adapter.cleanup(submitted.provider_batch_id, None), cfg.request_timeout_s
        )


async def _primer_writes(adapter: ProviderAdapter, batch_id: str, cfg: Config) -> int | None:
    """The cache-write tokens the primer reported (for the log); None if unreadable."""

    async def first() -> int | None:
        async for result in adapter.results(batch_id):
            return result.usage.cache_creation_input_tokens
        return None

    try:
        return await asyncio.wait_for(first(), cfg.request_timeout_s)
    except (AdapterError, TimeoutError):
        return None


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
