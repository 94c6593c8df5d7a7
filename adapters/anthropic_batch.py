"""Anthropic Message Batches adapter: requests inline in the create call, results as JSONL.

Wire facts (docs/provider-notes.md, "Anthropic"): ``{"requests": [{"custom_id", "params"}]}``;
result lines ``{"custom_id", "result": {"type": succeeded|errored|canceled|expired, ...}}``.
Batches carry no label, so find() matches on creation time and item count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
from anthropic.types.messages import MessageBatch, MessageBatchRequestCounts

from .base import (
    BatchItem,
    BatchStatus,
    ItemError,
    ItemOutcome,
    ItemResult,
    PermanentError,
    ProviderLimits,
    ProviderName,
    ResultsGone,
    Submitted,
    TransientError,
    Usage,
    read_whole_line,
)
from .facts import ANTHROPIC_DEFAULT_API_VERSION, root_url
from .http_errors import (
    answer_as,
    listing,
    redact,
    retry_after_s,
    status_error,
    transport_error,
    unreadable,
)
from .jsontext import jsonl_lines
from .result_lines import anthropic_answer
from .wire import obj, text

FIND_SLACK_S = 60.0
LIST_PAGE = 1000  # batches per list call (the API's maximum)
ENDED_KEPT = 1_000  # ended batches remembered for their collection (see AnthropicAdapter._seen)
RETRY_ERROR_TYPES = {"rate_limit_error", "overloaded_error", "api_error", "timeout_error"}


class AnthropicAdapter:
    name: ProviderName = "anthropic"

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str,
        timeout_s: float,
        spool_dir: Path,
        limits: ProviderLimits,
        api_version: str = ANTHROPIC_DEFAULT_API_VERSION,
    ) -> None:
        self.limits = limits
        self._key = api_key
        self._ended: OrderedDict[str, MessageBatch] = OrderedDict()  # see _seen
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=root_url(base_url) if base_url else None,
            timeout=timeout_s,
            max_retries=0,
            default_headers={"anthropic-version": api_version},
        )

    # -- submit ----------------------------------------------------------------------------
    async def submit(self, tag: str, model: str, items: Iterable[BatchItem]) -> Submitted:
        # The create call carries every request in its JSON body, so the SDK needs the list
        # (built in a worker thread: the items may be read from the store as they come).
        requests = await asyncio.to_thread(_requests, items, self.limits)
        with self._mapped("batches.create", mutating=True):
            created = await self._client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        batch = answer_as(created, MessageBatch, "anthropic batches.create", mutating=True)
        return Submitted(provider_batch_id=batch.id)

    # -- find / poll -----------------------------------------------------------------------
    async def find(
        self,
        tag: str,
        model: str,
        n_items: int,
        since: float,
        exclude: Collection[str],
        keys: Collection[str] = (),
    ) -> str | None:
        """The batch created at/after ``since`` - 60 s with ``n_items`` requests.

        Anthropic keeps no label, so candidates are batches of that size in that window. With
        ``keys`` (the daemon's item ids) a candidate that has ended is ours when every
        custom_id in its results is one of them; while a candidate is still running nobody can
        tell, so TransientError says "look again later". Without ``keys``: the candidate, if
        unique.
        """
        candidates = await self._candidates(n_items, since, exclude)
        if not keys:
            return candidates[0].id if len(candidates) == 1 else None
        ours = set(keys)
        running = []
        for batch in candidates:
            if batch.processing_status != "ended":
                running.append(batch.id)
            elif batch.archived_at is None and await self._carries_only(batch.id, ours):
                return batch.id
        if running:
            raise TransientError(
                f"anthropic: {len(running)} batch(es) of {n_items} requests created since the "
                "create call are still running; whose they are is known once they end"
            )
        return None

    async def _candidates(
        self, n_items: int, since: float, exclude: Collection[str]
    ) -> list[anthropic.types.messages.MessageBatch]:
        candidates = []
        with self._mapped("batches.list"), listing("anthropic batches.list"):
            async for batch in self._client.messages.batches.list(limit=100):
                if batch.created_at.timestamp() < since - FIND_SLACK_S:
                    break  # newest first
                counts = batch.request_counts
                total = (
                    counts.processing
                    + counts.succeeded
                    + counts.errored
                    + counts.canceled
                    + counts.expired
                )
                if total == n_items and batch.id not in exclude:
                    candidates.append(batch)
        return candidates

    async def _carries_only(self, batch_id: str, keys: set[str]) -> bool:
        """Whether the results of an ended batch answer only ``keys`` (streamed, stopping at
        the first stranger). Every key, not just one: another client of the same account (a
        second batchd) may use ids like ours. No results, or results gone: nobody can tell."""
        seen = False
        try:
            with self._mapped("batches.results", results=True):
                decoder = await self._client.messages.batches.results(batch_id)
                try:
                    async for line in decoder:
                        if line.custom_id not in keys:
                            return False
                        seen = True
                finally:
                    await decoder.close()
        except ResultsGone:
            return False
        return seen

    async def poll(self, provider_batch_id: str) -> BatchStatus:
        with self._mapped("batches.retrieve"):
            try:
                answer = await self._client.messages.batches.retrieve(provider_batch_id)
            except anthropic.NotFoundError:
                return BatchStatus(provider_batch_id, "gone", "not_found", error="batch not found")
        return self._seen(answer_as(answer, MessageBatch, "anthropic batches.retrieve"))

    async def list_batches(self) -> AsyncIterator[list[BatchStatus]]:
        """Pages of ``LIST_PAGE`` batches, newest first; the next page is asked for with
        ``after_id`` = the page's ``last_id``, while ``has_more``."""
        after: str | None = None
        while True:
            with self._mapped("batches.list"), listing("anthropic batches.list"):
                if after is None:
                    page = await self._client.messages.batches.list(limit=LIST_PAGE)
                else:
                    page = await self._client.messages.batches.list(
                        limit=LIST_PAGE, after_id=after
                    )
                batches = [answer_as(b, MessageBatch, "anthropic batches.list") for b in page.data]
                more, last = bool(page.has_more), page.last_id
            yield [self._seen(batch) for batch in batches]
            if not more or not batches or not last:
                return
            after = last

    def _seen(self, batch: MessageBatch) -> BatchStatus:
        """The batch's status; an ended batch is remembered, so that collecting its results
        need not retrieve it again (an ended batch changes only by being archived, which the
        results call then reports as gone)."""
        status = _status(batch)
        if batch.processing_status == "ended":
            self._ended[batch.id] = batch
            self._ended.move_to_end(batch.id)
            while len(self._ended) > ENDED_KEPT:
                self._ended.popitem(last=False)
        return status

    # -- results ---------------------------------------------------------------------------
    async def results(self, provider_batch_id: str) -> AsyncIterator[ItemResult]:
        batch = self._ended.pop(provider_batch_id, None)
        if batch is None:
            with self._mapped("batches.retrieve", results=True):
                answer = await self._client.messages.batches.retrieve(provider_batch_id)
            batch = answer_as(answer, MessageBatch, "anthropic batches.retrieve")
        if batch.processing_status != "ended":
            raise TransientError(f"anthropic batch {provider_batch_id} has not ended yet")
        if batch.archived_at is not None or not batch.results_url:
            raise ResultsGone(f"anthropic batch {provider_batch_id}: results are archived")
        with self._mapped("batches.results", results=True):
            decoder = await self._client.messages.batches.results(provider_batch_id)
            try:  # the lines as sent: read here, never made into the SDK's models
                async for lines in jsonl_lines(decoder.http_response.aiter_bytes()):
                    for line in lines:
                        yield parse_result_text(line)
            finally:
                await decoder.close()

    # -- cancel / cleanup / close ----------------------------------------------------------
    async def cancel(self, provider_batch_id: str) -> None:
        try:
            with self._mapped("batches.cancel"):
                await self._client.messages.batches.cancel(provider_batch_id)
        except (PermanentError, TransientError):
            # Cancelling a batch that has already ended is refused; that is not a failure.
            if (await self.poll(provider_batch_id)).state == "running":
                raise

    async def cleanup(self, provider_batch_id: str, input_file_id: str | None) -> None:
        """Nothing to delete: requests were inline, and the batch itself is kept as a record."""

    async def close(self) -> None:
        await self._client.close()

    # -- errors: the one place SDK exceptions become the daemon's taxonomy -----------------
    @contextlib.contextmanager
    def _mapped(
        self, call: str, *, mutating: bool = False, results: bool = False
    ) -> Iterator[None]:
        """Map SDK exceptions; messages never carry the key, and no SDK object is chained."""
        what = f"anthropic {call}"
        try:
            yield
        except anthropic.APIStatusError as exc:
            inner = obj(obj(exc.body).get("error"))
            message = redact(text(inner.get("message")) or exc.message, self._key)
            retry_after = retry_after_s(exc.response.headers)
            raise status_error(what, exc.status_code, retry_after, message, results) from None
        except (anthropic.APIConnectionError, httpx2.TransportError) as exc:
            raise transport_error(
                what,
                exc,
                mutating=mutating,
                wrapper=anthropic.APIConnectionError,
                timeout=anthropic.APITimeoutError,
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError):  # an answer or a line, not JSON
            raise unreadable(what, "not JSON", mutating=mutating) from None
        except anthropic.AnthropicError as exc:  # e.g. "No results_url for the given batch"
            message = redact(str(exc), self._key)
            raise (ResultsGone if results else PermanentError)(f"{what}: {message}") from None


# -- pure helpers ----------------------------------------------------------------------------


def parse_result_text(raw: str) -> ItemResult:
    """``parse_result(loads_kept(raw), raw=raw)``, the usual answer read for the fields the
    result takes alone (``result_lines.py``): the same ItemResult, the same errors."""
    return anthropic_answer(raw) or read_whole_line(raw, parse_result)


def parse_result(line: dict[str, Any], raw: str | None = None) -> ItemResult:
    """One results line (``raw``: its text) as an ItemResult (docs/provider-notes.md,
    "Anthropic")."""
    key = str(line.get("custom_id"))
    result = obj(line.get("result"))
    kind = result.get("type")
    if kind == "succeeded":
        return _succeeded(key, result.get("message") or {}, line, raw)
    if kind == "errored":
        inner = obj(obj(result.get("error")).get("error"))
        etype = str(inner.get("type") or "api_error")
        error = ItemError(etype, str(inner.get("message") or ""), etype)
        outcome: ItemOutcome = "retry" if etype in RETRY_ERROR_TYPES else "failed"
        return ItemResult(key, outcome, error=error, response=line, raw=raw)
    if kind == "canceled":
        error = ItemError("canceled", "batch canceled")
        return ItemResult(key, "canceled", error=error, response=line, raw=raw)
    if kind == "expired":
        error = ItemError("expired", "batch expired")
        return ItemResult(key, "expired", error=error, response=line, raw=raw)
    error = ItemError("malformed_result", f"unknown result type {kind!r}")
    return ItemResult(key, "failed", error=error, response=line, raw=raw)


def _succeeded(
    key: str, message: dict[str, Any], line: dict[str, Any], raw: str | None
) -> ItemResult:
    """Usage is normalised: input_tokens counts every prompt token, cached or not.

    Anthropic's own ``input_tokens`` leaves out cache reads and cache writes; the other
    providers' prompt counts include them, so the three are added here.
    """
    blocks = message.get("content") or []
    text = "".join(b.get("text") or "" for b in blocks if b.get("type") == "text")
    usage = message.get("usage") or {}
    cache_read = int(usage.get("cache_read_input_tokens") or 0)
    cache_write = int(usage.get("cache_creation_input_tokens") or 0)
    return ItemResult(
        key,
        "succeeded",
        text=text,
        finish_reason=message.get("stop_reason"),
        usage=Usage(
            input_tokens=int(usage.get("input_tokens") or 0) + cache_read + cache_write,
            output_tokens=int(usage.get("output_tokens") or 0),
            cached_input_tokens=cache_read,
            cache_creation_input_tokens=cache_write,
        ),
        response=line,
        raw=raw,
    )


def _requests(items: Iterable[BatchItem], limits: ProviderLimits) -> list[dict[str, Any]]:
    """The create call's ``requests``, within the provider's caps."""
    requests: list[dict[str, Any]] = []
    size = 0
    for item in items:
        request = {"custom_id": item.key, "params": item.body}
        size += len(json.dumps(request, separators=(",", ":"))) + 1
        requests.append(request)
        if len(requests) > limits.max_items or size > limits.max_bytes:
            raise PermanentError(
                f"anthropic batch exceeds {limits.max_items} items or {limits.max_bytes} bytes"
            )
    if not requests:
        raise PermanentError("anthropic batch has no items")
    return requests


def _status(batch: MessageBatch) -> BatchStatus:
    c = answer_as(batch.request_counts, MessageBatchRequestCounts, "anthropic batches.retrieve")
    total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
    status = batch.processing_status
    created = batch.created_at.timestamp()
    if status == "ended" and batch.archived_at is not None:
        return BatchStatus(
            batch.id, "gone", "archived", total=total, error="results archived", created_at=created
        )
    return BatchStatus(
        provider_batch_id=batch.id,
        state="ended" if status == "ended" else "running",
        provider_status=status,
        total=total,
        done=total - c.processing,
        failed=c.errored,
        expired=status == "ended" and c.expired > 0,
        cancelled=batch.cancel_initiated_at is not None,
        created_at=created,
    )
