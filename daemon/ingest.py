"""Ingest: claim a settled inbox file, then stream its lines into SQLite.

Claiming writes the file's intent row first and then moves the file out of the inbox into
the state folder, so the same name can be dropped again at once, and a crash between the two
steps is repaired at start-up. Lines are parsed in a worker thread, a chunk at a time, so a
large file never sits in memory and never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from .config import Config, adapt_policy
from .crashpoints import crash_point
from .reading import iter_lines, sniff
from .states import FileStatus, RequestStatus
from .store import Store
from .validate import Invalid, Request

MAX_REJECT_LOGS = 100  # "line rejected" log lines per file
CHUNK = 2000  # lines per store write...
CHUNK_BYTES = 4 * 1024 * 1024  # ...or fewer, when the lines are big: memory stays flat


def _weight(item: Request | Invalid) -> int:
    """Roughly what one line costs in memory: its body and its metadata (echoed back, so
    possibly the bulk of a line), plus a fixed share for the rest."""
    size = 256 + (item.size_bytes if isinstance(item, Request) else 0)
    if item.metadata is not None:
        size += len(json.dumps(item.metadata, separators=(",", ":"), ensure_ascii=False))
    return size


def _next_chunk(lines: Iterator[Request | Invalid]) -> list[Request | Invalid]:
    """Up to CHUNK lines, or fewer once they weigh CHUNK_BYTES (2,000 lines of a megabyte
    each would be 2 GB in memory at once). Runs in a worker thread."""
    chunk: list[Request | Invalid] = []
    size = 0
    for item in lines:
        chunk.append(item)
        size += _weight(item)
        if len(chunk) >= CHUNK or size >= CHUNK_BYTES:
            break
    return chunk


def _no_requests(path: Path) -> str:
    """Why a readable file gave no request at all."""
    try:
        empty = path.stat().st_size == 0
    except OSError:
        empty = False
    return "no requests: the file is empty" if empty else "no requests: only blank lines"


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except OSError:
        shutil.move(str(src), str(dst))  # another filesystem: copy, then remove


async def claim(
    cfg: Config, store: Store, path: Path, stop: asyncio.Event | None = None
) -> int | None:
    """Take ``path`` out of the inbox and ingest it; returns the job (file) id."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    work = cfg.state_dir / "work" / f"{secrets.token_hex(4)}-{path.name}"
    file_id = await store.claim_file(path.name, str(path), str(work), size)
    try:
        await asyncio.to_thread(_move, path, work)
    except OSError as exc:
        logger.bind(file=path.name).error("cannot take {} from the inbox: {}", path.name, exc)
        await store.set_file_status(
            file_id,
            FileStatus.ACTIVE,
            error=f"cannot move out of the inbox: {exc}",
            work_path=str(path),
            ingested_at=time.time(),
        )
        return file_id
    await ingest(cfg, store, file_id, stop)
    return file_id


async def recover(cfg: Config, store: Store, stop: asyncio.Event | None = None) -> None:
    """Finish claims and ingests that a crash (or a shutdown) interrupted."""
    for row in await store.files_in(FileStatus.CLAIMED, FileStatus.INGESTING):
        if stop is not None and stop.is_set():
            return
        work, inbox = Path(row["work_path"]), Path(row["inbox_path"])
        if row["status"] == FileStatus.CLAIMED and not work.exists():
            if not inbox.exists():
                await store.set_file_status(
                    row["id"],
                    FileStatus.DONE,
                    error="file vanished before ingest",
                    finished_at=time.time(),
                )
                continue
            await asyncio.to_thread(_move, inbox, work)
        await store.forget_requests(row["id"])
        logger.bind(file=row["name"]).info("resuming ingest of {}", row["name"])
        await ingest(cfg, store, row["id"], stop)


def _row(item: Request | Invalid) -> dict[str, Any]:
    if isinstance(item, Request):
        return {
            "line": item.line,
            "custom_id": item.custom_id,
            "model": item.model,
            "provider": item.provider,
            "body": item.body,
            "size_bytes": item.size_bytes,
            "metadata": item.metadata,
            "adaptations": list(item.adaptations),
            "status": RequestStatus.PENDING,
        }
    return {
        "line": item.line,
        "custom_id": item.custom_id,
        "model": item.model,
        "provider": item.provider,
        "body": None,
        "metadata": None,
        "status": RequestStatus.INVALID,
        "error": {"type": "invalid_request", "message": item.reason, "code": None},
    }


@dataclass
class _Tally:
    """Counts of an ingest, and its "line rejected" log lines: the first MAX_REJECT_LOGS of a
    file, then one line saying how many more (all reasons are in the results file anyway; a
    million bad lines must not become a million log lines)."""

    name: str
    log: Any
    total: int = 0
    invalid: int = 0
    models: dict[str, int] = field(default_factory=dict)

    def add(self, chunk: list[Request | Invalid]) -> None:
        for item in chunk:
            if isinstance(item, Request):
                self.models[item.model] = self.models.get(item.model, 0) + 1
                continue
            self.invalid += 1
            if self.invalid <= MAX_REJECT_LOGS:
                self.log.warning("line rejected: {}: {}", self.name, item.reason)
        self.total += len(chunk)

    def close(self) -> None:
        if self.invalid > MAX_REJECT_LOGS:
            self.log.warning(
                "{} more lines rejected in {}; every reason is in its results file",
                self.invalid - MAX_REJECT_LOGS,
                self.name,
            )


async def ingest(
    cfg: Config, store: Store, file_id: int, stop: asyncio.Event | None = None
) -> None:
    """Stream a claimed file into the store. Stopped by shutdown between two chunks, it stays
    ``ingesting`` and starts over at the next start (its stored lines are forgotten first)."""
    row = await store.file(file_id)
    assert row is not None
    path = Path(row["work_path"])
    log = logger.bind(file=row["name"])
    await store.set_file_status(file_id, FileStatus.INGESTING)
    reason = await asyncio.to_thread(sniff, path)
    if reason is not None:
        log.error("file {} cannot be read: {}", row["name"], reason)
        await store.set_file_status(
            file_id, FileStatus.ACTIVE, error=reason, ingested_at=time.time()
        )
        return
    lines = iter_lines(path, max_request_bytes=cfg.max_request_bytes, policy=adapt_policy(cfg))
    tally = _Tally(row["name"], log)
    try:
        while chunk := await asyncio.to_thread(_next_chunk, lines):
            if stop is not None and stop.is_set():
                log.info(
                    "ingest of {} stopped by shutdown; it resumes at the next start", row["name"]
                )
                return
            tally.add(chunk)
            await store.add_requests(file_id, [_row(item) for item in chunk])
    except OSError as exc:
        log.error("file {}: read failed after {} lines: {}", row["name"], tally.total, exc)
        await store.set_file_status(
            file_id,
            FileStatus.ACTIVE,
            error=f"read failed: {exc}",
            lines=tally.total,
            invalid=tally.invalid,
            ingested_at=time.time(),
        )
        return
    tally.close()
    error = None
    if tally.total == 0:
        error = _no_requests(path)
        log.warning("file {} has {}", row["name"], error)
    await store.set_file_status(
        file_id,
        FileStatus.ACTIVE,
        lines=tally.total,
        invalid=tally.invalid,
        error=error,
        ingested_at=time.time(),
    )
    crash_point("after_ingest_commit")
    log.info(
        "file ingested: {} ({} lines, {} invalid, models {})",
        row["name"],
        tally.total,
        tally.invalid,
        tally.models,
    )
