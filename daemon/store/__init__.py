"""All of the daemon's SQL, behind intent-named methods. Nothing else in batchd writes SQL.

``schema.py`` holds the numbered migrations, ``queries.py`` every statement by name, ``db.py``
the connection and the intent-named methods that run them (files and ingest), with its mixins
``batches.py`` (a batch's claim, submission, polls and results), ``planning.py`` (the due
book, lanes, budgets) and ``jobs.py`` (operations: cancel, retention); ``rows.py`` the readers
for other threads (outbox writer, spool writer); ``base.py`` the error and parameter helpers;
``reader.py`` a synchronous read-only reader (``batchd status``) and ``snapshot.py`` the
read-only looks of the status line and metrics.

The names below are imported when first used, so a module that needs only ``reader.py`` or
``queries.py`` (``batchd status``) does not import ``db.py`` and, with it, asyncio and aiosqlite.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import StoreError, state_failure
    from .db import Store
    from .jobs import JOB_CANCELED, StoreVersionError
    from .queries import DB_FILE_MODE
    from .rows import StoredItems, iter_file_rows, iter_result_rows

_HOMES = {
    "DB_FILE_MODE": "queries",
    "JOB_CANCELED": "jobs",
    "Store": "db",
    "StoreError": "base",
    "StoreVersionError": "jobs",
    "StoredItems": "rows",
    "iter_file_rows": "rows",
    "iter_result_rows": "rows",
    "state_failure": "base",
}

__all__ = [
    "DB_FILE_MODE",
    "JOB_CANCELED",
    "Store",
    "StoreError",
    "StoreVersionError",
    "StoredItems",
    "iter_file_rows",
    "iter_result_rows",
    "state_failure",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # found once
    return value
