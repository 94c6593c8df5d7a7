"""Finishing a file: once every request of it is final, write its outbox files and archive it.

The output names are reserved in the file's row (status ``writing``) before anything is
written, so a crash mid-write is repaired by writing the same names again at start-up, never
by adding a second copy. The writer runs in a worker thread and streams rows from SQLite.

Before the names are reserved, lines a writer appended to the work copy since it was read are
ingested (:func:`daemon.ingest.take_growth`): the file then has more requests to run. Bytes that
arrive later than that (or a last line still without its end) are named in the summary's
``file_error``, and logged again if more arrive before the input is archived: they are in the
archived input, never dropped without a word.

A file that could not be moved out of the inbox (refused) gets its summary and stays where it
is. An unexpected error while writing one file is logged once with its traceback and retried
with a backoff, like an outbox that cannot be written; the other files go on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import msgspec
import orjson

from adapters.jsontext import loads, loads_kept

from . import ingest, names, outbox, sizing
from .caching import cache_note
from .config import Config, adapt_policy
from .cost import PlainPrice, cache_savings, cost_of, plain_pricer
from .logs import elapsed_since, job_log
from .registry import ModelInfo, Registry
from .states import FileStatus, RequestStatus
from .store import Store, iter_result_rows, state_failure
from .text import plural

_NO_USAGE = dict.fromkeys(outbox.TOKEN_FIELDS, 0)
_EMPTY: dict[str, Any] = {}
_STATUSES = frozenset(outbox.STATUSES)
MAX_FAILURE_LOGS = 20  # requests that did not succeed logged one by one per file, then a count
_NOT_LOGGED = (RequestStatus.SUCCEEDED, RequestStatus.INVALID)  # (invalid: said at ingest)


# A stored result (batchd writes its text, finish_reason and usage) read by msgspec into
# those fields alone, when they hold what batchd writes: texts or nulls, and token counts that
# are 64-bit integers, no other key in usage. Anything else (msgspec refuses it) is read by
# _result_plain, as every result once was.
_Count = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class _Usage(msgspec.Struct, forbid_unknown_fields=True):
    input_tokens: _Count = 0
    output_tokens: _Count = 0
    cached_input_tokens: _Count = 0
    cache_creation_input_tokens: _Count = 0


class _Result(msgspec.Struct):
    text: str | None = None
    finish_reason: str | None = None
    usage: _Usage | None = None


_read_result = msgspec.json.Decoder(_Result).decode
_Parts = tuple[Any, Any, dict[str, Any]]


def _result(result_text: str) -> _Parts:
    """(text, finish_reason, usage) of a stored result: what :func:`_result_plain` gives."""
    try:
        result = _read_result(result_text)
    except msgspec.DecodeError:  # (a ValidationError is one)
        return _result_plain(result_text)
    u = result.usage
    if u is None:
        return result.text, result.finish_reason, {**_NO_USAGE}
    usage = {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cached_input_tokens": u.cached_input_tokens,
        "cache_creation_input_tokens": u.cache_creation_input_tokens,
    }  # (the order of outbox.TOKEN_FIELDS)
    return result.text, result.finish_reason, usage


def _result_plain(result_text: str) -> _Parts:
    """(text, finish_reason, usage) of a stored result read whole; usage has every token
    field (0 when missing), in the order of ``outbox.TOKEN_FIELDS``, then any other key."""
    result = loads_kept(result_text) if result_text else _EMPTY
    stored_usage = result.get("usage")
    usage = {**_NO_USAGE, **stored_usage} if stored_usage else {**_NO_USAGE}
    return result.get("text"), result.get("finish_reason"), usage


def _no_result() -> _Parts:
    return None, None, {**_NO_USAGE}


def _rows(
    db_path: Path, file_id: int, registry: Registry, outcomes: _Outcomes | None = None
) -> Iterator[outbox.ResultLine]:
    """A file's result lines for the writer. The provider's answer, the batch ids, the
    adaptations and the metadata are stored JSON text, placed into the line undecoded (as
    ``orjson.Fragment``, their texts kept in ``ResultLine.raw``); the answer is read only for
    the cache writes' time to live (Claude), and the body only for a Claude request's
    prompt-cache note. A result without cache reads or writes (the usual one) is priced by its
    model's :func:`daemon.cost.plain_pricer`. ``outcomes`` counts the lines by status as they
    are read, and logs those that did not succeed."""
    succeeded = RequestStatus.SUCCEEDED
    fragment, new, line_of = orjson.Fragment, tuple.__new__, outbox.ResultLine
    models: dict[tuple[Any, Any], tuple[ModelInfo | None, PlainPrice]] = {}
    counts: dict[str, int] = {} if outcomes is None else outcomes.counts
    for row in iter_result_rows(db_path, file_id, body_of="anthropic"):
        (custom_id, line, model, provider, status, result_text, answer, error_text, attempts,
         batch_ids, adaptations_text, metadata, body) = row  # fmt: skip
        if status not in _STATUSES or type(custom_id) is not str:
            outbox.check_row(custom_id, status, row)
        counts[status] = counts.get(status, 0) + 1
        text, finish_reason, usage = _result(result_text) if result_text else _no_result()
        known = models.get((model, provider))
        if known is None:
            info = registry.info(model, provider) if model and provider else None
            known = models[model, provider] = (info, plain_pricer(info))
        read, written = usage["cached_input_tokens"], usage["cache_creation_input_tokens"]
        adaptations: Any = [] if adaptations_text is None else fragment(adaptations_text)
        raw_adaptations = adaptations_text
        if not read and not written:  # the usual case: no cache, no note
            batch_usd, live_usd = known[1](usage["input_tokens"], usage["output_tokens"])
            saved: float | None = 0.0
        else:
            info = known[0]
            response = loads(answer) if written > 0 and answer else None  # writes by TTL
            cost = cost_of(usage, info, response)
            batch_usd, live_usd = cost.batch_usd, cost.live_usd
            saved = cache_savings(usage, info, response)
            cached = body and (written > 0 or read)  # (a note only where the cache was used)
            note = cache_note(provider, loads(body), usage, response) if cached else None
            if note is not None:
                adaptations = [*(loads(adaptations_text) if adaptations_text else ()), note]
                raw_adaptations = None
        fields = {
            "custom_id": custom_id,
            "line": line,
            "model": model,
            "provider": provider,
            "status": status,
            "text": text if status == succeeded else None,
            "finish_reason": finish_reason,
            "usage": usage,
            "cost_usd": batch_usd,
            "error": loads(error_text) if error_text else None,
            "attempts": attempts or 0,
            "batch_ids": [] if batch_ids is None else fragment(batch_ids),
            "adaptations": adaptations,
            "response": None if answer is None else fragment(answer),
            "metadata": None if metadata is None else fragment(metadata),
        }
        if status not in _NOT_LOGGED and outcomes is not None:
            outcomes.say(fields, str(status))
        # ResultLine(...) without the Python-level __new__ of a NamedTuple (the same tuple)
        raws = (batch_ids, raw_adaptations, answer, metadata)
        yield new(line_of, (fields, live_usd, saved, raws))


class _Outcomes:
    """A file's result lines counted by status, and the requests that did not succeed logged
    (their ``custom_id``, input line and error kind), as :func:`_rows` reads them."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.counts: dict[str, int] = {}
        self.logged = 0

    def say(self, row: dict[str, Any], status: str) -> None:
        self.logged += 1
        if self.logged > MAX_FAILURE_LOGS:
            return
        error: dict[str, Any] = row["error"] if isinstance(row.get("error"), dict) else {}
        self.log.bind(
            event="request.failed",
            line=row["line"],
            custom_id=row["custom_id"],
            provider=row["provider"],
            model=row["model"],
            error_kind=error.get("type"),
        ).warning(
            "request {} (line {}) ended {} after {}: {}",
            row["custom_id"],
            row["line"],
            status,
            plural(int(row["attempts"] or 0), "attempt"),
            error.get("message") or error.get("type") or "no error given",
        )

    def close(self) -> None:
        if self.logged > MAX_FAILURE_LOGS:
            self.log.bind(event="request.failed").warning(
                "{} more did not succeed; each is in the results file",
                plural(self.logged - MAX_FAILURE_LOGS, "request"),
            )


# Files whose last write failed with an unexpected error (logged once with its traceback).
_FAILED: set[int] = set()


async def finish_file(cfg: Config, store: Store, row: dict[str, Any]) -> bool:
    """Write a finished file's outbox files and archive its input. True when the work copy
    had grown: new requests were stored instead (the planner has work, the file waits)."""
    try:
        grown = await _finish(cfg, store, row)
    except Exception as exc:
        if state_failure(exc):
            raise
        log = job_log(row).bind(event="job.write_failed", error_kind="internal_error")
        if row["id"] not in _FAILED:
            _FAILED.add(row["id"])
            log.opt(exception=exc).error(
                "cannot finish {}: unexpected {}: {}; will retry",
                row["name"],
                type(exc).__name__,
                exc,
            )
        else:
            log.error("cannot finish {} yet: {}: {}", row["name"], type(exc).__name__, exc)
        return False
    _FAILED.discard(row["id"])
    return grown


async def _finish(cfg: Config, store: Store, row: dict[str, Any]) -> bool:
    file_id, name = row["id"], row["name"]
    log = job_log(row)
    stem = names.stem(name)
    if row["status"] == FileStatus.ACTIVE:
        if await ingest.take_growth(cfg, store, row):
            return True
        row = await store.file(file_id) or row
        results, summary = outbox.reserve_names(cfg.outbox, stem, file_id)
        await store.set_file_status(
            file_id, FileStatus.WRITING, results_path=str(results), summary_path=str(summary)
        )
        row = {**row, "results_path": str(results), "summary_path": str(summary)}
    targets = (Path(row["results_path"]), Path(row["summary_path"]))
    late = ingest.late_bytes(row)
    meta = {
        "file": name,
        "job_id": file_id,
        "started_at": row["created_at"],
        "ended_at": time.time(),
        "batches": await store.file_batches(file_id),
        "error": _with_late(row.get("error"), late),
        "canaries_failed": await sizing.canaries_failed(store, file_id, cfg),
    }
    if late:
        log.bind(event="job.late_bytes", error_kind="late_bytes").error(
            "file {}: {}", name, _late_text(late)
        )
    outcomes = _Outcomes(log)
    try:
        await asyncio.to_thread(
            outbox.write_outputs,
            cfg.outbox,
            stem,
            file_id,
            _rows(store.path, file_id, adapt_policy(cfg).registry, outcomes),
            summary_meta=meta,
            targets=targets,
        )
    except OSError as exc:
        log.bind(event="job.write_failed", error_kind="outbox_unwritable").error(
            "cannot write results of {} to {}: {}; will retry", name, cfg.outbox, exc
        )
        return False
    outcomes.close()
    log.bind(event="job.written", elapsed_s=elapsed_since(row["created_at"])).info(
        "results written: {} and {} ({}: {})",
        targets[0],
        targets[1],
        plural(sum(outcomes.counts.values()), "request"),
        ", ".join(f"{n} {s}" for s, n in sorted(outcomes.counts.items())) or "none",
    )
    await _archive(cfg, store, row, late)
    return False


def _late_text(late: int) -> str:
    return (
        f"{late} bytes arrived after the file was read (a writer still had it open, or its "
        "last line had no line end yet); they were not sent and are not in the results, only "
        "in the archived input"
    )


def _with_late(error: str | None, late: int) -> str | None:
    if not late:
        return error
    return _late_text(late) if error is None else f"{error}; {_late_text(late)}"


async def _archive(cfg: Config, store: Store, row: dict[str, Any], late: int) -> None:
    work = Path(row["work_path"])
    log = job_log(row)
    archived: str | None = None
    if work.exists() and row["work_path"] == row["inbox_path"]:
        log.bind(event="job.left_in_inbox", error_kind="inbox_refused").warning(
            "{} could not be taken from the inbox; it is left there", row["name"]
        )
    elif work.exists():
        more = ingest.late_bytes(row) - late
        if more > 0:  # arrived while the results were written: in the archive, said here
            log.bind(event="job.late_bytes", error_kind="late_bytes").error(
                "file {}: {} more arrived after its results were written; they are only "
                "in the archived input",
                row["name"],
                plural(more, "byte"),
            )
        try:
            archived = str(
                await asyncio.to_thread(
                    outbox.archive_input, work, cfg.processed, row["id"], row["name"]
                )
            )
        except OSError as exc:
            log.bind(event="job.archive_failed", error_kind="archive_failed").error(
                "cannot archive {}: {}", row["name"], exc
            )
            return
    await store.set_file_status(
        row["id"], FileStatus.DONE, archived_path=archived, finished_at=time.time()
    )
    done = log.bind(event="job.done", elapsed_s=elapsed_since(row["created_at"]))
    if archived:
        done.info("input archived: {}", archived)
    else:
        done.info("job done (its input was archived before, or is left where it was)")
