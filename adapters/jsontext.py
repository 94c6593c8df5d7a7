"""JSON text on the data path: fast, and the same values as the standard library's.

Every request passes through JSON a few times (its inbox line, its stored body, the provider's
answer, its stored result). orjson does each of these several times faster than the standard
library (``bench/stages.py``; docs/performance.md), so it is used wherever it gives the very
same value, and the standard library everywhere else:

* :func:`compact` is ``json.dumps(value, separators=(",", ":"), ensure_ascii=False)``: no
  spaces, non-ASCII characters as themselves. orjson spells a few floats differently
  (``1e-07`` as ``1e-7``: the same number) and refuses what it cannot write the same way (an
  integer beyond 64 bits, a key that is not a string, an unpaired surrogate): those values go
  to the standard library, which writes them as before or raises its own error. (A NaN nested
  in a value, which no JSON source can hold, is written as null.)
* :func:`loads` is ``json.loads``. orjson reads an integer beyond 64 bits as a float, so text
  where a number of 19 digits or more may be goes to the standard library (the test of the
  text errs only on the safe side), as does any text orjson refuses: the caller sees the
  standard library's value or its exception (and its exact message), never orjson's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import orjson

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# 2**63 has 19 digits: a number with fewer is never an integer orjson would turn to float. A
# number starts the text or follows ':', ',' or '[' (and maybe spaces and a minus sign); the
# same digits inside a string only send that text to the standard library (slower, same value).
_DIGIT_MARKS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))  # digit: "0"
_RUN = b"0" * 19
_SKIP = frozenset(b" \t\r\n-")
_STARTS = frozenset(b":,[")


def long_number(text: str | bytes) -> bool:
    """Whether ``text`` may hold a number of 19 digits or more (see above)."""
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    marks = data.translate(_DIGIT_MARKS)  # every digit a "0", every other byte a space
    at = marks.find(_RUN)
    while at >= 0:
        i = at - 1  # the first such run: what comes before it?
        while i >= 0 and data[i] in _SKIP:
            i -= 1
        if i < 0 or data[i] in _STARTS:
            return True
        end = marks.find(b" ", at)
        at = -1 if end < 0 else marks.find(_RUN, end)
    return False


def compact(value: Any) -> str:
    """``value`` as compact JSON text (see the module docstring)."""
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError:
        return _ENCODER.encode(value)


def fast_loads(text: str | bytes) -> tuple[bool, Any]:
    """(True, the value) when orjson read ``text`` to the value ``json.loads`` gives; else
    (False, None): the caller decodes it its own way (and reports its own errors)."""
    if long_number(text):
        return False, None
    try:
        return True, orjson.loads(text)
    except orjson.JSONDecodeError:
        return False, None


def loads(text: str | bytes) -> Any:
    """``json.loads(text)``, done by orjson where the value is the same (see the module
    docstring); the standard library's value and errors otherwise."""
    done, value = fast_loads(text)
    return value if done else json.loads(text)


def loads_kept(text: str | bytes) -> Any:
    """JSON text whose text itself is what is kept (a provider's answer line, stored and
    written as it is, :class:`RawJSON`): read by orjson, where a number beyond 64 bits read as
    a float changes nothing kept; by the standard library when orjson refuses the text."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def loads_object(text: str | bytes) -> dict[str, Any] | None:
    """:func:`loads_kept` of a line that should hold one JSON object: the object, or None when
    the text is not JSON, or JSON of another kind (a provider's corrupt or truncated line)."""
    try:
        value = loads_kept(text)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return None
    return value if isinstance(value, dict) else None


class RawJSON:
    """JSON text already written (a stored answer, metadata, a list), placed into a value that
    :func:`dumps_bytes` writes, as it is: never decoded and encoded again."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"RawJSON({self.text[:60]!r})"


def _fragment(value: Any) -> Any:
    if isinstance(value, RawJSON):
        return orjson.Fragment(value.text)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _decoded(value: Any) -> Any:
    if isinstance(value, RawJSON):
        return loads(value.text)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps_bytes(value: Any) -> bytes:
    """``value`` as compact JSON in UTF-8, its :class:`RawJSON` parts copied as they are.

    What orjson cannot write the same way (see :func:`compact`; a lone surrogate in a string)
    is written by the standard library instead, the raw parts decoded, and with ASCII escapes
    when the text would not be valid UTF-8: still valid JSON, the same value."""
    try:
        return orjson.dumps(value, default=_fragment)
    except TypeError:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_decoded)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(value, separators=(",", ":"), default=_decoded).encode("ascii")


async def jsonl_lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[list[str]]:
    """The non-blank lines of a streamed JSON Lines file, as text (without their line ends), a
    list at a time: the lines each chunk completes (one step per chunk, not per line).

    Lines end at ``\n`` (or ``\r\n``) only: a JSON text may hold other characters that
    ``str.splitlines`` takes for line ends (U+2028, U+0085, ...) inside its strings. A byte that
    is not UTF-8 is read as U+FFFD, as a text decoder with ``errors="replace"`` does (a line
    end is never inside a character, so the lines a chunk completes are decoded at once)."""
    pending: list[bytes] = []  # the start of a line that is still being received
    async for chunk in chunks:
        end = chunk.rfind(b"\n")
        if end < 0:
            pending.append(chunk)
            continue
        if pending:
            pending.append(chunk[:end])
            done = b"".join(pending)
        else:
            done = chunk[:end]
        pending = [chunk[end + 1 :]] if end + 1 < len(chunk) else []
        if lines := _lines(done):
            yield lines
    if lines := _lines(b"".join(pending)):
        yield lines


def _lines(data: bytes) -> list[str]:
    text = data.decode("utf-8", "replace")
    if "\r" in text:
        return [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    return [line for line in text.split("\n") if line.strip()]
