"""Whether another process holds a file open for writing, so the inbox never takes a file that
is still being written.

Settle time alone (size and mtime unchanged for ``settle_s``) cannot tell a finished file from
one whose writer pauses longer than that between lines. The kernel knows who has a file open;
batchd asks it, in this order (measured on an inbox of 1,000 files: see docs/reliability.md):

1. **A read lease** (``fcntl(F_SETLEASE, F_RDLCK)`` on a read-only descriptor). Linux grants
   it only when no process has the file open for writing, and answers ``EAGAIN`` otherwise;
   the lease is released at once. It costs one open and two ``fcntl`` calls per file and sees
   every process, of any user. It needs the file to belong to the daemon's user (or
   ``CAP_LEASE``), and a filesystem with leases (not NFS). The lease-break signal is set to
   SIGURG, which is ignored by default: a writer opening the file in that instant waits
   microseconds for the release, and its signal cannot kill the daemon (SIGIO, the default
   signal, would).
2. **A scan of ``/proc/*/fd``**, once per inbox scan, for files where the lease is refused: a
   descriptor's link has the owner-write bit when it was opened for writing, and ``stat``
   through it names the file. It sees the processes of the daemon's own user (all of them as
   root).
3. **Neither**: the settle time decides alone, as before. A writer that slips through (another
   user's process, another host over NFS, or one that opens the file between the check and the
   move) still loses nothing: ingest notices the growth of the file it took and reads the new
   lines, or reports the late bytes (see :mod:`daemon.ingest`).

A close-write event (inotify ``IN_CLOSE_WRITE``) was not chosen: it says that *a* writer
closed, not that none is left, and it misses writers that opened the file before batchd was
watching.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
from pathlib import Path

F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
F_SETSIG = getattr(fcntl, "F_SETSIG", 10)
LEASE_BREAK_SIGNAL = signal.SIGURG  # ignored unless someone installs a handler


def lease_says_written(path: Path | str) -> bool | None:
    """True when some process has ``path`` open for writing, False when none has, None when a
    lease cannot be taken on it (not the owner, no leases on this filesystem, no such file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        # EWOULDBLOCK: another process holds a write lease on it, so it writes or will
        return True if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK) else None
    try:
        fcntl.fcntl(fd, F_SETSIG, LEASE_BREAK_SIGNAL)
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return True if exc.errno == errno.EAGAIN else None
    else:
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


def proc_written_files(proc: Path = Path("/proc")) -> tuple[set[tuple[int, int]], bool]:
    """(device, inode) of every file some visible process has open for writing, and whether
    every process was visible (False: some ``/proc/PID/fd`` could not be read)."""
    written: set[tuple[int, int]] = set()
    complete = True
    try:
        pids = [e.name for e in os.scandir(proc) if e.name.isdigit()]
    except OSError:
        return written, False
    for pid in pids:
        try:
            fds = list(os.scandir(proc / pid / "fd"))
        except FileNotFoundError:
            continue  # ended meanwhile
        except OSError:
            complete = False
            continue
        for fd in fds:
            try:
                if not fd.stat(follow_symlinks=False).st_mode & stat.S_IWUSR:
                    continue  # opened read-only
                st = os.stat(fd.path)
            except OSError:
                continue  # closed meanwhile, or not a path (socket, pipe)
            if stat.S_ISREG(st.st_mode):
                written.add((st.st_dev, st.st_ino))
    return written, complete


class WriterCheck:
    """One round of checks (one inbox scan): the ``/proc`` scan runs at most once per round,
    and only for files whose lease was refused. ``how`` says which mechanism last answered."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = proc
        self._scan: tuple[set[tuple[int, int]], bool] | None = None
        self.how = "none"

    def held(self, path: Path | str) -> bool | None:
        """True: another process has ``path`` open for writing; False: none has; None: batchd
        cannot tell (the settle time decides)."""
        answer = lease_says_written(path)
        if answer is not None:
            self.how = "lease"
            return answer
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return None
        if self._scan is None:
            self._scan = proc_written_files(self._proc)
        written, complete = self._scan
        if (st.st_dev, st.st_ino) in written:
            self.how = "proc"
            return True
        self.how = "proc" if complete else "settle time"
        return False if complete else None


def held_open_for_writing(path: Path | str) -> bool:
    """Whether another process is known to have ``path`` open for writing (one-off check)."""
    return WriterCheck().held(path) is True
