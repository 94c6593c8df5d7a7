"""Read-only looks at the state database for the service status line and the metrics.

A :class:`Snapshot` is its own short-lived ``sqlite3`` connection, read-only at the SQLite level
(``mode=ro``): it never migrates, never writes, and, the database being in WAL mode, neither
waits for the daemon's writes nor holds them up. It runs in a worker thread (the status line)
or in the metrics server's thread (a scrape), never on the event loop. Every statement is a
named constant of ``queries.py``. The database it reads is the running daemon's, which has
migrated it, so every table and column of the current schema is there.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from ..states import BATCH_OPEN, FILE_OPEN, REQUEST_FINAL, RequestStatus
from . import queries as q

TIMEOUT_S = 5.0  # a reader waits this long for a database being checkpointed or migrated


def _statuses(statuses: Iterable[str]) -> str:
    return json.dumps(sorted(str(s) for s in statuses))


@dataclass(frozen=True)
class ServiceCounts:
    """What the service status line says: files in progress, requests waiting and out."""

    files_open: int
    pending: int
    in_flight: int


@dataclass(frozen=True)
class Tokens:
    """One model's answers so far: how many, and their tokens (as the adapters normalise them)."""

    answers: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_creation_input_tokens: int
    cache_write_5m: int  # of the cache writes, those Anthropic reported as 5-minute ones
    cache_write_1h: int


@dataclass
class Readings:
    """One scrape's worth of the database (the cheap part)."""

    files: dict[str, tuple[int, int]] = field(default_factory=dict)  # status -> (n, with error)
    requests: dict[tuple[str, str, str], int] = field(default_factory=dict)  # status, prov, model
    batches: dict[tuple[str, str], int] = field(default_factory=dict)  # status, provider
    oldest_pending_at: float | None = None
    enqueued_tokens: dict[tuple[str, str], int] = field(default_factory=dict)  # provider, model
    token_limits: dict[tuple[str, str], int] = field(default_factory=dict)  # provider, model
    taken_at: float = 0.0


@dataclass
class Totals:
    """One scrape's worth of the database (the part that reads every request)."""

    retries: int = 0
    errors: dict[tuple[str, str], int] = field(default_factory=dict)  # status, error kind
    tokens: dict[tuple[str, str], Tokens] = field(default_factory=dict)  # provider, model


class Snapshot:
    """``with Snapshot(path) as snap: snap.service_counts()``; raises ``sqlite3.Error`` (or
    ``OSError``) when the database cannot be read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def __enter__(self) -> Snapshot:
        uri = q.READ_ONLY_URI.format(path=quote(str(self.path.absolute())))
        self._db = sqlite3.connect(uri, uri=True, timeout=TIMEOUT_S)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.ProgrammingError("the snapshot is not open")
        return self._db

    def service_counts(self) -> ServiceCounts:
        files = self.db.execute(q.SERVICE_OPEN_FILES, (_statuses(FILE_OPEN),)).fetchone()[0]
        counts = dict(self.db.execute(q.SERVICE_OPEN_REQUESTS).fetchall())
        return ServiceCounts(
            files_open=int(files),
            pending=int(counts.get(RequestStatus.PENDING, 0)),
            in_flight=int(counts.get(RequestStatus.BATCHED, 0)),
        )

    def readings(self) -> Readings:
        db = self.db
        out = Readings(taken_at=time.time())
        for status, n, errors in db.execute(q.METRICS_FILES):
            out.files[str(status)] = (int(n), int(errors))
        for status, provider, model, n in db.execute(q.METRICS_REQUESTS):
            out.requests[(str(status), str(provider), str(model))] = int(n)
        for status, provider, n in db.execute(q.METRICS_BATCHES):
            out.batches[(str(status), str(provider))] = int(n)
        oldest = db.execute(q.METRICS_OLDEST_PENDING).fetchone()[0]
        out.oldest_pending_at = None if oldest is None else float(oldest)
        rows = db.execute(q.METRICS_ENQUEUED_TOKENS, (_statuses(BATCH_OPEN),))
        for provider, model, tokens in rows:
            out.enqueued_tokens[(str(provider), str(model))] = int(tokens or 0)
        for account, model, limit in db.execute(q.METRICS_TOKEN_BUDGETS):
            key = (str(account).split("|", 1)[0], str(model))
            out.token_limits[key] = max(int(limit), out.token_limits.get(key, 0))
        return out

    def totals(self) -> Totals:
        db = self.db
        out = Totals()
        out.retries = int(db.execute(q.METRICS_RETRIES, (_statuses(REQUEST_FINAL),)).fetchone()[0])
        for status, kind, n in db.execute(q.METRICS_ERRORS):
            out.errors[(str(status), str(kind))] = int(n)
        for provider, model, *numbers in db.execute(q.METRICS_TOKENS):
            out.tokens[(str(provider), str(model))] = Tokens(*(int(x or 0) for x in numbers))
        return out


__all__ = ["Readings", "ServiceCounts", "Snapshot", "Tokens", "Totals"]
