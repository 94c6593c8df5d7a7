"""What every part of the store shares: its error, and how values become parameters."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

from adapters.jsontext import RawJSON, compact


class StoreError(RuntimeError):
    pass


def state_failure(exc: BaseException) -> bool:
    """An error of the state database itself (disk full, locked, corrupt, closed): no unit of
    work can be contained without it, so it ends the process (a supervisor restarts it)."""
    return isinstance(exc, StoreError | sqlite3.OperationalError) or type(exc) in (
        sqlite3.DatabaseError,
        sqlite3.InternalError,
    )



def dumps(value: Any) -> str | None:
    """A JSON column's value: None stays NULL."""
    return None if value is None else compact(value)


def answer_text(answer: Any) -> str:
    """A provider's answer as stored: its own text when the adapter kept it, else encoded."""
    return answer.text if isinstance(answer, RawJSON) else compact(answer)


def statuses_param(statuses: Iterable[str]) -> str:
    """A set of statuses as one JSON parameter (for ``IN (SELECT value FROM json_each(?))``)."""
    return json.dumps(sorted(str(s) for s in statuses))


def row_id(cur: aiosqlite.Cursor) -> int:
    """The id of the row an INSERT made."""
    if cur.lastrowid is None:
        raise StoreError("an INSERT reported no row id")
    return cur.lastrowid


class StoreParts:
    """The base of the Store's mixins (``batches.py``, ``planning.py``, ``jobs.py``): what they
    use of the Store's connection, declared for the type checker; ``db.py`` defines it."""

    if TYPE_CHECKING:
        path: Path

        @property
        def db(self) -> aiosqlite.Connection: ...

        def transaction(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

        async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]: ...

        async def _one(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None: ...

        async def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

        def due_changed(self) -> None: ...
