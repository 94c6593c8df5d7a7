"""The due book: the pending requests per lane, kept in memory beside the database.

The planner asks, at every plan and before every claim, which requests are due per provider,
model and file (a *lane*), how many, and since when; and when the next one comes due. Asked
of SQLite, that is a pass over every pending request each time (4.9 ms at 10,000 pending,
some 1,200 times for 400 batches: docs/performance.md). The book holds the answer instead,
as counts: per lane, the pending requests in *buckets* of equal ``(next_attempt_at,
updated_at)`` (a chunk of ingested lines, or the requests a batch sent back, share one), so
the due counts, the oldest due time (``MIN(MAX(next_attempt_at, updated_at))``) and the next
due time come out exactly as a grouping of the pending rows would give them (the query
``tests/test_planning_book.py`` holds the book to), from a handful of buckets.

The database stays the source of truth: the book is built from it (one grouped read of the
pending range of the open requests' index, :data:`queries.SELECT_PENDING_BUCKETS`), kept
exact by the writes that know what they changed (a claim takes counted buckets, an ingest
adds one), and dropped, to be built again at the next read, by every other write that moves
requests into or out of pending (see ``PlanningStore.due_changed``), by a write of another
connection (``batchd cancel`` beside the daemon: ``PRAGMA data_version``), and after
``MAX_AGE_S`` whatever happened.
This module holds the structure only; ``planning.py`` reads and keeps it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_AGE_S = 60.0  # the book is read again from the database at least this often

Lane = tuple[str, str, int]  # provider, model, file
Bucket = tuple[float, float]  # next_attempt_at, updated_at


@dataclass
class DueBook:
    version: int  # the database's data_version when read
    built_at: float  # monotonic clock
    lanes: dict[Lane, dict[Bucket, int]] = field(default_factory=dict)

    @classmethod
    def of_rows(
        cls, rows: Iterable[Sequence[Any]], *, version: int, built_at: float
    ) -> DueBook:
        """From ``(provider, model, file, next_attempt_at, updated_at, count)`` rows; a row
        with an empty column (a request without a model never goes out) is left out."""
        book = cls(version, built_at)
        for provider, model, file_id, nat, upd, n in rows:
            if None in (provider, model, file_id, nat, upd, n):
                continue
            book.add((str(provider), str(model), int(file_id)), (float(nat), float(upd)), int(n))
        return book

    def add(self, lane: Lane, bucket: Bucket, n: int) -> None:
        buckets = self.lanes.setdefault(lane, {})
        buckets[bucket] = buckets.get(bucket, 0) + n

    def take(self, lane: Lane, bucket: Bucket, n: int) -> bool:
        """``n`` requests of the bucket left pending; False when the book did not hold them
        (it is then no longer exact: the caller drops it)."""
        buckets = self.lanes.get(lane)
        held = 0 if buckets is None else buckets.get(bucket, 0)
        if buckets is None or held < n:
            return False
        if held == n:
            del buckets[bucket]
            if not buckets:
                del self.lanes[lane]
        else:
            buckets[bucket] = held - n
        return True

    def drop_lane(self, lane: Lane) -> None:
        """Every pending request of the lane left pending."""
        self.lanes.pop(lane, None)

    def due(
        self, now: float, provider: str | None = None, model: str | None = None
    ) -> Iterator[tuple[Lane, int, float]]:
        """``(lane, due count, oldest)`` of each lane with requests due by ``now`` (of one
        model when given): the oldest is when the longest-waiting of them became due."""
        for lane, buckets in self.lanes.items():
            if provider is not None and (lane[0] != provider or lane[1] != model):
                continue
            n, oldest = 0, None
            for (nat, upd), count in buckets.items():
                if nat <= now:
                    n += count
                    ready = max(nat, upd)
                    oldest = ready if oldest is None else min(oldest, ready)
            if n and oldest is not None:
                yield lane, n, oldest

    def next_due_at(self) -> float | None:
        """The earliest ``next_attempt_at`` of any pending request (None: none is pending)."""
        return min((nat for b in self.lanes.values() for nat, _ in b), default=None)
