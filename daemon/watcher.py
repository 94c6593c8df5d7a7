"""The inbox: which files are ready to take. File events only wake the scan; the scan is the truth.

A file is taken once its size and modification time have not changed for ``settle_s``, so a
file still being written is left alone. Dotfiles, ``*.tmp`` and ``*.part`` are ignored, and so
is anything not ending in ``.jsonl`` (logged once). Symlinks are refused (logged once): a link
could point anywhere on the server, and batchd moves what it takes.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger
from watchfiles import awatch

IGNORED_SUFFIXES = (".tmp", ".part")


@dataclass
class Inbox:
    path: Path
    settle_s: float
    _seen: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    _warned: set[str] = field(default_factory=set)

    def _warn_once(self, name: str, message: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            logger.bind(file=name).warning(message, name)

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
            if name.startswith(".") or name.endswith(IGNORED_SUFFIXES):
                continue
            if entry.is_symlink():
                self._warn_once(name, "inbox: {} is a symlink; refused (drop the file itself)")
                continue
            if not entry.is_file():
                continue
            if not name.endswith(".jsonl"):
                self._warn_once(name, "inbox: {} ignored (only *.jsonl files are taken)")
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
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
        return ready, settling

    def taken(self, path: Path) -> None:
        self._seen.pop(path.name, None)
        self._warned.discard(path.name)


async def watch(path: Path, on_change: asyncio.Event, stop: asyncio.Event) -> None:
    """Set ``on_change`` whenever something happens in the inbox folder."""
    path.mkdir(parents=True, exist_ok=True)
    async for _changes in awatch(
        path, stop_event=stop, debounce=200, step=50, recursive=False, ignore_permission_denied=True
    ):
        on_change.set()
