"""Logging: loguru to stderr, one line per lifecycle event, context bound per line.

Bound context (``file``, ``provider``, ``model``, ``batch``) is printed after the message, so
``journalctl -u batchd | grep file=orders.jsonl`` follows one file. ``--log-json`` writes one
JSON object per line instead. API keys are never passed to the logger.
"""

from __future__ import annotations

import sys
from typing import Any

from loguru import logger

CONTEXT_KEYS = ("file", "provider", "model", "batch")


def _format(record: Any) -> str:
    extra = record["extra"]
    ctx = " ".join(f"{k}={extra[k]}" for k in CONTEXT_KEYS if k in extra)
    tail = f" | {ctx}" if ctx else ""
    return (
        "{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {message}"
        + tail.replace("{", "{{").replace("}", "}}")
        + "\n{exception}"
    )


def setup_logging(*, json_lines: bool = False, level: str = "INFO") -> None:
    logger.remove()
    if json_lines:
        logger.add(sys.stderr, level=level, serialize=True, backtrace=False, diagnose=False)
    else:
        logger.add(
            sys.stderr, level=level, format=_format, backtrace=False, diagnose=False, colorize=False
        )
