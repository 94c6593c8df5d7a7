"""Folder events without polling: Linux inotify, read by the event loop itself.

The inbox and the state folder are watched this way, so an idle daemon is woken by nothing: no
thread sleeps and checks, no timer ticks (a watcher library's thread otherwise wakes some 20
times a second). Events are only hints (a scan or a check is the truth), so they are debounced
and their content is mostly ignored. :func:`available` says whether this kernel offers inotify;
without it the callers fall back to their own means (a watcher library, a periodic check).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Callable, Collection
from contextlib import suppress
from pathlib import Path
from typing import Any

# inotify(7) event bits
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

# A file appearing, going, renamed or finished writing; the folder itself going.
CHANGES = (
    IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_ATTRIB
    | IN_DELETE_SELF | IN_MOVE_SELF
)  # fmt: skip
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len
_LIBC: Any = None


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return _LIBC


def available() -> bool:
    """Whether inotify can be used here (Linux, and an instance can be made now)."""
    try:
        fd = _libc().inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    except (OSError, AttributeError):
        return False
    if fd < 0:
        return False
    os.close(fd)
    return True


class FolderEvents:
    """Calls ``on_event`` when something happens in ``folder`` (to one of ``names``, when
    given), at most once per ``debounce_s``. ``run`` watches until ``stop`` is set or the watch
    is lost (the folder deleted or moved away), which it returns as True."""

    def __init__(
        self,
        folder: Path,
        on_event: Callable[[], None],
        *,
        names: Collection[str] | None = None,
        debounce_s: float = 0.2,
    ) -> None:
        self.folder = folder
        self.on_event = on_event
        self.names = None if names is None else {os.fsencode(n) for n in names}
        self.debounce_s = debounce_s
        self._fd = -1
        self._lost = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> bool:
        """Watch until ``stop`` (returns False) or the watch is lost (returns True). Raises
        OSError when the watch cannot be set up (no such folder, no inotify instance left)."""
        loop = asyncio.get_running_loop()
        self._open()
        self._lost.clear()
        loop.add_reader(self._fd, self._readable)
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._lost.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            self._close(loop)
        return not stop.is_set()

    def _open(self) -> None:
        libc = _libc()
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        wd = libc.inotify_add_watch(fd, os.fsencode(self.folder), CHANGES | IN_ONLYDIR)
        if wd < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {self.folder}: {os.strerror(err)}")
        self._fd = fd

    def _close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._fd >= 0:
            loop.remove_reader(self._fd)
            with suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def _readable(self) -> None:
        """Read every pending event; say so once; then rest ``debounce_s`` (events wait in the
        kernel's queue meanwhile, and an overflow of it is itself an event)."""
        relevant = lost = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                lost = True
                break
            if not data:
                break
            for mask, name in _events(data):
                if mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
                    lost = True
                if mask & IN_Q_OVERFLOW or self.names is None or name in self.names:
                    relevant = True
        if relevant or lost:
            self.on_event()
        if lost:
            self._lost.set()
            return
        if self.debounce_s > 0:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self._fd)
            loop.call_later(self.debounce_s, self._resume, self._fd)

    def _resume(self, fd: int) -> None:
        if fd == self._fd >= 0:
            asyncio.get_running_loop().add_reader(fd, self._readable)


def _events(data: bytes) -> list[tuple[int, bytes]]:
    """(mask, name) of each event in a read of the inotify descriptor."""
    out: list[tuple[int, bytes]] = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        _wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        out.append((mask, data[start : start + length].rstrip(b"\0")))
        offset = start + length
    return out


__all__ = ["FolderEvents", "available"]
