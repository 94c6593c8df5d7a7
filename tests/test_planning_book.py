"""The planner's due book (``daemon/store/due.py``) against the database it stands for.

A stateful property test (hypothesis) on a real SQLite file: any sequence of what batchd does
to requests (ingest, claims of a model or of named files, results with retries, aborted
batches sent back now or later, failed lanes, a job canceled by the daemon or by ``batchd
cancel`` from its own connection, a half-ingested file forgotten). After every step the
book's due lanes (count and oldest due time, at several clock readings) and its next due time
must be exactly what a grouping of the pending rows says.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from daemon.outcomes import RequestUpdate
from daemon.states import FileStatus, RequestStatus
from daemon.store import Store
from daemon.store.due import DueBook

T = TypeVar("T")

MODELS = ("m1", "m2")
NOW = time.time()
CLOCKS = (NOW + 5, NOW + 1000, NOW + 5000)  # what the planner's clock may read
RETRY_AT = st.sampled_from([0.0, NOW - 100, NOW + 500, NOW + 2000])
# What the book must equal: the grouping the planner ran at every plan before it existed.
DUE_LANES = (
    "SELECT provider, model, file_id, COUNT(*), MIN(MAX(next_attempt_at, updated_at))"
    " FROM requests WHERE status = 'pending' AND next_attempt_at <= ?"
    " GROUP BY provider, model, file_id"
)
NEXT_DUE = "SELECT MIN(next_attempt_at) FROM requests WHERE status = 'pending'"
# The counts of a file's requests by status, read from the rows themselves (the store reads
# them from its partial indexes).
FILE_COUNTS = (
    "SELECT status, COUNT(*) FROM requests NOT INDEXED WHERE file_id = ? GROUP BY status"
)
OPEN_BY_PROVIDER = (
    "SELECT provider, COUNT(*) FROM requests NOT INDEXED"
    " WHERE status IN ('pending', 'batched') GROUP BY provider"
)


class Book(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="batchd-book-"))
        self.loop = asyncio.new_event_loop()
        self.store = self.run(Store(self.dir / "b.sqlite3").open())
        self.files = [
            self.run(self.store.claim_file(f"{i}.jsonl", "/in", "/w", 1)) for i in range(3)
        ]
        for fid in self.files:
            self.run(self.store.set_file_status(fid, FileStatus.ACTIVE))
        self.lines = dict.fromkeys(self.files, 0)
        self.batches: list[int] = []
        self.n = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(file=st.integers(0, 2), models=st.lists(st.sampled_from(MODELS), min_size=1,
          max_size=6), invalid=st.booleans())  # fmt: skip
    def ingest(self, file: int, models: list[str], invalid: bool) -> None:
        fid = self.files[file]
        rows = []
        for model in models:
            self.lines[fid] += 1
            line = self.lines[fid]
            rows.append({"line": line, "custom_id": f"c{line}", "model": model,
                         "provider": "openai", "body": {"n": line}, "size_bytes": 10,
                         "status": RequestStatus.PENDING})  # fmt: skip
        if invalid:  # a bad line: stored, never pending
            rows[-1] = {**rows[-1], "status": RequestStatus.INVALID, "model": None}
        self.run(self.store.add_requests(fid, rows))

    @rule(model=st.sampled_from(MODELS), max_items=st.integers(1, 8),
          files=st.one_of(st.none(), st.lists(st.integers(0, 2), min_size=1, max_size=3,
                                              unique=True)),
          clock=st.sampled_from(CLOCKS))  # fmt: skip
    def claim(self, model: str, max_items: int, files: list[int] | None, clock: float) -> None:
        named = None if files is None else [self.files[i] for i in files]
        tag = f"t{len(self.batches)}"
        how = {"max_items": max_items, "max_bytes": 10**9, "now": clock, "files": named}
        claimed = self.run(self.store.claim_batch_items("openai", model, tag, "acct", **how))
        if claimed is not None:
            self.batches.append(claimed[0])

    @precondition(lambda self: self.batches)
    @rule(data=st.data())
    def record(self, data: st.DataObject) -> None:
        batch_id = data.draw(st.sampled_from(self.batches))
        updates = []
        for rid, _ in self.run(self.store.batch_requests(batch_id)):
            self.n += 1
            status = data.draw(st.sampled_from([RequestStatus.SUCCEEDED, RequestStatus.PENDING]))
            update = RequestUpdate(request_id=rid, status=status, attempts_inc=1,
                                   result={"n": self.n}, error=None)  # fmt: skip
            if status == RequestStatus.PENDING:
                update["next_attempt_at"] = data.draw(RETRY_AT)
            updates.append(update)
        self.run(self.store.record_results(batch_id, updates))

    @precondition(lambda self: self.batches)
    @rule(data=st.data(), at=RETRY_AT)
    def abort(self, data: st.DataObject, at: float) -> None:
        batch_id = data.draw(st.sampled_from(self.batches))
        self.run(self.store.abort_batch(batch_id, "x", next_attempt_at=at, count_attempt=True,
                                        max_attempts=3, final_error={"type": "t"}))  # fmt: skip

    @rule(file=st.integers(0, 2), model=st.sampled_from(MODELS))
    def fail_lane(self, file: int, model: str) -> None:
        self.run(self.store.fail_lane(self.files[file], "openai", model, {"type": "t"}))

    @rule(file=st.integers(0, 2), beside=st.booleans())
    def cancel(self, file: int, beside: bool) -> None:
        """A job canceled: by the daemon, or by ``batchd cancel`` on its own connection."""
        fid = self.files[file]
        if beside:

            async def command() -> None:
                other = await Store(self.store.path).open_beside()
                try:
                    await other.request_cancel(fid)
                    await other.cancel_pending(fid)
                finally:
                    await other.close()

            self.run(command())
        else:
            self.run(self.store.request_cancel(fid))
            self.run(self.store.cancel_pending(fid))

    @rule(file=st.integers(0, 2))
    def forget(self, file: int) -> None:
        """A half-ingested file read again from its first line."""
        fid = self.files[file]
        self.run(self.store.forget_requests(fid))
        self.lines[fid] = 0

    @invariant()
    def the_book_is_the_database(self) -> None:
        db = sqlite3.connect(self.store.path)
        try:
            for clock in CLOCKS:
                want = sorted(tuple(r) for r in db.execute(DUE_LANES, (clock,)))
                got = sorted(
                    (d.provider, d.model, d.file_id, d.n, d.oldest)
                    for d in self.run(self.store.due_lanes(clock))
                )
                assert got == want, (clock, got, want)
                of_one = self.run(self.store.due_lanes_of("openai", "m1", clock))
                assert sorted((d.file_id, d.n) for d in of_one) == [
                    (w[2], w[3]) for w in want if w[1] == "m1"
                ]
            (want_next,) = db.execute(NEXT_DUE).fetchone()
            assert self.run(self.store.next_due_at()) == want_next
        finally:
            db.close()

    @invariant()
    def counts_through_the_indexes_are_the_rows(self) -> None:
        db = sqlite3.connect(self.store.path)
        try:
            finished = []
            for fid in self.files:
                want = dict(db.execute(FILE_COUNTS, (fid,)).fetchall())
                assert self.run(self.store.request_counts(fid)) == want
                if not want.get("pending") and not want.get("batched"):
                    finished.append(fid)
            assert [f["id"] for f in self.run(self.store.finished_files())] == finished
            want_open = dict(db.execute(OPEN_BY_PROVIDER).fetchall())
            assert self.run(self.store.waiting_by_provider()) == want_open
        finally:
            db.close()


Book.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
test_the_due_book_follows_every_write = Book.TestCase


def test_the_book_counts_buckets_and_drops_what_it_does_not_hold() -> None:
    book = DueBook.of_rows(
        [("openai", "m", 1, 0.0, 10.0, 3), ("openai", "m", 1, 50.0, 20.0, 2),
         ("openai", None, 1, 0.0, 10.0, 9)],
        version=0, built_at=0.0,
    )  # fmt: skip
    assert list(book.due(40.0)) == [(("openai", "m", 1), 3, 10.0)]
    assert list(book.due(60.0)) == [(("openai", "m", 1), 5, 10.0)]
    assert book.next_due_at() == 0.0
    assert book.take(("openai", "m", 1), (0.0, 10.0), 3)
    assert list(book.due(60.0)) == [(("openai", "m", 1), 2, 50.0)]
    assert not book.take(("openai", "m", 1), (50.0, 20.0), 3)  # more than it holds
    assert book.take(("openai", "m", 1), (50.0, 20.0), 2)
    assert book.lanes == {} and book.next_due_at() is None
