"""Start-up repair of ingest: what a crash or a shutdown cut short, files that keep killing the
process, and work copies the state database does not know. Runs in the first inbox step.

* A ``claimed`` file (its intent row written, maybe not moved yet) is moved into the work folder
  if it is still in the inbox, and ingested. A move across filesystems cut short after its copy
  was placed leaves the inbox file too: it is removed when it is that same file (size and
  modification time), then the copy is ingested. A file gone from both places ends at once.
* An ``ingesting`` file resumes: the pass goes on after the last line stored (nothing is stored,
  or sent, twice).
* **Quarantine.** Each pass is counted in the file's row before it runs, and uncounted when it
  ends without a crash (done, failed and contained, or stopped by a shutdown). A file whose
  passes were begun ``QUARANTINE_AFTER`` times without ending killed the process each time (a
  crash, the OOM killer, a kill -9): it is not read a third time. It ends with a ``file_error``
  summary saying so and its input is archived; lines stored before go on.
* **Unknown work copies.** A file in ``state/work/`` that no row holds (the state database was
  deleted, replaced, or restored from an older copy) is never forgotten: it is ingested again as
  a new job, with an error line saying that the database did not know it and that requests of
  it that were already sent may be sent a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

from loguru import logger

from . import ingest, names, watcher
from .archive import move
from .config import Config
from .logs import job_log
from .states import FileStatus
from .store import Store

QUARANTINE_AFTER = 2  # passes that killed the process; the next start does not try again


async def recover(cfg: Config, store: Store, stop: asyncio.Event | None = None) -> None:
    work_dir = cfg.state_dir / "work"
    await asyncio.to_thread(_clear_partial_copies, work_dir)
    for row in await store.files_in(FileStatus.CLAIMED, FileStatus.INGESTING):
        if stop is not None and stop.is_set():
            return
        if row["status"] == FileStatus.CLAIMED:
            if not await _finish_claim(store, row):
                continue
        elif row["ingest_starts"] >= QUARANTINE_AFTER:
            await _quarantine(store, row)
            continue
        job_log(row).bind(event="job.resumed").info("resuming ingest of {}", row["name"])
        await ingest.ingest(cfg, store, row["id"], stop)
    await _ingest_unknown(cfg, store, work_dir, stop)


def _clear_partial_copies(work_dir: Path) -> None:
    """Hidden copies in the work folder are moves across filesystems that a crash cut short
    (their source is still in the inbox): one daemon per state folder, so none is in use."""
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(work_dir):
            if entry.name.startswith(".") and names.TEMP_MARK in entry.name:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = a.stat(), b.stat()
    except OSError:
        return False
    return (sa.st_size, sa.st_mtime_ns) == (sb.st_size, sb.st_mtime_ns)


async def _finish_claim(store: Store, row: dict[str, Any]) -> bool:
    """Complete the move of a claimed file; True when its work copy is ready to ingest."""
    work, inbox = Path(row["work_path"]), Path(row["inbox_path"])
    log = job_log(row)
    if work.exists():
        if inbox.exists() and not inbox.samefile(work) and _same_file(inbox, work):
            inbox.unlink()  # the move had copied it across filesystems, then was cut short
        return True
    if not inbox.exists():
        await store.set_file_status(
            row["id"], FileStatus.DONE, error="file vanished before ingest", finished_at=time.time()
        )
        return False
    try:
        await asyncio.to_thread(move, inbox, work)
    except OSError as exc:
        watcher.refuse(inbox)
        log.bind(event="job.refused", error_kind="inbox_refused").error(
            "cannot take {} from the inbox: {}; it is left there", row["name"], exc
        )
        await store.set_file_status(
            row["id"],
            FileStatus.ACTIVE,
            error=f"cannot move out of the inbox: {exc}; the file was left there, not read",
            work_path=row["inbox_path"],
            ingested_at=time.time(),
        )
        return False
    return True


async def _quarantine(store: Store, row: dict[str, Any]) -> None:
    stored = await store.last_stored_line(row["id"])
    kept = f"lines 1 to {stored} were stored before and go on; " if stored else ""
    reason = (
        f"quarantined: the process died {row['ingest_starts']} times while ingesting this file, "
        f"so it is not read again; {kept}the rest was not read (check the file with "
        "`batchd check`, fix it and drop it again)"
    )
    job_log(row).bind(event="job.quarantined", error_kind="quarantined").error(
        "{}: {}", row["name"], reason
    )
    await store.set_file_status(row["id"], FileStatus.ACTIVE, error=reason, ingested_at=time.time())


async def _ingest_unknown(
    cfg: Config, store: Store, work_dir: Path, stop: asyncio.Event | None
) -> None:
    try:
        entries = [
            e
            for e in os.scandir(work_dir)
            if not e.name.startswith(".") and e.is_file(follow_symlinks=False)
        ]
    except FileNotFoundError:
        return
    if not entries:
        return
    known = await store.known_work_names(e.name for e in entries)
    for entry in sorted(entries, key=lambda e: e.name):
        if stop is not None and stop.is_set():
            return
        if entry.name in known:
            continue
        name = names.name_of_work(entry.name)
        logger.bind(file=name, event="job.unknown_work_copy").error(
            "{} is in {} but the state database does not know it (the database was lost, "
            "replaced or restored from a copy); it is ingested again as a new job, and requests "
            "of it that were already sent may be sent a second time",
            entry.name,
            work_dir,
        )
        size = entry.stat(follow_symlinks=False).st_size
        file_id = await store.claim_file(name, str(cfg.inbox / name), entry.path, size)
        await ingest.ingest(cfg, store, file_id, stop)
