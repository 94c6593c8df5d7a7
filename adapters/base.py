"""The one Protocol every provider adapter implements, and the neutral types it speaks.

No SDK type crosses this boundary: the daemon hands an adapter provider-native request bodies
(plain dicts, already adapted to the model) keyed by the daemon's own item keys, and gets back
plain dataclasses. Each adapter maps its SDK's exceptions onto the small taxonomy below;
timeouts, retries and logging are applied once, by the scheduler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .jsontext import loads_kept, loads_object

ProviderName = Literal["openai", "anthropic", "gemini"]

# How one item ended at the provider.
#   succeeded: an answer; failed: a permanent error (the request itself is wrong);
#   retry: a transient error (rate limit, overload, server error) - send again later;
#   expired: not run before the batch's window closed - send again later;
#   canceled: the batch was cancelled before the item ran.
ItemOutcome = Literal["succeeded", "failed", "retry", "expired", "canceled"]

# Where a provider batch stands, in the daemon's words.
#   running: still being processed; ended: results (possibly partial) can be fetched;
#   failed: the batch failed as a whole (nothing ran; items go back to pending);
#   gone: the provider no longer knows the batch or its results (items go back to pending).
BatchState = Literal["running", "ended", "failed", "gone"]


class AdapterError(Exception):
    """Base of the adapter error taxonomy."""


class TransientError(AdapterError):
    """Worth retrying later: rate limit, overload, server error, connection refused."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(AdapterError):
    """Retrying the same call cannot help (bad request, not found)."""


class AuthError(AdapterError):
    """The key is missing or wrong: pause the provider, do not fail its requests."""


class ResultsGone(AdapterError):
    """The batch ended but its results can no longer be fetched (archived, deleted, 404)."""


class UnknownOutcome(AdapterError):
    """A mutating call may or may not have taken effect (timeout, dropped connection).

    The scheduler reconciles by looking the batch up at the provider; it never resubmits blindly.
    """


@dataclass(frozen=True)
class BatchItem:
    key: str  # the daemon's id for the item, valid for every provider (^[a-zA-Z0-9_-]{1,64}$)
    body: dict[str, Any]  # provider-native request body (includes "model" where the wire has it)
    # ``body`` as compact JSON text when the daemon has it already (its stored text): a spool
    # line is then written around it, not encoded again.
    body_json: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Submitted:
    provider_batch_id: str
    input_file_id: str | None = None  # provider-side file to delete once collected


@dataclass(frozen=True)
class BatchStatus:
    provider_batch_id: str
    state: BatchState
    provider_status: str  # the provider's own word (e.g. "in_progress", "BATCH_STATE_RUNNING")
    total: int | None = None
    done: int | None = None  # items finished so far, when the provider tells
    failed: int | None = None
    error: str | None = None  # batch-level error text (failed / gone)
    expired: bool = False  # ended because its window closed (some items may be missing)
    cancelled: bool = False  # ended because it was cancelled
    created_at: float | None = None  # unix time the provider created it, when it says


# Usage and ItemResult are made once per item result (millions per day): plain slotted classes,
# not frozen dataclasses, whose every field is set through ``object.__setattr__`` (about three
# times the cost). Nothing changes them once made.
@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


@dataclass(frozen=True)
class ItemError:
    type: str  # e.g. "invalid_request_error", "rate_limit_error", "batch_expired"
    message: str
    code: str | int | None = None


class ItemResult:
    """How one item ended, with the provider's answer for it.

    ``response`` is the provider's answer as a value; ``raw`` its own JSON text when it was read
    from a line (kept as it is). An adapter that read only the fields it needs gives ``raw``
    alone: ``response`` is then decoded from it when asked for.
    """

    __slots__ = ("_response", "error", "finish_reason", "key", "outcome", "raw", "text", "usage")

    def __init__(
        self,
        key: str,
        outcome: ItemOutcome,
        text: str | None = None,
        finish_reason: str | None = None,
        usage: Usage | None = None,
        error: ItemError | None = None,
        response: dict[str, Any] | None = None,
        raw: str | None = None,
    ) -> None:
        self.key = key
        self.outcome = outcome
        self.text = text
        self.finish_reason = finish_reason
        self.usage = Usage() if usage is None else usage
        self.error = error
        self._response = response
        self.raw = raw

    @property
    def response(self) -> dict[str, Any] | None:
        """The provider's raw answer for this item (decoded from ``raw`` when not given)."""
        if self._response is None and self.raw is not None:
            self._response = loads_kept(self.raw)
        return self._response

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.key,
            self.outcome,
            self.text,
            self.finish_reason,
            self.usage,
            self.error,
            self.response,
            self.raw,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ItemResult):
            return NotImplemented
        return self._fields() == other._fields()

    def __repr__(self) -> str:
        return (
            f"ItemResult(key={self.key!r}, outcome={self.outcome!r}, text={self.text!r}, "
            f"finish_reason={self.finish_reason!r}, usage={self.usage!r}, error={self.error!r})"
        )


class ReadResult(ItemResult):
    """An ItemResult read from a results line by its fields alone (``result_lines.py``):
    ``raw`` is the line's text, ``text`` and ``finish_reason`` are strings or None, and every
    usage count is an ``int``. The daemon may rely on those types (``outcomes.answered``
    writes such a result without checking them)."""

    __slots__ = ()


UNREADABLE_KEY = ""  # the key of a result line that could not be read (no request has it)


def read_whole_line(raw: str, whole: Callable[..., ItemResult]) -> ItemResult:
    """A results line the provider's field reader (``result_lines.py``) did not read: decoded
    whole and read by ``whole(line, raw=raw)``; a line that is not a JSON object is
    :func:`unreadable_line`. (Each adapter's ``parse_result_text`` is its reader, else this.)"""
    line = loads_object(raw)
    return unreadable_line(raw) if line is None else whole(line, raw=raw)


def unreadable_line(raw: str) -> ItemResult:
    """A results line that is not one JSON object (corrupt, cut short): it names no request, so
    the collector counts it, says so, and treats its request as one the batch did not answer
    (sent again) instead of failing the batch's whole collection."""
    shown = raw if len(raw) <= 80 else raw[:77] + "..."
    error = ItemError("malformed_result", f"result line is not a JSON object: {shown!r}")
    return ItemResult(UNREADABLE_KEY, "failed", error=error)


@dataclass(frozen=True)
class ProviderLimits:
    max_items: int  # hard cap on requests per batch
    max_bytes: int  # hard cap on the batch's request bytes


class ProviderAdapter(Protocol):
    name: ProviderName
    limits: ProviderLimits

    async def submit(self, tag: str, model: str, items: Iterable[BatchItem]) -> Submitted:
        """Create one single-model batch. ``tag`` is the daemon's local batch id.

        The adapter labels the batch with ``tag`` where the provider allows it (OpenAI
        metadata, Gemini displayName) so :meth:`find` can recover it after a crash.
        Raises TransientError, PermanentError, AuthError or UnknownOutcome.
        """
        ...

    async def find(
        self,
        tag: str,
        model: str,
        n_items: int,
        since: float,
        exclude: Collection[str],
        keys: Collection[str] = (),
    ) -> str | None:
        """The provider batch id created for ``tag`` (at or after unix time ``since``), if any.

        Where the provider keeps no label (Anthropic) the adapter matches on creation time and
        item count, skipping the batch ids in ``exclude`` (those the daemon already knows);
        given the batch's item ``keys`` it tells same-sized candidates apart by the keys in
        their results, and raises TransientError while a candidate has not ended (cannot tell
        yet) rather than answer None ("never created", which leads to a resubmission).
        """
        ...

    async def poll(self, provider_batch_id: str) -> BatchStatus: ...

    def list_batches(self) -> AsyncIterator[list[BatchStatus]]:
        """The account's batches, one page (one list call) at a time, newest first where the
        provider orders them so; each status as :meth:`poll` gives it, with ``created_at``.

        The caller stops reading once it has what it needs (the statuses of the batches it
        polls in one round); a batch the pages it read did not show is polled on its own.
        """
        ...

    def results(self, provider_batch_id: str) -> AsyncIterator[ItemResult]:
        """Stream the results of an ended batch, item by item (any order).

        Raises ResultsGone when the provider no longer has them.
        """
        ...

    async def cancel(self, provider_batch_id: str) -> None: ...

    async def cleanup(self, provider_batch_id: str, input_file_id: str | None) -> None:
        """Delete provider-side files of a collected batch (best effort)."""
        ...

    async def close(self) -> None: ...
