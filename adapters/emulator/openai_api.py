"""OpenAI wire protocol for the emulator: routing, authentication and the error envelope.

The official ``openai`` SDK is pointed at ``<emulator>/v1``. Gemini's SDK uses the same paths
(``/v1/batches/…``, ``/v1/files/…``), so the OpenAI routes only claim requests that do not carry
another provider's credentials (see :func:`is_openai_request`); the others fall through to the
routes registered after these. The Files API is in openai_files, the Batches API and the batch
lifecycle in openai_batches.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .core import ApiError, Context, Handler, json_response
from .openai_batches import OpenAIBatches
from .openai_files import FILE, OpenAIFiles
from .openai_params import OpenAIError, translate

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


class OpenAIProvider:
    name = "openai"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.files = OpenAIFiles(ctx)
        self.batches = OpenAIBatches(ctx, self.files)
        self._resources: dict[str, web.Resource] = {}

    # -- provider contract -----------------------------------------------------------------
    def register(self, app: web.Application) -> None:
        route = self.ctx.route
        files, batches = self.files, self.batches
        self._add(app, "POST", "/v1/files", route(self, "files.create", files.create_file))
        self._add(app, "GET", "/v1/files", route(self, "files.list", files.list_files))
        self._add(app, "GET", "/v1/files/{file_id}", route(self, "files.get", files.get_file))
        self._add(
            app, "DELETE", "/v1/files/{file_id}", route(self, "files.delete", files.delete_file)
        )
        self._add(app, "GET", "/v1/files/{file_id}/content", self._content_route())
        self._add(app, "POST", "/v1/batches", route(self, "batches.create", batches.create_batch))
        self._add(app, "GET", "/v1/batches", route(self, "batches.list", batches.list_batches))
        one = route(self, "batches.get", batches.get_batch)
        self._add(app, "GET", "/v1/batches/{batch_id}", one)
        self._add(
            app,
            "POST",
            "/v1/batches/{batch_id}/cancel",
            route(self, "batches.cancel", batches.cancel_batch),
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
        as_results = self.ctx.route(self, "batches.results", self.files.file_content)
        as_file = self.ctx.route(self, "files.content", self.files.file_content)

        async def content(request: web.Request) -> web.StreamResponse:
            stored = self.ctx.store.get(FILE, request.match_info["file_id"])
            is_result = stored is not None and stored["purpose"] == "batch_output"
            return await (as_results if is_result else as_file)(request)

        return content

    async def invalid_url(self, request: web.Request) -> web.Response:
        raise OpenAIError(404, f"Invalid URL ({request.method} {request.path})")

