"""Logging: loguru to stderr, one line per lifecycle event, context bound per line.

Bound context (``file``, ``provider``, ``model``, ``batch``) is printed after the message, so
``journalctl -u batchd | grep file=orders.jsonl`` follows one file. ``--log-json`` writes one
JSON object per line instead. API keys are never passed to the logger. A text line is always
one line: control characters in names, ids and messages are escaped (:func:`escape`).
"""

from __future__ import annotations

import re
import sys
from typing import Any

CONTEXT_KEYS = ("file", "provider", "model", "batch")


# Characters that must not reach a text log line as they are: C0 and C1 controls (a newline
# in a file name would forge a log line, an escape sequence would drive the terminal), DEL,
# the Unicode line and paragraph separators, and lone surrogates (not encodable).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def escape(value: object) -> str:
    """``value`` as text on one line: each unsafe character becomes its Python escape (a
    newline ``\\n``, ESC ``\\x1b``, a lone surrogate ``\\udcff``). Names and ids bound into
    log lines go through here, so no user input can add or change a line of the log."""
    text = str(value)
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _format(record: Any) -> str:
    extra = record["extra"]
    ctx = " ".join(f"{k}={escape(extra[k])}" for k in CONTEXT_KEYS if k in extra)
    # The message and context go in through ``extra`` (escaped), never into the format string
    # itself: braces in a file name are then plain text, and the format stays one constant.
    extra["_line"] = escape(record["message"]) + (f" | {ctx}" if ctx else "")
    return "{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {extra[_line]}\n{exception}"


def setup_logging(*, json_lines: bool = False, level: str = "INFO") -> None:
    from loguru import logger  # here, not at import: ``escape`` serves commands that never log

    logger.remove()
    if json_lines:
        logger.add(sys.stderr, level=level, serialize=True, backtrace=False, diagnose=False)
    else:
        logger.add(
            sys.stderr, level=level, format=_format, backtrace=False, diagnose=False, colorize=False
        )
