"""Ingest: claim a settled inbox file, then stream its lines into SQLite.

Claiming writes the file's intent row first and then moves the file out of the inbox into
the state folder, so the same name can be dropped again at once, and a crash between the two
steps is repaired at start-up. Lines are parsed in a worker thread, a chunk at a time, so a
large file never sits in memory and never stalls the event loop.

Containment. One line never stops a file: whatever it holds becomes a request or an ``invalid``
line (:mod:`daemon.reading`), and a line the store will not take becomes ``invalid`` naming the
error. One file never stops the daemon: an unexpected error while ingesting it is logged once
with its traceback, and the file ends with that error in its summary (``file_error``); the
lines stored before it go on. Errors of the state database itself are not the file's doing and
still end the process.

Passes. Each pass reads the work copy from its start (so duplicate ``custom_id``s are still
seen) and stores only the lines after the last one stored: a pass resumed after a crash or a
shutdown never stores, or sends, a line twice. Passes are counted in the file's row before
they run; :mod:`daemon.recovery` quarantines a file whose passes killed the process twice.

Growth. A writer batchd did not see (:mod:`daemon.writers`) may still append to the work copy.
The row records the bytes read; after a pass, and before the outbox is written, a larger file
gets another pass for its new complete lines; :mod:`daemon.finish` reports later bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from pathlib import Path
from typing import Any

from loguru import logger

from . import names, watcher
from .archive import move
from .chunks import Tally, line_of, next_chunk, store_lines
from .config import Config, adapt_policy
from .crashpoints import crash_point
from .logs import elapsed_since, job_log
from .reading import Progress, iter_rows, sniff
from .states import FileStatus
from .store import Store, state_failure
from .text import plural
from .writers import WriterCheck

LATE_LINE = "bytes were added to line"  # start of the error of a line read before its end


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _no_requests(path: Path) -> str:
    """Why a readable file gave no request at all."""
    try:
        empty = path.stat().st_size == 0
    except OSError:
        empty = False
    return "no requests: the file is empty" if empty else "no requests: only blank lines"


async def claim(
    cfg: Config, store: Store, path: Path, stop: asyncio.Event | None = None
) -> int | None:
    """Take ``path`` out of the inbox and ingest it; returns the job (file) id, or None when
    the file is gone or a writer has opened it since the scan."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if await asyncio.to_thread(WriterCheck().held, path):
        return None  # opened for writing since the scan: the inbox waits for it again
    name = names.display(path.name)
    work = cfg.state_dir / "work" / names.work_name(secrets.token_hex(4), path.name)
    file_id = await store.claim_file(name, names.display(str(path)), str(work), size)
    try:
        await asyncio.to_thread(move, path, work)
    except OSError as exc:
        # Refused once: the file stays in the inbox, untaken until it changes (a retry each
        # second would make a new job each time). Its summary says why.
        watcher.refuse(path)
        logger.bind(file=name, job=file_id, event="job.refused", error_kind="inbox_refused").error(
            "cannot take {} from the inbox: {}; it is left there and not tried again until it "
            "changes",
            name,
            exc,
        )
        await store.set_file_status(
            file_id,
            FileStatus.ACTIVE,
            error=f"cannot move out of the inbox: {exc}; the file was left there, not read",
            work_path=names.display(str(path)),
            ingested_at=time.time(),
        )
        return file_id
    await ingest(cfg, store, file_id, stop)
    row = await store.file(file_id)
    if row is not None and row["status"] == FileStatus.ACTIVE:
        await take_growth(cfg, store, row)  # a writer still appending as the pass ended
    return file_id


async def recover(cfg: Config, store: Store, stop: asyncio.Event | None = None) -> None:
    """Finish what a crash or a shutdown interrupted (see :mod:`daemon.recovery`)."""
    from . import recovery  # it drives this module's passes, so it imports this module

    await recovery.recover(cfg, store, stop)


async def ingest(
    cfg: Config, store: Store, file_id: int, stop: asyncio.Event | None = None
) -> None:
    """One ingest pass of a claimed file (see the module docstring). Stopped by shutdown
    between two chunks, it stays ``ingesting`` and goes on at the next start."""
    row = await store.file(file_id)
    assert row is not None
    log = job_log(row)
    await store.set_file_status(file_id, FileStatus.INGESTING)
    await store.note_ingest_start(file_id)
    tally = Tally(row["name"], log)
    try:
        await _pass(cfg, store, row, stop, tally)
    except asyncio.CancelledError:  # the grace period ran out mid-pass: a shutdown, no death
        log.bind(event="shutdown.cut_off").warning(
            "ingest of {} cut off by shutdown; goes on at the next start", row["name"]
        )
        with contextlib.suppress(Exception):
            await asyncio.shield(store.note_ingest_ended(file_id))
        raise
    except Exception as exc:
        if state_failure(exc):
            raise
        stored = await store.last_stored_line(file_id)
        log.bind(event="job.ingest_failed", line=stored, error_kind="internal_error").opt(
            exception=exc
        ).error(
            "ingest of {} failed after line {}: {}: {}; the file ends with this error, the "
            "lines stored so far go on",
            row["name"],
            stored,
            type(exc).__name__,
            exc,
        )
        error = f"ingest failed after line {stored}: {type(exc).__name__}: {exc}"[:500]
        await store.set_file_status(
            file_id,
            FileStatus.ACTIVE,
            error=error + "; the rest of the file was not read (it is in the archived input)",
            lines=tally.total,
            invalid=tally.invalid,
            ingested_at=time.time(),
        )
        await store.note_ingest_ended(file_id)


def _still_written(path: Path, settle_s: float) -> bool:
    """Whether a last line without a line end may still grow: a writer holds the file, or
    (when that cannot be known) it changed within the settle time."""
    held = WriterCheck().held(path)
    if held is not None:
        return held
    try:
        return time.time() - path.stat().st_mtime < settle_s
    except OSError:
        return False


async def _pass(
    cfg: Config, store: Store, row: dict[str, Any], stop: asyncio.Event | None, tally: Tally
) -> None:
    file_id, name, path = row["id"], row["name"], Path(row["work_path"])
    reason = await asyncio.to_thread(sniff, path)
    if reason is not None:
        tally.log.bind(event="job.unreadable", error_kind="file_unreadable").error(
            "file {} cannot be read: {}", name, reason
        )
        await store.set_file_status(
            file_id, FileStatus.ACTIVE, error=reason, ingested_at=time.time()
        )
        await store.note_ingest_ended(file_id)
        return
    done = tally.logged_to = await store.last_stored_line(file_id)
    progress = Progress(resume_at=max(0, row["read_bytes"]))
    complete_only = await asyncio.to_thread(_still_written, path, cfg.settle_s)
    lines = iter_rows(
        path,
        max_request_bytes=cfg.max_request_bytes,
        policy=adapt_policy(cfg),
        progress=progress,
        complete_only=complete_only,
    )
    try:
        while chunk := await asyncio.to_thread(next_chunk, lines):
            if stop is not None and stop.is_set():
                tally.log.bind(event="shutdown.ingest_stopped").info(
                    "ingest of {} stopped by shutdown after {}; goes on at the next start",
                    name,
                    plural(tally.total, "line"),
                )
                await store.note_ingest_ended(file_id)
                return
            crash_point("mid_ingest")
            # Lines come in file order: usually all of the chunk is new (a resumed pass
            # skips those an earlier pass stored).
            new = chunk if line_of(chunk[0]) > done else [i for i in chunk if line_of(i) > done]
            if new:
                chunk = chunk[: len(chunk) - len(new)] + await store_lines(store, file_id, new)
            tally.add(chunk)
    except OSError as exc:
        tally.log.bind(event="job.read_failed", error_kind="file_unreadable").error(
            "file {}: read failed after {}: {}", name, plural(tally.total, "line"), exc
        )
        await store.set_file_status(
            file_id,
            FileStatus.ACTIVE,
            error=f"read failed: {exc}",
            lines=tally.total,
            invalid=tally.invalid,
            ingested_at=time.time(),
        )
        await store.note_ingest_ended(file_id)
        return
    tally.close()
    await store.set_file_status(
        file_id,
        FileStatus.ACTIVE,
        lines=tally.total,
        invalid=tally.invalid,
        error=_pass_error(row, path, tally, progress),
        ingested_at=time.time(),
    )
    await store.note_ingest_ended(file_id, progress.bytes)
    crash_point("after_ingest_commit")
    tally.log.bind(event="job.ingested", elapsed_s=elapsed_since(row["created_at"])).info(
        "file ingested: {} ({}, {} invalid, models {})",
        name,
        plural(tally.total, "line"),
        tally.invalid,
        tally.models,
    )


def _pass_error(row: dict[str, Any], path: Path, tally: Tally, progress: Progress) -> str | None:
    """The file's error after a complete pass: no requests at all, or bytes added to a line
    after an earlier pass had read it (kept until the file is written)."""
    if tally.total == 0 and progress.bytes < _size(path):
        return None  # only a first line still being written: growth, or late bytes, tell
    if tally.total == 0:
        error = _no_requests(path)
        tally.log.bind(event="job.empty", error_kind="no_requests").warning(
            "file {} has {}", row["name"], error
        )
        return error
    if progress.late_bytes:
        error = (
            f"{progress.late_bytes} {LATE_LINE} {tally.logged_to} after it had been read "
            "(it was taken before its end was written); they are not in its request, only in "
            "the archived input"
        )
        tally.log.bind(event="job.late_bytes", error_kind="late_bytes").error(
            "file {}: {}", row["name"], error
        )
        return error
    old = row.get("error")
    return old if isinstance(old, str) and LATE_LINE in old else None


def reads_growth(row: dict[str, Any]) -> bool:
    """Whether the file was read to its end by a pass (so bytes past that are new)."""
    return int(row["read_bytes"]) >= 0 and row["work_path"] != row["inbox_path"]


def late_bytes(row: dict[str, Any]) -> int:
    """Bytes of the work copy past what its passes read (0 when unknown or none)."""
    if not reads_growth(row):
        return 0
    try:
        return max(0, Path(row["work_path"]).stat().st_size - int(row["read_bytes"]))
    except OSError:
        return 0


async def take_growth(cfg: Config, store: Store, row: dict[str, Any]) -> bool:
    """Ingest what a writer appended to the work copy since it was read. True when new lines
    were stored (the file then has more requests to run before it is finished)."""
    grown = late_bytes(row)
    if not grown:
        return False
    before = await store.last_stored_line(row["id"])
    job_log(row).bind(event="job.grew").warning(
        "{} grew by {} after it was taken (a writer still had it open); reading the new "
        "lines",
        row["name"],
        plural(grown, "byte"),
    )
    await ingest(cfg, store, row["id"])
    return await store.last_stored_line(row["id"]) > before
