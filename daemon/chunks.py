"""An ingest pass's lines as the chunks it stores: each line as its stored row (built in the
worker thread), chunks bounded by lines and bytes, a chunk stored with a refused line found
and stored as ``invalid`` naming the error, and the pass's counts and "line rejected" logs.
:mod:`daemon.ingest` drives the passes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from adapters.jsontext import compact, loads

from .states import RequestStatus
from .store import Store
from .store.db import RequestRow, request_row
from .text import plural
from .validate import Invalid, Request

MAX_REJECT_LOGS = 100  # "line rejected" log lines per file
CHUNK = 2000  # lines per store write...
CHUNK_BYTES = 4 * 1024 * 1024  # ...or fewer, when the lines are big: memory stays flat
# Errors a row can raise on its way into SQLite that are about the row, not the database.
ROW_ERRORS = (ValueError, TypeError, OverflowError, RecursionError, sqlite3.InterfaceError)


# What a chunk holds per line: the row it is stored as (plain text and numbers, see
# RequestRow: thousands of them cost the garbage collector nothing, where the Request's dicts
# and lists would be tracked, promoted and traversed again and again; an invalid line's row
# has status "invalid" and its reason in the error), and a Request or an Invalid only when
# its row could not be written (the store then says why).
Item = RequestRow | Request | Invalid
_PENDING = str(RequestStatus.PENDING)  # a plain str: an enum member would keep a row tracked
_INVALID = str(RequestStatus.INVALID)
# The RequestRow fields read here.
LINE: Final = 0
CUSTOM_ID: Final = 1
MODEL: Final = 2
PROVIDER: Final = 3
SIZE: Final = 5
METADATA: Final = 6
STATUS: Final = 8
ERROR: Final = 9


def stored(item: Request | Invalid) -> Item:
    """A line as the row it is stored as (each JSON value encoded once, here in the worker
    thread); a line whose values cannot be written as JSON (the store finds it again and says
    why) as it is."""
    if not isinstance(item, Request):
        try:
            return request_row(row_dict(item))
        except ROW_ERRORS:
            return item
    try:
        body = item.body_json if item.body_json is not None else compact(item.body)
        metadata = None if item.metadata is None else compact(item.metadata)
        notes = compact(item.adaptations) if item.adaptations else "[]"
    except ROW_ERRORS:
        return item
    return (
        item.line, item.custom_id, item.model, item.provider, body, item.size_bytes, metadata,
        notes, _PENDING, None,
    )  # fmt: skip


def line_of(item: Item) -> int:
    return item[LINE] if isinstance(item, tuple) else item.line


def weight(item: Item) -> int:
    """Roughly what one line costs in memory: its body and its metadata (echoed back, so
    possibly the bulk of a line), plus a fixed share for the rest."""
    if isinstance(item, tuple):
        return 256 + item[SIZE] + len(item[METADATA] or "")
    size = 256 + (item.size_bytes if isinstance(item, Request) else 0)
    if item.metadata is not None:
        size += len(json.dumps(item.metadata, separators=(",", ":"), ensure_ascii=False))
    return size


def next_chunk(lines: Iterator[Item]) -> list[Item]:
    """Up to CHUNK lines, or fewer once they weigh CHUNK_BYTES (2,000 lines of a megabyte
    each would be 2 GB in memory at once), each as it is stored. Runs in a worker thread."""
    chunk: list[Item] = []
    size = 0
    for line in lines:
        item = line if isinstance(line, tuple) else stored(line)  # (the usual line: a row)
        chunk.append(item)
        size += weight(item)
        if len(chunk) >= CHUNK or size >= CHUNK_BYTES:
            break
    return chunk




def row_dict(item: Request | Invalid) -> dict[str, Any]:
    if isinstance(item, Request):
        return {
            "line": item.line,
            "custom_id": item.custom_id,
            "model": item.model,
            "provider": item.provider,
            "body": item.body,
            "body_json": item.body_json,
            "size_bytes": item.size_bytes,
            "metadata": item.metadata,
            "adaptations": list(item.adaptations),
            "status": RequestStatus.PENDING,
        }
    return {
        "line": item.line,
        "custom_id": item.custom_id,
        "model": item.model,
        "provider": item.provider,
        "body": None,
        "metadata": None,
        "status": RequestStatus.INVALID,
        "error": {"type": "invalid_request", "message": item.reason, "code": None},
    }


def request_row_of(item: Item) -> RequestRow:
    return item if isinstance(item, tuple) else request_row(row_dict(item))


async def store_lines(store: Store, file_id: int, items: list[Item]) -> list[Item]:
    """Store ``items``; a line the store refuses (whatever was missed before) is stored as
    ``invalid`` naming the error instead. Returns what was stored."""
    try:
        await store.add_request_rows(file_id, [request_row_of(item) for item in items])
        return items
    except ROW_ERRORS:
        pass  # one line spoils the chunk's transaction: find it, line by line
    stored: list[Item] = []
    for item in items:
        try:
            await store.add_request_rows(file_id, [request_row_of(item)])
        except ROW_ERRORS as exc:
            line = line_of(item)
            model, provider = (
                (item[MODEL], item[PROVIDER]) if isinstance(item, tuple)
                else (item.model, item.provider)
            )  # fmt: skip
            reason = f"line {line}: cannot be stored: {type(exc).__name__}: {exc}"[:400]
            item = Invalid(line, f"line-{line}", reason, model, provider)
            await store.add_requests(file_id, [row_dict(item)])
        stored.append(item)
    return stored


@dataclass
class Tally:
    """Counts of an ingest pass (every line of the file, also those stored by an earlier
    pass), and its "line rejected" log lines: only for lines after ``logged_to``, the first
    MAX_REJECT_LOGS of them, then one line saying how many more (all reasons are in the
    results file anyway; a million bad lines must not become a million log lines)."""

    name: str
    log: Any
    logged_to: int = 0
    total: int = 0
    invalid: int = 0
    rejected: int = 0
    models: dict[str, int] = field(default_factory=dict)

    def add(self, chunk: list[Item]) -> None:
        for item in chunk:
            if isinstance(item, tuple):
                if item[STATUS] == _INVALID:
                    if self._counts_rejected(item[LINE]):  # its reason read only to be logged
                        error = loads(item[ERROR] or "{}")
                        self._log_rejected(item[LINE], item[CUSTOM_ID], error.get("message"))
                    continue
                model = str(item[MODEL])
                self.models[model] = self.models.get(model, 0) + 1
                continue
            if isinstance(item, Request):
                self.models[item.model] = self.models.get(item.model, 0) + 1
                continue
            if self._counts_rejected(item.line):
                self._log_rejected(item.line, item.custom_id, item.reason)
        self.total += len(chunk)

    def _counts_rejected(self, line: int) -> bool:
        """Count an invalid line; whether it is to be logged."""
        self.invalid += 1
        if line <= self.logged_to:
            return False
        self.rejected += 1
        return self.rejected <= MAX_REJECT_LOGS

    def _log_rejected(self, line: int, custom_id: str, reason: Any) -> None:
        self.log.bind(
            event="request.invalid", line=line, custom_id=custom_id, error_kind="invalid_request"
        ).warning("line rejected: {}: {}", self.name, reason)

    def close(self) -> None:
        if self.rejected > MAX_REJECT_LOGS:
            self.log.bind(event="request.invalid", error_kind="invalid_request").warning(
                "{} more rejected in {}; every reason is in its results file",
                plural(self.rejected - MAX_REJECT_LOGS, "line"),
                self.name,
            )


