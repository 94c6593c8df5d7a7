"""HTTP error classification shared by the adapters: one taxonomy, whatever the SDK.

Each adapter catches its own SDK's exceptions and hands the facts (status, headers, whether
the call timed out or never reached the server) to these functions, so the rules that decide
between retrying, pausing and giving up live in one place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx2

from .base import (
    AdapterError,
    AuthError,
    PermanentError,
    ResultsGone,
    TransientError,
    UnknownOutcome,
)

RETRY_STATUSES = frozenset({408, 409, 429})  # and every 5xx, 529 (Anthropic overloaded) included


def is_retryable_status(status: int) -> bool:
    return status in RETRY_STATUSES or status >= 500


def redact(text: str, secret: str) -> str:
    """Provider error texts sometimes echo the key back: never let it into a log line."""
    return text.replace(secret, "***") if secret else text


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    with contextlib.suppress(TypeError, ValueError):
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
    value = headers.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError, IndexError):
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    return None


def status_error(
    what: str, status: int, retry_after: float | None, message: str, results: bool
) -> AdapterError:
    """The taxonomy error for an HTTP error status (``results``: the call fetched results)."""
    text = f"{what}: HTTP {status}: {message}"
    if is_retryable_status(status):
        return TransientError(text, retry_after=retry_after)
    if status in (401, 403):
        return AuthError(f"{what}: HTTP {status}: the API key was refused")
    if status == 404 and results:
        return ResultsGone(text)
    return PermanentError(text)


def connection_error(
    what: str, *, timed_out: bool, never_sent: bool, mutating: bool
) -> AdapterError:
    """Nothing reached the server: retry. Otherwise a mutating call's outcome is unknown."""
    kind = "timed out" if timed_out else "connection failed"
    if mutating and not never_sent:
        return UnknownOutcome(f"{what}: {kind}; the call may or may not have taken effect")
    return TransientError(f"{what}: {kind}")


def transport_error(
    what: str,
    exc: BaseException,
    *,
    mutating: bool,
    wrapper: type[BaseException] | None = None,
    timeout: type[BaseException] | None = None,
) -> AdapterError:
    """Classify a transport failure. ``wrapper`` is the SDK's connection-error class (its
    ``__cause__`` is the httpx2 error underneath) and ``timeout`` its timeout subclass."""
    cause = exc.__cause__ if wrapper is not None and isinstance(exc, wrapper) else exc
    timed_out = isinstance(exc, httpx2.TimeoutException) or (
        timeout is not None and isinstance(exc, timeout)
    )
    return connection_error(
        what,
        timed_out=timed_out,
        never_sent=isinstance(cause, httpx2.ConnectError | httpx2.ConnectTimeout),
        mutating=mutating,
    )
