"""Read an inbox JSONL file: whole-file sniffing, then physical lines streamed and decoded.

This module owns the bytes: whether a file can be read as JSONL at all (:func:`sniff`), how it
splits into numbered lines, the UTF-8 BOM, the per-line size cap, and decoding each line as
UTF-8 JSON. What a decoded line means (its fields and forms, and the :class:`Request` or
:class:`Invalid` it becomes) belongs to :mod:`daemon.validate`; :func:`iter_lines` joins the
two for ``batchd check``, :func:`iter_rows` for ingest (the usual line as its stored row).

The file is streamed in binary with a bounded read per line, so memory stays flat whatever the
file's size (a line over ``max_request_bytes`` is skipped without being held). Each line is
decoded and ``json.loads``-ed exactly once.

What counts as a line:

* Line numbers are physical, 1-based, counting every ``\\n`` (a ``\\r\\n`` ending is one line
  end; a lone ``\\r`` is not a line end). A UTF-8 BOM at the very start is ignored.
* Blank or whitespace-only lines are not requests: they are skipped silently (they keep their
  line number, so later lines still point at the right place in the editor).
* Every other line yields exactly one :class:`Request` or :class:`Invalid`. A bad line never
  fails the file; only :func:`sniff` decides that a whole file cannot be read as JSONL.

Containment: whatever one line holds, it becomes a Request or an Invalid, never an exception.
Besides the syntax, a decoded line is refused when a later stage could not carry it: JSON
nested deeper than ``MAX_DEPTH`` levels (a thousand ``[`` would exhaust the parser's stack), a
string with an unpaired surrogate escape such as ``"\\ud800"`` (valid JSON syntax, but not
Unicode: it cannot be stored, written as UTF-8 or sent), and a number too large for a float
(``1e999`` would become ``Infinity``, which is not JSON). Any other exception while one line is
decoded, validated or adapted makes that line an Invalid naming the error.

Progress: :class:`Progress` tells how far the file was read (so bytes a writer appends later
are found), and ``complete_only`` leaves a last line without its line end for later, as one
still being written.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import orjson

from adapters.jsontext import fast_loads, long_number
from daemon.adapt import Policy
from daemon.validate import Invalid, Line, Validator

if TYPE_CHECKING:
    from daemon.store.db import RequestRow

# Per-line cap. 10 MiB: far above any sensible chat request, under Anthropic's 32 MB request
# cap, and small enough that one oversized line cannot push a 20 MB Gemini inline batch over.
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024
SNIFF_BYTES = 8 * 1024
READ_BUFFER_BYTES = 256 * 1024
BOM = codecs.BOM_UTF8
_BLANK = frozenset(b" \t\n\r\x0b\x0c")  # what bytes.strip() removes
# Levels of arrays and objects a line may nest. A request nests about five; 100 leaves room
# for deep metadata or tool schemas, far below what would exhaust a stack anywhere later.
MAX_DEPTH = 100


# ---------------------------------------------------------------------------------------------
# Whole-file check


def sniff(path: Path | str) -> str | None:
    """Why the whole file cannot be read as JSONL, or None when it can (even if empty).

    Only the first 8 KiB are read: enough to tell a binary, UTF-16 or unreadable file from a
    JSONL file with a few bad lines, which :func:`iter_lines` reports line by line instead.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as exc:
        return _unreadable(exc)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "not UTF-8: the file starts with a UTF-16 byte order mark (save it as UTF-8)"
    nul = head.find(b"\x00")
    if nul >= 0:
        return f"binary content: NUL byte at offset {nul} in the first 8 KiB (not a text file)"
    return _not_utf8(head.removeprefix(BOM))


def _unreadable(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "cannot read: permission denied"
    if isinstance(exc, IsADirectoryError):
        return "cannot read: is a directory"
    if isinstance(exc, FileNotFoundError):
        return "cannot read: no such file"
    return f"cannot read: {exc.strerror or exc}"


def _not_utf8(head: bytes) -> str | None:
    """A reason when no non-blank line of ``head`` decodes as UTF-8.

    One bad line in a UTF-8 file is that line's problem; a head where every line is bad is a
    file in another encoding (Latin-1, Shift-JIS...), and per-line errors would only be noise.
    """
    first_bad: tuple[int, int] | None = None  # (offset in head, byte)
    offset = 0
    for chunk in head.splitlines(keepends=True):
        if chunk.strip():
            try:
                codecs.getincrementaldecoder("utf-8")().decode(chunk, final=False)
                return None
            except UnicodeDecodeError as exc:
                first_bad = first_bad or (offset + exc.start, chunk[exc.start])
        offset += len(chunk)
    if first_bad is None:
        return None
    at, bad = first_bad
    return f"not UTF-8: byte 0x{bad:02x} at offset {at} (save the file as UTF-8)"


# ---------------------------------------------------------------------------------------------
# Streaming


@dataclass
class Progress:
    """How far :func:`iter_lines` has read: ``bytes`` is the offset after the last line it
    consumed. ``resume_at`` (set by the caller) is where an earlier pass stopped: a line that
    began before it and ends after it was cut short then, and ``late_bytes`` counts what was
    added to it afterwards (its line was taken as it was)."""

    resume_at: int = 0
    bytes: int = 0
    late_bytes: int = 0


def iter_lines(
    path: Path | str,
    *,
    overrides: Mapping[str, str] | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    policy: Policy | None = None,
    progress: Progress | None = None,
    complete_only: bool = False,
) -> Iterator[Line]:
    """Yield a Request or an Invalid for every non-blank line of ``path``, in file order.

    ``policy`` carries the registry, the routes and the adaptation settings (the daemon passes
    :func:`daemon.config.adapt_policy`); without one, the ``overrides`` routes are used with
    the packaged registry and the defaults. ``progress`` is kept up to date as lines are read;
    with ``complete_only`` a last line without a line end is not read (a writer may still be
    adding to it).
    Raises OSError only if the file itself cannot be read; call :func:`sniff` first to turn
    that into a reason.
    """
    if policy is None:
        policy = Policy(routes=dict(overrides or {}))
    return _lines(path, read_line, max_request_bytes, policy, progress, complete_only)


def iter_rows(
    path: Path | str,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    policy: Policy | None = None,
    progress: Progress | None = None,
    complete_only: bool = False,
) -> Iterator[Line | RequestRow]:
    """:func:`iter_lines` for ingest: the usual line comes as the row it is stored as
    (:meth:`daemon.validate.Validator.usual_row`, what ingest would make of its Request),
    any other as its Request or Invalid."""
    policy = policy if policy is not None else Policy()
    return _lines(path, read_row, max_request_bytes, policy, progress, complete_only)


_Read = TypeVar("_Read", bound="Line | RequestRow")


def _lines(
    path: Path | str,
    read: Callable[[Validator, int, bytes], _Read],
    max_request_bytes: int,
    policy: Policy,
    progress: Progress | None,
    complete_only: bool,
) -> Iterator[_Read | Invalid]:
    validator = Validator(policy)
    progress = progress if progress is not None else Progress()
    with open(path, "rb", buffering=READ_BUFFER_BYTES) as f:
        for n, content, size in _physical_lines(f, max_request_bytes, progress, complete_only):
            if content is None:
                limit = f"the per-request limit of {max_request_bytes} bytes (max_request_bytes)"
                yield validator.unreadable(n, f"{size} bytes, over {limit}")
            elif content and (content[0] not in _BLANK or content.strip()):
                yield read(validator, n, content)


def read_line(validator: Validator, n: int, content: bytes) -> Line:
    """Line ``n`` (its bytes, without the line end) as a Request or an Invalid; never raises."""
    try:
        value, error = _decode(content)
        if error is not None:
            return validator.unreadable(n, error)
        return validator.validate(n, value)
    except Exception as exc:  # one line must never stop a file, whatever it holds
        return validator.unreadable(n, f"could not be processed: {_describe(exc)}")


def read_row(validator: Validator, n: int, content: bytes) -> Line | RequestRow:
    """:func:`read_line`, the usual line as its stored row (see :func:`iter_rows`): decoded by
    orjson as :func:`_decode` does it, checked by :meth:`Validator.usual_row`; any other line
    the long way, decoded once. Never raises."""
    try:
        try:
            value = orjson.loads(content)
        except orjson.JSONDecodeError:
            return read_line(validator, n, content)  # the standard library says why
        if content.count(b"[") + content.count(b"{") > MAX_DEPTH:
            return read_line(validator, n, content)
        # orjson reads an integer beyond 64 bits as a float (see adapters.jsontext). The usual
        # line holds no number but its max_tokens, which must be an int (a float is refused),
        # and its metadata: only a line with metadata needs the test of its text.
        long = None  # (the test is made once at most)
        if type(value) is dict:
            if "metadata" in value:
                long = long_number(content)
            if not long and (row := validator.usual_row(n, value)) is not None:
                return row
        if long or (long is None and long_number(content)):
            return read_line(validator, n, content)  # the standard library's value
        return validator.validate(n, value)
    except Exception as exc:  # as read_line
        return validator.unreadable(n, f"could not be processed: {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


def _physical_lines(
    f: BinaryIO, limit: int, progress: Progress, complete_only: bool
) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, content without line end or None if over ``limit``, content size).

    ``readline`` is bounded, so an over-long line is measured and skipped in bounded pieces
    instead of being held whole. ``progress.bytes`` moves past each line as it is yielded.
    """
    n = 0
    end = f.tell()  # kept by counting: where each line ends is where the next one starts
    while True:
        start = end
        raw = f.readline(limit + 2)
        if not raw:
            return
        n += 1
        end = start + len(raw)
        if n == 1:
            raw = raw.removeprefix(BOM)
        ended = raw.endswith(b"\n")
        if not ended and len(raw) == limit + 2:
            size = len(raw) + _skip_rest_of_line(f)
            if complete_only and not _ended_line(f):
                return
            end = f.tell()
            _advance(progress, start, end)
            yield n, None, size
            continue
        if complete_only and not ended:
            return  # a last line still being written: read it when it is complete
        if start < progress.resume_at < end:
            progress.late_bytes += end - progress.resume_at
        progress.bytes = end
        content = raw.rstrip(b"\r\n") if ended else raw
        if len(content) > limit:
            yield n, None, len(content)
        else:
            yield n, content, len(content)


def _advance(progress: Progress, start: int, end: int) -> None:
    if start < progress.resume_at < end:
        progress.late_bytes += end - progress.resume_at
    progress.bytes = end


def _ended_line(f: BinaryIO) -> bool:
    """After :func:`_skip_rest_of_line`: whether the line ended with a line end (not EOF)."""
    f.seek(-1, 1)
    return f.read(1) == b"\n"


def _skip_rest_of_line(f: BinaryIO) -> int:
    skipped = 0
    while piece := f.readline(READ_BUFFER_BYTES):
        if piece.endswith(b"\n"):
            return skipped + len(piece.rstrip(b"\r\n"))
        skipped += len(piece)
    return skipped


# ---------------------------------------------------------------------------------------------
# Decoding one line


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is out of range (larger than a 64-bit float)")
    return value


# Built once: json.loads with non-default options builds a new decoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
# A JSON escape of a surrogate code point (\ud800-\udfff): a pair is a valid character, an
# unpaired one is not. Only lines with one are searched (the search of the value is slower).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _decode(content: bytes) -> tuple[Any, str | None]:
    """(the line's JSON value, None), or (None, why it is not UTF-8 JSON we can carry).

    orjson reads most lines (:func:`daemon.jsontext.fast_loads`: the same value, several times
    faster); it refuses invalid UTF-8, unpaired surrogates, NaN and numbers out of range, so a
    line it takes only needs the depth check. Every line it refuses (and every line with a
    long run of digits) is read by the standard library below, whose messages are the line's
    reason."""
    done, value = fast_loads(content)
    if done:
        if content.count(b"[") + content.count(b"{") > MAX_DEPTH:
            problem = _uncarriable(value, True)
            if problem is not None:
                return None, problem
        return value, None
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"byte 0x{content[exc.start]:02x} at byte {exc.start + 1} of the line"
        return None, f"not valid UTF-8 ({where})"
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} (column {exc.colno})"
    except ValueError as exc:  # NaN / Infinity, a number out of range, too many digits
        return None, f"invalid JSON: {exc}"
    except RecursionError:
        return None, _too_deep()
    deep = text.count("[") + text.count("{") > MAX_DEPTH
    if deep or _SURROGATE_ESCAPE.search(text) is not None:
        problem = _uncarriable(value, deep)
        if problem is not None:
            return None, problem
    return value, None


def _too_deep() -> str:
    return f"JSON nested too deeply (more than {MAX_DEPTH} levels of arrays and objects)"


def _uncarriable(value: Any, check_depth: bool) -> str | None:
    """Why a decoded value cannot be carried further (too deep, an unpaired surrogate), or
    None. Walks the value with its own stack, so depth cannot hurt the walk itself."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, str):
            if (bad := _surrogate(node)) is not None:
                return _unpaired(bad, f"'{where}'" if where else "the line")
            continue
        if not isinstance(node, dict | list):
            continue
        if check_depth and depth > MAX_DEPTH:
            return _too_deep()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in reversed(list(items)):
            if isinstance(key, str) and (bad := _surrogate(key)) is not None:
                return _unpaired(bad, f"a key in '{where}'" if where else "a key")
            stack.append((child, _path(where, key), depth + 1))
    return None


def _path(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def _surrogate(text: str) -> str | None:
    """The first unpaired surrogate in ``text`` (a decoded pair is one valid character)."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as exc:
        return text[exc.start]


def _unpaired(char: str, where: str) -> str:
    return (
        f"{where} contains an unpaired surrogate (\\u{ord(char):04x}), which is not valid "
        "Unicode; no provider can take it (write the character itself, or both halves of its pair)"
    )
