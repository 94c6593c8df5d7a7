"""Read an inbox JSONL file: whole-file sniffing, then physical lines streamed and decoded.

This module owns the bytes: whether a file can be read as JSONL at all (:func:`sniff`), how it
splits into numbered lines, the UTF-8 BOM, the per-line size cap, and decoding each line as
UTF-8 JSON. What a decoded line means (its fields and forms, and the :class:`Request` or
:class:`Invalid` it becomes) belongs to :mod:`daemon.validate`; :func:`iter_lines` joins the
two and is the one entry point ingest and ``batchd check`` use.

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
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from daemon.adapt import Policy
from daemon.validate import Line, Validator

# Per-line cap. 10 MiB: far above any sensible chat request, under Anthropic's 32 MB request
# cap, and small enough that one oversized line cannot push a 20 MB Gemini inline batch over.
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024
SNIFF_BYTES = 8 * 1024
READ_BUFFER_BYTES = 256 * 1024
BOM = codecs.BOM_UTF8


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


def iter_lines(
    path: Path | str,
    *,
    overrides: Mapping[str, str] | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    policy: Policy | None = None,
) -> Iterator[Line]:
    """Yield a Request or an Invalid for every non-blank line of ``path``, in file order.

    ``policy`` carries the registry, the routes and the adaptation settings (the daemon passes
    :func:`daemon.config.adapt_policy`); without one, the ``overrides`` routes are used with
    the packaged registry and the defaults.
    Raises OSError only if the file itself cannot be read; call :func:`sniff` first to turn
    that into a reason.
    """
    if policy is None:
        policy = Policy(routes=dict(overrides or {}))
    validator = Validator(policy)
    with open(path, "rb", buffering=READ_BUFFER_BYTES) as f:
        for n, content, size in _physical_lines(f, max_request_bytes):
            if content is None:
                limit = f"the per-request limit of {max_request_bytes} bytes (max_request_bytes)"
                yield validator.unreadable(n, f"{size} bytes, over {limit}")
            elif content.strip():
                value, error = _decode(content)
                if error is not None:
                    yield validator.unreadable(n, error)
                else:
                    yield validator.validate(n, value)


def _physical_lines(f: BinaryIO, limit: int) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, content without line end or None if over ``limit``, content size).

    ``readline`` is bounded, so an over-long line is measured and skipped in bounded pieces
    instead of being held whole.
    """
    n = 0
    while raw := f.readline(limit + 2):
        n += 1
        if n == 1:
            raw = raw.removeprefix(BOM)
        if not raw.endswith(b"\n") and len(raw) == limit + 2:
            yield n, None, len(raw) + _skip_rest_of_line(f)
            continue
        content = raw.rstrip(b"\r\n") if raw.endswith(b"\n") else raw
        if len(content) > limit:
            yield n, None, len(content)
        else:
            yield n, content, len(content)


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


# Built once: json.loads with non-default options builds a new decoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _decode(content: bytes) -> tuple[Any, str | None]:
    """(the line's JSON value, None), or (None, why it is not UTF-8 JSON)."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"byte 0x{content[exc.start]:02x} at byte {exc.start + 1} of the line"
        return None, f"not valid UTF-8 ({where})"
    try:
        return _DECODER.decode(text), None
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} (column {exc.colno})"
    except ValueError as exc:  # NaN / Infinity
        return None, f"invalid JSON: {exc}"
