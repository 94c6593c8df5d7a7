"""All of the daemon's SQL, behind intent-named methods. Nothing else in batchd writes SQL.

``schema.py`` holds the numbered migrations, ``queries.py`` every statement by name, ``db.py``
the connection and the intent-named methods that run them.
"""

from __future__ import annotations

from .db import Store, StoredItems, StoreError, iter_file_rows, state_failure
from .queries import DB_FILE_MODE

__all__ = [
    "DB_FILE_MODE", "Store", "StoreError", "StoredItems", "iter_file_rows", "state_failure"
]
