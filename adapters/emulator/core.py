"""What every provider module of the emulator shares: errors, auth, faults, time, ids, journal.

A provider module registers its routes through :meth:`Context.route`, which wraps each handler
with the cross-cutting behaviour (auth, injected faults, request ids, the journal, error
envelopes), so the provider code only speaks its own wire format.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

from .faults import Fault, FaultSet
from .journal import Journal
from .store import EmulatorStore

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answer. ``code`` is the provider's error type/code string."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.retry_after = retry_after


class Provider(Protocol):
    """What each provider module gives the core."""

    name: str

    def error_response(self, err: ApiError, request_id: str) -> web.Response: ...

    def api_key(self, request: web.Request) -> str | None: ...

    def request_id_header(self) -> str: ...


@dataclass(frozen=True)
class Timing:
    """Seconds each batch phase takes at time scale 1 (a fast real service)."""

    validating_s: float = 2.0
    in_progress_base_s: float = 5.0
    per_item_s: float = 0.002
    finalizing_s: float = 2.0


@dataclass
class Context:
    store: EmulatorStore
    journal: Journal
    faults: FaultSet
    time_scale: float = 1.0
    timing: Timing = field(default_factory=Timing)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    # -- time ------------------------------------------------------------------------------
    @staticmethod
    def now() -> float:
        return time.time()

    def phase(self, created: float, n_items: int, *, polled: bool = True) -> str:
        """Where a batch created at ``created`` with ``n_items`` items stands now.

        At time scale 0 a batch is over as soon as anyone looks at it after its creation.
        """
        if self.time_scale <= 0:
            return "ended" if polled else "validating"
        elapsed = (self.now() - created) / self.time_scale
        t = self.timing
        if elapsed < t.validating_s:
            return "validating"
        elapsed -= t.validating_s
        if elapsed < t.in_progress_base_s + t.per_item_s * n_items:
            return "in_progress"
        elapsed -= t.in_progress_base_s + t.per_item_s * n_items
        if elapsed < t.finalizing_s:
            return "finalizing"
        return "ended"

    def progress(self, created: float, n_items: int) -> float:
        """Share (0..1) of the in-progress phase that has passed."""
        if self.time_scale <= 0:
            return 1.0
        t = self.timing
        elapsed = (self.now() - created) / self.time_scale - t.validating_s
        span = t.in_progress_base_s + t.per_item_s * n_items
        return max(0.0, min(1.0, elapsed / span))

    def lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    # -- ids -------------------------------------------------------------------------------
    @staticmethod
    def new_id(prefix: str, n: int = 24) -> str:
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        return prefix + "".join(secrets.choice(alphabet) for _ in range(n))

    # -- routing ---------------------------------------------------------------------------
    def route(
        self,
        provider: Provider,
        route_class: str,
        handler: Handler,
        *,
        auth: bool = True,
    ) -> Handler:
        """Wrap a provider handler with auth, faults, request ids, journal and error bodies."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            request_id = "req_" + secrets.token_hex(12)
            fired: list[Fault] = []
            try:
                if auth:
                    self._check_auth(provider, request)
                # Faults count only calls that got past authentication.
                fired = self.faults.request_faults(provider.name, route_class)
                for fault in fired:
                    if fault.kind == "http":
                        self.journal.count(provider.name, f"faults_http_{fault.status}")
                        raise _fault_error(provider.name, fault)
                response = await handler(request)
            except ApiError as err:
                response = provider.error_response(err, request_id)
                if err.retry_after is not None:
                    response.headers["retry-after"] = _fmt_seconds(err.retry_after)
            except web.HTTPException:
                raise
            response.headers[provider.request_id_header()] = request_id
            for fault in fired:
                if fault.kind == "slow":
                    self.journal.count(provider.name, "faults_slow")
                    await asyncio.sleep(fault.delay_s)
            self.journal.record_call(
                provider.name,
                route_class,
                request.method,
                request.path,
                response.status,
                size=request.content_length,
                query=request.query_string,
            )
            if any(f.kind == "drop" for f in fired):
                self.journal.count(provider.name, "faults_drop")
                await _drop(request, response)
            return response

        return wrapped

    def _check_auth(self, provider: Provider, request: web.Request) -> None:
        key = provider.api_key(request)
        expected = self.faults.expected_key(provider.name)
        if not key:
            raise ApiError(401, "authentication_error", "No API key was provided.")
        if expected is not None and not secrets.compare_digest(key, expected):
            self.journal.count(provider.name, "faults_auth")
            raise ApiError(401, "authentication_error", "Incorrect API key provided.")


def _fault_error(provider: str, fault: Fault) -> ApiError:
    kinds = {
        429: "rate_limit_error",
        500: "api_error",
        502: "api_error",
        503: "api_error",
        504: "timeout_error",
        529: "overloaded_error",
    }
    code = kinds.get(fault.status, "api_error" if fault.status >= 500 else "invalid_request_error")
    message = {
        429: "Rate limit reached (injected by the emulator).",
        529: "Overloaded (injected by the emulator).",
    }.get(fault.status, f"Injected fault: HTTP {fault.status}.")
    return ApiError(fault.status, code, message, retry_after=fault.retry_after)


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


async def _drop(request: web.Request, response: web.StreamResponse) -> None:
    """Send the status line and half of the body, then cut the connection."""
    body = getattr(response, "body", None) or b"{}"
    if not isinstance(body, bytes | bytearray):
        body = b'{"partial": true}'
    stream = web.StreamResponse(status=response.status, headers=response.headers)
    stream.content_length = len(body) + 64
    await stream.prepare(request)
    await stream.write(bytes(body[: max(1, len(body) // 2)]))
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError  # aiohttp treats this as the client having gone


# -- small shared helpers ------------------------------------------------------------------


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


def external_base(request: web.Request) -> str:
    """The absolute base URL the client used to reach us (for results and upload URLs)."""
    return f"{request.scheme}://{request.host}"


def _not_json(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


_STRICT = json.JSONDecoder(parse_constant=_not_json)


def strict_loads(raw: bytes | str) -> Any:
    """JSON as the providers parse it: NaN and Infinity (which Python accepts) are refused.

    Bytes must be UTF-8 (UnicodeDecodeError otherwise); one decoder serves every call.
    """
    text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
    return _STRICT.decode(text)


async def read_json(request: web.Request, limit: int, code: str = "invalid_request_error") -> Any:
    """Read a JSON body of at most ``limit`` bytes (413 above it, 400 when it is not JSON)."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(
            413, "request_too_large", f"Request exceeds the maximum size of {limit} bytes."
        )
    chunks = []
    size = 0
    async for chunk in request.content.iter_chunked(1 << 20):
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413, "request_too_large", f"Request exceeds the maximum size of {limit} bytes."
            )
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        return None
    try:
        return strict_loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, code, f"The request body is not valid JSON: {exc}") from None
