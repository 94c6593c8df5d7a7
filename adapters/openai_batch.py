"""OpenAI Batch API adapter: a JSONL file upload, a batch, and its output and error files.

Wire facts (docs/provider-notes.md, "OpenAI"): input lines ``{"custom_id", "method", "url",
"body"}``; results come as lines of two files, the output file (``response.status_code`` 2xx)
and the error file (non-2xx ``response.status_code``, or a top-level ``error`` such as
``batch_expired``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any, Final

import httpx2
import openai
from openai.types import Batch

from .base import (
    AdapterError,
    BatchItem,
    BatchState,
    BatchStatus,
    ItemError,
    ItemOutcome,
    ItemResult,
    PermanentError,
    ProviderLimits,
    ProviderName,
    Submitted,
    TransientError,
    UnknownOutcome,
    Usage,
    read_whole_line,
)
from .facts import openai_base_url
from .http_errors import (
    answer_as,
    is_retryable_status,
    listing,
    redact,
    retry_after_s,
    status_error,
    transport_error,
    unreadable,
)
from .jsontext import jsonl_lines
from .result_lines import openai_answer
from .spool import quoted, write_spool
from .wire import obj, text

ENDPOINT: Final = "/v1/chat/completions"
TAG_KEY = "batchd_tag"
FIND_SLACK_S = 300.0  # how far before ``since`` find() still looks (clock skew, slow create)
STATES: dict[str, BatchState] = {
    "validating": "running",
    "in_progress": "running",
    "finalizing": "running",
    "cancelling": "running",
    "completed": "ended",
    "expired": "ended",
    "cancelled": "ended",
    "failed": "failed",
}
ITEM_CODES: dict[str, ItemOutcome] = {"batch_expired": "expired", "batch_cancelled": "canceled"}
LIST_PAGE = 100  # batches per list call (the API's maximum)
ENDED_KEPT = 1_000  # ended batches remembered for their collection (see OpenAIAdapter._seen)


class OpenAIAdapter:
    name: ProviderName = "openai"

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str,
        timeout_s: float,
        spool_dir: Path,
        limits: ProviderLimits,
    ) -> None:
        self.limits = limits
        self._spool_dir = spool_dir
        self._key = api_key
        self._ended: OrderedDict[str, Batch] = OrderedDict()  # see _seen
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=openai_base_url(base_url) if base_url else None,
            timeout=timeout_s,
            max_retries=0,
        )

    # -- submit ----------------------------------------------------------------------------
    async def submit(self, tag: str, model: str, items: Iterable[BatchItem]) -> Submitted:
        path, _ = await asyncio.to_thread(
            write_spool, self._spool_dir, "openai", items, self.limits, _line, _line_text
        )
        try:
            with self._mapped("files.create"), path.open("rb") as fh:
                answer = await self._client.files.create(
                    file=(f"{_safe_name(tag)}.jsonl", fh, "application/jsonl"), purpose="batch"
                )
            upload = answer_as(answer, openai.types.FileObject, "openai files.create")
        finally:
            path.unlink(missing_ok=True)
        try:
            with self._mapped("batches.create", mutating=True):
                created = await self._client.batches.create(
                    input_file_id=upload.id,
                    endpoint=ENDPOINT,
                    completion_window="24h",
                    metadata={TAG_KEY: tag},
                )
            batch = answer_as(created, Batch, "openai batches.create", mutating=True)
        except UnknownOutcome:
            raise  # the batch may exist and needs its input file: keep it
        except AdapterError:
            await self._delete_quietly(upload.id)
            raise
        return Submitted(provider_batch_id=batch.id, input_file_id=upload.id)

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
        with self._mapped("batches.list"), listing("openai batches.list"):
            async for batch in self._client.batches.list(limit=100):
                if batch.created_at < since - FIND_SLACK_S:
                    return None  # newest first: everything further is older still
                if (batch.metadata or {}).get(TAG_KEY) == tag and batch.id not in exclude:
                    return batch.id
        return None

    async def poll(self, provider_batch_id: str) -> BatchStatus:
        with self._mapped("batches.retrieve"):
            try:
                answer = await self._client.batches.retrieve(provider_batch_id)
            except openai.NotFoundError:
                return BatchStatus(provider_batch_id, "gone", "not_found", error="batch not found")
        return self._seen(answer_as(answer, Batch, "openai batches.retrieve"))

    async def list_batches(self) -> AsyncIterator[list[BatchStatus]]:
        """Pages of ``LIST_PAGE`` batches, newest first; the next page is asked for with
        ``after`` = the last id of this one, while ``has_more``."""
        after: str | None = None
        while True:
            with self._mapped("batches.list"), listing("openai batches.list"):
                if after is None:
                    page = await self._client.batches.list(limit=LIST_PAGE)
                else:
                    page = await self._client.batches.list(limit=LIST_PAGE, after=after)
                batches = [answer_as(b, Batch, "openai batches.list") for b in page.data]
                more = bool(page.has_more)
            yield [self._seen(batch) for batch in batches]
            if not more or not batches:
                return
            after = batches[-1].id

    def _seen(self, batch: Batch) -> BatchStatus:
        """The batch's status; an ended batch is remembered, so that collecting its results and
        deleting its files need not retrieve it again (its files do not change once ended)."""
        status = _status(batch)
        if status.state == "ended":
            self._ended[batch.id] = batch
            self._ended.move_to_end(batch.id)
            while len(self._ended) > ENDED_KEPT:
                self._ended.popitem(last=False)
        return status

    async def _ended_batch(self, provider_batch_id: str) -> Batch:
        """The batch as remembered when it ended, else retrieved (errors: the caller maps)."""
        known = self._ended.get(provider_batch_id)
        if known is not None:
            return known
        answer = await self._client.batches.retrieve(provider_batch_id)
        return answer_as(answer, Batch, "openai batches.retrieve")

    # -- results ---------------------------------------------------------------------------
    async def results(self, provider_batch_id: str) -> AsyncIterator[ItemResult]:
        with self._mapped("batches.retrieve", results=True):
            batch = await self._ended_batch(provider_batch_id)
        if STATES.get(batch.status) == "running":
            raise TransientError(f"openai batch {provider_batch_id} has not ended yet")
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                async for lines in self._file_lines(file_id):
                    for line in lines:
                        yield parse_result_text(line)

    async def _file_lines(self, file_id: str) -> AsyncIterator[list[str]]:
        """The lines of a provider file, streamed (never the whole file in memory), as
        :func:`jsonl_lines` gives them."""
        with self._mapped("files.content", results=True):
            streamed = self._client.files.with_streaming_response.content(file_id)
            async with streamed as response:
                async for lines in jsonl_lines(response.iter_bytes()):
                    yield lines

    # -- cancel / cleanup / close ----------------------------------------------------------
    async def cancel(self, provider_batch_id: str) -> None:
        try:
            with self._mapped("batches.cancel"):
                await self._client.batches.cancel(provider_batch_id)
        except (PermanentError, TransientError):
            # Cancelling a batch that has already ended is refused; that is not a failure.
            if (await self.poll(provider_batch_id)).state == "running":
                raise

    async def cleanup(self, provider_batch_id: str, input_file_id: str | None) -> None:
        file_ids = [input_file_id]
        with self._mapped("batches.retrieve"):
            with contextlib.suppress(openai.NotFoundError):
                batch = await self._ended_batch(provider_batch_id)
                file_ids += [batch.input_file_id, batch.output_file_id, batch.error_file_id]
        self._ended.pop(provider_batch_id, None)
        for file_id in dict.fromkeys(f for f in file_ids if f):
            with self._mapped("files.delete"), contextlib.suppress(openai.NotFoundError):
                await self._client.files.delete(file_id)

    async def close(self) -> None:
        await self._client.close()

    async def _delete_quietly(self, file_id: str) -> None:
        with contextlib.suppress(AdapterError), self._mapped("files.delete"):
            await self._client.files.delete(file_id)

    # -- errors: the one place SDK exceptions become the daemon's taxonomy -----------------
    @contextlib.contextmanager
    def _mapped(
        self, call: str, *, mutating: bool = False, results: bool = False
    ) -> Iterator[None]:
        """Map SDK exceptions; messages never carry the key, and no SDK object is chained."""
        what = f"openai {call}"
        try:
            yield
        except openai.APIStatusError as exc:
            message = redact(text(obj(exc.body).get("message")) or exc.message, self._key)
            retry_after = retry_after_s(exc.response.headers)
            raise status_error(what, exc.status_code, retry_after, message, results) from None
        except (openai.APIConnectionError, httpx2.TransportError) as exc:
            raise transport_error(
                what,
                exc,
                mutating=mutating,
                wrapper=openai.APIConnectionError,
                timeout=openai.APITimeoutError,
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError):  # an answer or a line, not JSON
            raise unreadable(what, "not JSON", mutating=mutating) from None


# -- pure helpers ----------------------------------------------------------------------------


def _status(batch: Batch) -> BatchStatus:
    counts = batch.request_counts
    error = None
    if batch.status == "failed":
        errors = batch.errors.data if batch.errors and batch.errors.data else []
        error = "; ".join(f"{e.code}: {e.message}" for e in errors) or "batch failed"
    return BatchStatus(
        provider_batch_id=batch.id,
        state=STATES.get(batch.status, "running"),
        provider_status=batch.status,
        total=counts.total if counts else None,
        done=counts.completed + counts.failed if counts else None,
        failed=counts.failed if counts else None,
        error=error,
        expired=batch.status == "expired",
        cancelled=batch.status == "cancelled",
        created_at=float(batch.created_at),
    )


def _safe_name(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", tag)[:100] or "batch"


def _line(item: BatchItem) -> dict[str, Any]:
    return {"custom_id": item.key, "method": "POST", "url": ENDPOINT, "body": item.body}


_AFTER_KEY: Final = f',"method":"POST","url":"{ENDPOINT}","body":'  # of each input line


def _line_text(item: BatchItem, body_json: str) -> str:
    """:func:`_line` as compact JSON, written around the body's own text."""
    return f'{{"custom_id":{quoted(item.key)}{_AFTER_KEY}{body_json}}}'


def parse_result_text(raw: str) -> ItemResult:
    """``parse_result_line(loads_kept(raw), raw=raw)``, the usual answer read for the fields
    the result takes alone (``result_lines.py``): the same ItemResult, the same errors; a
    line that is not a JSON object names no request (``base.unreadable_line``)."""
    return openai_answer(raw) or read_whole_line(raw, parse_result_line)


def parse_result_line(line: dict[str, Any], raw: str | None = None) -> ItemResult:
    """One output- or error-file line as an ItemResult (``raw``: the line's text).

    A line with a non-2xx ``response.status_code`` is a failure even when its top-level
    ``error`` is null (docs/provider-notes.md, "OpenAI").
    """
    key = str(line.get("custom_id"))
    top_error = line.get("error")
    response = line.get("response")
    if isinstance(top_error, dict):
        code = str(top_error.get("code") or "error")
        return ItemResult(
            key,
            ITEM_CODES.get(code, "failed"),
            error=ItemError(code, str(top_error.get("message") or ""), code),
            response=line,
            raw=raw,
        )
    if not isinstance(response, dict):
        error = ItemError("malformed_result", "result line has neither response nor error")
        return ItemResult(key, "failed", error=error, response=line, raw=raw)
    status = int(response.get("status_code") or 0)
    body = obj(response.get("body"))
    if 200 <= status < 300:
        return _succeeded(key, body, line, raw)
    err = obj(body.get("error"))
    outcome: ItemOutcome = "retry" if is_retryable_status(status) else "failed"
    error = ItemError(
        str(err.get("type") or f"http_{status}"),
        str(err.get("message") or ""),
        err.get("code") or status,
    )
    return ItemResult(key, outcome, error=error, response=line, raw=raw)


def _succeeded(
    key: str, body: dict[str, Any], line: dict[str, Any], raw: str | None
) -> ItemResult:
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    usage = body.get("usage") or {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return ItemResult(
        key,
        "succeeded",
        text=message.get("content"),
        finish_reason=choice.get("finish_reason"),
        usage=Usage(
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            cached_input_tokens=int(cached),
        ),
        response=line,
        raw=raw,
    )
