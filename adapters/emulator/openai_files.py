"""OpenAI Files API for the emulator: uploads, metadata, listing, deletion and content.

Uploads are multipart and streamed to a blob (never held in memory). Batch result files are
stored here too (purpose ``batch_output``), by :meth:`OpenAIFiles.put_file`. The routes are
registered by openai_api.OpenAIProvider, which owns the error envelope.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import BodyPartReader, web

from .core import ApiError, Context, json_response
from .openai_params import DAY, OpenAIError, bad_value, check_upload, int_query
from .store import EmulatorStore

FILE = "openai.file"
MAX_UPLOAD_BYTES = 512_000_000  # "512 MB", decimal (the stricter reading)
FILE_TTL = 30 * DAY  # batch input and output files expire after 30 days by default


class OpenAIFiles:
    """The Files routes, and the file records the batch routes share."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def create_file(self, request: web.Request) -> web.Response:
        fields, upload = await self._read_upload(request)
        try:
            purpose, expires_after = check_upload(fields, upload)
        except ApiError:
            if upload is not None:
                self.ctx.store.delete_blob(upload[0])
            raise
        assert upload is not None  # check_upload refuses an upload without a file
        blob_id, filename, size = upload
        now = int(self.ctx.now())
        if expires_after is None and purpose == "batch":
            expires_after = FILE_TTL
        stored = self.put_file(blob_id, filename, size, purpose, now, expires_after)
        return json_response(public(stored))

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

    def put_file(
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

    def file_or_404(self, file_id: str) -> dict[str, Any]:
        stored = self.ctx.store.get(FILE, file_id)
        if stored is None:
            raise OpenAIError(404, f"No such File object: {file_id}", param="id")
        return stored

    async def get_file(self, request: web.Request) -> web.Response:
        return json_response(public(self.file_or_404(request.match_info["file_id"])))

    async def list_files(self, request: web.Request) -> web.Response:
        query = request.query
        limit = int_query(query, "limit", 10_000, 1, 10_000)
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise OpenAIError(*bad_value("order", order, ("asc", "desc")))
        purpose = query.get("purpose")
        items, more = page(
            self.ctx.store,
            FILE,
            after=query.get("after"),
            limit=limit,
            newest_first=order == "desc",
            keep=None if purpose is None else lambda f: f["purpose"] == purpose,
        )
        return json_response(list_body([public(f) for f in items], more))

    async def delete_file(self, request: web.Request) -> web.Response:
        stored = self.file_or_404(request.match_info["file_id"])
        self.ctx.store.delete(FILE, stored["id"])
        self.ctx.store.delete_blob(stored["_blob"])
        return json_response({"id": stored["id"], "object": "file", "deleted": True})

    async def file_content(self, request: web.Request) -> web.StreamResponse:
        stored = self.file_or_404(request.match_info["file_id"])
        path = self.ctx.store.blob_path(stored["_blob"])
        if not path.exists():
            raise OpenAIError(404, f"No such File object: {stored['id']}", param="id")
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


def page(
    store: EmulatorStore,
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
        rows, more = store.list(
            kind, newest_first=newest_first, after=cursor, limit=max(limit, 100)
        )
        found.extend(r for r in rows if keep is None or keep(r))
        if not more or not rows:
            break
        cursor = rows[-1]["id"]
    return found[:limit], len(found) > limit


def public(stored: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stored.items() if not k.startswith("_")}


def list_body(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }

