"""Anthropic wire protocol for the emulator (stub: being written)."""

from __future__ import annotations

from aiohttp import web

from .core import ApiError, Context, json_response


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def register(self, app: web.Application) -> None:
        pass

    def error_response(self, err: ApiError, request_id: str) -> web.Response:
        return json_response({"error": {"message": err.message, "code": err.code}}, err.status)

    def api_key(self, request: web.Request) -> str | None:
        return None

    def request_id_header(self) -> str:
        return "x-request-id"
