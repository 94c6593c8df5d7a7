"""Gemini's error answers, read without trusting their shape.

Every answer with an error status, whichever call it answers (an SDK call or one of the
adapter's plain-HTTP reads), is read by ``raise_for_status``, the response hook of the
adapter's HTTP client, before the SDK sees it: the SDK reads an error body as it expects it
(``{"error": {...}}``) and fails on anything else (a string in ``error``, a body that is not
UTF-8, a proxy's HTML page). The body may be any bytes; the status code decides the error
(``adapters/http_errors.py``), the body only adds a message and a retry delay.

A successful answer of the API is a JSON object, except a download and the steps of an upload.
One that is not (an HTML page, a bare string or number, an empty or cut body) raises
``Unreadable``: the SDK would read it as an empty list (a lookup that "found nothing") or fail
halfway.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any

import httpx2

from .wire import items, obj, parse_body, text


class HTTPStatus(Exception):
    """An error answer, shaped like the SDK's ``APIError`` (``code``, ``status``, ``message``,
    ``details`` and ``response.headers``), so one mapping serves both."""

    def __init__(self, code: int, headers: Mapping[str, str], message: str, details: Any) -> None:
        super().__init__(f"HTTP {code}")
        self.code = code
        self.status: str | None = None
        self.message = message
        self.details = details
        self.response = _Headers(headers)


class Unreadable(Exception):
    """A successful answer whose body is not the JSON object the API always answers."""


class _Headers:
    def __init__(self, headers: Mapping[str, str]) -> None:
        self.headers = headers


async def raise_for_status(response: httpx2.Response) -> None:
    """The response hook: an answer with a status from 400 on, whatever its body (JSON of any
    shape, HTML, empty, cut short, not UTF-8), becomes ``HTTPStatus``; a successful answer
    that should be a JSON object and is not, ``Unreadable``."""
    if response.status_code < 400:
        if _answers_an_object(response.request):
            await response.aread()
            if not isinstance(parse_body(response.content), dict):
                raise Unreadable(f"HTTP {response.status_code}: not a JSON object")
        return
    await response.aread()
    details = parse_body(response.content)
    err = obj(obj(details).get("error"))
    message = text(err.get("message")) or text(err.get("status")) or response.reason_phrase
    raise HTTPStatus(response.status_code, response.headers, message, details)


def _answers_an_object(request: httpx2.Request) -> bool:
    """Whether the API answers this request with a JSON object when it succeeds: every call
    but a download (``alt=media``), an upload step and a delete (which may answer nothing)."""
    url = request.url
    return (
        request.method != "DELETE"
        and url.params.get("alt") != "media"
        and not url.path.startswith("/upload/")
    )


def retry_delay_s(details: Any) -> float | None:
    """The ``google.rpc.RetryInfo`` delay ("30s") of an error body, which Gemini's 429s carry;
    None when there is none or it cannot be read."""
    for detail in items(obj(obj(details).get("error")).get("details")):
        kind = text(obj(detail).get("@type")) or ""
        delay = text(obj(detail).get("retryDelay"))
        if kind.endswith("rpc.RetryInfo") and delay is not None:
            with contextlib.suppress(ValueError):
                seconds = float(delay.removesuffix("s"))
                if math.isfinite(seconds):
                    return max(0.0, seconds)
    return None
