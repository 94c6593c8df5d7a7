"""Prometheus metrics: what ``GET http://metrics_listen/metrics`` answers (the endpoint itself:
``daemon/metrics_server.py``; off unless ``metrics_listen`` is set).

Nearly everything is read at scrape time, not counted as work happens: a custom collector opens
a read-only snapshot of the state database (``daemon/store/snapshot.py``) in the metrics
server's own thread, so the daemon's loops pay nothing for metrics and the numbers are the
database's, the same ones ``batchd status`` shows. The part that reads every request (retries,
errors, tokens and cost) is read again only when the cheap counts changed and at most every
:data:`TOTALS_MIN_S` (at least every :data:`TOTALS_MAX_S`); disk usage at most every
:data:`DISK_EVERY_S`. Providers' pause states come from ``state/providers.json``, which the
daemon publishes for ``batchd status``.

What the database does not hold is noted in process by plain functions that cost a dict write
(no import of the client library, which loads only when the endpoint is on): the last
successful poll per provider, ingest and collection durations, readiness.

Counters (``*_total``) are the database's totals: they fall when finished jobs' rows are
removed by retention, which Prometheus reads as a counter reset.
"""

from __future__ import annotations

import bisect
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from . import __version__
from .availability import RUNNING, read_snapshot
from .cost import cost_of
from .states import RequestStatus
from .store.snapshot import Readings, Snapshot, Totals

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .config import Config

TOTALS_MIN_S = 5.0
TOTALS_MAX_S = 60.0
DISK_EVERY_S = 60.0
# Seconds: an ingest of a small file takes milliseconds, a large one minutes.
BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0)


class Durations:
    """A histogram's counts, kept without the client library (what ``observe`` costs is a
    bisect and two additions)."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts per upper bound, ``+Inf`` last."""
        out, running = [], 0
        for bound, n in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, float(running)))
        return out


@dataclass
class Notes:
    """What the daemon notes in process (its event loop writes, a scrape reads under the lock)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    ready: bool = False
    last_poll: dict[str, float] = field(default_factory=dict)  # provider -> time of the answer
    ingest: Durations = field(default_factory=Durations)
    collect: dict[str, Durations] = field(default_factory=dict)  # provider -> durations


NOTES = Notes()


def note_ready() -> None:
    NOTES.ready = True


def note_poll(provider: str) -> None:
    """A provider answered a poll."""
    NOTES.last_poll[provider] = time.time()


def note_ingest(seconds: float) -> None:
    """A file was taken from the inbox and its requests stored."""
    with NOTES.lock:
        NOTES.ingest.observe(seconds)


def note_collect(provider: str, seconds: float) -> None:
    """An ended batch's results were fetched and stored."""
    with NOTES.lock:
        NOTES.collect.setdefault(provider, Durations()).observe(seconds)


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under ``folder`` (0 when it is missing); never raises."""
    total = 0
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


def _short(reason: str) -> str:
    return reason.split(":", 1)[0].strip()


class StoreCollector:
    """The ``batchd_*`` metrics, read at each scrape."""

    def __init__(self, cfg: Config, db: Path) -> None:
        self.cfg = cfg
        self.db = db
        self._lock = threading.Lock()  # the server answers scrapes on threads
        self._totals: Totals | None = None
        self._totals_key: Any = None
        self._totals_at = 0.0
        self._disk: dict[str, int] = {}
        self._disk_at = -DISK_EVERY_S

    def describe(self) -> list[Metric]:
        return []  # read at scrape only: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        with self._lock:
            up = GaugeMetricFamily("batchd_state_readable", "1 when the state database was read")
            try:
                readings, totals = self._read()
            except (sqlite3.Error, OSError) as exc:
                logger.warning("metrics: the state database could not be read: {}", exc)
                up.add_metric([], 0.0)
                yield up
                yield from self._in_process()
                return
            up.add_metric([], 1.0)
            yield up
            yield from self._store(readings)
            yield from self._totals_families(totals)
            yield from self._providers(readings)
            yield from self._in_process()
            yield from self._disk_usage()

    def _read(self) -> tuple[Readings, Totals]:
        with Snapshot(self.db) as snap:
            readings = snap.readings()
            now = time.monotonic()
            key = (readings.requests, readings.batches, readings.files)
            age = now - self._totals_at
            stale = key != self._totals_key and age >= TOTALS_MIN_S
            if self._totals is None or stale or age >= TOTALS_MAX_S:
                self._totals, self._totals_key, self._totals_at = snap.totals(), key, now
        return readings, self._totals

    def _store(self, r: Readings) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        requests = GaugeMetricFamily(
            "batchd_requests", "Requests by state, provider and model",
            labels=["state", "provider", "model"],
        )  # fmt: skip
        for (status, provider, model), n in sorted(r.requests.items()):
            requests.add_metric([status, provider, model], n)
        yield requests
        files = GaugeMetricFamily("batchd_files", "Input files (jobs) by state", labels=["state"])
        for status, (n, _) in sorted(r.files.items()):
            files.add_metric([status], n)
        yield files
        batches = GaugeMetricFamily(
            "batchd_batches", "Provider batches by state", labels=["state", "provider"]
        )
        for (status, provider), n in sorted(r.batches.items()):
            batches.add_metric([status, provider], n)
        yield batches
        by_status: dict[str, int] = {}
        for (status, _, _), n in r.requests.items():
            by_status[status] = by_status.get(status, 0) + n
        items = CounterMetricFamily(
            "batchd_items", "Requests ended succeeded or failed (failed: failed or expired)",
            labels=["outcome"],
        )  # fmt: skip
        items.add_metric(["succeeded"], by_status.get(RequestStatus.SUCCEEDED, 0))
        failed = by_status.get(RequestStatus.FAILED, 0) + by_status.get(RequestStatus.EXPIRED, 0)
        items.add_metric(["failed"], failed)
        yield items
        oldest = GaugeMetricFamily(
            "batchd_oldest_pending_request_age_seconds",
            "How long the request waiting longest to be sent has waited (0: none waits)",
        )
        age = 0.0 if r.oldest_pending_at is None else max(0.0, r.taken_at - r.oldest_pending_at)
        oldest.add_metric([], age)
        yield oldest
        enqueued = GaugeMetricFamily(
            "batchd_enqueued_tokens",
            "Tokens out at the provider per model (from the budgets when the database keeps "
            "them, else estimated from the bytes of the requests in flight)",
            labels=["provider", "model"],
        )
        for (provider, model), n in sorted(r.enqueued_tokens.items()):
            enqueued.add_metric([provider, model], n)
        yield enqueued
        if r.token_limits:
            limits = GaugeMetricFamily(
                "batchd_enqueued_token_limit", "The enqueued-token budget per model",
                labels=["provider", "model"],
            )  # fmt: skip
            for (provider, model), n in sorted(r.token_limits.items()):
                limits.add_metric([provider, model], n)
            yield limits

    def _totals_families(self, t: Totals) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        retried = CounterMetricFamily("batchd_items_retried", "Requests sent again after a failure")
        retried.add_metric([], t.retries)
        yield retried
        errors = CounterMetricFamily(
            "batchd_errors", "Requests with an error, by the error's kind and the request's state",
            labels=["kind", "state"],
        )  # fmt: skip
        for (status, kind), n in sorted(t.errors.items()):
            errors.add_metric([kind or "unknown", status], n)
        yield errors
        cost = CounterMetricFamily(
            "batchd_cost_usd", "Cost so far at batch price (priced answers only)",
            labels=["provider", "model"],
        )  # fmt: skip
        tokens = CounterMetricFamily(
            "batchd_tokens", "Tokens of the answers so far", labels=["provider", "model", "kind"]
        )
        unpriced = CounterMetricFamily(
            "batchd_unpriced_answers", "Answers with tokens but no known price",
            labels=["provider", "model"],
        )  # fmt: skip
        registry = self.cfg.policy.registry if self.cfg.policy is not None else None
        for (provider, model), tk in sorted(t.tokens.items()):
            usage = {
                "input_tokens": tk.input_tokens,
                "output_tokens": tk.output_tokens,
                "cached_input_tokens": tk.cached_input_tokens,
                "cache_creation_input_tokens": tk.cache_creation_input_tokens,
            }
            split = {"ephemeral_5m_input_tokens": tk.cache_write_5m,
                     "ephemeral_1h_input_tokens": tk.cache_write_1h}  # fmt: skip
            response = {"result": {"message": {"usage": {"cache_creation": split}}}}
            info = registry.info(model, provider) if registry is not None else None
            priced = cost_of(usage, info, response)
            if priced.batch_usd is None:
                unpriced.add_metric([provider, model], tk.answers)
            else:
                cost.add_metric([provider, model], priced.batch_usd)
            for kind, n in usage.items():
                tokens.add_metric([provider, model, kind.removesuffix("_tokens")], n)
        yield cost
        yield unpriced
        yield tokens

    def _providers(self, r: Readings) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        paused = GaugeMetricFamily(
            "batchd_provider_paused",
            "1 when the provider cannot proceed (no API key, key refused), with the reason",
            labels=["provider", "reason"],
        )
        snapshot = read_snapshot(self.cfg.state_dir) or {}
        for name, view in sorted((snapshot.get("providers") or {}).items()):
            if not isinstance(view, dict):
                continue
            state = str(view.get("state", ""))
            stopped = state != RUNNING
            reason = _short(str(view.get("reason") or state)) if stopped else ""
            paused.add_metric([name, reason], 1.0 if stopped else 0.0)
        yield paused

    def _in_process(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            GaugeMetricFamily,
            HistogramMetricFamily,
            InfoMetricFamily,
        )

        info = InfoMetricFamily("batchd_build", "The running batchd")
        info.add_metric([], {"version": __version__})
        yield info
        ready = GaugeMetricFamily("batchd_ready", "1 once start-up recovery and reconcile ended")
        ready.add_metric([], 1.0 if NOTES.ready else 0.0)
        yield ready
        polls = GaugeMetricFamily(
            "batchd_last_successful_poll_timestamp_seconds",
            "When each provider last answered a poll (Unix time)", labels=["provider"],
        )  # fmt: skip
        for provider, at in sorted(dict(NOTES.last_poll).items()):
            polls.add_metric([provider], at)
        yield polls
        with NOTES.lock:
            ingest = (NOTES.ingest.buckets(), NOTES.ingest.total)
            collect = {p: (d.buckets(), d.total) for p, d in NOTES.collect.items()}
        family = HistogramMetricFamily(
            "batchd_ingest_duration_seconds",
            "Taking a file from the inbox and storing its requests",
        )
        family.add_metric([], ingest[0], ingest[1])
        yield family
        family = HistogramMetricFamily(
            "batchd_collection_duration_seconds",
            "Fetching an ended batch's results and storing them", labels=["provider"],
        )  # fmt: skip
        for provider, (buckets, total) in sorted(collect.items()):
            family.add_metric([provider], buckets, total)
        yield family

    def _disk_usage(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        now = time.monotonic()
        if now - self._disk_at >= DISK_EVERY_S:
            folders = {
                "state": self.cfg.state_dir,
                "outbox": self.cfg.outbox,
                "processed": self.cfg.processed,
            }
            self._disk = {name: folder_bytes(path) for name, path in folders.items()}
            self._disk_at = now
        disk = GaugeMetricFamily(
            "batchd_disk_usage_bytes", "Bytes of the files under each folder", labels=["folder"]
        )
        for name, n in self._disk.items():
            disk.add_metric([name], n)
        yield disk


__all__ = [
    "StoreCollector",
    "note_collect",
    "note_ingest",
    "note_poll",
    "note_ready",
]
