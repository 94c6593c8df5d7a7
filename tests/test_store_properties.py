"""A stateful property test (hypothesis) of ``Store.record_results`` on a real SQLite file.

Hypothesis drives a sequence of what the scheduler does to a handful of requests: claim a batch,
record a chunk of its results (any mix of answers, failures, expiries and retries), record an
earlier chunk again (a collection re-run after a crash, or a late chunk of a batch whose
requests were requeued and claimed into a new batch since), abort a batch (requeue, with or
without an attempt counted). After every step the database must match a plain model of the
rules, and:

* a request that reached a final status never changes again (status, attempts, result, error);
* attempts are never counted twice: at most one per batch the request was claimed into;
* a replayed chunk changes nothing.

Short profile in ``make test``; ``HYPOTHESIS_PROFILE=long`` (or ``bench/properties.py``) runs
many more and longer sequences.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from daemon.outcomes import RequestUpdate
from daemon.states import REQUEST_FINAL, RequestStatus
from daemon.store import Store, iter_file_rows

T = TypeVar("T")

settings.register_profile(
    "long", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])
LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"

N = 6  # requests
MAX_ATTEMPTS = 3
OUTCOMES = (
    RequestStatus.SUCCEEDED,
    RequestStatus.FAILED,
    RequestStatus.EXPIRED,
    RequestStatus.PENDING,  # a retry
)


def _update(rid: int, status: RequestStatus, n: int) -> RequestUpdate:
    update = RequestUpdate(
        request_id=rid,
        status=status,
        attempts_inc=1,
        result={"text": f"answer {n}"} if status == RequestStatus.SUCCEEDED else None,
        error=None if status == RequestStatus.SUCCEEDED else {"type": str(status), "n": n},
    )
    if status == RequestStatus.PENDING:
        update["next_attempt_at"] = float(n)
    return update


class RecordResults(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="batchd-props-"))
        self.loop = asyncio.new_event_loop()
        self.store = self.run(Store(self.dir / "b.sqlite3").open())
        self.file_id = self.run(self.store.claim_file("a.jsonl", "/in", "/w", 1))
        rows = [
            {
                "line": i,
                "custom_id": f"c{i}",
                "model": "m",
                "provider": "openai",
                "body": {"n": i},
                "size_bytes": 10,
                "status": RequestStatus.PENDING,
            }
            for i in range(1, N + 1)
        ]
        self.run(self.store.add_requests(self.file_id, rows))
        ids = [r["id"] for r in iter_file_rows(self.store.path, self.file_id)]
        # the model: what each request's row must say
        self.model: dict[int, dict[str, Any]] = {
            rid: {"status": RequestStatus.PENDING, "attempts": 0, "batch_id": None}
            for rid in ids
        }
        self.claims: dict[int, int] = dict.fromkeys(ids, 0)  # batches each request was in
        self.members: dict[int, list[int]] = {}  # batch -> the requests claimed into it
        self.chunks: list[tuple[int, list[RequestUpdate]]] = []  # every chunk recorded
        self.final: dict[int, dict[str, Any]] = {}  # a final request's row when it got there
        self.n = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- what the scheduler does -----------------------------------------------------------
    @rule(max_items=st.integers(min_value=1, max_value=N))
    def claim(self, max_items: int) -> None:
        tag = f"t{len(self.members)}"
        claimed = self.run(
            self.store.claim_batch_items(
                "openai", "m", tag, "acct", max_items=max_items, max_bytes=10**9, now=1e18
            )
        )
        pending = [r for r, m in self.model.items() if m["status"] == RequestStatus.PENDING]
        if claimed is None:
            assert not pending
            return
        batch_id, rows = claimed
        rids = list(rows.ids)
        assert set(rids) <= set(pending) and len(rids) == min(max_items, len(pending))
        self.members[batch_id] = rids
        for rid in rids:
            self.model[rid].update(status=RequestStatus.BATCHED, batch_id=batch_id)
            self.claims[rid] += 1

    @precondition(lambda self: self.members)
    @rule(data=st.data())
    def record(self, data: st.DataObject) -> None:
        batch_id = data.draw(st.sampled_from(sorted(self.members)))
        rids = data.draw(st.lists(st.sampled_from(self.members[batch_id]), min_size=1, unique=True))
        chunk = []
        for rid in rids:
            self.n += 1
            chunk.append(_update(rid, data.draw(st.sampled_from(OUTCOMES)), self.n))
        self._record(batch_id, chunk)
        self.chunks.append((batch_id, chunk))

    @precondition(lambda self: self.chunks)
    @rule(data=st.data())
    def record_again(self, data: st.DataObject) -> None:
        """A chunk recorded before, again: a collection re-run after a crash, or a late chunk
        of a batch whose requests have moved on (answered, requeued, claimed again)."""
        batch_id, chunk = data.draw(st.sampled_from(self.chunks))
        before = self._rows()
        self._record(batch_id, chunk)
        if all(self.model[u["request_id"]]["batch_id"] != batch_id for u in chunk):
            assert self._rows() == before  # nothing of it applies any more: nothing changed

    @precondition(lambda self: self.members)
    @rule(data=st.data(), count=st.booleans())
    def abort(self, data: st.DataObject, count: bool) -> None:
        batch_id = data.draw(st.sampled_from(sorted(self.members)))
        self.run(
            self.store.abort_batch(
                batch_id,
                "boom",
                next_attempt_at=0.0,
                count_attempt=count,
                max_attempts=MAX_ATTEMPTS,
                final_error={"type": "batch_failed"},
            )
        )
        for m in self.model.values():
            if m["batch_id"] == batch_id and m["status"] == RequestStatus.BATCHED:
                m["attempts"] += int(count)
                exhausted = m["attempts"] >= MAX_ATTEMPTS  # already out of attempts, or now
                m["status"] = RequestStatus.FAILED if exhausted else RequestStatus.PENDING
                m["batch_id"] = None

    def _record(self, batch_id: int, chunk: list[RequestUpdate]) -> None:
        self.run(self.store.record_results(batch_id, chunk))
        for u in chunk:
            m = self.model[u["request_id"]]
            if m["batch_id"] == batch_id and m["status"] == RequestStatus.BATCHED:
                m["status"] = u["status"]  # batch_id: still the batch that answered it
                m["attempts"] += u["attempts_inc"]

    def _rows(self) -> dict[int, dict[str, Any]]:
        return {r["id"]: r for r in iter_file_rows(self.store.path, self.file_id)}

    # -- what must hold after every step ---------------------------------------------------
    @invariant()
    def holds(self) -> None:
        rows = self._rows()
        for rid, row in rows.items():
            # the rows match the model
            got = {k: row[k] for k in ("status", "attempts", "batch_id")}
            assert got == self.model[rid], (rid, got, self.model[rid])
            # a final request never changes again (not even its updated_at)
            if row["status"] in REQUEST_FINAL:
                self.final.setdefault(rid, row)
                assert row == self.final[rid], (rid, self.final[rid], row)
            else:
                assert rid not in self.final, (rid, self.final.get(rid), row)
            # attempts are never counted twice: at most one per batch it was claimed into
            assert row["attempts"] <= self.claims[rid], (rid, row["attempts"], self.claims[rid])


RecordResults.TestCase.settings = settings(
    max_examples=2000 if LONG else 25,
    stateful_step_count=60 if LONG else 20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_record_results_is_idempotent = RecordResults.TestCase
