"""``batchd submit FILE...``: copy files into the inbox so that the daemon sees each whole, once.

Rules, checked for every file before anything is copied (exit 2 and the reason, nothing
copied): an inbox must be named (``--root``/``--inbox``, or ``root``/``inbox`` in the
configuration; never a silent ``./inbox``); each file must exist, be a regular file (not a
symbolic link: the daemon refuses links) and be readable; its name must be one the daemon takes
(``*.jsonl``, not a dotfile, not ``*.tmp``/``*.part``).

Each file is copied to a temp name of its own in the inbox (``mkstemp``: two submissions at the
same moment never share one, and the daemon ignores dotfiles), fsynced, then linked under its
final name, which never replaces a file already there (``link`` fails instead of overwriting;
the name then gets a time and a counter). A failure while copying removes the temp file and
ends with exit 1.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from .config import Config
from .watcher import IGNORED_SUFFIXES

TEMP_PREFIX = ".batchd-submit-"
TEMP_SUFFIX = ".tmp"
CHUNK = 1 << 20
MAX_TRIES = 1000  # names tried when the file's own name is taken
NO_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK})


def _err(message: str) -> None:
    print(f"batchd submit: {message}", file=sys.stderr)


def refusal(src: Path) -> str | None:
    """Why ``src`` cannot be submitted, or None."""
    name = src.name
    if name.startswith("."):
        return "the daemon ignores names starting with '.'; rename it"
    if name.endswith(IGNORED_SUFFIXES):
        return f"the daemon ignores names ending in {' or '.join(IGNORED_SUFFIXES)}; rename it"
    if not name.endswith(".jsonl"):
        return "the daemon takes only names ending in .jsonl; rename it"
    if src.is_symlink():
        return f"a symbolic link (the daemon refuses links); give the file itself: {src.resolve()}"
    try:
        with src.open("rb"):
            pass
    except FileNotFoundError:
        return "no such file"
    except IsADirectoryError:
        return "a folder, not a file"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if not src.is_file():
        return "not a regular file"
    return None


def inbox_of(cfg: Config) -> Path | None:
    """The inbox, when one was named (a root or an inbox from a flag, a variable or a file)."""
    return cfg.inbox if {"root", "inbox"} & cfg.explicit else None


def submit(cfg: Config, files: Sequence[Path]) -> int:
    inbox = inbox_of(cfg)
    if inbox is None:
        _err(
            "which inbox? give --root DIR or --inbox DIR, or set root (or inbox) in the "
            "configuration file (--config FILE or BATCHD_CONFIG)"
        )
        return 2
    refused = [(src, why) for src in files if (why := refusal(src)) is not None]
    for src, why in refused:
        _err(f"{src}: refused: {why}")
    problem = _inbox_problem(inbox)
    if problem is not None:
        _err(problem)
    if refused or problem is not None:
        _err("nothing was submitted")
        return 2
    for done, src in enumerate(files):
        try:
            dst = _copy_in(src, inbox)
        except OSError as exc:
            _err(f"{src}: {exc.strerror or exc} (while copying into {inbox})")
            if done:
                _err(f"the {done} file(s) listed above were submitted; the rest were not")
            return 1
        print(f"submitted {src} -> {dst}")
    return 0


def _inbox_problem(inbox: Path) -> str | None:
    try:
        inbox.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the inbox {inbox}: {exc.strerror or exc}"
    if not inbox.is_dir():
        return f"the inbox {inbox} is not a folder"
    if not os.access(inbox, os.W_OK | os.X_OK):
        return f"the inbox {inbox} is not writable by this user"
    return None


def _copy_in(src: Path, inbox: Path) -> Path:
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=inbox)
    tmp = Path(tmp_name)
    try:
        with src.open("rb") as fin, os.fdopen(fd, "wb") as fout:
            while chunk := fin.read(CHUNK):
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        os.chmod(tmp, _mode(inbox))
        dst = _link_new_name(tmp, inbox, src.name)
    finally:
        with suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(inbox)
    return dst


def _link_new_name(tmp: Path, inbox: Path, name: str) -> Path:
    """Give ``tmp`` its final name, never replacing a file already there."""
    stem = name.removesuffix(".jsonl")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidates = [name, f"{stem}.{stamp}.jsonl"]
    candidates += [f"{stem}.{stamp}-{n}.jsonl" for n in range(2, MAX_TRIES)]
    for candidate in candidates:
        dst = inbox / candidate
        try:
            os.link(tmp, dst)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in NO_LINKS:
                raise
            if dst.exists():  # a filesystem without hard links: check, then rename
                continue
            os.rename(tmp, dst)
        return dst
    raise FileExistsError(f"no free name for {name} in {inbox}")


def _mode(inbox: Path) -> int:
    """As a plain copy would be (mkstemp makes it 0600); in a shared inbox (setgid: the group
    model of README "Sharing the inbox") group-readable too, so the daemon's user can read it
    whatever the submitter's umask."""
    mode = 0o666 & ~_umask()
    with suppress(OSError):
        if inbox.stat().st_mode & stat.S_ISGID:
            mode |= stat.S_IRGRP
    return mode


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = ["inbox_of", "refusal", "submit"]
