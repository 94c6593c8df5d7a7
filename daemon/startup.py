"""The state folder, before the daemon touches anything in it and while it runs.

One daemon per state folder: ``state/batchd.lock`` is held (``flock``, exclusive) for the
process's life, before anything in the folder is read or changed (the spool, the work copies,
the database); a second daemon is refused with the holder's PID (exit 2). The folder is
owner-only (0700) and the database files (db, -wal, -shm) 0600: they hold every prompt and
answer. Looser modes found at start are tightened, and said. A missing database is created (a
first start); one that is not SQLite, or that SQLite finds damaged, is a clear error naming the
file and what to do (exit 2), never a traceback. While batchd runs, :class:`StateWatch` notices
the database (or the lock file) deleted or replaced, and the daemon then stops non-zero, so that
a supervisor restarts it on what is really on disk.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import stat
import time
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

from .store.queries import DB_FILE_MODE

if TYPE_CHECKING:  # imported at use: `batchd status` reads without it (and without asyncio)
    from .store import Store

DB_NAME = "batchd.sqlite3"
LOCK_NAME = "batchd.lock"
STATE_DIR_MODE = 0o700
DB_SUFFIXES = ("", "-wal", "-shm")
SQLITE_HEADER = b"SQLite format 3\x00"
# A reader probing the lock (batchd status) holds it for an instant; try a few times before
# calling the folder taken.
LOCK_TRIES = 10
LOCK_RETRY_S = 0.05


class StartupError(RuntimeError):
    """The daemon cannot start on this state folder; the message says why and what to do.
    Reported without a traceback, exit 2 (systemd's unit does not restart on 2)."""


def db_path(state_dir: Path) -> Path:
    return state_dir / DB_NAME


# -- the folder and its modes ------------------------------------------------------------------


def prepare_folders(*folders: Path) -> None:
    """The inbox, outbox and processed folders, created if missing (a clear error if not)."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"cannot create the folder {folder}: {_why(exc)}") from None
        if not folder.is_dir():
            raise StartupError(f"{folder} is not a folder")


def prepare_state_dir(state_dir: Path) -> None:
    """Create the state folder owner-only, or tighten an existing one (said once)."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=STATE_DIR_MODE)
    except OSError as exc:
        raise StartupError(f"cannot create the state folder {state_dir}: {_why(exc)}") from None
    if not state_dir.is_dir():
        raise StartupError(f"the state folder {state_dir} is not a folder")
    _tighten(state_dir, STATE_DIR_MODE, "state folder")


def secure_db_files(state_dir: Path) -> None:
    """The database and its -wal and -shm files: owner read/write only."""
    for suffix in DB_SUFFIXES:
        path = state_dir / (DB_NAME + suffix)
        if path.exists():
            _tighten(path, DB_FILE_MODE, "state database file")


def _tighten(path: Path, mode: int, what: str) -> None:
    from loguru import logger  # at use: `batchd status` never logs

    try:
        current = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if current & ~mode == 0:
        return
    try:
        os.chmod(path, current & mode)
    except OSError as exc:
        logger.bind(event="startup.mode").warning(
            "{} {} has mode {:o}; could not tighten it: {}", what, path, current, exc
        )
        return
    logger.bind(event="startup.mode").warning(
        "{} {} had mode {:o} (readable by others); tightened to {:o}", what, path, current,
        current & mode,
    )  # fmt: skip


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


# -- one daemon per folder ---------------------------------------------------------------------


class StateLock:
    """``state/batchd.lock``, held with ``flock`` while the process lives (the kernel releases
    it when the process ends, however it ends). The file holds the holder's PID."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StartupError(f"cannot open the lock file {self.path}: {_why(exc)}") from None
        for attempt in range(LOCK_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise StartupError(f"cannot lock {self.path}: {_why(exc)}") from None
                if attempt + 1 == LOCK_TRIES:
                    holder = _read_pid(fd)
                    os.close(fd)
                    raise StartupError(
                        f"another batchd ({f'PID {holder}' if holder else 'PID unknown'}) is "
                        f"running on the state folder {self.path.parent}: one daemon per state "
                        "folder. Stop it first, or give this one its own --state-dir or --root"
                    ) from None
                time.sleep(LOCK_RETRY_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def lock_holder(state_dir: Path) -> tuple[bool, int | None]:
    """Whether a daemon runs on ``state_dir``, and its PID when the lock file says (for
    ``batchd status``; it needs only read access to the lock file)."""
    path = state_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False, None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True, _read_pid(fd)  # held by a running daemon
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False, None
    finally:
        os.close(fd)


def clear_spool(state_dir: Path) -> None:
    """Spool files are the request files of one create call, deleted once uploaded; any left
    at start-up belong to a process that died mid-create (this one holds the lock)."""
    for path in (state_dir / "spool").glob("*.jsonl"):
        with suppress(FileNotFoundError):
            path.unlink()


# -- the database --------------------------------------------------------------------------------


def _move_aside(path: Path) -> str:
    return (
        f"Move it aside (mv '{path}' '{path}.broken') and start batchd again: it creates a new "
        "database and takes the files in state/work again (requests that were already at a "
        "provider are sent again)"
    )


def check_database_file(path: Path) -> None:
    """Before SQLite opens it: a file that is not a SQLite database is refused (SQLite would
    fail later, or overwrite it). A missing or empty file is a first start."""
    from loguru import logger  # at use: `batchd status` never logs

    try:
        with path.open("rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        logger.bind(event="startup.new_database").info(
            "no state database at {}; creating it (first start)", path
        )
        return
    except OSError as exc:
        raise StartupError(f"cannot read the state database {path}: {_why(exc)}") from None
    if header and header != SQLITE_HEADER:
        not_sqlite = f"the state database {path} is not a SQLite database"
        raise StartupError(f"{not_sqlite}. {_move_aside(path)}")


async def open_store(path: Path) -> Store:
    """Open (and migrate) the store, then let SQLite check the whole file. A damaged database
    ("database disk image is malformed", "file is not a database") is a StartupError."""
    from loguru import logger  # at use: `batchd status` never logs

    from .store import Store

    check_database_file(path)
    store = Store(path)
    try:
        await store.open()
        started = time.monotonic()
        problems = await store.quick_check()
        logger.bind(event="startup.database_checked", elapsed_s=time.monotonic() - started).debug(
            "state database checked in {:.2f}s", time.monotonic() - started
        )
    except sqlite3.DatabaseError as exc:
        await store.close()
        if isinstance(exc, sqlite3.OperationalError) and not _damaged(exc):
            raise StartupError(f"cannot open the state database {path}: {exc}") from None
        raise StartupError(
            f"the state database {path} is damaged ({exc}). {_move_aside(path)}"
        ) from None
    if problems:
        await store.close()
        found = "; ".join(" ".join(p.split()) for p in problems[:3])
        raise StartupError(f"the state database {path} is damaged ({found}). {_move_aside(path)}")
    secure_db_files(path.parent)
    return store


def _damaged(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or "corrupt" in text


# -- while batchd runs ---------------------------------------------------------------------------


class StateWatch:
    """The identity (device, inode) of the database and lock files as batchd opened them; a
    file deleted or replaced since (``rm``, a restore from a backup) means the process writes
    into a file nobody will read again, and works from rows that are gone."""

    def __init__(self, *paths: Path) -> None:
        self._known = {p: _identity(p) for p in paths}

    def changed(self) -> str | None:
        """What happened to one of the files, or None while all are as they were."""
        for path, known in self._known.items():
            now = _identity(path)
            if now is None:
                return f"{path} was deleted"
            if known is not None and now != known:
                return f"{path} was replaced by another file"
        return None


def _identity(path: Path) -> tuple[int, int] | None:
    with suppress(FileNotFoundError):
        st = path.stat()
        return st.st_dev, st.st_ino
    return None


__all__ = [
    "DB_NAME",
    "LOCK_NAME",
    "STATE_DIR_MODE",
    "StartupError",
    "StateLock",
    "StateWatch",
    "check_database_file",
    "clear_spool",
    "db_path",
    "lock_holder",
    "open_store",
    "prepare_folders",
    "prepare_state_dir",
    "secure_db_files",
]
