"""Polling in rounds: when each submitted batch is due for a status check, and the statuses of a
round's batches from the provider's list (one call per page) instead of one retrieve each.

The schedule is kept in memory (:class:`PollBook`), so a batch whose status has not changed costs
no SQL: the book learns of newly submitted batches from one cheap query (the newest
``submitted_at``), and the rows of the batches that are due are read once per round. A batch's
next poll depends on its age: ``age * (poll_factor - 1)``, between ``poll_initial_s`` and
``poll_max_s``, so the polls of a batch come at ages growing by ``poll_factor`` until the cap
(a six-hour batch takes some 30 status calls with the defaults). A batch whose status changed
has its row updated (status, counts and next poll, so a restart keeps them); after a restart
every open batch is due at once, and one round covers them.

A round with two or more batches due reads the provider's list, newest first, page by page, until
every due batch was seen, the pages reach batches created before the oldest of them, or the pages
read are as many as the batches still unseen (retrieving those one by one is then no dearer).
Every open batch the pages showed is brought up to date for free: an ended one is collected now,
a running one is rescheduled. A due batch the list did not show is retrieved on its own.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loguru import logger

from adapters.base import AdapterError, AuthError, BatchStatus

if TYPE_CHECKING:
    from .scheduler import Scheduler
    from .store import Store

LIST_MIN = 2  # due batches from which a round reads the list rather than retrieving each
LIST_SLACK_S = 300.0  # provider creation time vs. ours (clock skew, a slow create call)
DUE_EARLY = 0.25  # a batch joins a round this share of its interval before it is due


def poll_interval_s(age_s: float, *, initial_s: float, factor: float, max_s: float) -> float:
    """Seconds to the next poll of a batch submitted ``age_s`` ago: it grows with the age
    (``age * (factor - 1)``: polls at ages growing by ``factor``), between the bounds."""
    return min(max_s, max(initial_s, age_s * (factor - 1.0)))


@dataclass
class Entry:
    pid: str  # the provider's batch id
    submitted_at: float
    due_at: float
    interval_s: float = 0.0


class PollBook:
    """One provider account's submitted batches and when each is next due (in memory)."""

    def __init__(self) -> None:
        self.entries: dict[int, Entry] = {}  # batch row id -> its schedule
        self._newest: float | None = None  # the newest submitted_at loaded; None: load all

    def forget(self) -> None:
        """Load the whole book again at the next refresh (a batch was adopted)."""
        self._newest = None

    async def refresh(self, store: Store, provider: str, account: str) -> None:
        """Add the batches submitted since the last refresh (one scalar query when none was)."""
        newest = await store.last_submitted_at(provider, account)
        if newest is None:
            self.entries.clear()
            self._newest = None
            return
        if self._newest is not None and newest <= self._newest:
            return
        since = -1.0 if self._newest is None else self._newest
        now = time.time()
        for row_id, pid, submitted_at, next_poll_at in await store.poll_book(
            provider, account, since
        ):
            if row_id not in self.entries:
                due = now if next_poll_at is None else next_poll_at
                self.entries[row_id] = Entry(pid, submitted_at, due)
        self._newest = newest

    def due(self, now: float) -> list[int]:
        return [
            row_id
            for row_id, e in self.entries.items()
            if e.due_at - DUE_EARLY * e.interval_s <= now
        ]

    def next_at(self) -> float | None:
        return min((e.due_at for e in self.entries.values()), default=None)

    def schedule(
        self, row_id: int, pid: str, submitted_at: float, at: float, interval: float
    ) -> None:
        self.entries[row_id] = Entry(pid, submitted_at, at, interval)

    def drop(self, row_id: int) -> None:
        self.entries.pop(row_id, None)


async def listed_statuses(
    sched: Scheduler, provider: str, book: PollBook, due: Collection[int]
) -> dict[str, BatchStatus]:
    """The statuses of the book's batches that the provider's list shows, read page by page
    until the round has what it needs (see the module docstring). A failed read ends the
    listing (the due batches not seen are retrieved one by one); a refused key pauses the
    provider."""
    adapter = sched.providers[provider].adapter
    known = {e.pid for e in book.entries.values()}
    wanted = {book.entries[row_id].pid for row_id in due}
    since = min(book.entries[row_id].submitted_at for row_id in due) - LIST_SLACK_S
    found: dict[str, BatchStatus] = {}
    pages = 0
    pager = adapter.list_batches()
    try:
        while True:
            try:
                page = await sched.call(lambda: anext(pager))
            except StopAsyncIteration:
                break
            pages += 1
            found.update((s.provider_batch_id, s) for s in page if s.provider_batch_id in known)
            unseen = len(wanted - found.keys())
            created = [s.created_at for s in page if s.created_at is not None]
            if not unseen or (created and min(created) < since) or pages >= unseen:
                break
    except AuthError as err:
        sched.pause(provider, err)
    except AdapterError as err:
        logger.bind(provider=provider).warning(
            "listing batches failed ({}); the due batches are polled one by one", err
        )
    finally:
        close = getattr(pager, "aclose", None)  # an async generator's; ends its HTTP call
        if close is not None:
            await close()
    return found
