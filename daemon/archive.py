"""Moving inputs: into the work folder when taken (:func:`move`), and into the processed folder
when finished (:func:`archive_input`), never replacing a file there.

An archived input keeps its name when it is free; otherwise the job id goes before its ending
(``NAME.JOB.jsonl``, then ``NAME.JOB.1.jsonl``, ...), every name within NAME_MAX (see
:mod:`daemon.names`). A hard link places the file, so a name taken meanwhile is never replaced.
Across filesystems a file is copied under a hidden name first, so a destination is never a
partial copy.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path

from daemon import names

# errno values meaning "this filesystem cannot hard-link", where we fall back to rename.
# EXDEV is not one of them: across filesystems a rename fails too (see archive_input).
_NO_LINK = {errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


def move(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` (replacing). Across filesystems the copy is made under a hidden
    name and renamed into place before the source is removed."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = dst.with_name(names.temp_name(dst.name))
    try:
        shutil.copy2(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    os.unlink(src)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)



def archive_input(
    src: Path, processed_dir: Path, job_id: int | str, name: str | None = None
) -> Path:
    """Move a finished input file into ``processed_dir`` (created if needed), never replacing.

    It keeps ``name`` (default: the source's own name). A taken name falls back to
    ``{stem}.{job_id}{suffix}``, then ``{stem}.{job_id}.{k}{suffix}``.
    Across filesystems the file is copied under a hidden name first, then placed.
    """
    src, processed_dir = Path(src), Path(processed_dir)
    processed_dir.mkdir(parents=True, exist_ok=True)
    original = Path(names.display(name or src.name))
    for base, suffix in names.candidates(original.stem, job_id):
        dst = processed_dir / names.archive_name(base, suffix, original.suffix)
        if os.path.lexists(dst):
            continue
        try:
            _move(src, dst)
        except FileExistsError:
            continue
        _outbox_mode(dst)
        fsync_dir(processed_dir)
        if processed_dir.resolve() != src.parent.resolve():
            fsync_dir(src.parent)
        return dst
    raise AssertionError("unreachable: the naming sequence is endless")


def _outbox_mode(path: Path) -> None:
    """An archived input is no more open than the outbox's files (0640 filtered by the
    umask): the dropper's own mode (often 0644, world-readable) is not kept. A file batchd may
    not change (another owner) keeps its mode."""
    from daemon.outbox import FILE_MODE  # outbox imports this module

    with contextlib.suppress(OSError):
        os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) & FILE_MODE & ~_umask())


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, for every thread)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def _move(src: Path, dst: Path) -> None:
    try:
        _place(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = dst.with_name(names.temp_name(dst.name))
        try:
            shutil.copy2(src, tmp)
            _place(tmp, dst)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        os.unlink(src)


def _place(src: Path, dst: Path) -> None:
    """Give ``src`` the name ``dst``, raising FileExistsError rather than replacing a file.

    ``os.rename`` silently replaces; a hard link fails when the name is taken, atomically.
    On filesystems without hard links, fall back to check-then-rename.
    """
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "file exists", str(dst)) from None
        os.rename(src, dst)
        return
    os.unlink(src)
