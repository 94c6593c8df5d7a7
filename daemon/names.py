"""Every file name batchd derives from a dropped file's name, and the rules that keep it usable.

A user may drop any name the filesystem allows: up to 255 bytes (NAME_MAX), spaces, any
Unicode, a leading dash, control characters (a newline included), even bytes that are not
UTF-8. From it batchd derives the work copy in ``state/work/``, the outbox pair
(``NAME.results.jsonl``, ``NAME.summary.json``), their hidden temporary names and the archive
name in ``processed/``. The rules:

* **Every derived name fits NAME_MAX.** When the name plus what batchd adds would exceed 255
  bytes, the dropped part is cut (at a character boundary) and ``~`` plus 10 hex digits of a
  SHA-256 of the whole part is put in its place, before the ending batchd adds. The ending
  stays recognisable (``….results.jsonl``), and the hash is stable: the same name always
  shortens the same way, two names that differ only in their cut tail do not collide.
* **Derived names are valid UTF-8.** A dropped name with bytes that are not UTF-8 (Python
  carries them as lone surrogates) is used in its escaped form (``\\xff``) wherever batchd
  stores, logs or derives from it (:func:`display`), so SQLite and JSON can hold it.
* A derived name never starts with a dot except the temporary ones (hidden on purpose).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

NAME_MAX = 255  # bytes in one path component (Linux, and most filesystems)
HASH_CHARS = 10  # hex digits of the SHA-256 that stand for a cut tail
INPUT_SUFFIX = ".jsonl"
RESULTS_SUFFIX = ".results.jsonl"
SUMMARY_SUFFIX = ".summary.json"
TEMP_MARK = ".tmp-"
PID_DIGITS = 7  # /proc/sys/kernel/pid_max is at most 4194304


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def display(name: str) -> str:
    """``name`` as valid UTF-8 text: bytes that are not UTF-8 (lone surrogates, as
    ``os.scandir`` gives them) become ``\\xNN``. Valid names come back unchanged."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte: shown as \udXXX
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _cut(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` that is at most ``max_bytes`` bytes of UTF-8."""
    raw = text.encode("utf-8", "surrogatepass")[: max(0, max_bytes)]
    return raw.decode("utf-8", "ignore")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]


def shorten(part: str, room: int) -> str:
    """``part`` itself when it is at most ``room`` bytes, else its head and ``~hash`` in
    ``room`` bytes (``room`` must leave space for the hash)."""
    if utf8_len(part) <= room:
        return part
    tag = f"~{digest(part)}"
    return _cut(part, room - len(tag)) + tag


def fit(part: str, tail: str = "", limit: int = NAME_MAX) -> str:
    """``part + tail`` in at most ``limit`` bytes: ``tail`` (batchd's own ending) is kept
    whole, ``part`` (from the user) is shortened if needed."""
    return shorten(part, limit - utf8_len(tail)) + tail


def stem(name: str) -> str:
    """A dropped name without its ``.jsonl`` ending."""
    return name[: -len(INPUT_SUFFIX)] if name.endswith(INPUT_SUFFIX) else name


def work_name(token: str, name: str) -> str:
    """The work copy's name in ``state/work/``: ``TOKEN-NAME`` (the token makes a name dropped
    again while the first one runs a new file)."""
    return fit(f"{token}-{stem(display(name))}", INPUT_SUFFIX)


def name_of_work(work: str) -> str:
    """The dropped name a work copy stands for (its name without the ``TOKEN-`` prefix)."""
    head, sep, rest = work.partition("-")
    return rest if sep and head and all(c in "0123456789abcdef" for c in head) else work


def candidates(base: str, job_id: int | str) -> Iterator[tuple[str, str]]:
    """The never-overwrite naming sequence, as (the user's part, batchd's part): base, then
    base.JOB, then base.JOB.1, base.JOB.2, ..."""
    yield base, ""
    yield base, f".{job_id}"
    k = 1
    while True:
        yield base, f".{job_id}.{k}"
        k += 1


def outbox_pair(base: str, suffix: str) -> tuple[str, str]:
    """The (results, summary) names of one candidate: both share the same shortened base, so
    the two files of a job always go together."""
    head = shorten(base, NAME_MAX - utf8_len(suffix + RESULTS_SUFFIX)) + suffix
    return head + RESULTS_SUFFIX, head + SUMMARY_SUFFIX


def archive_name(base: str, suffix: str, ending: str) -> str:
    """A candidate name in ``processed/``: the input's name, or with the job id before its
    ending when the plain name is taken."""
    return shorten(base, NAME_MAX - utf8_len(suffix + ending)) + suffix + ending


def temp_prefix(target: str) -> str:
    """The hidden temporary name of ``target`` without its writer's pid: ``.TARGET.tmp-``."""
    return "." + shorten(target, NAME_MAX - 1 - len(TEMP_MARK) - PID_DIGITS) + TEMP_MARK


def temp_name(target: str, pid: int | None = None) -> str:
    return temp_prefix(target) + str(os.getpid() if pid is None else pid)
