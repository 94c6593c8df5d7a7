"""Spool files: a batch's input written as JSONL on local disk before it is uploaded.

Written in a worker thread, line by line, with the provider's hard caps enforced on the way,
so an oversized batch is refused before anything leaves the machine. A failure removes the
half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .base import BatchItem, PermanentError, ProviderLimits


def quoted(key: str) -> str:
    """``json.dumps(key, ensure_ascii=False)``; the usual key (``r<request id>``: letters and
    digits only, nothing to escape) without the encoder's cost."""
    return f'"{key}"' if key.isalnum() else json.dumps(key, ensure_ascii=False)


# Lines are joined into one write of about this many bytes.
WRITE_BYTES = 256 * 1024


def _joined(lines: list[str]) -> bytes:
    """Lines as UTF-8, each with its line end."""
    lines.append("")
    return "\n".join(lines).encode()


def write_spool(
    spool_dir: Path,
    provider: str,
    items: Iterable[BatchItem],
    limits: ProviderLimits,
    line_of: Callable[[BatchItem], dict[str, Any]],
    text_of: Callable[[BatchItem, str], str] | None = None,
) -> tuple[Path, int]:
    """Write one ``line_of(item)`` JSON line per item; returns the file and its size.

    ``text_of(item, body_json)``, when given, writes the same line as text around an item's
    ``body_json`` (its body already encoded), so the body is not encoded again."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{provider}-", suffix=".jsonl", dir=spool_dir)
    path = Path(name)
    count = size = pending_bytes = 0
    pending: list[str] = []  # lines not written yet (one write of ~WRITE_BYTES, not one a line)
    max_items, max_bytes = limits.max_items, limits.max_bytes
    try:
        with os.fdopen(fd, "wb") as out:
            for item in items:
                body_json = item.body_json
                if text_of is not None and body_json is not None:
                    text = text_of(item, body_json)
                else:
                    text = json.dumps(line_of(item), ensure_ascii=False, separators=(",", ":"))
                # its size in UTF-8 with its line end (encoding it says at once if it cannot be)
                length = (len(text) if text.isascii() else len(text.encode())) + 1
                count += 1
                size += length
                if count > max_items or size > max_bytes:
                    raise PermanentError(
                        f"{provider} batch exceeds {limits.max_items} items"
                        f" or {limits.max_bytes} bytes"
                    )
                pending.append(text)
                pending_bytes += length
                if pending_bytes >= WRITE_BYTES:
                    out.write(_joined(pending))
                    pending.clear()
                    pending_bytes = 0
            if pending:
                out.write(_joined(pending))
        if count == 0:
            raise PermanentError(f"{provider} batch has no items")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, size
