"""Gemini Files API for the emulator: resumable uploads, metadata, listing and downloads.

A mixin of GeminiProvider (gemini_api.py), kept apart so each module stays readable. The real
service answers 403 PERMISSION_DENIED for a file that is missing, deleted or expired, and only
files it generated (batch results) can be downloaded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import secrets
from typing import Any

from aiohttp import web

from . import gemini_items as items
from . import gemini_proto as proto
from .core import ApiError, Context, external_base, json_response, read_json, rfc3339
from .store import EmulatorStore

FILE_KIND = "gemini_file"
UPLOAD_KIND = "gemini_upload"
METADATA_LIMIT = 1024 * 1024
FILE_LIMIT = 2_000_000_000  # "2 GB" per file, decimal (the stricter reading)
FILE_TTL_S = 48 * 3600
FILE_ID_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?")
# A MIME type the Files API takes: type/subtype (parameters allowed), or Google's own "jsonl"
# alias from its Batch API example. Anything else: 400 "Unsupported MIME type: ...".
MIME_RE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*(\s*;.*)?", re.I)
MIME_ALIASES = ("jsonl",)
# What a batch input file may be labelled: JSON Lines under one of its names, or plain text.
BATCH_INPUT_MIMES = frozenset(
    "jsonl application/jsonl application/x-jsonl application/jsonlines application/json-lines "
    "application/x-ndjson application/ndjson application/json text/jsonl text/plain".split()
)


class GeminiError(ApiError):
    """An error already in Google's terms: canonical status name, details, upload status."""

    def __init__(
        self,
        status: int,
        grpc_status: str,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        upload_status: str | None = None,
    ) -> None:
        super().__init__(status, grpc_status, message)
        self.details = details
        self.upload_status = upload_status


def invalid(message: str, **kw: Any) -> GeminiError:
    return GeminiError(400, "INVALID_ARGUMENT", message, **kw)


def no_file(file_id: str) -> GeminiError:
    # What the real Files API answers for a file that is missing, deleted or expired.
    return GeminiError(
        403,
        "PERMISSION_DENIED",
        f"You do not have permission to access the File {file_id} or it may not exist.",
    )


def check_upload_mime(mime: str) -> None:
    if mime.lower() not in MIME_ALIASES and not MIME_RE.fullmatch(mime.strip()):
        raise invalid(f"Unsupported MIME type: {mime}")


def check_batch_input_mime(file_name: str, mime: str) -> None:
    """A batch's input file must be JSON Lines (by its MIME type)."""
    if mime.split(";")[0].strip().lower() not in BATCH_INPUT_MIMES:
        raise invalid(
            f"* BatchGenerateContentRequest.batch.input_config.file_name: {file_name} has MIME "
            f"type {mime}; a batch input file must be JSON Lines (for example jsonl, "
            "application/jsonl or text/plain).\n"
        )


def encode_token(kind: str, obj_id: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{obj_id}".encode()).decode().rstrip("=")


def decode_token(kind: str, token: str) -> str:
    """The object id a page token carries; 400 for a token this list did not hand out."""
    try:
        padded = token + "=" * (-len(token) % 4)
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    prefix, _, obj_id = text.partition(":")
    if prefix != kind or not obj_id:
        raise invalid(f"Invalid page token: {token}.")
    return obj_id


def _sha256_b64(hex_digest: str) -> str:
    # Observed in real File objects: the base64 of the hex digest's text, not of its bytes.
    return base64.b64encode(hex_digest.encode()).decode()


class GeminiFiles:
    """Files routes and the request helpers the batch routes share."""

    ctx: Context

    @property
    def store(self) -> EmulatorStore:
        return self.ctx.store

    # -- helpers -------------------------------------------------------------------------------
    async def _read_body(self, request: web.Request, limit: int) -> Any:
        """The JSON body, with Google's answers for an oversized or unparsable one."""
        try:
            return await read_json(request, limit)
        except GeminiError:
            raise
        except ApiError as err:
            if err.status == 413:
                raise invalid(f"Request payload size exceeds the limit: {limit} bytes.") from None
            raise invalid("Invalid JSON payload received. Unexpected token.") from None

    @staticmethod
    def _parse(body: Any, message: str) -> dict[str, Any]:
        errors: list[proto.Violation] = []
        parsed = proto.parse_message({} if body is None else body, message, "", errors)
        if errors:
            raise invalid(
                proto.violations_message(errors), details=proto.bad_request_details(errors)
            )
        return parsed

    def _page(
        self, request: web.Request, kind: str, default: int, maximum: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of ``kind`` (newest first) and the token of the next, from the query."""
        raw = request.query.get("pageSize", "")
        try:
            size = int(raw) if raw else 0
        except ValueError:
            raise invalid(f"Invalid value at 'page_size' (TYPE_INT32), \"{raw}\"") from None
        if size < 0:
            raise invalid("page_size must not be negative.")
        size = default if size == 0 else min(size, maximum)
        token = request.query.get("pageToken")
        after = decode_token(kind, token) if token else None
        if after is not None and self.store.get(kind, after) is None:
            raise invalid(f"Invalid page token: {token}.")
        page, more = self.store.list(kind, newest_first=True, after=after, limit=size)
        return page, encode_token(kind, page[-1]["id"]) if more and page else None

    # -- files: resumable upload ------------------------------------------------------------------
    async def _upload_start(self, request: web.Request) -> web.Response:
        h = request.headers
        if h.get("X-Goog-Upload-Protocol", "").lower() != "resumable":
            raise invalid("Only the resumable upload protocol is supported by this endpoint.")
        if h.get("X-Goog-Upload-Command", "").strip().lower() != "start":
            raise invalid("The first request of a resumable upload must have command 'start'.")
        declared = self._declared_size(h.get("X-Goog-Upload-Header-Content-Length"))
        meta = self._parse(await self._read_body(request, METADATA_LIMIT), "CreateFileRequest")
        file_meta = meta.get("file", {})
        file_id = self._new_file_id(file_meta.get("name"))
        display = file_meta.get("displayName")
        if display is not None and len(display) > 512:
            raise invalid("* File.display_name: must be at most 512 characters.\n")
        mime = file_meta.get("mimeType") or h.get("X-Goog-Upload-Header-Content-Type")
        if mime:
            check_upload_mime(mime)
        upload_id = secrets.token_urlsafe(24)
        blob_id, path = self.store.new_blob()
        path.touch()
        self.store.put(
            UPLOAD_KIND,
            upload_id,
            {
                "id": upload_id,
                "file_id": file_id,
                "display_name": display,
                "mime_type": mime or "application/octet-stream",
                "declared": declared,
                "received": 0,
                "blob": blob_id,
            },
        )
        ver = request.match_info["ver"]
        url = f"{external_base(request)}/upload/{ver}/files?upload_id={upload_id}"
        response = web.Response(status=200)
        response.headers["X-Goog-Upload-URL"] = url + "&upload_protocol=resumable"
        response.headers["X-Goog-Upload-Status"] = "active"
        response.headers["X-Goog-Upload-Chunk-Granularity"] = "262144"
        return response

    @staticmethod
    def _declared_size(raw: str | None) -> int | None:
        if raw is None:
            return None
        if not raw.strip().isdigit():
            raise invalid(f"Invalid X-Goog-Upload-Header-Content-Length: {raw!r}.")
        size = int(raw)
        if size > FILE_LIMIT:
            raise invalid(f"File size {size} exceeds the maximum of {FILE_LIMIT} bytes.")
        return size

    def _new_file_id(self, name: str | None) -> str:
        if name is None:
            return self.ctx.new_id("", 12)
        file_id = name.removeprefix("files/")
        if not name.startswith("files/") or not FILE_ID_RE.fullmatch(file_id):
            raise invalid(
                f"* File.name: Invalid file name '{name}'. The ID must be at most 40 lowercase "
                "alphanumeric characters or dashes and cannot start or end with a dash.\n"
            )
        if self._live_file(self.store.get(FILE_KIND, file_id)):
            raise GeminiError(409, "ALREADY_EXISTS", f"File files/{file_id} already exists.")
        return file_id

    async def _upload_chunk(self, request: web.Request) -> web.Response:
        upload_id = request.query["upload_id"]
        session = self.store.get(UPLOAD_KIND, upload_id)
        if session is None:
            raise GeminiError(
                404, "NOT_FOUND", "The upload session was not found.", upload_status="final"
            )
        commands = {
            c.strip().lower() for c in request.headers.get("X-Goog-Upload-Command", "").split(",")
        }
        if "cancel" in commands:
            self._drop_session(session)
            return self._upload_reply("cancelled")
        if "query" in commands:
            return self._upload_reply("active", session)
        if not commands & {"upload", "finalize"}:
            raise invalid("Unknown X-Goog-Upload-Command.", upload_status="active")
        if "upload" in commands:
            await self._append_chunk(request, session)
        if "finalize" not in commands:
            self.store.put(UPLOAD_KIND, upload_id, session)
            return self._upload_reply("active", session)
        return await self._finalize(request, session)

    async def _append_chunk(self, request: web.Request, session: dict[str, Any]) -> None:
        """Stream one chunk onto the upload's blob after checking its offset."""
        offset = request.headers.get("X-Goog-Upload-Offset", "")
        if not offset.isdigit() or int(offset) != session["received"]:
            raise invalid(
                f"Invalid X-Goog-Upload-Offset {offset!r}: {session['received']} bytes have been "
                "received so far.",
                upload_status="active",
            )
        declared = session["declared"]
        received = session["received"]
        with self.store.blob_path(session["blob"]).open("ab") as fh:
            async for data in request.content.iter_chunked(1 << 20):
                received += len(data)
                if received > (declared if declared is not None else FILE_LIMIT):
                    self._drop_session(session)
                    raise invalid(
                        f"The upload exceeds the declared size of {declared} bytes.",
                        upload_status="final",
                    )
                fh.write(data)
        session["received"] = received

    async def _finalize(self, request: web.Request, session: dict[str, Any]) -> web.Response:
        declared, received = session["declared"], session["received"]
        if declared is not None and received != declared:
            self._drop_session(session)
            raise invalid(
                f"Failed to finalize the upload: received {received} bytes but "
                f"X-Goog-Upload-Header-Content-Length declared {declared}.",
                upload_status="final",
            )
        path = self.store.blob_path(session["blob"])
        size, hex_digest = await asyncio.to_thread(items.file_digest, path)
        record = self._file_record(
            session["file_id"], session["blob"], size, hex_digest, session["mime_type"]
        )
        if session["display_name"] is not None:
            record["display_name"] = session["display_name"]
        self.store.put(FILE_KIND, record["id"], record)
        self.store.delete(UPLOAD_KIND, session["id"])
        response = json_response({"file": self._file_json(record, request)})
        response.headers["X-Goog-Upload-Status"] = "final"
        return response

    def _file_record(
        self, file_id: str, blob: str, size: int, hex_digest: str, mime: str, **extra: Any
    ) -> dict[str, Any]:
        now = self.ctx.now()
        return {
            "id": file_id,
            "blob": blob,
            "size": size,
            "sha256": _sha256_b64(hex_digest),
            "mime_type": mime,
            "created": now,
            "expires": now + FILE_TTL_S,
            "source": "UPLOADED",
            **extra,
        }

    def _drop_session(self, session: dict[str, Any]) -> None:
        self.store.delete(UPLOAD_KIND, session["id"])
        self.store.delete_blob(session["blob"])

    @staticmethod
    def _upload_reply(status: str, session: dict[str, Any] | None = None) -> web.Response:
        response = web.Response(status=200)
        response.headers["X-Goog-Upload-Status"] = status
        if session is not None:
            response.headers["X-Goog-Upload-Size-Received"] = str(session["received"])
        return response

    # -- files: metadata and content ---------------------------------------------------------------
    def _file_json(self, f: dict[str, Any], request: web.Request) -> dict[str, Any]:
        base, ver = external_base(request), request.match_info.get("ver", "v1beta")
        out: dict[str, Any] = {"name": f"files/{f['id']}"}
        if f.get("display_name") is not None:
            out["displayName"] = f["display_name"]
        out.update(
            {
                "mimeType": f["mime_type"],
                "sizeBytes": str(f["size"]),
                "createTime": rfc3339(f["created"]),
                "updateTime": rfc3339(f["created"]),
                "expirationTime": rfc3339(f["expires"]),
                "sha256Hash": f["sha256"],
                "uri": f"{base}/{ver}/files/{f['id']}",
                "state": "ACTIVE",
                "source": f["source"],
            }
        )
        if f["source"] == "GENERATED":
            out["downloadUri"] = f"{base}/download/{ver}/files/{f['id']}:download?alt=media"
        return out

    def _live_file(self, f: dict[str, Any] | None) -> bool:
        return f is not None and not f.get("deleted") and self.ctx.now() < f["expires"]

    def _load_file(self, file_id: str) -> dict[str, Any]:
        f = self.store.get(FILE_KIND, file_id)
        if f is None or not self._live_file(f):
            if f is not None and not f.get("deleted"):
                # Expired: its content goes; the record stays as a pagination anchor.
                self.store.delete_blob(f["blob"])
                self.store.put(FILE_KIND, file_id, {**f, "deleted": True})
            raise no_file(file_id)
        return f

    async def _file_get(self, request: web.Request) -> web.Response:
        f = self._load_file(request.match_info["file_id"])
        return json_response(self._file_json(f, request))

    async def _file_list(self, request: web.Request) -> web.Response:
        page, next_token = self._page(request, FILE_KIND, default=10, maximum=100)
        body: dict[str, Any] = {
            "files": [self._file_json(f, request) for f in page if self._live_file(f)]
        }
        if next_token:
            body["nextPageToken"] = next_token
        if not body["files"]:
            del body["files"]  # proto3 JSON leaves an empty list out
        return json_response(body)

    async def _file_delete(self, request: web.Request) -> web.Response:
        f = self._load_file(request.match_info["file_id"])
        self.store.delete_blob(f["blob"])
        self.store.put(FILE_KIND, f["id"], {**f, "deleted": True})
        return json_response({})

    async def _file_download(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["file_id"]
        if request.query.get("alt") != "media":
            raise invalid("Downloading a file's content requires the query parameter alt=media.")
        f = self._load_file(file_id)
        if f["source"] != "GENERATED":
            raise invalid(
                f"Only generated files can be downloaded; files/{file_id} was uploaded "
                "(source UPLOADED)."
            )
        return web.FileResponse(
            self.store.blob_path(f["blob"]), headers={"Content-Type": f["mime_type"]}
        )
