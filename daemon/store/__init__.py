"""All of the daemon's SQL, behind intent-named methods. Nothing else in batchd writes SQL.

``schema.py`` holds the numbered migrations, ``queries.py`` every statement by name, ``db.py``
the connection and the intent-named methods that run them; ``jobs.py`` the methods for
operations (cancel, retention, progress reports).
"""

from __future__ import annotations

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
