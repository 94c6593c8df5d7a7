"""The inbox: which files are ready to take. File events only wake the scan; the scan is the truth.

A file is taken once its size and modification time have not changed for ``settle_s`` and no
other process has it open for writing (:mod:`daemon.writers` says how that is known), so a file
still being written is left alone, however long its writer pauses. Dotfiles, ``*.tmp`` and
``*.part`` are ignored, and so is anything not ending in ``.jsonl`` (logged once). Symlinks are
refused (logged once): a link could point anywhere on the server, and batchd moves what it
takes. A file that could not be moved out of the inbox is refused (:func:`refuse`): it is not
taken again until it changes, so it cannot become a new job every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from . import fs_events
from .writers import WriterCheck

IGNORED_SUFFIXES = (".tmp", ".part")

# Files refused by ingest (they could not be moved out of the inbox): path -> the identity they
# had then (device, inode, size, mtime). Kept for the process's life; a file that changes (or is
# replaced) is tried again.
_REFUSED: dict[str, tuple[int, int, int, int]] = {}


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def refuse(path: Path) -> None:
    """Leave ``path`` in the inbox, untaken, until it changes."""
    try:
        _REFUSED[str(path)] = _identity(path.stat(follow_symlinks=False))
    except OSError:
        pass


def _forget_refused(inbox: Path, listed: set[str]) -> None:
    """Refused files no longer in ``inbox`` (removed or renamed by their owner)."""
    folder = str(inbox)
    for key in [k for k in _REFUSED if os.path.dirname(k) == folder]:
        if os.path.basename(key) not in listed:
            del _REFUSED[key]


def _refused(path: str, st: os.stat_result) -> bool:
    known = _REFUSED.get(path)
    if known is None:
        return False
    if known == _identity(st):
        return True
    del _REFUSED[path]
    return False


@dataclass
class Inbox:
    path: Path
    settle_s: float
    _seen: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    _warned: set[str] = field(default_factory=set)
    _held: set[str] = field(default_factory=set)  # names said to be held open by a writer

    def _warn_once(self, name: str, message: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            logger.bind(file=name, event="inbox.skipped").warning(message, name)

    def scan(self, now: float | None = None) -> tuple[list[Path], int]:
        """Files ready to take, and how many more are still settling."""
        now = time.time() if now is None else now
        ready: list[Path] = []
        settling = 0
        present: set[str] = set()
        try:
            entries = list(os.scandir(self.path))
        except FileNotFoundError:
            return [], 0
        for entry in sorted(entries, key=lambda e: e.name):
            name = entry.name
            st = self._candidate(entry)
            if st is None:
                continue
            present.add(name)
            key = (st.st_size, st.st_mtime_ns)
            seen = self._seen.get(name)
            if seen is None or seen[:2] != key:
                self._seen[name] = (*key, now)
                settling += 1
            elif now - seen[2] >= self.settle_s:
                ready.append(Path(entry.path))
            else:
                settling += 1
        for name in list(self._seen):
            if name not in present:
                del self._seen[name]
        _forget_refused(self.path, {e.name for e in entries})
        if ready:
            ready, held = self._not_held(ready)
            settling += held
        return ready, settling

    def _candidate(self, entry: os.DirEntry[str]) -> os.stat_result | None:
        """The entry's stat when it is a file batchd may take, else None (said once why not)."""
        name = entry.name
        if name.startswith(".") or name.endswith(IGNORED_SUFFIXES):
            return None
        if entry.is_symlink():
            self._warn_once(name, "inbox: {} is a symlink; refused (drop the file itself)")
            return None
        if not entry.is_file():
            return None
        if not name.endswith(".jsonl"):
            self._warn_once(name, "inbox: {} ignored (only *.jsonl files are taken)")
            return None
        try:
            st = entry.stat()
        except FileNotFoundError:
            return None
        return None if _refused(entry.path, st) else st

    def _not_held(self, ready: list[Path]) -> tuple[list[Path], int]:
        """The settled files no other process has open for writing, and how many are held."""
        check = WriterCheck()
        free: list[Path] = []
        for path in ready:
            if check.held(path):
                if path.name not in self._held:
                    self._held.add(path.name)
                    logger.bind(file=path.name, event="inbox.held").info(
                        "inbox: {} is still open for writing by another process ({}); "
                        "it is taken once closed",
                        path.name,
                        check.how,
                    )
            else:
                self._held.discard(path.name)
                free.append(path)
        return free, len(ready) - len(free)

    def taken(self, path: Path) -> None:
        self._seen.pop(path.name, None)
        self._warned.discard(path.name)
        self._held.discard(path.name)


async def watch(path: Path, on_change: asyncio.Event, stop: asyncio.Event) -> None:
    """Set ``on_change`` whenever something happens in the inbox folder.

    Events only wake the scan, so a failure of the event source never stops the daemon: it is
    said once, the inbox is scanned, and watching starts again after a pause (the loop's own
    ``scan_interval_s`` rescans meanwhile). On Linux the events come from inotify, read by the
    event loop (``fs_events.py``: nothing wakes while nothing happens); elsewhere from
    watchfiles, which fails, for one, on a name that is not UTF-8."""
    path.mkdir(parents=True, exist_ok=True)
    use_inotify = fs_events.available()
    failures = 0
    while not stop.is_set():
        try:
            if use_inotify:
                if not await fs_events.FolderEvents(path, on_change.set).run(stop):
                    return
                raise OSError(f"the watch on {path} was lost (the folder moved or deleted)")
            from watchfiles import awatch

            async for _changes in awatch(
                path,
                stop_event=stop,
                debounce=200,
                step=50,
                recursive=False,
                ignore_permission_denied=True,
            ):
                on_change.set()
            return
        except Exception as exc:
            failures += 1
            on_change.set()
            log = logger.bind(event="inbox.events_failed")
            say = log.warning if failures == 1 else log.debug
            say(
                "inbox: file events failed ({}: {}); the inbox is still scanned, events resume",
                type(exc).__name__,
                _first_error(exc),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(30.0, 0.5 * failures))


def _first_error(exc: BaseException) -> BaseException:
    """The innermost error of an exception group (anyio wraps the watcher's own error)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
