"""Write one input file's results and summary into the outbox, atomically; archive the input.

The contract with whoever reads the outbox:

* ``{stem}.results.jsonl`` appears whole or not at all: it is written under a hidden temporary
  name (``.{stem}.results.jsonl.tmp-<pid>``), fsynced, then renamed onto its final name.
* Every name fits NAME_MAX (255 bytes), however long the input's name: the rules are in
  :mod:`daemon.names` (a long name is cut and a stable hash put in its place).
* Each line of the results file is one compact JSON object (no spaces between its tokens),
  its fields in the documented order; ``response`` is the provider's answer as stored.
* ``{stem}.summary.json`` appears last, so its presence means the results file is complete.
* Another job's file is never overwritten. The writer first reserves its names with
  :func:`reserve_names` (the first pair free for both files: ``{stem}``, then
  ``{stem}.{job_id}``, then ``{stem}.{job_id}.{k}``, k = 1, 2, ...) and records them (the
  daemon keeps them in the file's row), then :func:`write_outputs` renames onto exactly those
  names, replacing only what an earlier, crashed attempt of the same job left there. The two
  files of one job always share a name.
* Files are created with mode 0o640 *filtered by the process umask* (``os.open(..., 0o640)``,
  no chmod): a stricter umask set by the administrator (e.g. 077 → 0600) is respected, and the
  result is never looser than 0640.

:func:`archive_input` (in :mod:`daemon.archive`, re-exported here) moves a finished input into
the processed folder under the same naming sequence, never replacing a file. The summary's
contents are :mod:`daemon.summary`'s (re-exported here).
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import orjson

from adapters.jsontext import RawJSON, dumps_bytes
from daemon import names
from daemon.archive import archive_input, fsync_dir
from daemon.crashpoints import crash_point
from daemon.states import RequestStatus
from daemon.summary import STATUSES, TOKEN_FIELDS, SummaryBuilder

FILE_MODE = 0o640


# ---------------------------------------------------------------------------------------------
# One result line


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    """Rows may carry the adapters' dataclasses (Usage, ItemError) or plain dicts."""
    if value is None or type(value) is dict or isinstance(value, Mapping):  # dict: the usual
        return value
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"expected a mapping or a dataclass, got {type(value).__name__}")


def _usage(value: Any) -> dict[str, int]:
    usage = _as_mapping(value) or {}
    return {key: int(usage.get(key) or 0) for key in TOKEN_FIELDS}


def _error(value: Any) -> dict[str, Any] | None:
    error = _as_mapping(value)
    if error is None:
        return None
    return {"type": error.get("type"), "message": error.get("message"), "code": error.get("code")}


RAW_FIELDS = ("batch_ids", "adaptations", "response", "metadata")  # may be stored JSON text


class ResultLine(NamedTuple):
    """A result line already built (``fields``, in the documented order) from values the
    writer trusts (the daemon's own store, :func:`daemon.finish`): written as it is.
    ``cost_live`` and ``cache_savings`` are for the summary (:meth:`SummaryBuilder.add`).

    Stored JSON text may stand in ``fields`` as :class:`adapters.jsontext.RawJSON` or, cheaper
    to write, as ``orjson.Fragment``; then ``raw`` holds the texts of the fragments, one per
    field of ``RAW_FIELDS`` (None: that field is no fragment), for the rare line orjson cannot
    write (:meth:`plain`)."""

    fields: dict[str, Any]
    cost_live: float | None
    cache_savings: float | None
    raw: tuple[str | None, ...] | None = None

    def plain(self) -> dict[str, Any]:
        """The fields with the fragments as :class:`RawJSON` (that :func:`dumps_bytes` writes)."""
        fields = dict(self.fields)
        for key, text in zip(RAW_FIELDS, self.raw or (None,) * len(RAW_FIELDS), strict=True):
            if text is not None:
                fields[key] = RawJSON(text)
        return fields


def _list(value: Any) -> Any:
    return value if isinstance(value, RawJSON) else list(value or ())


def check_row(custom_id: Any, status: Any, row: Any = None) -> None:
    """Raise ValueError unless a result row has a known status and a custom_id (a row without
    them is a bug upstream)."""
    if status not in STATUSES:
        raise ValueError(f"result row {custom_id!r}: unknown status {status!r}")
    if not isinstance(custom_id, str):
        raise ValueError(f"result row has no custom_id: {row!r:.200}")


def result_line(row: Mapping[str, Any]) -> dict[str, Any]:
    """The output object for one request, with its fields in the documented order.

    ``custom_id`` and ``status`` are required (a row without them is a bug upstream); every
    other field defaults to null, zero or an empty list. ``text`` is forced to null unless the
    status is ``succeeded``, so a partial answer is never mistaken for a result.
    ``batch_ids``, ``adaptations``, ``response`` and ``metadata`` may be stored JSON text
    (:class:`adapters.jsontext.RawJSON`): copied into the line as they are.
    """
    status = row.get("status")
    check_row(row.get("custom_id"), status, row)
    return {
        "custom_id": row["custom_id"],
        "line": row.get("line"),
        "model": row.get("model"),
        "provider": row.get("provider"),
        "status": status,
        "text": row.get("text") if status == RequestStatus.SUCCEEDED else None,
        "finish_reason": row.get("finish_reason"),
        "usage": _usage(row.get("usage")),
        "cost_usd": row.get("cost_usd"),
        "error": _error(row.get("error")),
        "attempts": int(row.get("attempts") or 0),
        "batch_ids": _list(row.get("batch_ids")),
        "adaptations": _list(row.get("adaptations")),
        "response": row.get("response"),
        "metadata": row.get("metadata"),
    }


# ---------------------------------------------------------------------------------------------
# Files


def _create(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)


def _fragment(value: Any) -> Any:
    if isinstance(value, RawJSON):
        return orjson.Fragment(value.text)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def encode_line(row: ResultLine) -> bytes:
    """One results line, its newline included: compact JSON, the stored texts as they are.
    What orjson cannot write the same way (a lone surrogate in a provider's text, an integer
    beyond 64 bits) goes to :func:`adapters.jsontext.dumps_bytes`, as every line once did."""
    try:
        return orjson.dumps(row.fields, default=_fragment, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return dumps_bytes(row.plain()) + b"\n"


# Lines are joined into one write of about this many bytes (a write call per line cost ~3 µs
# a line, joined ~1 µs; a bound in bytes, not lines, so long answers do not pile up in memory).
WRITE_BYTES = 256 * 1024


def _write_results(
    tmp: Path, rows: Iterable[Mapping[str, Any] | ResultLine], summary: SummaryBuilder
) -> None:
    # Lines are counted into the summary a write at a time (SummaryBuilder.add_all).
    lines: list[bytes] = []
    written: list[ResultLine] = []
    pending = 0
    dumps, fragment, newline = orjson.dumps, _fragment, orjson.OPT_APPEND_NEWLINE
    rows = iter(rows)
    with open(_create(tmp), "wb") as f:
        for row in rows:  # the first line on disk at once: a crash test stops the writer here
            line = _line(row)
            summary.add_all((line,))
            f.write(encode_line(line))
            f.flush()
            crash_point("mid_outbox_write")
            break
        for row in rows:
            line = row if isinstance(row, ResultLine) else _line(row)
            try:  # encode_line, inlined (once per line)
                data = dumps(line[0], default=fragment, option=newline)
            except TypeError:
                data = encode_line(line)
            lines.append(data)
            written.append(line)
            pending += len(data)
            if pending >= WRITE_BYTES:
                summary.add_all(written)
                f.write(b"".join(lines))
                lines.clear()
                written.clear()
                pending = 0
        summary.add_all(written)
        f.write(b"".join(lines))
        f.flush()
        os.fsync(f.fileno())


def _line(row: Mapping[str, Any] | ResultLine) -> ResultLine:
    """A row as its result line: a plain row checked, ordered, defaulted."""
    if isinstance(row, ResultLine):
        return row
    live, saved = row.get("cost_usd_live"), row.get("cache_savings_usd")
    return ResultLine(result_line(row), live, saved)


def _write_text(f: TextIO, text: str, obj: Any, indent: int | None = None) -> None:
    """Write ``text``; if it holds a lone surrogate (a provider's answer can carry one as a
    JSON escape), write ``obj`` with ASCII escapes instead: still valid JSON, valid UTF-8."""
    try:
        f.write(text)  # encoded whole before anything is written, so a failure writes nothing
    except UnicodeEncodeError:
        f.write(json.dumps(obj, indent=indent))


def _write_json(tmp: Path, obj: Any) -> None:
    with open(_create(tmp), "w", encoding="utf-8", newline="\n") as f:
        _write_text(f, json.dumps(obj, ensure_ascii=False, indent=2), obj, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def reserve_names(outbox: Path, stem: str, job_id: int | str) -> tuple[Path, Path]:
    """The first (results, summary) pair of names free in ``outbox``, for a writer that
    records them before writing (so a crash mid-write is redone under the same names, never
    under a second pair)."""
    for base, suffix in names.candidates(stem, job_id):
        results, summary = (outbox / name for name in names.outbox_pair(base, suffix))
        if not os.path.lexists(results) and not os.path.lexists(summary):
            return results, summary
    raise AssertionError("unreachable: the naming sequence is endless")


def _replace_pair(tmp_results: Path, tmp_summary: Path, targets: tuple[Path, Path]) -> None:
    """Place both files under names reserved for this job (a crashed earlier attempt of the
    same job may have left them); the summary goes last, so it marks complete results."""
    os.replace(tmp_results, targets[0])
    os.replace(tmp_summary, targets[1])


def _remove_stale_temps(outbox: Path, targets: tuple[Path, Path]) -> None:
    """Remove the temporary files of ``targets`` left by a writer that died (a crash
    mid-write): a temp name ends in its writer's pid, and a pid that is not running is not
    coming back."""
    for target in targets:
        for tmp in outbox.glob(glob.escape(names.temp_prefix(target.name)) + "*"):
            writer = tmp.name.rsplit("-", 1)[-1]
            if not writer.isdigit() or int(writer) == os.getpid():
                continue
            try:
                os.kill(int(writer), 0)
            except ProcessLookupError:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            except OSError:
                continue  # alive, under another user


def write_outputs(
    outbox: Path,
    stem: str,
    job_id: int | str,
    rows: Iterable[Mapping[str, Any] | ResultLine],
    *,
    summary_meta: Mapping[str, Any],
    targets: tuple[Path, Path],
) -> tuple[Path, Path]:
    """Stream ``rows`` (in order) to the results file and write the summary, under ``targets``.

    ``targets`` are the (results, summary) names from :func:`reserve_names`, used as they are.
    ``summary_meta`` gives the summary's ``file``, ``started_at``, ``ended_at`` (default: now)
    and ``batches``. Returns ``targets``. On any failure, including one raised by ``rows``
    itself, the temporary files are removed and the exception propagates; the summary is
    renamed into place only after the results, so a reader never takes partial results for
    complete, and the caller retries under the same ``targets``.
    """
    outbox = Path(outbox)
    tmp_results, tmp_summary = (outbox / names.temp_name(t.name) for t in targets)
    _remove_stale_temps(outbox, targets)
    try:
        builder = SummaryBuilder()
        _write_results(tmp_results, rows, builder)
        summary = builder.build(
            file=summary_meta.get("file", stem),
            job_id=job_id,
            started_at=summary_meta.get("started_at"),
            ended_at=summary_meta.get("ended_at") or datetime.now(UTC),
            batches=summary_meta.get("batches") or (),
            error=summary_meta.get("error"),
        )
        if summary_meta.get("canaries_failed"):  # requests a failed canary kept back
            summary["canaries_failed"] = list(summary_meta["canaries_failed"])
        _write_json(tmp_summary, summary)
        _replace_pair(tmp_results, tmp_summary, targets)
    finally:
        for tmp in (tmp_results, tmp_summary):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    fsync_dir(outbox)
    return targets


__all__ = ["RAW_FIELDS", "STATUSES", "TOKEN_FIELDS", "ResultLine", "SummaryBuilder",
           "archive_input", "check_row", "encode_line", "reserve_names", "result_line",
           "write_outputs"]  # fmt: skip
