"""Logging: loguru to stderr, one line per lifecycle event, context bound per line.

Every line carries an ``event`` (a stable dotted name such as ``batch.submitted``) and the
context that is known where it is logged, under fixed names (:data:`FIELDS`): a line about a
job names its ``file`` and ``job`` id; a line about a batch names ``provider``, ``model``, the
local tag ``batch`` and, once the provider has answered, ``provider_batch_id``; a line about
one request names its input ``line`` and ``custom_id``. :func:`job_log`, :func:`batch_log` and
:func:`batch_context` bind them in one place, so one batch's lines always carry the same names.

Text lines print that context after the message (``... | file=orders.jsonl job=3``), so
``journalctl -u batchd | grep batch=batchd-1f2e`` follows one batch. ``--log-json`` writes one
JSON object per line with exactly the keys of :data:`JSON_SCHEMA` (documented in README.md,
"Logs"): never the library's own record. API keys are never passed to the logger. A text line
is always one line: control characters in names, ids and messages are escaped (:func:`escape`).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from typing import TYPE_CHECKING, Any

from loguru import logger

from .states import FILE_OPEN, BatchRowStatus
from .text import escape, plural

if TYPE_CHECKING:
    from loguru import Logger, Message, Record

    from .store import Store

# The context fields, in the order text lines print them; every one is in each JSON line
# (null when unknown).
FIELDS = (
    "file",
    "job",
    "line",
    "custom_id",
    "provider",
    "model",
    "batch",
    "provider_batch_id",
    "elapsed_s",
    "error_kind",
)

_STR_OR_NULL = {"type": ["string", "null"]}
_INT_OR_NULL = {"type": ["integer", "null"]}
JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "batchd --log-json line",
    "type": "object",
    "required": ["time", "level", "event", "message", *FIELDS],
    "additionalProperties": False,
    "properties": {
        "time": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"},
        "level": {
            "enum": ["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"]
        },
        "event": {"type": "string", "pattern": r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$"},
        "message": {"type": "string"},
        "file": _STR_OR_NULL,
        "job": _INT_OR_NULL,
        "line": _INT_OR_NULL,
        "custom_id": _STR_OR_NULL,
        "provider": _STR_OR_NULL,
        "model": _STR_OR_NULL,
        "batch": _STR_OR_NULL,
        "provider_batch_id": _STR_OR_NULL,
        "elapsed_s": {"type": ["number", "null"], "minimum": 0},
        "error_kind": _STR_OR_NULL,
        "exception": {"type": "string"},  # only when a traceback is attached
    },
}

_INT_FIELDS = ("job", "line")


# -- binding context -------------------------------------------------------------------------


def job_log(row: dict[str, Any]) -> Logger:
    """A logger for the lines about one job (a file row): its ``file`` name and ``job`` id."""
    return logger.bind(file=row["name"], job=row["id"])


def batch_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The fields that name one batch (a batch row), as every line about it carries them."""
    return {
        "provider": row["provider"],
        "model": row["model"],
        "batch": row["tag"],
        "provider_batch_id": row.get("provider_batch_id"),
    }


def batch_log(row: dict[str, Any]) -> Logger:
    """A logger for the lines about one batch (a batch row): provider, model, local tag and,
    once known, the provider's batch id."""
    return logger.bind(**batch_fields(row))


@contextmanager
def batch_context(provider: str, model: str, tag: str) -> Iterator[None]:
    """Every line logged inside (in this task, by any module) names this batch, before the
    provider has given it an id. A task cancelled inside (shutdown's grace period ran out)
    says which batch it cut off."""
    with logger.contextualize(provider=provider, model=model, batch=tag):
        try:
            yield
        except asyncio.CancelledError:
            logger.bind(event="shutdown.cut_off").warning(
                "batch {} cut off by shutdown; what it recorded stands, and a create call "
                "without a recorded outcome is looked up at the next start",
                tag,
            )
            raise


def elapsed_since(start: float | None) -> float | None:
    """Seconds since ``start`` (a wall-clock time), for ``elapsed_s``; None when unknown."""
    if start is None:
        return None
    return round(max(0.0, time.time() - float(start)), 3)


# The error kinds of failed provider calls (by the adapter's error class), as ``error_kind``
# names them on log lines; every one is explained in docs/operations.md, "Error guide".
CALL_ERROR_KINDS = {
    "TransientError": "provider_transient",
    "TimeoutError": "provider_transient",
    "AuthError": "auth_failed",
    "PermanentError": "provider_refused",
    "ResultsGone": "results_gone",
    "UnknownOutcome": "create_outcome_unknown",
}


def call_error_kind(err: BaseException) -> str:
    """The ``error_kind`` of a failed provider call: by the adapter's error class (its nearest
    known base), ``internal_error`` for anything else (a bug)."""
    for cls in type(err).__mro__:
        if cls.__name__ in CALL_ERROR_KINDS:
            return CALL_ERROR_KINDS[cls.__name__]
    return "internal_error"


class Throttle:
    """Says whether a periodic line is due for a key: at most once per ``every_s`` each
    (progress lines of long-running batches, repeated warnings)."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last: dict[object, float] = {}

    def due(self, key: object, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            return False
        self._last[key] = now
        return True

    def forget(self, key: object) -> None:
        self._last.pop(key, None)


_STARTED = time.time()  # the process's start, near enough (imported at start-up)


async def log_stopped(store: Store) -> None:
    """The shutdown summary: what is left open (it goes on at the next start) and how long
    this run lasted. Never raises: the state database may be what stopped the daemon."""
    elapsed = elapsed_since(_STARTED)
    log = logger.bind(event="shutdown.summary", elapsed_s=elapsed)
    try:
        files = await store.files_in(*FILE_OPEN)
        waiting = await store.waiting_by_provider()
        submitting = await store.batches_in(BatchRowStatus.SUBMITTING)
        running = await store.batches_in(BatchRowStatus.SUBMITTED)
    except Exception as exc:
        log.warning("batchd stopped after {:.0f}s; no summary ({})", elapsed or 0.0, exc)
        return
    if not (files or waiting or submitting or running):
        log.info("batchd stopped after {:.0f}s: nothing left open", elapsed or 0.0)
        return
    shown = ", ".join(f"{escape(f['name'])} (job {f['id']})" for f in files[:5])
    more = f" and {len(files) - 5} more" if len(files) > 5 else ""
    log.info(
        "batchd stopped after {:.0f}s: {} open{}{}; {} not final ({}); {} at the providers, {} "
        "with a create call to look up; all of it goes on at the next start",
        elapsed or 0.0,
        plural(len(files), "file"),
        f": {shown}" if shown else "",
        more,
        plural(sum(waiting.values()), "request"),
        ", ".join(f"{p} {n}" for p, n in sorted(waiting.items())) or "none",
        plural(len(running), "batch", "batches"),
        plural(len(submitting), "batch", "batches"),
    )


# -- output ----------------------------------------------------------------------------------


def _json_text(value: object) -> str:
    """Text for a JSON line: JSON escapes control characters itself; a lone surrogate (a file
    name's undecodable byte) cannot be written as UTF-8, so it becomes its escape, as in text
    lines (``\\udcff``)."""
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _field(extra: dict[str, Any], key: str) -> Any:
    value = extra.get(key)
    if value is None:
        return None
    if key in _INT_FIELDS:
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    if key == "elapsed_s":
        try:
            return round(float(value), 3)
        except (TypeError, ValueError):
            return None
    return _json_text(value)


def _module_event(record: Record) -> str:
    """The event of a line logged without one of its own: ``<module>.log``."""
    module = str(record["name"] or "batchd").rsplit(".", 1)[-1].lower()
    return (re.sub(r"[^a-z0-9_]", "_", module).lstrip("_0123456789") or "batchd") + ".log"


def json_record(record: Record) -> dict[str, Any]:
    """One log record as the documented JSON object (:data:`JSON_SCHEMA`)."""
    extra = record["extra"]
    stamp = record["time"].astimezone(UTC)
    out: dict[str, Any] = {
        "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
        "level": record["level"].name,
        "event": str(extra.get("event") or _module_event(record)),
        "message": _json_text(record["message"]),
    }
    for key in FIELDS:
        out[key] = _field(extra, key)
    exc = record["exception"]
    if exc is not None and exc.type is not None:
        trace = traceback.format_exception(exc.type, exc.value, exc.traceback)
        out["exception"] = _json_text("".join(trace).rstrip())
    return out


def _json_sink(message: Message) -> None:
    line = json.dumps(json_record(message.record), ensure_ascii=False, default=str)
    stream = sys.stderr
    stream.write(line + "\n")
    stream.flush()


def _text(value: Any, key: str) -> str:
    if key == "elapsed_s":
        try:
            return f"{float(value):.1f}"
        except (TypeError, ValueError):
            pass
    return escape(value)


def _format(record: Record) -> str:
    extra = record["extra"]
    ctx = " ".join(
        f"{k}={_text(extra[k], k)}" for k in FIELDS if extra.get(k) is not None
    )
    # The message and context go in through ``extra`` (escaped), never into the format string
    # itself: braces in a file name are then plain text, and the format stays one constant.
    extra["_line"] = escape(record["message"]) + (f" | {ctx}" if ctx else "")
    return "{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {extra[_line]}\n{exception}"


def setup_logging(*, json_lines: bool = False, level: str = "INFO") -> None:
    logger.remove()
    if json_lines:
        logger.add(_json_sink, level=level, format="{message}", backtrace=False, diagnose=False)
    else:
        logger.add(
            sys.stderr,
            level=level,
            format=_format,
            backtrace=False,
            diagnose=False,
            colorize=False,
        )
