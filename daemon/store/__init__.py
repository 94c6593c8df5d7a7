"""All of the daemon's SQL, behind intent-named methods. Nothing else in batchd writes SQL.

``schema.py`` holds the numbered migrations, ``queries.py`` every statement by name, ``db.py``
the connection and the intent-named methods that run them; ``jobs.py`` the methods for
operations (cancel, retention); ``reader.py`` a synchronous read-only reader
(``batchd status``) and ``snapshot.py`` the read-only looks of the status line and metrics.

The names below are imported when first used, so a module that needs only ``reader.py`` or
``queries.py`` (``batchd status``) does not import ``db.py`` and, with it, asyncio and aiosqlite.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .db import (
        Store,
        StoredItems,
        StoreError,
        iter_file_rows,
        iter_result_rows,
        state_failure,
    )
    from .jobs import JOB_CANCELED, StoreVersionError
    from .queries import DB_FILE_MODE

_HOMES = {
    "DB_FILE_MODE": "queries",
    "JOB_CANCELED": "jobs",
    "Store": "db",
    "StoreError": "db",
    "StoreVersionError": "jobs",
    "StoredItems": "db",
    "iter_file_rows": "db",
    "iter_result_rows": "db",
    "state_failure": "db",
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
