"""OpenAI Batches API for the emulator: create, retrieve, list, cancel, and running the items.

A batch's input is validated when it is created (streaming, in a worker thread), so the batch
can fail the way the real service fails it (status ``failed`` with ``errors``) and so accepted
items reach the journal at once. Its state is computed from its creation time (Context.phase).
Its items run once, when the batch is first seen ended: the input is read in chunks in a worker
thread, faults and prompt-cache hits are decided in the event loop, and result lines are
streamed to blobs that become the output and error files (openai_files).
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .core import Context, json_response
from .journal import FAILED, RETRYABLE, SUCCEEDED
from .openai_answers import cached_tokens, error_line, success_line, unrun_line
from .openai_errors import injected_error
from .openai_files import FILE, FILE_TTL, OpenAIFiles, list_body, page, public
from .openai_input import (
    InputReader,
    Planned,
    ResultWriter,
    Scan,
    scan_input,
    token_limit_error,
)
from .openai_params import DAY, OpenAIError, check_create, int_query, json_object

PROVIDER = "openai"
BATCH, PREFIX = "openai.batch", "openai.prefix"
EMULATED_ENDPOINTS = ("/v1/chat/completions",)
TERMINAL = ("completed", "failed", "expired", "cancelled")
CHUNK = 500  # items per worker-thread step while a batch runs


@dataclass
class _Run:
    """Totals of one batch run."""

    completed: int = 0
    failed: int = 0
    usage: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("input", "cached", "output", "reasoning"), 0)
    )



class OpenAIBatches:
    """The Batches routes and the batch lifecycle."""

    def __init__(self, ctx: Context, files: OpenAIFiles) -> None:
        self.ctx = ctx
        self.files = files

    async def create_batch(self, request: web.Request) -> web.Response:
        params = check_create(await json_object(request))
        source = self.ctx.store.get(FILE, params["input_file_id"])
        if source is None:
            raise OpenAIError(
                404, f"No such File object: {params['input_file_id']}", param="input_file_id"
            )
        if source["purpose"] != "batch":
            raise OpenAIError(
                400,
                f"Invalid 'input_file_id': '{source['id']}'. The file has purpose "
                f"'{source['purpose']}'; batch input files must be uploaded with purpose "
                "'batch'.",
                param="input_file_id",
            )
        if params["endpoint"] not in EMULATED_ENDPOINTS:
            raise OpenAIError(
                400,
                f"The batchd emulator does not implement batches for '{params['endpoint']}'; "
                f"it implements {', '.join(EMULATED_ENDPOINTS)} only.",
                param="endpoint",
                code="unsupported_value",
            )
        batch = await self._new_batch(params, source)
        return json_response(self._view(batch))

    async def _new_batch(self, params: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
        created = self.ctx.now()
        batch_id = "batch_" + os.urandom(16).hex()
        blob_id, path = self.ctx.store.new_blob()
        src = self.ctx.store.blob_path(source["_blob"])
        await asyncio.to_thread(_link_or_copy, src, path)
        quotas = bool(self.ctx.faults.settings.enqueued_token_limits)
        scan = await asyncio.to_thread(
            scan_input, str(path), source["bytes"], params["endpoint"], quotas
        )
        if not scan.errors:
            self._check_quota(scan)
        fate: dict[str, Any] = {}
        if not scan.errors:
            fate = self.ctx.faults.arm_batch(PROVIDER, scan.model or "")
            self.ctx.journal.receive_items(PROVIDER, scan.digests)
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": params["endpoint"],
            "model": scan.model,
            "errors": None,
            "input_file_id": source["id"],
            "completion_window": params["completion_window"],
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(created),
            "in_progress_at": None,
            "expires_at": int(created) + DAY,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "usage": _usage(_Run()),
            "metadata": params.get("metadata"),
            "_created": created,
            "_n": scan.n,
            "_errors": scan.errors,
            "_tokens": 0 if scan.errors else scan.tokens,
            "_fate": fate,
            "_input_blob": blob_id,
            "_output_ttl": params.get("output_ttl") or FILE_TTL,
        }
        self.ctx.store.put(BATCH, batch_id, batch)
        return batch

    # -- the enqueued-token quota -----------------------------------------------------------
    def _check_quota(self, scan: Scan) -> None:
        """A batch that would take its model's enqueued tokens over the configured limit fails
        at validation (``token_limit_exceeded``, the limit printed in the message)."""
        limit = self.ctx.faults.settings.token_limit(scan.model or "")
        if limit is None:
            return
        if self._enqueued_tokens(scan.model) + scan.tokens > limit:
            scan.errors = [token_limit_error(scan.model, limit)]
            self.ctx.journal.count(PROVIDER, "enqueued_limit_refusals")

    def _enqueued_tokens(self, model: str | None) -> int:
        """Prompt tokens of the model's batches still validating or in progress."""
        return sum(
            b.get("_tokens", 0)
            for b in self.ctx.store.all(BATCH)
            if b["model"] == model and self._enqueued(b)
        )

    def _enqueued(self, batch: dict[str, Any]) -> bool:
        if batch["status"] in TERMINAL or batch["_errors"] or "batch_fail" in batch["_fate"]:
            return False
        if self.ctx.time_scale <= 0:
            return True  # it ends when it is next looked at
        if batch["status"] == "cancelling":
            return not self._due(batch)
        return self.ctx.phase(batch["_created"], batch["_n"]) in ("validating", "in_progress")

    def _batch_or_404(self, batch_id: str) -> dict[str, Any]:
        batch = self.ctx.store.get(BATCH, batch_id)
        if batch is None:
            raise OpenAIError(404, f"No batch found with id '{batch_id}'.")
        return batch

    async def get_batch(self, request: web.Request) -> web.Response:
        batch = await self._refresh(self._batch_or_404(request.match_info["batch_id"]))
        return json_response(self._view(batch))

    async def list_batches(self, request: web.Request) -> web.Response:
        limit = int_query(request.query, "limit", 20, 1, 100)
        items, more = page(
            self.ctx.store,
            BATCH, after=request.query.get("after"), limit=limit, newest_first=True
        )
        views = [self._view(await self._refresh(b)) for b in items]
        return json_response(list_body(views, more))

    async def cancel_batch(self, request: web.Request) -> web.Response:
        batch_id = request.match_info["batch_id"]
        self._batch_or_404(batch_id)
        async with self.ctx.lock(batch_id):
            batch = self._batch_or_404(batch_id)
            if batch["status"] == "cancelling":  # asking again changes nothing
                return json_response(self._view(batch))
            if batch["status"] not in TERMINAL and self._due(batch, polled=False):
                await self._finish(batch)
            if batch["status"] in TERMINAL:
                raise OpenAIError(400, f"Cannot cancel a batch with status '{batch['status']}'.")
            self._start_cancel(batch)
        return json_response(self._view(batch))

    def _start_cancel(self, batch: dict[str, Any]) -> None:
        now = self.ctx.now()
        phase = self.ctx.phase(batch["_created"], batch["_n"], polled=False)
        n = batch["_n"]
        ran = {"validating": 0, "in_progress": math.floor(self._progress(batch) * n)}
        batch["_ran"] = ran.get(phase, n)
        batch["_cancel_at"] = now
        live = self._live(batch)
        batch["in_progress_at"] = live["in_progress_at"]
        batch["request_counts"] = live["request_counts"]
        batch["status"] = "cancelling"
        batch["cancelling_at"] = int(now)
        self.ctx.store.put(BATCH, batch["id"], batch)

    def _progress(self, batch: dict[str, Any]) -> float:
        """Share of the items run so far (none at time scale 0, where nothing runs unseen)."""
        if self.ctx.time_scale <= 0:
            return 0.0
        return self.ctx.progress(batch["_created"], batch["_n"])

    # -- batches: lifecycle ----------------------------------------------------------------
    def _bounds(self, batch: dict[str, Any]) -> tuple[float, float, float]:
        """When the batch leaves validating, in_progress and finalizing (wall clock)."""
        scale, t = max(self.ctx.time_scale, 0.0), self.ctx.timing
        start = batch["_created"] + t.validating_s * scale
        end = start + (t.in_progress_base_s + t.per_item_s * batch["_n"]) * scale
        return start, end, end + t.finalizing_s * scale

    def _due(self, batch: dict[str, Any], *, polled: bool = True) -> bool:
        """Whether the batch has reached its end and must be settled now."""
        if batch["status"] == "cancelling":
            done_at = batch["_cancel_at"] + self.ctx.timing.finalizing_s * self.ctx.time_scale
            return self.ctx.time_scale <= 0 or self.ctx.now() >= done_at
        phase = self.ctx.phase(batch["_created"], batch["_n"], polled=polled)
        if batch["_errors"] or "batch_fail" in batch["_fate"]:
            return phase != "validating"
        if "expire" in batch["_fate"]:
            return phase in ("finalizing", "ended")
        return phase == "ended"

    def _live(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The moving fields of a batch that has not ended yet."""
        if batch["status"] == "cancelling":
            return {}
        phase = self.ctx.phase(batch["_created"], batch["_n"])
        start, end, _ = self._bounds(batch)
        status = {"ended": "finalizing"}.get(phase, phase)
        if self.ctx.time_scale <= 0:
            status = "validating"
        running = status != "validating"
        return {
            "status": status,
            "model": batch["model"] if running else None,
            "in_progress_at": int(start) if running else None,
            "finalizing_at": int(end) if status == "finalizing" else None,
            "request_counts": {"total": batch["_n"] if running else 0, "completed": 0, "failed": 0},
        }

    def _view(self, batch: dict[str, Any]) -> dict[str, Any]:
        view = public(batch)
        if batch["status"] not in TERMINAL:
            view.update(self._live(batch))
        return view

    async def _refresh(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Settle the batch if it has ended since it was last seen (once, under its lock)."""
        if batch["status"] in TERMINAL or not self._due(batch):
            return batch
        async with self.ctx.lock(batch["id"]):
            batch = self._batch_or_404(batch["id"])
            if batch["status"] not in TERMINAL:
                await self._finish(batch)
        return batch

    async def _finish(self, batch: dict[str, Any]) -> None:
        start, end, final = self._bounds(batch)
        fate = batch["_fate"]
        if batch["status"] == "cancelling":
            await self._cancelled(batch)
        elif batch["_errors"]:
            self._fail(batch, batch["_errors"], start)
        elif "batch_fail" in fate:
            await self._settle_unrun(batch)
            self._fail(batch, [token_limit_error(batch["model"], 90_000)], start)
        elif "expire" in fate:
            ran = math.floor(fate["expire"]["fraction"] * batch["_n"])
            await self._run(batch, ran, "batch_expired")
            batch.update(status="expired", in_progress_at=int(start), expired_at=int(end))
        else:
            await self._run(batch, batch["_n"], "batch_expired")
            batch.update(
                status="completed",
                in_progress_at=int(start),
                finalizing_at=int(end),
                completed_at=int(final),
            )
        self.ctx.store.put(BATCH, batch["id"], batch)

    async def _cancelled(self, batch: dict[str, Any]) -> None:
        """End a cancelling batch: the items that had run keep their results."""
        if batch["_errors"]:  # cancelled while its (invalid) input was being validated
            self.ctx.store.delete_blob(batch["_input_blob"])
        else:
            await self._run(batch, batch["_ran"], "batch_cancelled")
        done_at = batch["_cancel_at"] + self.ctx.timing.finalizing_s * self.ctx.time_scale
        batch.update(status="cancelled", cancelled_at=int(done_at))

    def _fail(self, batch: dict[str, Any], errors: list[dict[str, Any]], at: float) -> None:
        batch.update(
            status="failed",
            failed_at=int(at),
            errors={"object": "list", "data": errors},
            request_counts={"total": 0, "completed": 0, "failed": 0},
        )
        self.ctx.store.delete_blob(batch["_input_blob"])

    async def _settle_unrun(self, batch: dict[str, Any]) -> None:
        """Items of a batch failed as a whole were never run: retrying them is legitimate."""
        path = str(self.ctx.store.blob_path(batch["_input_blob"]))
        scan = await asyncio.to_thread(scan_input, path, 0, batch["endpoint"])
        self.ctx.journal.settle_items(PROVIDER, [(d, RETRYABLE) for d in scan.digests])

    # -- batches: running the items --------------------------------------------------------
    async def _run(self, batch: dict[str, Any], run_count: int, unrun_code: str) -> None:
        """Run the first ``run_count`` items, answer the rest with ``unrun_code`` lines."""
        store = self.ctx.store
        out_blob, out_path = store.new_blob()
        err_blob, err_path = store.new_blob()
        input_path = str(store.blob_path(batch["_input_blob"]))
        stop = self.ctx.faults.settings.gpt_5_5_accepts_stop
        reader = await asyncio.to_thread(InputReader, input_path, stop)
        out = await asyncio.to_thread(ResultWriter, str(out_path))
        err = await asyncio.to_thread(ResultWriter, str(err_path))
        totals = _Run()
        try:
            while items := await asyncio.to_thread(reader.next_chunk, CHUNK, run_count):
                good, bad, outcomes = self._decide(items, run_count, unrun_code, totals)
                await asyncio.to_thread(_write_both, out, good, err, bad)
                self.ctx.journal.settle_items(PROVIDER, outcomes)
        finally:
            await asyncio.to_thread(_close_all, reader, out, err)
        batch["request_counts"] = {
            "total": batch["_n"],
            "completed": totals.completed,
            "failed": totals.failed,
        }
        batch["usage"] = _usage(totals)
        gone = "results_gone" in batch["_fate"]
        batch["output_file_id"] = self._result_file(batch, out_blob, out.lines, "output", gone)
        batch["error_file_id"] = self._result_file(batch, err_blob, err.lines, "error", gone)
        store.delete_blob(batch["_input_blob"])

    def _decide(
        self, items: list[Planned], run_count: int, unrun_code: str, totals: _Run
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple[str, str]]]:
        """Outcome of each item (event loop: faults and the prompt cache live here)."""
        good: list[dict[str, Any]] = []
        bad: list[dict[str, Any]] = []
        outcomes: list[tuple[str, str]] = []
        for item in items:
            error = item.error
            if item.index >= run_count:
                bad.append(unrun_line(item.custom_id, unrun_code))
                outcomes.append((item.digest, RETRYABLE))
                continue
            if error is None:
                kind = self.ctx.faults.item_error(PROVIDER, item.model, item.body_text)
                error = injected_error(kind, item.model) if kind else None
            if error is not None:
                bad.append(error_line(item.custom_id, error))
                outcomes.append((item.digest, RETRYABLE if error.retryable else FAILED))
                continue
            assert item.answer is not None
            body = item.answer.body
            self._apply_cache(item, body)
            good.append(success_line(item.custom_id, body))
            outcomes.append((item.digest, SUCCEEDED))
            _add_usage(totals, body["usage"])
        totals.completed += len(good)
        totals.failed += len(bad)
        return good, bad, outcomes

    def _apply_cache(self, item: Planned, body: dict[str, Any]) -> None:
        """Automatic prompt caching: a long prefix seen before (any batch) is billed cached."""
        answer = item.answer
        if answer is None or answer.prefix_key is None:
            return
        if self.ctx.store.get(PREFIX, answer.prefix_key) is not None:
            details = body["usage"]["prompt_tokens_details"]
            details["cached_tokens"] = cached_tokens(answer.prefix_tokens)
        else:
            self.ctx.store.put(PREFIX, answer.prefix_key, {"tokens": answer.prefix_tokens})

    def _result_file(
        self, batch: dict[str, Any], blob_id: str, lines: int, kind: str, gone: bool
    ) -> str | None:
        """Turn a result blob into a ``batch_output`` file (None when it has no lines)."""
        store = self.ctx.store
        if lines == 0:
            store.delete_blob(blob_id)
            return None
        if gone:  # results_gone: the file was deleted; only its id remains on the batch
            store.delete_blob(blob_id)
            return self.ctx.new_id("file-", 22)
        size = store.blob_path(blob_id).stat().st_size
        name = f"{batch['id']}_{kind}.jsonl"
        now = int(self.ctx.now())
        ttl = batch["_output_ttl"]
        return self.files.put_file(blob_id, name, size, "batch_output", now, ttl)["id"]



def _usage(run: _Run) -> dict[str, Any]:
    u = run.usage
    return {
        "input_tokens": u["input"],
        "input_tokens_details": {"cached_tokens": u["cached"]},
        "output_tokens": u["output"],
        "output_tokens_details": {"reasoning_tokens": u["reasoning"]},
        "total_tokens": u["input"] + u["output"],
    }


def _add_usage(run: _Run, usage: dict[str, Any]) -> None:
    run.usage["input"] += usage["prompt_tokens"]
    run.usage["cached"] += usage["prompt_tokens_details"]["cached_tokens"]
    run.usage["output"] += usage["completion_tokens"]
    run.usage["reasoning"] += usage["completion_tokens_details"]["reasoning_tokens"]


def _write_both(out: ResultWriter, good: list[Any], err: ResultWriter, bad: list[Any]) -> None:
    out.write(good)
    err.write(bad)


def _close_all(reader: InputReader, *writers: ResultWriter) -> None:
    reader.close()
    for writer in writers:
        writer.close()


def _link_or_copy(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
    """The batch keeps its own reference to the input, so deleting the file cannot hurt it."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
