"""Finishing a file: once every request of it is final, write its outbox files and archive it.

The output names are reserved in the file's row (status ``writing``) before anything is
written, so a crash mid-write is repaired by writing the same names again at start-up, never
by adding a second copy. The writer runs in a worker thread and streams rows from SQLite.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loguru import logger

from . import outbox
from .caching import cache_note
from .config import Config, adapt_policy
from .cost import cache_savings, cost_of
from .registry import Registry
from .states import FileStatus, RequestStatus
from .store import Store, iter_file_rows


def _rows(db_path: Path, file_id: int, registry: Registry) -> Iterator[dict[str, Any]]:
    for r in iter_file_rows(db_path, file_id):
        result = r.get("result") or {}
        usage = result.get("usage")
        model, provider = r["model"], r["provider"]
        info = registry.info(model, provider) if model and provider else None
        response = result.get("response")  # the provider's own answer: cache writes by TTL
        cost = cost_of(usage, info, response)
        adaptations = list(r.get("adaptations") or [])
        note = cache_note(provider, r.get("body"), usage, response)
        if note is not None:
            adaptations.append(note)
        yield {
            "custom_id": r["custom_id"],
            "line": r["line"],
            "model": r["model"],
            "provider": r["provider"],
            "status": r["status"],
            "text": result.get("text") if r["status"] == RequestStatus.SUCCEEDED else None,
            "finish_reason": result.get("finish_reason"),
            "usage": usage,
            "cost_usd": cost.batch_usd,
            "cost_usd_live": cost.live_usd,
            "cache_savings_usd": cache_savings(usage, info, response),
            "error": r.get("error"),
            "attempts": r["attempts"],
            "batch_ids": r.get("batch_ids") or [],
            "adaptations": adaptations,
            "response": response,
            "metadata": r.get("metadata"),
        }


def _stem(name: str) -> str:
    return name[: -len(".jsonl")] if name.endswith(".jsonl") else name


async def finish_file(cfg: Config, store: Store, row: dict[str, Any]) -> None:
    file_id, name = row["id"], row["name"]
    log = logger.bind(file=name)
    if row["status"] == FileStatus.ACTIVE:
        results, summary = outbox.reserve_names(cfg.outbox, _stem(name), file_id)
        await store.set_file_status(
            file_id, FileStatus.WRITING, results_path=str(results), summary_path=str(summary)
        )
        row = {**row, "results_path": str(results), "summary_path": str(summary)}
    targets = (Path(row["results_path"]), Path(row["summary_path"]))
    meta = {
        "file": name,
        "job_id": file_id,
        "started_at": row["created_at"],
        "ended_at": time.time(),
        "batches": await store.file_batches(file_id),
        "error": row.get("error"),
    }
    try:
        await asyncio.to_thread(
            outbox.write_outputs,
            cfg.outbox,
            _stem(name),
            file_id,
            _rows(store.path, file_id, adapt_policy(cfg).registry),
            summary_meta=meta,
            targets=targets,
        )
    except OSError as exc:
        log.error("cannot write results of {} to {}: {}; will retry", name, cfg.outbox, exc)
        return
    log.info("results written: {} and {}", targets[0], targets[1])
    await _archive(cfg, store, row)


async def _archive(cfg: Config, store: Store, row: dict[str, Any]) -> None:
    work = Path(row["work_path"])
    archived: str | None = None
    if work.exists():
        try:
            archived = str(
                await asyncio.to_thread(
                    outbox.archive_input, work, cfg.processed, row["id"], row["name"]
                )
            )
        except OSError as exc:
            logger.bind(file=row["name"]).error("cannot archive {}: {}", row["name"], exc)
            return
    await store.set_file_status(
        row["id"], FileStatus.DONE, archived_path=archived, finished_at=time.time()
    )
    logger.bind(file=row["name"]).info("input archived: {}", archived)
