"""HTTP error classification shared by the adapters: one taxonomy, whatever the SDK.

Each adapter catches its own SDK's exceptions and hands the facts (status, headers, whether
the call timed out or never reached the server) to these functions, so the rules that decide
between retrying, pausing and giving up live in one place.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx2

from .base import (
    AdapterError,
    AuthError,
    PermanentError,
    ResultsGone,
    TransientError,
    UnknownOutcome,
)

T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 409, 429})  # and every 5xx, 529 (Anthropic overloaded) included


def is_retryable_status(status: int) -> bool:
    return status in RETRY_STATUSES or status >= 500


def redact(text: str, secret: str) -> str:
    """Provider error texts sometimes echo the key back: never let it into a log line."""
    return text.replace(secret, "***") if secret else text


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date); None when
    absent or unreadable (never negative, infinite or NaN: a proxy may send anything)."""
    if not headers:
        return None
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        if headers.get("retry-after-ms"):
            return _seconds(float(headers["retry-after-ms"]) / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(TypeError, ValueError):
        return _seconds(float(value))
    with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
        return _seconds((parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    return None


def _seconds(value: float) -> float | None:
    return max(0.0, value) if math.isfinite(value) else None


def unreadable(what: str, detail: str, *, mutating: bool) -> AdapterError:
    """A successful answer that cannot be read (an HTML page, a bare string or number, a cut
    body): a read is tried again; a mutating call may have taken effect, so its outcome is
    unknown (looked up, never sent again blindly)."""
    if mutating:
        return UnknownOutcome(
            f"{what}: the answer could not be read ({detail}); the call may or may not have "
            "taken effect"
        )
    return TransientError(f"{what}: the answer could not be read ({detail})")


def answer_as(value: object, kind: type[T], what: str, *, mutating: bool = False) -> T:
    """``value`` if the SDK read the answer as a ``kind``; an SDK hands back the raw body (a
    ``str``, a number, a list) when a successful answer is not the JSON object it expects."""
    if isinstance(value, kind):
        return value
    detail = f"a {type(value).__name__} instead of a {kind.__name__}"
    raise unreadable(what, detail, mutating=mutating)


@contextlib.contextmanager
def listing(what: str) -> Iterator[None]:
    """Around a listing read: a page the SDK cannot read (not the JSON object it expects, so
    its paginator raises ``AttributeError`` or ``TypeError``) is a failed read, tried again."""
    try:
        yield
    except (AttributeError, TypeError) as exc:
        raise unreadable(what, type(exc).__name__, mutating=False) from None


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
