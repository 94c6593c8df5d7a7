"""How requests fill a batch: one rule, used by the scheduler's claim and by ``batchd check``.

Greedy, in order: a batch takes requests until the next one would exceed the batch's item
count or the provider's byte cap. Each request is charged its body's size plus a fixed
per-item overhead (the provider's envelope around the body: ``custom_id``, ``method``, ``url``
or ``key``/``request``, separators), so a batch of small bodies cannot creep over the cap.
A single request larger than the cap still gets a batch of its own (the provider then says
why it refuses it, for that request alone).

A batch may also be held to an estimate of its prompt tokens (an enqueued-token budget,
``daemon/budgets.py``). The estimate is the request body's size in UTF-8 bytes / 4 (rounded
up): no tokenizer runs, the size is already known, and it never counts fewer tokens than
characters / 4 of the prompt text (see docs/performance.md for its accuracy).

:data:`CHARS_PER_TOKEN` is batchd's one figure for "4 characters a token": the budgets here,
``batchd check``'s input-token estimate, ``batchd status``'s tokens in flight and the prompt
caching decision (``daemon/caching.py``) all divide by it.
"""

from __future__ import annotations

from dataclasses import dataclass

ITEM_OVERHEAD_BYTES = 256
CHARS_PER_TOKEN = 4  # characters (or UTF-8 bytes) of a prompt per token, as estimated


def estimate_tokens(size_bytes: int) -> int:
    """Estimated prompt tokens of a request whose body is ``size_bytes`` of UTF-8 JSON."""
    return max(1, -(-size_bytes // CHARS_PER_TOKEN))


def item_bytes(size_bytes: int) -> int:
    """What one request counts against a batch's byte cap."""
    return size_bytes + ITEM_OVERHEAD_BYTES


@dataclass
class BatchPacker:
    """Feed request sizes in order; ``add`` says whether the request opens a new batch."""

    max_items: int
    max_bytes: int
    max_tokens: int | None = None  # estimated prompt tokens per batch (None: no limit)
    batches: int = 0
    _items: int = 0
    _bytes: int = 0
    _tokens: int = 0

    @property
    def tokens(self) -> int:
        """Estimated prompt tokens of the current batch."""
        return self._tokens

    def fits(self, size_bytes: int) -> bool:
        """Whether a request of ``size_bytes`` still fits the current (non-empty) batch."""
        return (
            self._items > 0
            and self._items < self.max_items
            and self._bytes + item_bytes(size_bytes) <= self.max_bytes
            and (
                self.max_tokens is None
                or self._tokens + estimate_tokens(size_bytes) <= self.max_tokens
            )
        )

    def add(self, size_bytes: int) -> bool:
        """Count one request; True when it starts a new batch. (``fits`` and then the counts,
        written out: the claim calls this once per request.)"""
        charged = size_bytes + ITEM_OVERHEAD_BYTES  # item_bytes
        estimate = max(1, -(-size_bytes // CHARS_PER_TOKEN))  # estimate_tokens
        items = self._items
        if (
            items > 0
            and items < self.max_items
            and self._bytes + charged <= self.max_bytes
            and (self.max_tokens is None or self._tokens + estimate <= self.max_tokens)
        ):
            self._items = items + 1
            self._bytes += charged
            self._tokens += estimate
            return False
        self.batches += 1
        self._items = 1
        self._bytes = charged
        self._tokens = estimate
        return True
