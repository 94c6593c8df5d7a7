"""OpenAI wire protocol for the emulator: the Files and Batches APIs under ``/v1``.

The official ``openai`` SDK is pointed at ``<emulator>/v1``. Gemini's SDK uses the same paths
(``/v1/batches/…``, ``/v1/files/…``), so the OpenAI routes only claim requests that do not carry
another provider's credentials (see :func:`is_openai_request`); the others fall through to the
routes registered after these.

A batch's input is validated when it is created (streaming, in a worker thread), so the batch
can fail the way the real service fails it (status ``failed`` with ``errors``) and so accepted
items reach the journal at once. Its items run once, when the batch is first seen ended: the
input is read in chunks in a worker thread, faults and prompt-cache hits are decided in the
event loop, and result lines are streamed to blobs.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from .core import ApiError, Context, Handler, json_response
from .journal import FAILED, RETRYABLE, SUCCEEDED
from .openai_items import (
    InputReader,
    Planned,
    ResultWriter,
    batch_error,
    cached_tokens,
    error_line,
    injected_error,
    scan_input,
    success_line,
    unrun_line,
)
from .openai_params import (
    DAY,
    OpenAIError,
    bad_value,
    check_create,
    check_upload,
    int_query,
    json_object,
    translate,
)

FILE, BATCH, PREFIX = "openai.file", "openai.batch", "openai.prefix"
MAX_UPLOAD_BYTES = 512 * 1024**2
FILE_TTL = 30 * DAY  # batch input and output files expire after 30 days by default
EMULATED_ENDPOINTS = ("/v1/chat/completions",)
TERMINAL = ("completed", "failed", "expired", "cancelled")
CHUNK = 500  # items per worker-thread step while a batch runs
FOREIGN_HEADERS = ("x-goog-api-key", "anthropic-version", "x-api-key", "x-goog-upload-command")


def is_openai_request(request: web.Request) -> bool:
    """Whether a request on a path OpenAI shares with another provider is OpenAI's."""
    if "key" in request.query:
        return False
    return not any(h in request.headers for h in FOREIGN_HEADERS)


class _Plain(web.PlainResource):
    async def resolve(self, request: web.Request) -> Any:
        if not is_openai_request(request):
            return None, set()
        return await super().resolve(request)


class _Dynamic(web.DynamicResource):
    async def resolve(self, request: web.Request) -> Any:
        if not is_openai_request(request):
            return None, set()
        return await super().resolve(request)


@dataclass
class _Run:
    """Totals of one batch run."""

    completed: int = 0
    failed: int = 0
    usage: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("input", "cached", "output", "reasoning"), 0)
    )


class OpenAIProvider:
    name = "openai"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._resources: dict[str, web.Resource] = {}

    # -- provider contract -----------------------------------------------------------------
    def register(self, app: web.Application) -> None:
        route = self.ctx.route
        self._add(app, "POST", "/v1/files", route(self, "files.create", self.create_file))
        self._add(app, "GET", "/v1/files", route(self, "files.list", self.list_files))
        self._add(app, "GET", "/v1/files/{file_id}", route(self, "files.get", self.get_file))
        self._add(
            app, "DELETE", "/v1/files/{file_id}", route(self, "files.delete", self.delete_file)
        )
        self._add(app, "GET", "/v1/files/{file_id}/content", self._content_route())
        self._add(app, "POST", "/v1/batches", route(self, "batches.create", self.create_batch))
        self._add(app, "GET", "/v1/batches", route(self, "batches.list", self.list_batches))
        self._add(app, "GET", "/v1/batches/{batch_id}", route(self, "batches.get", self.get_batch))
        self._add(
            app,
            "POST",
            "/v1/batches/{batch_id}/cancel",
            route(self, "batches.cancel", self.cancel_batch),
        )
        self._add(app, "*", "/v1/{tail:.*}", route(self, "unknown", self.invalid_url, auth=False))

    def error_response(self, err: ApiError, request_id: str) -> web.Response:
        if isinstance(err, OpenAIError):
            kind, code, message = err.type, err.openai_code, err.message
        else:
            kind, code, message = translate(err)
        body = {"error": {"message": message, "type": kind, "param": err.param, "code": code}}
        return json_response(body, err.status)

    def api_key(self, request: web.Request) -> str | None:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        return key.strip() or None if scheme.lower() == "bearer" else None

    def request_id_header(self) -> str:
        return "x-request-id"

    def _add(self, app: web.Application, method: str, path: str, handler: Handler) -> None:
        resource = self._resources.get(path)
        if resource is None:
            resource = _Dynamic(path) if "{" in path else _Plain(path)
            app.router.register_resource(resource)
            self._resources[path] = resource
        resource.add_route(method, handler)

    def _content_route(self) -> Handler:
        """Downloads of batch results are route class ``batches.results``; others files.content."""
        as_results = self.ctx.route(self, "batches.results", self.file_content)
        as_file = self.ctx.route(self, "files.content", self.file_content)

        async def content(request: web.Request) -> web.StreamResponse:
            stored = self.ctx.store.get(FILE, request.match_info["file_id"])
            is_result = stored is not None and stored["purpose"] == "batch_output"
            return await (as_results if is_result else as_file)(request)

        return content

    async def invalid_url(self, request: web.Request) -> web.Response:
        raise OpenAIError(404, f"Invalid URL ({request.method} {request.path})")

    # -- files -----------------------------------------------------------------------------
    async def create_file(self, request: web.Request) -> web.Response:
        fields, upload = await self._read_upload(request)
        try:
            purpose, expires_after = check_upload(fields, upload)
        except ApiError:
            if upload is not None:
                self.ctx.store.delete_blob(upload[0])
            raise
        blob_id, filename, size = upload
        now = int(self.ctx.now())
        if expires_after is None and purpose == "batch":
            expires_after = FILE_TTL
        stored = self._put_file(blob_id, filename, size, purpose, now, expires_after)
        return json_response(_public(stored))

    async def _read_upload(
        self, request: web.Request
    ) -> tuple[dict[str, str], tuple[str, str, int] | None]:
        """The form fields and the streamed file part (blob id, filename, size)."""
        if not request.content_type.startswith("multipart/form-data"):
            raise OpenAIError(
                400,
                f"Invalid Content-Type header ({request.content_type}), expected "
                "multipart/form-data.",
            )
        fields: dict[str, str] = {}
        upload = None
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            if part.name == "file" and upload is None:
                upload = await self._stream_part(part)
            else:
                fields[part.name] = (await part.read(decode=True))[:4096].decode("utf-8", "replace")
        return fields, upload

    async def _stream_part(self, part: BodyPartReader) -> tuple[str, str, int]:
        blob_id, path = self.ctx.store.new_blob()
        size = 0
        with open(path, "wb") as fh:
            while chunk := await part.read_chunk(1 << 20):
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    fh.close()
                    self.ctx.store.delete_blob(blob_id)
                    raise OpenAIError(
                        400, "File is too large. The maximum file size is 512 MB.", param="file"
                    )
                fh.write(chunk)
        return blob_id, part.filename or "upload", size

    def _put_file(
        self,
        blob_id: str,
        filename: str,
        size: int,
        purpose: str,
        created: int,
        ttl: int | None,
    ) -> dict[str, Any]:
        file_id = self.ctx.new_id("file-", 22)
        stored = {
            "id": file_id,
            "object": "file",
            "bytes": size,
            "created_at": created,
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "expires_at": None if ttl is None else created + ttl,
            "status_details": None,
            "_blob": blob_id,
        }
        self.ctx.store.put(FILE, file_id, stored)
        return stored

    def _file_or_404(self, file_id: str) -> dict[str, Any]:
        stored = self.ctx.store.get(FILE, file_id)
        if stored is None:
            raise OpenAIError(404, f"No such File object: {file_id}", param="id")
        return stored

    async def get_file(self, request: web.Request) -> web.Response:
        return json_response(_public(self._file_or_404(request.match_info["file_id"])))

    async def list_files(self, request: web.Request) -> web.Response:
        query = request.query
        limit = int_query(query, "limit", 10_000, 1, 10_000)
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise OpenAIError(*bad_value("order", order, ("asc", "desc")))
        purpose = query.get("purpose")
        items, more = self._page(
            FILE,
            after=query.get("after"),
            limit=limit,
            newest_first=order == "desc",
            keep=None if purpose is None else lambda f: f["purpose"] == purpose,
        )
        return json_response(_list_body([_public(f) for f in items], more))

    async def delete_file(self, request: web.Request) -> web.Response:
        stored = self._file_or_404(request.match_info["file_id"])
        self.ctx.store.delete(FILE, stored["id"])
        self.ctx.store.delete_blob(stored["_blob"])
        return json_response({"id": stored["id"], "object": "file", "deleted": True})

    async def file_content(self, request: web.Request) -> web.StreamResponse:
        stored = self._file_or_404(request.match_info["file_id"])
        path = self.ctx.store.blob_path(stored["_blob"])
        if not path.exists():
            raise OpenAIError(404, f"No such File object: {stored['id']}", param="id")
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

    def _page(
        self,
        kind: str,
        *,
        after: str | None,
        limit: int,
        newest_first: bool,
        keep: Callable[[dict[str, Any]], bool] | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """A cursor page of stored objects, optionally filtered, and whether more follow."""
        found: list[dict[str, Any]] = []
        cursor = after
        while len(found) <= limit:
            rows, more = self.ctx.store.list(
                kind, newest_first=newest_first, after=cursor, limit=max(limit, 100)
            )
            found.extend(r for r in rows if keep is None or keep(r))
            if not more or not rows:
                break
            cursor = rows[-1]["id"]
        return found[:limit], len(found) > limit

    # -- batches: create, read, list, cancel ------------------------------------------------
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
        scan = await asyncio.to_thread(scan_input, str(path), source["bytes"], params["endpoint"])
        fate: dict[str, Any] = {}
        if not scan.errors:
            fate = self.ctx.faults.arm_batch(self.name, scan.model or "")
            self.ctx.journal.receive_items(self.name, scan.digests)
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
            "_fate": fate,
            "_input_blob": blob_id,
            "_output_ttl": params.get("output_ttl") or FILE_TTL,
        }
        self.ctx.store.put(BATCH, batch_id, batch)
        return batch

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
        items, more = self._page(
            BATCH, after=request.query.get("after"), limit=limit, newest_first=True
        )
        views = [self._view(await self._refresh(b)) for b in items]
        return json_response(_list_body(views, more))

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
        view = _public(batch)
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
            limit_error = batch_error(
                "token_limit_exceeded",
                f"Enqueued token limit reached for {batch['model']} in organization "
                "org-emulator. Limit: 90,000 enqueued tokens. Please try again once some "
                "in_progress batches have been completed.",
            )
            self._fail(batch, [limit_error], start)
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
        self.ctx.journal.settle_items(self.name, [(d, RETRYABLE) for d in scan.digests])

    # -- batches: running the items --------------------------------------------------------
    async def _run(self, batch: dict[str, Any], run_count: int, unrun_code: str) -> None:
        """Run the first ``run_count`` items, answer the rest with ``unrun_code`` lines."""
        store = self.ctx.store
        out_blob, out_path = store.new_blob()
        err_blob, err_path = store.new_blob()
        reader = await asyncio.to_thread(InputReader, str(store.blob_path(batch["_input_blob"])))
        out = await asyncio.to_thread(ResultWriter, str(out_path))
        err = await asyncio.to_thread(ResultWriter, str(err_path))
        totals = _Run()
        try:
            while items := await asyncio.to_thread(reader.next_chunk, CHUNK, run_count):
                good, bad, outcomes = self._decide(items, run_count, unrun_code, totals)
                await asyncio.to_thread(_write_both, out, good, err, bad)
                self.ctx.journal.settle_items(self.name, outcomes)
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
                kind = self.ctx.faults.item_error(self.name, item.model, item.body_text)
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
        return self._put_file(blob_id, name, size, "batch_output", now, batch["_output_ttl"])["id"]


# -- module helpers ---------------------------------------------------------------------------


def _public(stored: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stored.items() if not k.startswith("_")}


def _list_body(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }


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
