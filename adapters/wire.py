"""Reading the providers' JSON answers without trusting their shape.

A provider (or a proxy in front of it) may answer with a field missing, null, or of another
type than its documentation says, or with no JSON at all (an HTML error page, an empty or cut
body). These helpers turn such a value into a safe default instead of an ``AttributeError``,
``TypeError`` or ``KeyError`` halfway through parsing an answer.
"""

from __future__ import annotations

import json
from typing import Any


def obj(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def items(value: Any) -> list[Any]:
    """``value`` if it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def text(value: Any) -> str | None:
    """A JSON string or number as text (a message, a status word); anything else is None."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def parse_body(raw: bytes) -> Any:
    """An answer's body as JSON, or None when it is not JSON at all (HTML, empty, cut short,
    not UTF-8, nested too deep to read)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are both
        return None
