"""What a batch's outcome does to each of its requests: pure functions, no I/O, no clock.

An item result from the provider, or an item an ended batch did not report, becomes one
``RequestUpdate`` for the store: a final status with its result or error, or ``pending`` again
with the time of its next attempt while the request has attempts left. The caller passes that
time as ``retry_at(attempt)`` (the clock and the backoff's randomness stay outside).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

import msgspec

from adapters.base import AdapterError, BatchStatus, ItemResult, ReadResult
from adapters.jsontext import RawJSON, compact

from .states import RequestStatus


class RequestUpdate(TypedDict):
    """One request's new state, as ``Store.record_results`` writes it."""

    request_id: int
    status: RequestStatus
    attempts_inc: int
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    next_attempt_at: NotRequired[float]  # only for a request that goes back to pending
    answer: NotRequired[Any]  # the provider's own answer, kept with a final result


@dataclass(frozen=True)
class OutcomePolicy:
    """What the configuration says about outcomes."""

    max_attempts: int
    keep_cancelled: bool  # on_external_cancel = "cancel": a cancelled request ends canceled


RetryAt = Callable[[int], float]  # attempt number -> when that attempt may run

# A succeeded item whose answer's own text was kept, the usual result (``answered``):
# (request id, the stored result as JSON text, the answer's text). ``Store.record_results``
# stores it as it stores the RequestUpdate ``item_update`` makes of the same item.
Answered = tuple[int, str, str]


def error_of(kind: str, message: str | None, code: str | int | None = None) -> dict[str, Any]:
    """The error object stored on a request (and written to its result line)."""
    return {"type": kind, "message": message, "code": code}


def refused_error(err: AdapterError) -> dict[str, Any]:
    """The error of every request of a batch whose create call was refused for good."""
    return error_of("batch_refused", str(err))


def describe(exc: BaseException) -> str:
    """An unexpected exception in a few words: its type and message."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


INTERNAL_ERROR = "internal_error"  # a unit failed with an unexpected error (a bug)
CREATE_UNKNOWN = "create_outcome_unknown"  # a create call ended without a known outcome


def internal_error(message: str) -> dict[str, Any]:
    """The error of every request of a unit (a batch's submission or collection) that failed
    with an unexpected error, once the requests are out of attempts."""
    return error_of(INTERNAL_ERROR, message)


def noted_create_error(kind: str, message: str) -> str:
    """How a create call that ended without a known outcome is noted on its batch row."""
    return f"{kind}: {message}"


def create_error(noted: str) -> dict[str, Any]:
    """The error of the requests of a batch that was never created after its create call
    failed (as noted by ``noted_create_error``), once they are out of attempts."""
    kind, _, message = noted.partition(": ")
    if kind not in (INTERNAL_ERROR, CREATE_UNKNOWN):
        return internal_error(noted)
    return error_of(kind, message)


def batch_lost_error(status: BatchStatus) -> dict[str, Any]:
    """The error of a request whose batch failed or vanished whole, once out of attempts."""
    return error_of(f"batch_{status.state}", status.error or status.provider_status)


class _StoredUsage(msgspec.Struct, gc=False):
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_creation_input_tokens: int


class _StoredResult(msgspec.Struct, gc=False):
    """The result :func:`item_update` stores, its fields in the same order."""

    text: str | None
    finish_reason: str | None
    usage: _StoredUsage


_encode = msgspec.json.Encoder().encode


def answered(rid: int, item: ItemResult) -> Answered | None:
    """The usual succeeded item, one a field reader read (``adapters.base.ReadResult``), as
    :data:`Answered`; None for any other item (it takes :func:`item_update`).

    The result's JSON text is the very text ``compact`` writes of ``item_update``'s result
    dict, written in one call: msgspec escapes every string as orjson does, and a
    ``ReadResult``'s fields are of the types both write alike (strings or null, integers).
    A string msgspec refuses (a lone surrogate) is written by ``compact`` of the dict
    (tests/test_outcomes_fast.py holds the two equal)."""
    raw = item.raw
    if type(item) is not ReadResult or item.outcome != "succeeded" or raw is None:
        return None
    u = item.usage
    try:
        usage = _StoredUsage(
            u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_creation_input_tokens
        )
        text = _encode(_StoredResult(item.text, item.finish_reason, usage)).decode()
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        text = compact(_result(item))
    return rid, text, raw


def _result(item: ItemResult) -> dict[str, Any]:
    """The result stored for an item: its text, finish reason and usage."""
    usage = item.usage
    return {
        "text": item.text,
        "finish_reason": item.finish_reason,
        "usage": {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cached_input_tokens": usage.cached_input_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        },
    }


def item_update(
    rid: int, attempts: int, item: ItemResult, policy: OutcomePolicy, retry_at: RetryAt
) -> RequestUpdate:
    """What the provider's answer for one request does to it. ``attempts``: before this one.
    (The usual succeeded item is stored through :func:`answered` instead, to the same row.)"""
    result = _result(item)
    outcome = item.outcome
    if outcome == "succeeded":  # the usual case, built at once
        update: RequestUpdate = {
            "request_id": rid,
            "status": RequestStatus.SUCCEEDED,
            "attempts_inc": 1,
            "result": result,
            "error": None,
        }
    else:
        update = _unanswered(rid, attempts, item, result, policy, retry_at)
    if update["result"] is not None:  # the answer as read, its own text when kept
        if item.raw is not None:
            update["answer"] = RawJSON(item.raw)
        elif item.response is not None:
            update["answer"] = item.response
    return update


def _unanswered(
    rid: int,
    attempts: int,
    item: ItemResult,
    result: dict[str, Any],
    policy: OutcomePolicy,
    retry_at: RetryAt,
) -> RequestUpdate:
    """:func:`item_update` for an item that did not succeed."""
    error = None
    if item.error is not None:
        error = error_of(item.error.type, item.error.message, item.error.code)
    if item.outcome == "failed":
        return _update(rid, RequestStatus.FAILED, result=result, error=error)
    if item.outcome == "canceled" and policy.keep_cancelled:
        return _update(rid, RequestStatus.CANCELED, result=result, error=error)
    # worth another attempt: cut short (expired, cancelled, or a retryable error)
    final = {"expired": RequestStatus.EXPIRED, "canceled": RequestStatus.CANCELED}.get(
        item.outcome, RequestStatus.FAILED
    )
    return _retry_or_final(rid, attempts, final, error, result, policy, retry_at)


def missing_update(
    rid: int, attempts: int, status: BatchStatus, policy: OutcomePolicy, retry_at: RetryAt
) -> RequestUpdate:
    """A request the ended batch did not report (expired, cancelled, or results gone)."""
    if status.expired:
        kind, final = "batch_expired", RequestStatus.EXPIRED
    elif status.cancelled:
        kind, final = "batch_cancelled", RequestStatus.CANCELED
        if policy.keep_cancelled:
            return _update(rid, final, error=error_of(kind, "the batch was cancelled"))
    else:
        kind, final = "result_missing", RequestStatus.FAILED
    error = error_of(kind, f"no result for this request ({kind})")
    return _retry_or_final(rid, attempts, final, error, None, policy, retry_at)


def _retry_or_final(
    rid: int,
    attempts: int,
    final: RequestStatus,
    error: dict[str, Any] | None,
    result: dict[str, Any] | None,
    policy: OutcomePolicy,
    retry_at: RetryAt,
) -> RequestUpdate:
    """Pending again for the next attempt, or ``final`` once this was the last one allowed."""
    if attempts + 1 >= policy.max_attempts:
        return _update(rid, final, result=result, error=error)
    return _update(
        rid, RequestStatus.PENDING, error=error, next_attempt_at=retry_at(attempts + 1)
    )


def _update(
    rid: int,
    status: RequestStatus,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    next_attempt_at: float | None = None,
) -> RequestUpdate:
    """The one place a request update is built: every outcome counts one attempt."""
    update = RequestUpdate(
        request_id=rid, status=status, attempts_inc=1, result=result, error=error
    )
    if next_attempt_at is not None:
        update["next_attempt_at"] = next_attempt_at
    return update
