"""The journal: every call the emulator answered, and per-provider counters.

``duplicate_items`` is the number the daemon's tests care about: an item whose (model, body)
content was already received in an earlier batch, where that earlier receipt was not settled
as a retryable failure (rate limit, overload, server error, expiry, cancellation before it
ran). Re-sending an item after a retryable failure is a retry; re-sending one that succeeded,
failed for good or is still being processed would be paying twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from typing import Any

from .store import EmulatorStore

# Item ledger statuses.
PENDING = "pending"
SUCCEEDED = "succeeded"
FAILED = "failed"  # permanent
RETRYABLE = "retryable"  # rate limit, overload, server error, expired, canceled before running
BILLABLE = {PENDING, SUCCEEDED, FAILED}

MAX_CALLS_KEPT = 100_000


def item_digest(model: str, body: Any) -> str:
    """Content digest of one item: its model and its request body, key order ignored."""
    canonical = json.dumps([model, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


class Journal:
    def __init__(self, store: EmulatorStore) -> None:
        self._store = store
        self.calls: deque[dict[str, Any]] = deque(maxlen=MAX_CALLS_KEPT)

    def record_call(
        self,
        provider: str,
        route: str,
        method: str,
        path: str,
        status: int,
        size: int | None = None,
        query: str = "",
    ) -> None:
        """One answered call; ``size`` is the request body's Content-Length (bytes on the wire),
        ``query`` the URL's query string (a list call's page parameters)."""
        self.calls.append(
            {
                "t": round(time.time(), 3),
                "provider": provider,
                "route": route,
                "method": method,
                "path": path,
                "status": status,
                "bytes": size,
                "query": query,
            }
        )

    def count(self, provider: str, name: str, value: int = 1) -> None:
        self._store.add_counter(provider, name, value)

    def receive_items(self, provider: str, digests: list[str]) -> int:
        """Record a new batch's items; returns how many of them are duplicates."""
        earlier = self._store.item_statuses(provider, digests)
        duplicates = sum(1 for d in digests if earlier.get(d) in BILLABLE)
        seen_in_batch: set[str] = set()
        pairs = []
        for d in digests:
            if d in seen_in_batch:
                continue
            seen_in_batch.add(d)
            pairs.append((d, PENDING))
        self._store.set_item_statuses(provider, pairs)
        self.count(provider, "batches_created")
        self.count(provider, "items_received", len(digests))
        self.count(provider, "duplicate_items", duplicates)
        return duplicates

    def settle_items(self, provider: str, outcomes: list[tuple[str, str]]) -> None:
        """Record how items ended (SUCCEEDED, FAILED or RETRYABLE)."""
        self._store.set_item_statuses(provider, outcomes)
        for status in (SUCCEEDED, FAILED, RETRYABLE):
            n = sum(1 for _, s in outcomes if s == status)
            if n:
                self.count(provider, f"items_{status}", n)

    def snapshot(self, limit: int | None = None) -> dict[str, Any]:
        counters = self._store.counters()
        providers = {}
        for p in ("openai", "anthropic", "gemini"):
            c = counters.get(p, {})
            providers[p] = {
                "batches_created": c.get("batches_created", 0),
                "items_received": c.get("items_received", 0),
                "duplicate_items": c.get("duplicate_items", 0),
                "items_succeeded": c.get("items_succeeded", 0),
                "items_failed": c.get("items_failed", 0),
                "items_retryable": c.get("items_retryable", 0),
                # Batches refused for an enqueued-token or concurrency quota (settings.py).
                "enqueued_limit_refusals": c.get("enqueued_limit_refusals", 0),
                **{k: v for k, v in c.items() if k.startswith("faults_")},
            }
        calls = list(self.calls)
        if limit is not None:
            calls = calls[-limit:]
        return {"providers": providers, "calls": calls, "calls_total": len(self.calls)}

    def reset(self) -> None:
        self.calls.clear()
