"""Reading the providers' JSON answers without trusting their shape.

A provider (or a proxy in front of it) may answer with a field missing, null, or of another
type than its documentation says. These helpers turn such a field into a safe default instead
of an ``AttributeError`` halfway through parsing a results file.
"""

from __future__ import annotations

from typing import Any


def obj(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}

