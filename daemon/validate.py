"""Validate one decoded inbox line and build what it becomes: a Request or an Invalid.

This module owns the meaning of a line and the types it becomes (:class:`Request`,
:class:`Invalid`): the ``custom_id`` rules (default ``line-N``, no duplicates within a file),
which checks apply to which fields in each of the three accepted forms (the checks of single
values and their phrases are in :mod:`daemon.fields`), and the hand-over to
:mod:`daemon.adapt`. It never touches a file: :mod:`daemon.reading` reads, numbers and decodes
the lines, then feeds each one to a :class:`Validator` (one per file).

Three forms are accepted (see ``_form_of``): the unified form (``model`` + ``messages``), the
native OpenAI batch line (``body``) and the native Anthropic batch line (``params``).

Adaptation: a valid line's body is handed to :mod:`daemon.adapt`, which applies the model's
rules from the capability registry (:mod:`daemon.registry`) and records each change. Under
``on_unsupported = "reject"`` a line whose adaptation would remove or clamp something becomes
an Invalid naming what, instead of being sent changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from adapters.facts import PROVIDERS
from adapters.jsontext import compact
from daemon import fields
from daemon.adapt import Note, Policy, adapt_native, adapt_unified
from daemon.adapt_rules import API_INT_MAX
from daemon.registry import EFFORTS, ModelInfo
from daemon.seen_ids import IdTable
from daemon.states import RequestStatus

if TYPE_CHECKING:
    from daemon.store.db import RequestRow

OPENAI_NATIVE_KEYS = ("custom_id", "method", "url", "body", "metadata")
ANTHROPIC_NATIVE_KEYS = ("custom_id", "params", "metadata")
OPENAI_BATCH_URL = "/v1/chat/completions"


@dataclass(slots=True)
class Request:
    """A valid line, ready to batch: ``body`` is exactly what the provider receives per item.
    Never changed once made (not declared frozen: a frozen dataclass costs a few µs more to
    build, on every line of every file).

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
    # ``body`` as compact JSON (what the store keeps), written once: its length is the size.
    body_json: str | None = field(default=None, compare=False, repr=False)


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


class _SeenIds:
    """custom_ids met so far in the file, to reject the second occurrence of one.

    Default ids ("line-N") are unique by construction, so they are not stored: a bitmap of the
    lines that used one is enough to catch an explicit "line-N" colliding with them. Explicit
    ids are kept in a dict (about 120 bytes an id) up to ``DICT_IDS`` of them, then in an
    :class:`~daemon.seen_ids.IdTable` (the id's bytes and about 16 more: a million-line
    file's ids in some 26 MB, not 130; a few microseconds more per line, so only past that
    size).
    """

    DICT_IDS = 100_000

    def __init__(self) -> None:
        self._explicit: dict[str, int] | IdTable = {}
        self._defaulted = bytearray()

    def first_line(self, custom_id: str, line: int, defaulted: bool) -> int | None:
        """The line that already used ``custom_id``; else record it and return None."""
        explicit = self._explicit
        if not defaulted:  # (an explicit id and a default one never both hold the same id)
            if custom_id.startswith("line-"):
                first = self._defaulted_line(custom_id, line)
                if first is not None:
                    return first
            if isinstance(explicit, IdTable):
                return explicit.first(custom_id, line)
            first = explicit.setdefault(custom_id, line)
            if first == line and len(explicit) > self.DICT_IDS:
                self._explicit = IdTable.of(explicit)
            return None if first == line else first
        first = explicit.get(custom_id)
        if first is None:
            self._mark_defaulted(line)
        return first

    def _mark_defaulted(self, line: int) -> None:
        byte = line >> 3
        if byte >= len(self._defaulted):
            self._defaulted.extend(bytes(byte + 1 - len(self._defaulted) + 4096))
        self._defaulted[byte] |= 1 << (line & 7)

    def _defaulted_line(self, custom_id: str, line: int) -> int | None:
        """The line that used ``custom_id`` (which starts with "line-") as its default id."""
        digits = custom_id[5:]  # after "line-"
        if not digits.isdigit() or digits[0] == "0":
            return None
        k = int(digits)
        if k >= line or (k >> 3) >= len(self._defaulted):
            return None
        return k if self._defaulted[k >> 3] & (1 << (k & 7)) else None


# ---------------------------------------------------------------------------------------------
# One line


# The keys of the usual line (see Validator.usual_row), and the status of a stored request
# that waits to be sent (a plain str: an enum member would keep a row tracked by the GC).
_USUAL_KEYS = frozenset({"custom_id", "model", "messages", "max_tokens", "metadata"})
_PENDING = str(RequestStatus.PENDING)


class Validator:
    """Turns the decoded lines of one file into Requests and Invalids; keeps the file-wide
    state (the custom_ids seen so far, routes memoised)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.seen = _SeenIds()
        self._routes: dict[tuple[str, str | None], str | None] = {}
        self._infos: dict[tuple[str, str], ModelInfo] = {}
        # Per model: the largest max_tokens its usual line is sent with unchanged (0: none).
        self._plain: dict[str, int] = {}

    def usual_row(self, n: int, obj: dict[str, Any]) -> RequestRow | None:
        """Line ``n``, decoded to ``obj``, as the row it is stored as (what :meth:`validate`
        and ingest make of it), when it is the usual line: a unified line of ``model``,
        ``messages`` (known roles, text content, someone speaking) and a positive
        ``max_tokens``, maybe ``custom_id`` and ``metadata``, for an OpenAI model that takes
        it as it is (no rule has anything to do), its id not seen before. None for any other
        line, with nothing recorded: :meth:`validate` then says what it is."""
        model = obj.get("model")  # (first: a line for another model is told at once)
        if type(model) is not str:
            return None
        ceiling = self._plain.get(model)
        if ceiling is None:
            ceiling = self._plain_ceiling(model)
        if not ceiling or not obj.keys() <= _USUAL_KEYS:
            return None
        messages, max_tokens = obj.get("messages"), obj.get("max_tokens")
        if (
            type(max_tokens) is not int
            or not 0 < max_tokens <= ceiling
            or type(messages) is not list
            or not messages
        ):
            return None
        if not fields.usual_messages(messages):
            return None
        given = obj.get("custom_id")
        if given is None:
            custom_id, defaulted = f"line-{n}", True
        elif type(given) is str and given:
            custom_id, defaulted = given, False
        else:
            return None
        metadata = obj.get("metadata")
        try:  # (the body: texts and an int that fits, which orjson writes as compact does)
            body = orjson.dumps({"model": model, "messages": messages, "max_tokens": max_tokens})
            metadata_text = None if metadata is None else compact(metadata)
        except (ValueError, TypeError, OverflowError, RecursionError):
            return None  # (the long way says why)
        text = body.decode()
        if self.seen.first_line(custom_id, n, defaulted) is not None:
            return None  # a duplicate (asking again records nothing)
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
        return (n, custom_id, model, "openai", text, size, metadata_text, "[]", _PENDING, None)

    def _plain_ceiling(self, model: str) -> int:
        """For :meth:`usual_row`: the largest ``max_tokens`` a line for ``model`` goes out with
        unchanged, when no rule touches its usual line (see ``adapt._plain_openai``); else 0."""
        ceiling = 0
        if model and self.route(model, None) == "openai":
            info = self._info(model, "openai")
            if info.system == "system" and info.output_field == "max_tokens":
                ceiling = API_INT_MAX if info.output_max is None else info.output_max
        if len(self._plain) > 4096:
            self._plain.clear()
        self._plain[model] = ceiling
        return ceiling

    def unreadable(self, n: int, reason: str) -> Invalid:
        """Line ``n`` could not be read (too long, not UTF-8, not JSON): it keeps its default
        id, so an explicit "line-N" later in the file still collides with it."""
        self.seen.first_line(f"line-{n}", n, defaulted=True)
        return Invalid(n, f"line-{n}", f"line {n}: {reason}")

    def validate(self, n: int, value: Any) -> Line:
        """Line ``n``, decoded to ``value``: a Request ready to batch, or an Invalid (why not)."""
        if not isinstance(value, dict):
            return self.unreadable(n, f"expected a JSON object, got {fields.kind(value)}")
        return self._validate_object(n, value)

    def _validate_object(self, n: int, obj: dict[str, Any]) -> Line:
        given = obj.get("custom_id")
        custom_id = given if isinstance(given, str) and given else f"line-{n}"
        defaulted = custom_id is not given
        metadata = obj.get("metadata")
        first = self.seen.first_line(custom_id, n, defaulted)
        if defaulted and given is not None:
            msg = f"'custom_id' must be a non-empty string, got {fields.kind(given)}"
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
        body, notes = adapt(body, model, provider, self.policy, self._info(model, provider))
        lossy = [note for note in notes if note.lossy] if notes and self.policy.reject else ()
        if lossy:
            reason = f'line {n}: {"; ".join(lossy)} (on_unsupported = "reject")'
            return Invalid(n, custom_id, reason, model, provider, metadata)
        text = compact(body)
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
        return Request(n, custom_id, model, provider, body, metadata, notes, size, text)

    def _info(self, model: str, provider: str) -> ModelInfo:
        """The registry's ``info`` memoised per file, as :meth:`route`."""
        key = (model, provider)
        info = self._infos.get(key)
        if info is None:
            if len(self._infos) > 4096:
                self._infos.clear()
            info = self._infos[key] = self.policy.registry.info(model, provider)
        return info

    def route(self, model: str, line_provider: str | None) -> str | None:
        """``route`` memoised per file: a file usually names a handful of models."""
        key = (model, line_provider)
        if key not in self._routes:
            if len(self._routes) > 4096:
                self._routes.clear()
            registry, routes = self.policy.registry, self.policy.routes
            self._routes[key] = registry.route(model, line_provider, routes)
        return self._routes[key]


# ---------------------------------------------------------------------------------------------
# The three forms. Each returns (model, provider, body, errors); the body is final for native
# forms and the validated line itself for the unified form (converted afterwards).

_Parsed = tuple[str | None, str | None, dict[str, Any] | None, list[str]]
_Form = Callable[["Validator", dict[str, Any]], _Parsed]

UNIFIED_CHECKS: dict[str, fields.Check] = {
    "model": fields.non_empty_string,
    "provider": fields.provider,
    "messages": fields.messages,
    "system": fields.string,
    "temperature": fields.number_between(0, 2),
    "top_p": fields.number_between(0, 1),
    "top_k": fields.non_negative_int,
    "presence_penalty": fields.number_between(-2, 2),
    "frequency_penalty": fields.number_between(-2, 2),
    "logprobs": fields.boolean,
    "reasoning_effort": fields.one_of(EFFORTS),
    "max_tokens": fields.positive_int,
    "stop": fields.stop,
}
UNIFIED_KEYS = ("custom_id", "metadata", *UNIFIED_CHECKS)


_UNCHECKED = frozenset(UNIFIED_KEYS) - UNIFIED_CHECKS.keys()
_UNIFIED_REQUIRED = ("model", "messages")


def _unified(validator: Validator, obj: dict[str, Any]) -> _Parsed:
    model: str | None
    if fields.all_fine(obj, UNIFIED_CHECKS, _UNIFIED_REQUIRED, _UNCHECKED):
        errors: list[str] = []
        model = obj["model"]  # checked: a non-empty string
    else:
        errors = fields.unknown_keys(obj, UNIFIED_KEYS)
        errors += fields.check_fields(obj, UNIFIED_CHECKS, _UNIFIED_REQUIRED, "")
        model = obj.get("model") if isinstance(obj.get("model"), str) and obj["model"] else None
    line_provider = obj.get("provider")
    provider = None
    if model is not None and (line_provider is None or line_provider in PROVIDERS):
        provider = validator.route(model, line_provider)
        if provider is None:
            errors.append(
                f"unknown model {model!r}: no provider is known for it; to use it, add it to "
                f'the config as [models."{model}"] with provider = "openai", "anthropic" or '
                "\"gemini\" (or give the line a 'provider' field)"
            )
    return model, provider, obj, errors


def _native_openai(validator: Validator, obj: dict[str, Any]) -> _Parsed:
    errors = fields.unknown_keys(obj, OPENAI_NATIVE_KEYS)
    for key, expected in (("method", "POST"), ("url", OPENAI_BATCH_URL)):
        if key not in obj:
            errors.append(f"{key!r} is missing")
        elif obj[key] != expected:
            errors.append(f'{key!r} must be "{expected}", got {fields.show(obj[key])}')
    body = obj.get("body")
    if not isinstance(body, dict):
        errors.append(f"'body' must be an object, got {fields.kind(body)}")
        return None, "openai", None, errors
    errors += fields.check_fields(body, NATIVE_CHECKS, ("model", "messages"), "body.")
    return _model_of(body), "openai", body, errors


def _native_anthropic(validator: Validator, obj: dict[str, Any]) -> _Parsed:
    errors = fields.unknown_keys(obj, ANTHROPIC_NATIVE_KEYS)
    params = obj.get("params")
    if not isinstance(params, dict):
        errors.append(f"'params' must be an object, got {fields.kind(params)}")
        return None, "anthropic", None, errors
    required = ("model", "messages", "max_tokens")
    errors += fields.check_fields(params, NATIVE_CHECKS, required, "params.")
    return _model_of(params), "anthropic", params, errors


# Native bodies are the provider's business: only check what routing and batching need.
NATIVE_CHECKS: dict[str, fields.Check] = {
    "model": fields.non_empty_string,
    "messages": fields.non_empty_list,
    "max_tokens": fields.positive_int,
}


def _model_of(body: dict[str, Any]) -> str | None:
    model = body.get("model")
    return model if isinstance(model, str) and model else None


def _form_of(obj: dict[str, Any]) -> _Form:
    """A native OpenAI line has ``body``, a native Anthropic line ``params``; else unified."""
    if "body" in obj:
        return _native_openai
    if "params" in obj:
        return _native_anthropic
    return _unified
