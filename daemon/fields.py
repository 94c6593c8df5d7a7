"""Checks of single JSON values from an inbox line, each returning an error phrase or None.

A phrase names the field, what it must be and what it got (``'top_p' must be between 0 and 1,
got 1.5``), so the user can fix the line without reading the docs. :mod:`daemon.validate`
maps a line's fields to these checks and joins the phrases into the line's reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from adapters.facts import PROVIDERS
from daemon.adapt import SYSTEM_ROLES

ROLES = ("system", "user", "assistant", "developer")
_ROLE_SET = frozenset(ROLES)

Check = Callable[[str, Any], str | None]


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string" if value else "empty string"
    return "list" if isinstance(value, list) else "object"


def _describe(value: Any) -> str:
    """A number is shown as itself (the range is the problem), anything else by its kind."""
    return repr(value) if _is_number(value) else kind(value)


def show(value: Any) -> str:
    """For a value outside a fixed set: the value itself when it is a word, else its kind."""
    return repr(value) if isinstance(value, str) and value else kind(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def non_empty_string(name: str, value: Any) -> str | None:
    if isinstance(value, str) and value:
        return None
    return f"'{name}' must be a non-empty string, got {kind(value)}"


def non_empty_list(name: str, value: Any) -> str | None:
    if isinstance(value, list) and value:
        return None
    return f"'{name}' must be a non-empty list, got {kind(value)}"


def string(name: str, value: Any) -> str | None:
    return None if isinstance(value, str) else f"'{name}' must be a string, got {kind(value)}"


def number_between(low: float, high: float) -> Check:
    def check(name: str, value: Any) -> str | None:
        if not _is_number(value):
            return f"'{name}' must be a number, got {kind(value)}"
        if not low <= value <= high:
            return f"'{name}' must be between {low:g} and {high:g}, got {value!r}"
        return None

    return check


def positive_int(name: str, value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return None
    return f"'{name}' must be a positive integer, got {_describe(value)}"


def non_negative_int(name: str, value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return None
    return f"'{name}' must be an integer of 0 or more, got {_describe(value)}"


def boolean(name: str, value: Any) -> str | None:
    return (
        None if isinstance(value, bool) else f"'{name}' must be true or false, got {kind(value)}"
    )


def one_of(allowed: tuple[str, ...]) -> Check:
    def check(name: str, value: Any) -> str | None:
        if value in allowed:
            return None
        return f"'{name}' must be one of {', '.join(allowed)}, got {show(value)}"

    return check


def stop(name: str, value: Any) -> str | None:
    if isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(s, str) for s in value)
    ):
        return None
    return f"'{name}' must be a string or a list of strings, got {kind(value)}"


def provider(name: str, value: Any) -> str | None:
    if value in PROVIDERS:
        return None
    return f"'{name}' must be one of {', '.join(PROVIDERS)}, got {show(value)}"


def _content(where: str, content: Any) -> str | None:
    if isinstance(content, str):
        return None
    if not isinstance(content, list) or not content:
        return f"{where}.content must be a string or a non-empty list of text parts"
    for j, part in enumerate(content):
        if not (
            isinstance(part, dict)
            and part.keys() == {"type", "text"}
            and part["type"] == "text"
            and isinstance(part["text"], str)
        ):
            return f'{where}.content[{j}] must be a text part {{"type": "text", "text": "..."}}'
    return None


def _message(where: str, message: Any) -> str | None:
    if not isinstance(message, dict):
        return f"{where} must be an object, got {kind(message)}"
    extra = message.keys() - {"role", "content"}
    if extra:
        return f"{where} has unknown key(s) {_names(extra)} (allowed: 'role', 'content')"
    role = message.get("role")
    if role not in ROLES:
        return f"{where}.role must be one of {', '.join(ROLES)}, got {show(role)}"
    if "content" not in message:
        return f"{where}.content is missing"
    return _content(where, message["content"])


def usual_messages(value: list[Any]) -> bool:
    """Whether :func:`messages` finds nothing wrong with a non-empty list that holds only the
    usual messages (exactly a known role and text content) and someone speaking (False: look
    closer)."""
    spoken = False
    for message in value:
        if (
            type(message) is not dict
            or len(message) != 2
            or type(role := message.get("role")) is not str
            or role not in _ROLE_SET
            or type(message.get("content")) is not str
        ):
            return False
        if not spoken and role not in SYSTEM_ROLES:
            spoken = True
    return spoken


def messages(name: str, value: Any) -> str | None:
    if not isinstance(value, list):
        return f"'{name}' must be a list of messages, got {kind(value)}"
    if not value:
        return f"'{name}' is empty"
    spoken = False  # a user or assistant message seen
    for i, message in enumerate(value):
        # The usual message first: exactly a known role and text content (two keys, both
        # there, so no other). Anything else gets the full check, which words the error.
        if (
            type(message) is dict
            and len(message) == 2
            and type(role := message.get("role")) is str
            and role in _ROLE_SET
            and type(message.get("content")) is str
        ):
            spoken = spoken or role not in SYSTEM_ROLES
            continue
        error = _message(f"{name}[{i}]", message)
        if error:
            return error
        spoken = spoken or message["role"] not in SYSTEM_ROLES
    if not spoken:
        return f"'{name}' has no user or assistant message"
    return None


def _names(keys: Any) -> str:
    return ", ".join(repr(k) for k in sorted(keys))


def check_fields(
    obj: Mapping[str, Any], checks: Mapping[str, Check], required: tuple[str, ...], where: str
) -> list[str]:
    errors = [f"'{where}{key}' is missing" for key in required if key not in obj]
    for key, check in checks.items():
        if key in obj:
            error = check(f"{where}{key}", obj[key])
            if error:
                errors.append(error)
    return errors


def all_fine(
    obj: Mapping[str, Any],
    checks: Mapping[str, Check],
    required: tuple[str, ...],
    unchecked: frozenset[str],
) -> bool:
    """Whether ``obj`` (at the top of a line) passes :func:`check_fields` with no ``where``
    and :func:`unknown_keys`, its allowed keys being those of ``checks`` and ``unchecked``:
    the usual line is answered here without building any phrase or set. False only means
    "look closer": those two then say what is wrong, in their own words and order."""
    for key in required:
        if key not in obj:
            return False
    for key, value in obj.items():
        check = checks.get(key)
        if check is None:
            if key not in unchecked:
                return False
        elif check(key, value) is not None:
            return False
    return True


def unknown_keys(obj: Mapping[str, Any], allowed: tuple[str, ...]) -> list[str]:
    extra = obj.keys() - set(allowed)
    return [f"unknown key(s) {_names(extra)}"] if extra else []


