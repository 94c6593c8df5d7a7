"""A chunk of a batch's results written to the database (``Store.record_results``).

Two kinds of result come in: ``RequestUpdate`` dicts (``outcomes.item_update``: any outcome) and
the usual succeeded item as ``outcomes.answered`` gives it, a tuple of the request id, the result
JSON text and the answer's text, whose row is written by ``RECORD_SUCCEEDED`` (the constant
values in the statement) instead of ``RECORD_RESULT``, to the same stored values.

Only requests still waiting on the batch are touched, so a collection a crash cut short can be
run again and changes nothing it stored before, and a request that moved to another batch
never takes an old answer. For the usual results the chunk is first stored as if every one of
its requests still waits (the usual case): every answer, then every row under the condition;
when fewer rows changed than the chunk holds, the transaction is rolled back (nothing of it is
kept) and the chunk is stored again with the waiting requests read first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, NamedTuple

from adapters.jsontext import compact

from ..states import RequestStatus
from . import queries as q
from .base import answer_text
from .jobs import CANCELED_ERROR_JSON

if TYPE_CHECKING:
    import aiosqlite

    from ..outcomes import Answered, RequestUpdate

Transaction = Callable[[], AbstractAsyncContextManager["aiosqlite.Connection"]]


class Recorded(NamedTuple):
    results: int  # results given (stored, or left as they were: not waiting any more)
    requeued: bool  # some request went back to pending


class _NotAllWaiting(Exception):
    """Some of a chunk's usual results are not for requests still waiting on the batch (a
    collection run again after a crash, a request moved to another batch since)."""


async def record_chunk(
    transaction: Transaction,
    batch_id: int,
    updates: Sequence[RequestUpdate],
    answered: Sequence[Answered],
) -> Recorded:
    """Store ``updates`` and ``answered`` of one batch in one transaction (see the module
    docstring)."""
    now = time.time()
    batched = RequestStatus.BATCHED
    params = []
    answers = []
    again = []
    for u in updates:
        rid = u["request_id"]
        status = u["status"]
        result = u.get("result")
        error = u.get("error")
        params.append(
            (
                status,
                u["attempts_inc"],
                u.get("next_attempt_at", 0.0),
                None if result is None else compact(result),
                None if error is None else compact(error),
                now,
                rid,
                batch_id,
                batched,
            )
        )
        answer = u.get("answer")
        if answer is not None:
            answers.append((answer_text(answer), rid, batch_id, batched))
        if status == RequestStatus.PENDING:
            again.append(rid)
    chunk = (answered, answers, params, again)
    try:
        await _store(transaction, batch_id, chunk, now, every_one_waits=True)
    except _NotAllWaiting:  # rolled back: stored again, the waiting requests read first
        await _store(transaction, batch_id, chunk, now, every_one_waits=False)
    return Recorded(len(params) + len(answered), bool(again))


async def _store(
    transaction: Transaction,
    batch_id: int,
    chunk: tuple[Any, ...],
    now: float,
    every_one_waits: bool,
) -> None:
    """The chunk's statements, in one transaction."""
    answered, answers, params, again = chunk
    async with transaction() as db:
        if answered:  # answers first: their condition is the one the results change
            await _record_answered(db, batch_id, answered, now, every_one_waits)
        if answers:
            await db.executemany(q.RECORD_ANSWER, answers)
        if params:
            await db.executemany(q.RECORD_RESULT, params)
        if again:  # a canceled job's requests are not sent again: they end canceled
            await db.execute(
                q.CANCEL_REQUEUED,
                (
                    RequestStatus.CANCELED,
                    CANCELED_ERROR_JSON,
                    now,
                    json.dumps(again),
                    RequestStatus.PENDING,
                ),
            )


async def _record_answered(
    db: aiosqlite.Connection,
    batch_id: int,
    answered: Sequence[Answered],
    now: float,
    every_one_waits: bool,
) -> None:
    """Store the usual results of a chunk: for each request still waiting on the batch, its
    answer and its row, as RECORD_ANSWER and RECORD_RESULT would.

    ``every_one_waits``: the usual case, tried first. Every answer is stored, then every row
    (RECORD_SUCCEEDED keeps RECORD_RESULT's condition); when fewer rows changed than the chunk
    holds, some request was not waiting, and :class:`_NotAllWaiting` rolls the transaction
    back. Otherwise the requests still waiting are read first (SELECT_STILL_BATCHED, the same
    condition) and only theirs are stored."""
    if every_one_waits:
        await db.executemany(q.STORE_ANSWER, [(rid, raw) for rid, _, raw in answered])
        rows = [(text, now, rid, batch_id) for rid, text, _ in answered]
        if (await db.executemany(q.RECORD_SUCCEEDED, rows)).rowcount != len(answered):
            raise _NotAllWaiting
        return
    ids = json.dumps([rid for rid, _, _ in answered])
    waiting = await db.execute_fetchall(
        q.SELECT_STILL_BATCHED, (ids, batch_id, RequestStatus.BATCHED)
    )
    still = {row[0] for row in waiting}
    await db.executemany(q.STORE_ANSWER, [(rid, raw) for rid, _, raw in answered if rid in still])
    await db.executemany(
        q.RECORD_SUCCEEDED,
        [(text, now, rid, batch_id) for rid, text, _ in answered if rid in still],
    )
