"""Containment in the scheduler, over a real SQLite store and a scripted in-memory adapter
(``tests/fake_adapter.py``).

An unexpected error (a bug-shaped exception, not one of the adapter taxonomy) while preparing,
creating, polling or collecting one batch, or in one model's submit loop, stays in that unit:
logged once with its traceback, its requests back to pending with a backoff and an attempt
counted (``failed`` with ``internal_error`` after ``max_attempts``), the rest served. A create
call that raised may have taken effect: it is looked up, never sent again blindly. An error of
the state database still stops the scheduler.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from adapters.base import BatchItem, ItemResult, UnknownOutcome, unreadable_line
from daemon import submit as submit_module
from daemon.caching import prepare_items
from daemon.collect import COLLECT_TRIES
from daemon.config import Config
from daemon.scheduler import Scheduler, TaskFailed
from daemon.states import BatchRowStatus, FileStatus, RequestStatus
from daemon.store import Store
from tests.fake_adapter import FakeAdapter

ACCOUNT = "openai|default|key:now"
MODEL = "gpt-4o-mini"
OTHER = "gpt-4.1-mini"
MAX_ATTEMPTS = 3


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store(tmp_path / "b.sqlite3").open()
    yield store
    await store.close()


@pytest.fixture
def logged() -> Iterable[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), format="{level} {message}\n{exception}")
    yield lines
    logger.remove(sink)


def _scheduler(store: Store, adapter: FakeAdapter) -> Scheduler:
    cfg = Config(
        batch_linger_s=0,
        reconcile_after_s=0.01,
        retry_base_s=0.02,
        retry_max_s=0.1,
        poll_initial_s=0,
        poll_max_s=0.05,
        max_attempts=MAX_ATTEMPTS,
    )
    return Scheduler(cfg, store, {"openai": adapter}, {"openai": ACCOUNT}, asyncio.Event())


async def _add(store: Store, n: int, model: str = MODEL) -> None:
    fid = await store.claim_file(f"{model}.jsonl", "/in/a", "/w/a", 1)
    rows = [
        {
            "line": i,
            "custom_id": f"{model}-{i}",
            "model": model,
            "provider": "openai",
            "body": {"model": model, "messages": [{"role": "user", "content": str(i)}]},
            "size_bytes": 60,
            "status": RequestStatus.PENDING,
        }
        for i in range(1, n + 1)
    ]
    await store.add_requests(fid, rows)
    await store.set_file_status(fid, FileStatus.ACTIVE, lines=n)


async def _requests(store: Store) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f in await store.files_in(*FileStatus):
        page = store.db.execute("SELECT * FROM requests WHERE file_id = ?", (f["id"],))
        async with page as cur:
            out += [dict(r) for r in await cur.fetchall()]
    return out


async def _drive(sched: Scheduler, timeout: float = 15) -> list[dict[str, Any]]:
    """Run the planner and the poller as the app's loops would, until every request is final;
    fails at once if a supervised task died."""
    deadline = time.monotonic() + timeout
    while True:
        assert sched.failure is None, sched.failure
        await sched.plan()
        await sched.poll_due("openai")
        rows = await _requests(sched.store)
        if all(r["status"] not in ("pending", "batched") for r in rows):
            await asyncio.wait_for(sched.shutdown(grace_s=1), 5)
            assert sched.failure is None, sched.failure
            return rows
        assert time.monotonic() < deadline, [(r["status"], r["attempts"]) for r in rows]
        await asyncio.sleep(0.005)


def _with_trace(logged: list[str], text: str) -> list[str]:
    said = [line for line in logged if text in line]
    assert all("Traceback" in line for line in said), said
    return said


def _error(row: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(row["error"]))


# -- before the create call ------------------------------------------------------------------


async def test_an_error_preparing_a_batch_releases_it_with_an_attempt_counted(
    store: Store, logged: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = prepare_items
    failures = [RuntimeError("a caching bug")]

    async def prepare(*args: Any) -> Sequence[BatchItem]:
        if failures:
            raise failures.pop()
        return await real(*args)

    monkeypatch.setattr(submit_module, "prepare_items", prepare)
    await _add(store, 4)
    adapter = FakeAdapter()
    rows = await _drive(_scheduler(store, adapter))
    assert {(r["status"], r["attempts"]) for r in rows} == {("succeeded", 2)}
    assert adapter.creates == [MODEL]  # nothing was sent with the failed preparation
    said = _with_trace(logged, "preparing a batch of 4 requests failed")
    assert len(said) == 1 and "RuntimeError: a caching bug" in said[0]
    statuses = [b["status"] for b in await store.batches_in(*BatchRowStatus)]
    assert statuses == [BatchRowStatus.ABORTED, BatchRowStatus.COLLECTED]


async def test_a_batch_that_never_prepares_fails_with_internal_error_the_others_go_on(
    store: Store, logged: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = prepare_items
    calls: list[float] = []

    async def prepare(provider: str, model: str, *args: Any) -> Sequence[BatchItem]:
        if model == MODEL:
            calls.append(time.monotonic())
            raise KeyError("system")
        return await real(provider, model, *args)

    monkeypatch.setattr(submit_module, "prepare_items", prepare)
    await _add(store, 3)
    await _add(store, 2, OTHER)
    adapter = FakeAdapter()
    rows = await _drive(_scheduler(store, adapter))
    broken = [r for r in rows if r["model"] == MODEL]
    assert {(r["status"], r["attempts"]) for r in broken} == {("failed", MAX_ATTEMPTS)}
    expected = {"type": "internal_error", "message": "KeyError: 'system'", "code": None}
    assert all(_error(r) == expected for r in broken)
    assert {r["status"] for r in rows if r["model"] == OTHER} == {"succeeded"}
    assert len(calls) == MAX_ATTEMPTS  # one try per attempt: no spinning
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert all(gap >= 0.01 for gap in gaps), gaps  # at least half the first backoff step
    assert adapter.creates == [OTHER]
    assert len(_with_trace(logged, "preparing a batch of 3 requests failed")) == MAX_ATTEMPTS


# -- from the create call on: an unknown outcome -----------------------------------------------


async def test_a_create_that_took_effect_then_raised_is_found_not_resubmitted(
    store: Store, logged: list[str]
) -> None:
    await _add(store, 5)
    adapter = FakeAdapter()
    adapter.lose_create_answer = 1
    rows = await _drive(_scheduler(store, adapter))
    assert {(r["status"], r["attempts"]) for r in rows} == {("succeeded", 1)}
    assert adapter.creates == [MODEL] and adapter.calls["find"] == 1  # found, not sent again
    said = _with_trace(logged, "batch create failed with an unexpected error")
    assert len(said) == 1 and "RuntimeError: the answer's parsing has a bug" in said[0]
    assert any("found at the provider" in line for line in logged)


async def test_a_create_that_raised_before_taking_effect_is_looked_up_then_retried(
    store: Store, logged: list[str]
) -> None:
    await _add(store, 2)
    adapter = FakeAdapter()
    adapter.submit_errors = [TypeError("a bug before the request left")]
    rows = await _drive(_scheduler(store, adapter))
    assert {(r["status"], r["attempts"]) for r in rows} == {("succeeded", 2)}
    assert adapter.calls["find"] == 2  # not found twice before it counts as never created
    assert adapter.creates == [MODEL]
    said = "was never created (its create call: internal_error: TypeError: a bug before"
    assert any(said in line for line in logged)


async def test_a_create_that_always_raises_ends_failed_after_max_attempts(
    store: Store, logged: list[str]
) -> None:
    await _add(store, 2)
    adapter = FakeAdapter()
    adapter.submit_errors = [AttributeError("'str' object has no attribute 'get'")]
    adapter.forever = {"submit"}
    rows = await _drive(_scheduler(store, adapter))
    assert {(r["status"], r["attempts"]) for r in rows} == {("failed", MAX_ATTEMPTS)}
    assert {_error(r)["type"] for r in rows} == {"internal_error"}
    assert "AttributeError" in _error(rows[0])["message"]
    assert adapter.calls["submit"] == MAX_ATTEMPTS and not adapter.creates


async def test_a_create_whose_outcome_is_never_known_ends_failed_not_looping(
    store: Store, logged: list[str]
) -> None:
    """A create that always times out (or loses its answer) and never takes effect: each time
    it is looked up, found never created, and counts an attempt with a backoff."""
    await _add(store, 2)
    adapter = FakeAdapter()
    adapter.submit_errors = [UnknownOutcome("openai batches.create: timed out")]
    adapter.forever = {"submit"}
    rows = await _drive(_scheduler(store, adapter))
    assert {(r["status"], r["attempts"]) for r in rows} == {("failed", MAX_ATTEMPTS)}
    expected = {"type": "create_outcome_unknown", "message": "openai batches.create: timed out"}
    assert _error(rows[0]) == {**expected, "code": None}
    assert adapter.calls["submit"] == MAX_ATTEMPTS
    assert adapter.calls["find"] == 2 * MAX_ATTEMPTS  # looked up, never sent again blindly


# -- polling and collection ------------------------------------------------------------------


async def test_a_poll_that_fails_unexpectedly_is_polled_again(
    store: Store, logged: list[str]
) -> None:
    await _add(store, 3)
    adapter = FakeAdapter()
    adapter.poll_errors = [TypeError("None is not subscriptable")] * 3
    rows = await _drive(_scheduler(store, adapter))
    assert {(r["status"], r["attempts"]) for r in rows} == {("succeeded", 1)}
    assert len(_with_trace(logged, "polling batch pb-batchd-")) == 3
    assert adapter.creates == [MODEL]


async def test_a_collection_that_fails_is_tried_again_without_resubmitting(
    store: Store, logged: list[str]
) -> None:
    await _add(store, 3)
    adapter = FakeAdapter()
    adapter.results_errors = [KeyError("custom_id")] * (COLLECT_TRIES - 1)
    rows = await _drive(_scheduler(store, adapter))
    assert {(r["status"], r["attempts"]) for r in rows} == {("succeeded", 1)}
    assert adapter.creates == [MODEL]  # the answers were fetched again, not paid again
    assert len(_with_trace(logged, "collecting batch pb-")) == COLLECT_TRIES - 1


async def test_a_batch_that_can_never_be_collected_is_given_up_then_fails(
    store: Store, logged: list[str]
) -> None:
    await _add(store, 3)
    await _add(store, 2, OTHER)
    adapter = FakeAdapter()
    adapter.results_errors = [KeyError("custom_id")]
    adapter.forever = {"results"}
    rows = await _drive(_scheduler(store, adapter))
    assert {(r["status"], r["attempts"]) for r in rows} == {("failed", MAX_ATTEMPTS)}
    assert {_error(r)["message"] for r in rows} == {"KeyError: 'custom_id'"}
    # every attempt's batch was collected COLLECT_TRIES times before it was given up
    assert adapter.calls["results"] == COLLECT_TRIES * len(adapter.creates)
    assert sorted(adapter.creates) == sorted([MODEL, OTHER] * MAX_ATTEMPTS)
    assert len([x for x in logged if "it is given up" in x]) == 2 * MAX_ATTEMPTS


class _CorruptLineAdapter(FakeAdapter):
    """The first batch's results file has one line that is not JSON where the first request's
    answer should be (a corrupt download); later batches answer normally."""

    async def results(self, provider_batch_id: str) -> AsyncIterator[ItemResult]:
        first = next(iter(self.created)) == provider_batch_id
        async for item in super().results(provider_batch_id):
            if first and item.key == self.created[provider_batch_id][0]:
                yield unreadable_line('{"custom_id": "r1", "response": {"status_co')
            else:
                yield item


async def test_a_result_line_that_is_not_json_costs_its_request_alone(
    store: Store, logged: list[str]
) -> None:
    """The batch's other results are stored; the request the line stood for counts as
    missing (sent again, an attempt counted), and the batch's log says why, once."""
    await _add(store, 4)
    adapter = _CorruptLineAdapter()
    rows = await _drive(_scheduler(store, adapter))
    by_line = {r["line"]: (r["status"], r["attempts"]) for r in rows}
    assert by_line == {1: ("succeeded", 2), 2: ("succeeded", 1), 3: ("succeeded", 1),
                       4: ("succeeded", 1)}  # fmt: skip
    assert adapter.creates == [MODEL, MODEL]  # the one request again, not the batch
    said = [line for line in logged if "could not be read" in line]
    assert len(said) == 1 and "1 result line of batch pb-" in said[0], said
    assert "result line is not a JSON object" in said[0]
    assert not [line for line in logged if "collecting batch" in line]  # no internal error


# -- outside one batch ---------------------------------------------------------------------


async def test_an_error_in_a_models_submit_loop_holds_that_model_for_a_backoff(
    store: Store, logged: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = store.creates_since
    failures = [ValueError("a bug counting creates")] * 2

    async def creates_since(provider: str, since: float) -> int:
        if failures:
            raise failures.pop()
        return await real(provider, since)

    monkeypatch.setattr(store, "creates_since", creates_since)
    await _add(store, 2)
    rows = await _drive(_scheduler(store, FakeAdapter()))
    assert {(r["status"], r["attempts"]) for r in rows} == {("succeeded", 1)}
    said = _with_trace(logged, "the submit loop of gpt-4o-mini failed")
    assert len(said) == 2 and "ValueError: a bug counting creates" in said[0]


async def test_a_state_database_failure_still_stops_the_scheduler(
    store: Store, logged: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def claim(*args: Any, **kw: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "claim_batch_items", claim)  # the claim of the submit loop
    await _add(store, 2)
    sched = _scheduler(store, FakeAdapter())
    await sched.plan()
    with pytest.raises(TaskFailed, match="submit-openai-gpt-4o-mini"):
        await asyncio.wait_for(sched.monitor(), timeout=10)
    await asyncio.wait_for(sched.shutdown(grace_s=1), timeout=10)
    died = [line for line in logged if "died of an unexpected error" in line]
    assert len(died) == 1 and "OperationalError: disk I/O error" in died[0]
