"""The scheduler over a real SQLite store and an in-memory fake adapter
(``tests/fake_adapter.py``): supervision of its tasks, and batches of another account left
alone. Containment of unexpected errors in its units (and the state database failure that
still stops it) is in ``test_containment.py``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from adapters.base import BatchStatus
from daemon.config import Config
from daemon.scheduler import Scheduler
from daemon.states import BatchRowStatus, FileStatus, RequestStatus
from daemon.store import Store
from tests.fake_adapter import FakeAdapter

NOW_ACCOUNT = "openai|default|key:now"
OLD_ACCOUNT = "openai|default|key:old"


def _adapter(**kwargs: Any) -> FakeAdapter:
    """Batches stay running, and a lookup finds any tag (a create this process never saw)."""
    return FakeAdapter(ends=False, find_any=True, **kwargs)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store(tmp_path / "b.sqlite3").open()
    yield store
    await store.close()


def _scheduler(store: Store, adapter: FakeAdapter, **cfg: Any) -> Scheduler:
    config = Config(batch_linger_s=0, reconcile_after_s=0.01, **cfg)
    return Scheduler(config, store, {"openai": adapter}, {"openai": NOW_ACCOUNT}, asyncio.Event())


async def _add_requests(store: Store, n: int, model: str = "gpt-4o-mini") -> None:
    fid = await store.claim_file("a.jsonl", "/in/a.jsonl", "/w/a.jsonl", 1)
    rows = [
        {
            "line": i,
            "custom_id": f"c{i}",
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


@pytest.fixture
def logged() -> Iterable[list[str]]:
    """Every log line (with its traceback, if any) the test's code writes."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), format="{level} {message}\n{exception}")
    yield lines
    logger.remove(sink)


async def test_monitor_ends_quietly_when_shutdown_ends_without_a_failure(store: Store) -> None:
    await _add_requests(store, 2)
    adapter = _adapter()
    sched = _scheduler(store, adapter)
    monitor = asyncio.ensure_future(sched.monitor())
    await sched.plan()
    await asyncio.wait_for(sched.shutdown(grace_s=5), timeout=10)
    await asyncio.wait_for(monitor, timeout=1)  # returns, raises nothing
    assert len(adapter.submitted) == 1 and sched.failure is None


async def _batch(store: Store, tag: str, account: str, *, submitted: bool) -> int:
    claimed = await store.claim_batch_items(
        "openai", "gpt-4o-mini", tag, account, max_items=1, max_bytes=10**9, now=time.time()
    )
    assert claimed is not None
    if submitted:
        await store.mark_submitted(claimed[0], f"pb-{tag}", None, poll_interval_s=0, now=0)
    return claimed[0]


async def test_batches_of_another_account_are_left_alone_and_said_loudly(
    store: Store, logged: list[str]
) -> None:
    """Unless the configured account can see one at the provider: then it is adopted."""
    await _add_requests(store, 5)
    await _batch(store, "old-hidden", OLD_ACCOUNT, submitted=True)
    await _batch(store, "old-visible", OLD_ACCOUNT, submitted=True)
    await _batch(store, "old-submitting", OLD_ACCOUNT, submitted=False)
    await _batch(store, "now-submitted", NOW_ACCOUNT, submitted=True)
    await _batch(store, "now-submitting", NOW_ACCOUNT, submitted=False)
    adapter = _adapter(invisible={"pb-old-hidden"})
    sched = _scheduler(store, adapter, auth_pause_s=0.3)

    await sched.reconciler.reconcile_all("openai")
    assert adapter.looked_up == ["now-submitting"]
    next_look = await sched.poll_due("openai")
    # each old one asked once (is it visible?), then the adopted and the current account's
    asked = ["pb-old-hidden", "pb-old-visible"]
    assert adapter.polled == [*asked, "pb-old-visible", "pb-now-submitted"]
    assert next_look is not None and next_look <= time.time() + 0.3
    said = [line for line in logged if "belong to another account" in line]
    assert len(said) == 1
    assert said[0].startswith("ERROR open openai batches that belong to another account: 2 ")
    assert len([line for line in logged if "polled from now on" in line]) == 1

    await sched.poll_due("openai")  # within auth_pause_s: not said (nor asked) again
    assert len([line for line in logged if "belong to another account" in line]) == 1
    assert adapter.polled.count("pb-old-hidden") == 1
    deadline = time.monotonic() + 10
    while len([line for line in logged if "belong to another account" in line]) < 2:
        assert time.monotonic() < deadline, "not said again after auth_pause_s"
        await asyncio.sleep(0.05)
        await sched.poll_due("openai")
    batches = {b["tag"]: b for b in await store.batches_in(*BatchRowStatus)}
    assert batches["old-hidden"]["status"] == BatchRowStatus.SUBMITTED  # not requeued: it waits
    assert batches["old-hidden"]["account"] == OLD_ACCOUNT
    assert batches["old-submitting"]["status"] == BatchRowStatus.SUBMITTING
    assert batches["old-visible"]["account"] == NOW_ACCOUNT
    await sched.shutdown(grace_s=1)


async def test_without_other_accounts_nothing_is_said(store: Store, logged: list[str]) -> None:
    await _add_requests(store, 1)
    await _batch(store, "now-submitted", NOW_ACCOUNT, submitted=True)
    sched = _scheduler(store, _adapter())
    await sched.poll_due("openai")
    assert not [line for line in logged if "another account" in line]


async def test_the_retries_of_one_batch_share_one_retry_time_per_attempt(store: Store) -> None:
    """So the requests a batch sends back come due together and go out as one batch."""
    sched = _scheduler(store, _adapter(), retry_base_s=10, retry_max_s=100)
    first, second = sched.batch_retry_at(), sched.batch_retry_at()
    assert first(1) == first(1) and first(2) == first(2)
    assert first(1) < first(2)  # a later attempt still backs off further
    assert time.time() + 5 <= first(1) <= time.time() + 10
    assert first(1) != second(1)  # another batch draws its own (jitter between batches)


async def test_due_batches_are_polled_in_one_round_from_the_list(store: Store) -> None:
    """Many due batches: one list call for all the list shows, one retrieve for one it does not
    show; a batch whose status did not change costs no write, and is not due again at once."""
    await _add_requests(store, 9)
    tags = [f"b{i}" for i in range(8)]
    for tag in tags:
        await _batch(store, tag, NOW_ACCOUNT, submitted=True)
    adapter = _adapter()
    adapter.listing = [
        BatchStatus(f"pb-{tag}", "running", "in_progress", total=1, done=0, created_at=time.time())
        for tag in tags[1:]
    ]
    sched = _scheduler(store, adapter, poll_initial_s=30, poll_max_s=60)
    next_at = await sched.poll_due("openai")
    assert adapter.lists == 1 and adapter.polled == ["pb-b0"]  # the one the list did not show
    assert next_at is not None and next_at >= time.time() + 29
    rows = {b["tag"]: b for b in await store.batches_in(BatchRowStatus.SUBMITTED)}
    assert all(rows[t]["provider_status"] == "in_progress" for t in tags)  # a change: written
    await sched.poll_due("openai")  # nothing due: no call at all
    assert adapter.lists == 1 and adapter.polled == ["pb-b0"]
    await sched.shutdown(grace_s=1)
