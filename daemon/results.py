"""An ended batch's results streamed into the store, chunk by chunk (``collect.py`` decides
when, and what the requests without a result become).

Each result the adapter yields is matched to its request by key and turned into the request's
update: the usual answer (a succeeded item a field reader read) straight into the values its row
takes (``outcomes.answered``), any other item through ``outcomes.item_update``, to the same
stored values. ``RESULT_CHUNK`` results are stored per transaction, under
``asyncio.shield`` (storing is idempotent: a collection cut short is run again and changes
nothing it did before). A results line that is not JSON names no request
(``adapters.base.unreadable_line``): it is counted and reported once for the batch, and its
request stays outstanding, so the collector treats it as one the batch did not answer.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from adapters.base import UNREADABLE_KEY, ItemError, ResultsGone

from .outcomes import Answered, RequestUpdate, RetryAt, answered, item_update
from .text import plural

if TYPE_CHECKING:
    from loguru import Logger

    from .scheduler import Scheduler

RESULT_CHUNK = 2000  # results stored per transaction (500 cost ~15 us more a request)


async def store_results(
    sched: Scheduler,
    row: dict[str, Any],
    outstanding: dict[int, int],
    retry_at: RetryAt,
    log: Logger,
) -> tuple[dict[str, int], bool]:
    """Stream a batch's results into the store, chunk by chunk, taking each answered request
    out of ``outstanding``. Returns the outcome counts and whether the results were gone.
    A failure mid-stream keeps what was stored (storing is idempotent) and re-raises."""
    adapter = sched.providers[row["provider"]].adapter
    pid = row["provider_batch_id"]
    chunk: list[RequestUpdate] = []
    fast: list[Answered] = []  # the usual succeeded items (``outcomes.answered``)
    counts: dict[str, int] = {}
    gone = False
    policy = sched.policy
    unreadable = 0  # lines that named no request; the first one's reason is reported
    first: ItemError | None = None
    try:
        async for item in adapter.results(pid):
            rid = _request_id(item.key)
            attempts = outstanding.pop(rid, None)
            if attempts is None:  # not of this batch, or answered already
                if item.key == UNREADABLE_KEY:  # its request stays outstanding: missing
                    unreadable += 1
                    first = first or item.error
                continue
            done = answered(rid, item)
            if done is not None:
                fast.append(done)
            else:
                chunk.append(item_update(rid, attempts, item, policy, retry_at))
            counts[item.outcome] = counts.get(item.outcome, 0) + 1
            if len(chunk) + len(fast) >= RESULT_CHUNK:
                await asyncio.shield(sched.store.record_results(row["id"], chunk, fast))
                chunk, fast = [], []
    except ResultsGone as err:
        gone = True
        log.bind(event="batch.results_gone", error_kind="results_gone").error(
            "results of batch {} are gone ({}); {} re-queued",
            pid,
            err,
            plural(len(outstanding), "request"),
        )
    finally:
        if chunk or fast:
            await asyncio.shield(sched.store.record_results(row["id"], chunk, fast))
        if unreadable:
            log.bind(event="batch.results_unreadable", error_kind="malformed_result").error(
                "{} of batch {} could not be read ({}); their requests count as missing",
                plural(unreadable, "result line"),
                pid,
                first.message if first is not None else "no reason",
            )
    return counts, gone


def _request_id(key: str) -> int:
    try:
        return int(key.removeprefix("r"))
    except ValueError:
        return -1
