"""Gemini Developer API wire protocol for the emulator: wiring, errors and Batch Mode.

Served under both ``/v1/`` and ``/v1beta/`` because google-genai 3.x defaults to ``v1`` while
Google's docs and older SDKs use ``v1beta``. Batches are long-running operations whose state is
computed lazily from their creation time (Context.phase); items run once, in a worker thread,
when a batch is first seen ended. Item parsing, rules and answers live in gemini_items.py, the
Files API (resumable upload) in gemini_files.py.
Behaviours the sources leave open, and what was chosen, are listed in docs/emulator-gemini.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

from aiohttp import web

from . import gemini_items as items
from . import models
from .core import ApiError, Context, json_response, rfc3339
from .gemini_files import (
    FILE_KIND,
    GeminiError,
    GeminiFiles,
    check_batch_input_mime,
    invalid,
)
from .gemini_quota import check_quota
from .journal import RETRYABLE, item_digest

BATCH_KIND = "gemini_batch"
VER = "{ver:v1|v1beta}"
# The whole batchGenerateContent request as received (bytes on the wire: the SDK escapes every
# non-ASCII character, so CJK text takes 6 bytes a character and emoji 12). "20 MB", decimal.
INLINE_LIMIT = 20_000_000
META_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"
PENDING, RUNNING = "BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"
SUCCEEDED, FAILED = "BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED"
CANCELLED, EXPIRED = "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"
TERMINAL = {SUCCEEDED, FAILED, CANCELLED, EXPIRED}
GRPC_INTERNAL = 13

HTTP_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
GENERIC_MESSAGES = {
    429: "Resource has been exhausted (e.g. check quota).",
    500: items.ITEM_FAULTS["server"][2],
    503: "The service is currently unavailable.",
    504: "Deadline expired before operation could complete.",
}
NO_KEY_MESSAGE = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
BAD_KEY_MESSAGE = "API key not valid. Please pass a valid API key."


def _link_or_copy(src: Path, dst: Path) -> None:
    """Give a batch its own reference to an input blob (the input file may be deleted)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write_inline(
    path: Path, requests: list[dict[str, Any]], model: str
) -> tuple[list[str], int]:
    """Store inline requests as JSONL (the same streaming path as file input); their journal
    digests and estimated prompt tokens."""
    digests = []
    tokens = 0
    with path.open("w", encoding="utf-8") as fh:
        for req in requests:
            fh.write(json.dumps(req, separators=(",", ":")) + "\n")
            digests.append(item_digest(model, req.get("request")))
            tokens += items.request_tokens(req.get("request") or {})
    return digests, tokens


class GeminiProvider(GeminiFiles):
    name = "gemini"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.cache = items.PrefixCache()

    # -- wiring ------------------------------------------------------------------------------
    def register(self, app: web.Application) -> None:
        r = app.router

        def route(cls: str, handler: Any, auth: bool = True) -> Any:
            return self.ctx.route(self, cls, handler, auth=auth)

        start = route("files.create", self._upload_start)
        chunk = route("upload", self._upload_chunk, auth=False)

        async def upload(request: web.Request) -> web.StreamResponse:
            return await (chunk if "upload_id" in request.query else start)(request)

        file_path = f"/{VER}/files/{{file_id:[^/:]+}}"
        batch_path = f"/{VER}/batches/{{batch_id:[^/:]+}}"
        download = route("files.content", self._file_download)
        delete_batch = route("batches.delete", self._batch_delete)
        r.add_post(f"/upload/{VER}/files", upload)
        r.add_get(f"/{VER}/files", route("files.list", self._file_list))
        r.add_get(file_path, route("files.get", self._file_get))
        r.add_delete(file_path, route("files.delete", self._file_delete))
        r.add_get(file_path + ":download", download)
        r.add_get(f"/download{file_path}:download", download)
        r.add_post(
            f"/{VER}/models/{{model:[^/:]+}}:batchGenerateContent",
            route("batches.create", self._batch_create),
        )
        r.add_get(f"/{VER}/batches", route("batches.list", self._batch_list))
        r.add_get(batch_path, route("batches.get", self._batch_get))
        r.add_post(batch_path + ":cancel", route("batches.cancel", self._batch_cancel))
        r.add_delete(batch_path, delete_batch)
        r.add_delete(batch_path + ":delete", delete_batch)
        r.add_post(batch_path + ":delete", delete_batch)

    def error_response(self, err: ApiError, request_id: str) -> web.Response:
        status_name = err.code if isinstance(err, GeminiError) else None
        message = err.message
        details = getattr(err, "details", None)
        if status_name is None:
            status_name = HTTP_STATUS_NAMES.get(err.status, "UNKNOWN")
            message = GENERIC_MESSAGES.get(err.status, message)
            if err.code == "authentication_error":
                status_name = "UNAUTHENTICATED"
                message = NO_KEY_MESSAGE if "No API key" in err.message else BAD_KEY_MESSAGE
                details = [_error_info("API_KEY_INVALID")]
            elif err.status == 529:
                status_name, message = "UNAVAILABLE", items.ITEM_FAULTS["overloaded"][2]
        body: dict[str, Any] = {"code": err.status, "message": message, "status": status_name}
        if err.retry_after is not None:
            delay = {"@type": "type.googleapis.com/google.rpc.RetryInfo"}
            details = [*(details or []), {**delay, "retryDelay": f"{err.retry_after:g}s"}]
        if details:
            body["details"] = details
        response = json_response({"error": body}, err.status)
        upload_status = getattr(err, "upload_status", None)
        if upload_status:
            response.headers["X-Goog-Upload-Status"] = upload_status
        return response

    def api_key(self, request: web.Request) -> str | None:
        return request.headers.get("x-goog-api-key") or request.query.get("key")

    def request_id_header(self) -> str:
        return "x-request-id"

    # -- batches: create -------------------------------------------------------------------------
    async def _batch_create(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        body = self._parse(
            await self._read_body(request, INLINE_LIMIT), "BatchGenerateContentRequest"
        )
        if models.gemini_model(model) is None:
            ver = request.match_info["ver"]
            raise GeminiError(
                404,
                "NOT_FOUND",
                f"models/{model} is not found for API version {ver}, or is not supported for "
                "batchGenerateContent. Call ListModels to see the list of available models and "
                "their supported methods.",
            )
        batch = body.get("batch")
        if batch is None:
            raise invalid("* BatchGenerateContentRequest.batch: batch is required.\n")
        config = batch.get("inputConfig", {})
        if ("fileName" in config) == ("requests" in config):
            raise invalid(
                "* BatchGenerateContentRequest.batch.input_config: exactly one of file_name "
                "and requests must be set.\n"
            )
        batch_id = self.ctx.new_id("", 24)
        blob_id, path = self.store.new_blob()
        if "fileName" in config:
            digests, tokens = await self._stage_file_input(config["fileName"], path, model)
            input_config: dict[str, Any] | None = {"fileName": config["fileName"]}
        else:
            requests = config["requests"].get("requests", [])
            if not requests:
                raise invalid(
                    "* BatchGenerateContentRequest.batch.input_config.requests.requests: "
                    "requests must not be empty.\n"
                )
            digests, tokens = await asyncio.to_thread(_write_inline, path, requests, model)
            input_config = None  # not echoed: it would repeat up to 20 MB on every poll
        try:
            check_quota(self.ctx, self.store.all(BATCH_KIND), model, tokens)
        except GeminiError:
            self.store.delete_blob(blob_id)
            raise
        record = {
            "id": batch_id,
            "model": model,
            "display_name": batch.get("displayName"),
            "input_config": input_config,
            "inline": input_config is None,
            "input_blob": blob_id,
            "n": len(digests),
            "tokens": tokens,
            "created": self.ctx.now(),
            "fate": self.ctx.faults.arm_batch(self.name, model),
            "state": None,
        }
        self.store.put(BATCH_KIND, batch_id, record)
        self.ctx.journal.receive_items(self.name, digests)
        return json_response(await self._operation(record, polled=False))

    async def _stage_file_input(
        self, file_name: str, path: Path, model: str
    ) -> tuple[list[str], int]:
        """Take a reference to the input file's content; its items' digests and tokens."""
        if not file_name.startswith("files/"):
            raise invalid(f"* batch.input_config.file_name: invalid file name '{file_name}'.\n")
        f = self._load_file(file_name.removeprefix("files/"))
        check_batch_input_mime(file_name, f["mime_type"])
        await asyncio.to_thread(_link_or_copy, self.store.blob_path(f["blob"]), path)
        quotas = bool(self.ctx.faults.settings.enqueued_token_limits)
        digests, tokens = await asyncio.to_thread(
            items.scan_input_tokens, path, model, False, quotas
        )
        if not digests:
            path.unlink(missing_ok=True)
            raise invalid(f"The input file {file_name} contains no requests.")
        return digests, tokens

    # -- batches: state ----------------------------------------------------------------------------
    def _load_batch(self, batch_id: str) -> dict[str, Any]:
        batch = self.store.get(BATCH_KIND, batch_id)
        if batch is None:
            raise GeminiError(404, "NOT_FOUND", "Requested entity was not found.")
        return batch

    async def _refresh(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch as it stands now, running its items if it has just ended."""
        if batch["state"] in TERMINAL or self.ctx.phase(batch["created"], batch["n"]) != "ended":
            return batch
        return await self._finish(batch["id"], run_limit=None) or batch

    async def _finish(self, batch_id: str, run_limit: int | None) -> dict[str, Any] | None:
        """End a batch once (under its lock): run its items or apply its armed fate."""
        async with self.ctx.lock(batch_id):
            batch = self.store.get(BATCH_KIND, batch_id)
            if batch is None or batch["state"] in TERMINAL:
                return batch
            fate = batch["fate"]
            if run_limit is None and ("batch_fail" in fate or "expire" in fate):
                await self._end_without_results(batch, FAILED if "batch_fail" in fate else EXPIRED)
            else:
                await self._run(batch, run_limit)
            batch["end_time"] = batch["update_time"] = self.ctx.now()
            self.store.put(BATCH_KIND, batch_id, batch)
            return batch

    def _item_job(self, batch: dict[str, Any], output: Path | None, limit: int | None) -> Any:
        model = batch["model"]
        return items.ItemJob(
            input_path=self.store.blob_path(batch["input_blob"]),
            output_path=output,
            model=model,
            batch_id=batch["id"],
            inline=batch["inline"],
            cache=self.cache,
            item_error=lambda text: self.ctx.faults.item_error(self.name, model, text),
            run_limit=limit,
        )

    async def _end_without_results(self, batch: dict[str, Any], state: str) -> None:
        """batch_fail / expire: nothing is returned and every item may be sent again."""
        path = self.store.blob_path(batch["input_blob"])
        digests = await asyncio.to_thread(items.scan_input, path, batch["model"], batch["inline"])
        self.ctx.journal.settle_items(self.name, [(d, RETRYABLE) for d in digests])
        batch["state"] = state
        if state == FAILED:
            batch["error"] = {
                "code": GRPC_INTERNAL,
                "message": "The batch failed because of an internal error (injected by the "
                "emulator).",
            }

    async def _run(self, batch: dict[str, Any], limit: int | None) -> None:
        out_id, out_path = self.store.new_blob()
        summary = await asyncio.to_thread(items.run_items, self._item_job(batch, out_path, limit))
        self.ctx.journal.settle_items(self.name, summary.outcomes)
        batch["state"] = SUCCEEDED if limit is None else CANCELLED
        batch["stats"] = {"successful": summary.succeeded, "failed": summary.failed}
        ran = summary.succeeded + summary.failed
        if ran == 0 or "results_gone" in batch["fate"]:
            self.store.delete_blob(out_id)
            if ran and not batch["inline"]:
                batch["output_file"] = f"batch-{batch['id']}"  # named, but not there
            return
        if batch["inline"]:
            batch["output_blob"] = out_id
            return
        size, hex_digest = await asyncio.to_thread(items.file_digest, out_path)
        file_id = f"batch-{batch['id']}"
        record = self._file_record(
            file_id, out_id, size, hex_digest, "application/jsonl", source="GENERATED"
        )
        self.store.put(FILE_KIND, file_id, record)
        batch["output_file"] = file_id

    # -- batches: rendering ----------------------------------------------------------------------
    def _state(self, batch: dict[str, Any], polled: bool) -> tuple[str, float]:
        """Wire state and update time of a batch that has not ended."""
        phase = self.ctx.phase(batch["created"], batch["n"], polled=polled)
        if phase == "validating" or (phase == "ended" and not polled):
            return PENDING, batch["created"]
        started = batch["created"] + self.ctx.timing.validating_s * self.ctx.time_scale
        return RUNNING, started

    async def _output(self, batch: dict[str, Any]) -> dict[str, Any] | None:
        if batch.get("output_file"):
            return {"responsesFile": f"files/{batch['output_file']}"}
        if batch.get("output_blob"):
            path = self.store.blob_path(batch["output_blob"])
            lines = await asyncio.to_thread(items.read_lines, path)
            return {"inlinedResponses": {"inlinedResponses": lines}}
        return None

    def _stats(self, batch: dict[str, Any]) -> dict[str, str]:
        counts = {"requestCount": batch["n"]}
        if batch["state"] not in TERMINAL:
            counts["pendingRequestCount"] = batch["n"]
        else:
            stats = batch.get("stats", {})
            counts["successfulRequestCount"] = stats.get("successful", 0)
            counts["failedRequestCount"] = stats.get("failed", 0)
        return {k: str(v) for k, v in counts.items() if v}  # proto3 JSON drops zero counts

    async def _operation(self, batch: dict[str, Any], polled: bool = True) -> dict[str, Any]:
        """The batch as Google shows it: a long-running Operation around GenerateContentBatch."""
        name = f"batches/{batch['id']}"
        done = batch["state"] in TERMINAL
        state, updated = (
            (batch["state"], batch["update_time"]) if done else self._state(batch, polled)
        )
        meta: dict[str, Any] = {"@type": META_TYPE, "model": f"models/{batch['model']}"}
        if batch.get("display_name") is not None:
            meta["displayName"] = batch["display_name"]
        if batch.get("input_config"):
            meta["inputConfig"] = batch["input_config"]
        meta.update(
            createTime=rfc3339(batch["created"]),
            updateTime=rfc3339(updated),
            batchStats=self._stats(batch),
            state=state,
            name=name,
        )
        op: dict[str, Any] = {"name": name, "metadata": meta}
        if not done:
            return op  # proto3 JSON leaves out "done": false
        meta["endTime"] = rfc3339(batch["end_time"])
        op["done"] = True
        output = await self._output(batch)
        if output is not None:
            meta["output"] = output
            op["response"] = {"@type": OUTPUT_TYPE, **output}
        if batch.get("error"):
            op["error"] = batch["error"]
        return op

    # -- batches: routes ---------------------------------------------------------------------
    async def _batch_get(self, request: web.Request) -> web.Response:
        batch = await self._refresh(self._load_batch(request.match_info["batch_id"]))
        return json_response(await self._operation(batch))

    async def _batch_list(self, request: web.Request) -> web.Response:
        page, next_token = self._page(request, BATCH_KIND, default=50, maximum=1000)
        ops = [await self._operation(await self._refresh(b)) for b in page]
        body: dict[str, Any] = {"operations": ops} if ops else {}
        if next_token:
            body["nextPageToken"] = next_token
        return json_response(body)

    async def _batch_cancel(self, request: web.Request) -> web.Response:
        batch = self._load_batch(request.match_info["batch_id"])
        phase = self.ctx.phase(batch["created"], batch["n"], polled=False)
        if batch["state"] not in TERMINAL and phase == "ended":
            batch = await self._refresh(batch)
        if batch["state"] in TERMINAL:
            raise GeminiError(
                400,
                "FAILED_PRECONDITION",
                f"Batch batches/{batch['id']} is already in terminal state {batch['state']} "
                "and cannot be cancelled.",
            )
        ran = 0
        if self.ctx.time_scale > 0 and phase != "validating":
            ran = int(self.ctx.progress(batch["created"], batch["n"]) * batch["n"])
        await self._finish(batch["id"], run_limit=ran)
        return json_response({})

    async def _batch_delete(self, request: web.Request) -> web.Response:
        batch = self._load_batch(request.match_info["batch_id"])
        async with self.ctx.lock(batch["id"]):
            self.store.delete(BATCH_KIND, batch["id"])
            self.store.delete_blob(batch["input_blob"])
            self.store.delete_blob(batch.get("output_blob"))
        return json_response({})


def _error_info(reason: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }
