"""Read an inbox JSONL file line by line: validate each line and build the provider-native body.

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

Three forms are accepted (see ``_FORMS``): the unified form (``model`` + ``messages``), the
native OpenAI batch line (``body``) and the native Anthropic batch line (``params``).

Adaptation: a valid line's body is handed to :mod:`daemon.adapt`, which applies the model's
rules from the capability registry (:mod:`daemon.registry`) and records each change. Under
``on_unsupported = "reject"`` a line whose adaptation would remove or clamp something becomes
an Invalid naming what, instead of being sent changed.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from daemon.adapt import Note, Policy, adapt_native, adapt_unified
from daemon.registry import EFFORTS, PROVIDERS

# Per-line cap. 10 MiB: far above any sensible chat request, under Anthropic's 32 MB request
# cap, and small enough that one oversized line cannot push a 20 MB Gemini inline batch over.
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024
SNIFF_BYTES = 8 * 1024
READ_BUFFER_BYTES = 256 * 1024
BOM = codecs.BOM_UTF8

ROLES = ("system", "user", "assistant", "developer")
SYSTEM_ROLES = frozenset({"system", "developer"})
UNIFIED_KEYS = (
    "custom_id",
    "model",
    "messages",
    "system",
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "provider",
    "metadata",
    "reasoning_effort",
    "top_k",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
)
OPENAI_NATIVE_KEYS = ("custom_id", "method", "url", "body", "metadata")
ANTHROPIC_NATIVE_KEYS = ("custom_id", "params", "metadata")
OPENAI_BATCH_URL = "/v1/chat/completions"


@dataclass(frozen=True)
class Request:
    """A valid line, ready to batch: ``body`` is exactly what the provider receives per item.

    ``body`` includes ``model`` for openai/anthropic; for gemini it is the REST
    GenerateContentRequest without ``model`` (the model is part of the batch, not the item).
    ``size_bytes`` is the length of ``body`` as compact UTF-8 JSON, for batch size limits.
    """

    line: int
    custom_id: str
    model: str
    provider: str
    body: dict[str, Any]
    metadata: Any = None
    adaptations: list[Note] = field(default_factory=list)
    size_bytes: int = 0


@dataclass(frozen=True)
class Invalid:
    """A line that will not be sent; ``reason`` is one sentence starting "line N: ...".

    ``metadata`` is kept when the line was a readable object, so the result line can still
    echo it back to the user.
    """

    line: int
    custom_id: str
    reason: str
    model: str | None = None
    provider: str | None = None
    metadata: Any = None


Line = Request | Invalid


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
    parser = _Parser(policy)
    with open(path, "rb", buffering=READ_BUFFER_BYTES) as f:
        for n, content, size in _physical_lines(f, max_request_bytes):
            if content is None:
                yield parser.too_long(n, size, max_request_bytes)
            elif content.strip():
                yield parser.parse(n, content)


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
# One line


class _SeenIds:
    """custom_ids met so far in the file, to reject the second occurrence of one.

    Default ids ("line-N") are unique by construction, so they are not stored: a bitmap of the
    lines that used one is enough to catch an explicit "line-N" colliding with them. Only
    explicit ids cost memory (one dict entry each).
    """

    def __init__(self) -> None:
        self._explicit: dict[str, int] = {}
        self._defaulted = bytearray()

    def first_line(self, custom_id: str, line: int, defaulted: bool) -> int | None:
        """The line that already used ``custom_id``; else record it and return None."""
        first = self._explicit.get(custom_id)
        if first is None and not defaulted:
            first = self._defaulted_line(custom_id, line)
        if first is not None:
            return first
        if defaulted:
            self._mark_defaulted(line)
        else:
            self._explicit[custom_id] = line
        return None

    def _mark_defaulted(self, line: int) -> None:
        byte = line >> 3
        if byte >= len(self._defaulted):
            self._defaulted.extend(bytes(byte + 1 - len(self._defaulted) + 4096))
        self._defaulted[byte] |= 1 << (line & 7)

    def _defaulted_line(self, custom_id: str, line: int) -> int | None:
        digits = custom_id[5:]
        if not custom_id.startswith("line-") or not digits.isdigit() or digits[0] == "0":
            return None
        k = int(digits)
        if k >= line or (k >> 3) >= len(self._defaulted):
            return None
        return k if self._defaulted[k >> 3] & (1 << (k & 7)) else None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# Built once: json.loads/dumps with non-default options build a new coder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class _Parser:
    """Turns the bytes of one line into a Request or an Invalid; keeps the file-wide state."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.seen = _SeenIds()
        self._routes: dict[tuple[str, str | None], str | None] = {}

    def too_long(self, n: int, size: int, limit: int) -> Invalid:
        self.seen.first_line(f"line-{n}", n, defaulted=True)
        reason = f"{size} bytes, over the per-request limit of {limit} bytes (max_request_bytes)"
        return Invalid(n, f"line-{n}", f"line {n}: {reason}")

    def parse(self, n: int, content: bytes) -> Line:
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = content[exc.start]
            where = f"byte 0x{bad:02x} at byte {exc.start + 1} of the line"
            return self._unreadable(n, f"not valid UTF-8 ({where})")
        try:
            obj = _DECODER.decode(text)
        except json.JSONDecodeError as exc:
            return self._unreadable(n, f"invalid JSON: {exc.msg} (column {exc.colno})")
        except ValueError as exc:  # NaN / Infinity
            return self._unreadable(n, f"invalid JSON: {exc}")
        if not isinstance(obj, dict):
            return self._unreadable(n, f"expected a JSON object, got {_kind(obj)}")
        return self._parse_object(n, obj)

    def _unreadable(self, n: int, reason: str) -> Invalid:
        self.seen.first_line(f"line-{n}", n, defaulted=True)
        return Invalid(n, f"line-{n}", f"line {n}: {reason}")

    def _parse_object(self, n: int, obj: dict[str, Any]) -> Line:
        given = obj.get("custom_id")
        custom_id = given if isinstance(given, str) and given else f"line-{n}"
        metadata = obj.get("metadata")
        first = self.seen.first_line(custom_id, n, defaulted=custom_id != given)
        if given is not None and custom_id != given:
            msg = f"'custom_id' must be a non-empty string, got {_kind(given)}"
            return Invalid(n, custom_id, f"line {n}: {msg}", metadata=metadata)
        if first is not None:
            msg = f"duplicate custom_id {custom_id!r} (first used on line {first})"
            return Invalid(n, custom_id, f"line {n}: {msg}", metadata=metadata)
        form = _form_of(obj)
        model, provider, body, errors = form(self, obj)
        if errors or model is None or provider is None or body is None:
            reason = f"line {n}: {'; '.join(errors)}"
            return Invalid(n, custom_id, reason, model, provider, metadata)
        adapt = adapt_unified if form is _unified else adapt_native
        body, notes = adapt(body, model, provider, self.policy)
        lossy = [note for note in notes if note.lossy]
        if lossy and self.policy.reject:
            reason = f'line {n}: {"; ".join(lossy)} (on_unsupported = "reject")'
            return Invalid(n, custom_id, reason, model, provider, metadata)
        return Request(n, custom_id, model, provider, body, metadata, notes, _size(body))

    def route(self, model: str, line_provider: str | None) -> str | None:
        """``route`` memoised per file: a file usually names a handful of models."""
        key = (model, line_provider)
        if key not in self._routes:
            if len(self._routes) > 4096:
                self._routes.clear()
            registry, routes = self.policy.registry, self.policy.routes
            self._routes[key] = registry.route(model, line_provider, routes)
        return self._routes[key]


def _size(body: dict[str, Any]) -> int:
    return len(_ENCODER.encode(body).encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# Field checks: each returns an error phrase or None. Phrases name the field, what it must be
# and what it got, so the user can fix the line without reading the docs.

_Check = Callable[[str, Any], str | None]


def _kind(value: Any) -> str:
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
    return repr(value) if _is_number(value) else _kind(value)


def _show(value: Any) -> str:
    """For a value outside a fixed set: the value itself when it is a word, else its kind."""
    return repr(value) if isinstance(value, str) and value else _kind(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _non_empty_string(name: str, value: Any) -> str | None:
    if isinstance(value, str) and value:
        return None
    return f"'{name}' must be a non-empty string, got {_kind(value)}"


def _string(name: str, value: Any) -> str | None:
    return None if isinstance(value, str) else f"'{name}' must be a string, got {_kind(value)}"


def _number_between(low: float, high: float) -> _Check:
    def check(name: str, value: Any) -> str | None:
        if not _is_number(value):
            return f"'{name}' must be a number, got {_kind(value)}"
        if not low <= value <= high:
            return f"'{name}' must be between {low:g} and {high:g}, got {value!r}"
        return None

    return check


def _positive_int(name: str, value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return None
    return f"'{name}' must be a positive integer, got {_describe(value)}"


def _non_negative_int(name: str, value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return None
    return f"'{name}' must be an integer of 0 or more, got {_describe(value)}"


def _boolean(name: str, value: Any) -> str | None:
    return (
        None if isinstance(value, bool) else f"'{name}' must be true or false, got {_kind(value)}"
    )


def _one_of(allowed: tuple[str, ...]) -> _Check:
    def check(name: str, value: Any) -> str | None:
        if value in allowed:
            return None
        return f"'{name}' must be one of {', '.join(allowed)}, got {_show(value)}"

    return check


def _stop(name: str, value: Any) -> str | None:
    if isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(s, str) for s in value)
    ):
        return None
    return f"'{name}' must be a string or a list of strings, got {_kind(value)}"


def _provider(name: str, value: Any) -> str | None:
    if value in PROVIDERS:
        return None
    return f"'{name}' must be one of {', '.join(PROVIDERS)}, got {_show(value)}"


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
        return f"{where} must be an object, got {_kind(message)}"
    extra = message.keys() - {"role", "content"}
    if extra:
        return f"{where} has unknown key(s) {_names(extra)} (allowed: 'role', 'content')"
    role = message.get("role")
    if role not in ROLES:
        return f"{where}.role must be one of {', '.join(ROLES)}, got {_show(role)}"
    if "content" not in message:
        return f"{where}.content is missing"
    return _content(where, message["content"])


def _messages(name: str, value: Any) -> str | None:
    if not isinstance(value, list):
        return f"'{name}' must be a list of messages, got {_kind(value)}"
    if not value:
        return f"'{name}' is empty"
    for i, message in enumerate(value):
        error = _message(f"{name}[{i}]", message)
        if error:
            return error
    if all(m["role"] in SYSTEM_ROLES for m in value):
        return f"'{name}' has no user or assistant message"
    return None


def _names(keys: Any) -> str:
    return ", ".join(repr(k) for k in sorted(keys))


def _check_fields(
    obj: Mapping[str, Any], checks: Mapping[str, _Check], required: tuple[str, ...], where: str
) -> list[str]:
    errors = [f"'{where}{key}' is missing" for key in required if key not in obj]
    for key, check in checks.items():
        if key in obj:
            error = check(f"{where}{key}", obj[key])
            if error:
                errors.append(error)
    return errors


def _unknown_keys(obj: Mapping[str, Any], allowed: tuple[str, ...]) -> list[str]:
    extra = obj.keys() - set(allowed)
    return [f"unknown key(s) {_names(extra)}"] if extra else []


# ---------------------------------------------------------------------------------------------
# The three forms. Each returns (model, provider, body, errors); the body is final for native
# forms and the validated line itself for the unified form (converted afterwards).

_Parsed = tuple[str | None, str | None, dict[str, Any] | None, list[str]]

UNIFIED_CHECKS: dict[str, _Check] = {
    "model": _non_empty_string,
    "provider": _provider,
    "messages": _messages,
    "system": _string,
    "temperature": _number_between(0, 2),
    "top_p": _number_between(0, 1),
    "top_k": _non_negative_int,
    "presence_penalty": _number_between(-2, 2),
    "frequency_penalty": _number_between(-2, 2),
    "logprobs": _boolean,
    "reasoning_effort": _one_of(EFFORTS),
    "max_tokens": _positive_int,
    "stop": _stop,
}


def _unified(parser: _Parser, obj: dict[str, Any]) -> _Parsed:
    errors = _unknown_keys(obj, UNIFIED_KEYS)
    errors += _check_fields(obj, UNIFIED_CHECKS, ("model", "messages"), "")
    model = obj.get("model") if isinstance(obj.get("model"), str) and obj["model"] else None
    line_provider = obj.get("provider")
    provider = None
    if model is not None and (line_provider is None or line_provider in PROVIDERS):
        provider = parser.route(model, line_provider)
        if provider is None:
            errors.append(
                f"unknown model {model!r}: no provider is known for it; to use it, add it to "
                f'the config as [models."{model}"] with provider = "openai", "anthropic" or '
                "\"gemini\" (or give the line a 'provider' field)"
            )
    return model, provider, obj, errors


def _native_openai(parser: _Parser, obj: dict[str, Any]) -> _Parsed:
    errors = _unknown_keys(obj, OPENAI_NATIVE_KEYS)
    for key, expected in (("method", "POST"), ("url", OPENAI_BATCH_URL)):
        if key not in obj:
            errors.append(f"{key!r} is missing")
        elif obj[key] != expected:
            errors.append(f'{key!r} must be "{expected}", got {_show(obj[key])}')
    body = obj.get("body")
    if not isinstance(body, dict):
        return None, "openai", None, [*errors, f"'body' must be an object, got {_kind(body)}"]
    errors += _check_fields(body, NATIVE_CHECKS, ("model", "messages"), "body.")
    return _model_of(body), "openai", body, errors


def _native_anthropic(parser: _Parser, obj: dict[str, Any]) -> _Parsed:
    errors = _unknown_keys(obj, ANTHROPIC_NATIVE_KEYS)
    params = obj.get("params")
    if not isinstance(params, dict):
        return (
            None,
            "anthropic",
            None,
            [*errors, f"'params' must be an object, got {_kind(params)}"],
        )
    required = ("model", "messages", "max_tokens")
    errors += _check_fields(params, NATIVE_CHECKS, required, "params.")
    return _model_of(params), "anthropic", params, errors


def _native_messages(name: str, value: Any) -> str | None:
    """Native bodies are the provider's business; only check what routing and batching need."""
    if isinstance(value, list) and value:
        return None
    return f"'{name}' must be a non-empty list, got {_kind(value)}"


NATIVE_CHECKS: dict[str, _Check] = {
    "model": _non_empty_string,
    "messages": _native_messages,
    "max_tokens": _positive_int,
}


def _model_of(body: dict[str, Any]) -> str | None:
    model = body.get("model")
    return model if isinstance(model, str) and model else None


_FORMS: tuple[tuple[str, Callable[[_Parser, dict[str, Any]], _Parsed]], ...] = (
    ("body", _native_openai),
    ("params", _native_anthropic),
)


def _form_of(obj: dict[str, Any]) -> Callable[[_Parser, dict[str, Any]], _Parsed]:
    for key, form in _FORMS:
        if key in obj:
            return form
    return _unified
