"""Gemini Developer API batch adapter: inline requests for small batches, a JSONL file above.

Wire facts (docs/provider-notes.md, "Gemini"): batches are long-running operations named
``batches/<id>``; inputs are either inline ``{"request", "metadata": {"key"}}`` entries or an
uploaded JSONL file of ``{"key", "request"}`` lines; results are inline responses on the batch
or a generated responses file, in input order, one ``response`` or ``error`` each.

The SDK is used for the calls it does faithfully (upload, create, list, cancel, delete). Reads
of the batch and of the responses file go through plain HTTP: the SDK's BatchJob drops the
batch statistics and the failure reason for this API, and its download loads the whole file
into memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Collection, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

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
    ResultsGone,
    Submitted,
    TransientError,
    UnknownOutcome,
    Usage,
    read_whole_line,
)
from .facts import GEMINI_DEFAULT_API_VERSION, GEMINI_INLINE_HARD_MAX_BYTES, root_url
from .gemini_errors import HTTPStatus, Unreadable, raise_for_status, retry_delay_s
from .http_errors import listing, redact, retry_after_s, status_error, transport_error, unreadable
from .jsontext import jsonl_lines
from .result_lines import gemini_answer
from .spool import quoted, write_spool
from .wire import obj, parse_body, text

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
DEFAULT_INLINE_MAX_BYTES = 10_000_000
INLINE_HARD_MAX_BYTES = GEMINI_INLINE_HARD_MAX_BYTES  # the API refuses inline creates above this
# Headroom under the hard limit for what another SDK release might add to the create body.
INLINE_MARGIN_BYTES = 200_000
FIND_SLACK_S = 300.0
# Batches per list call when polling: an ended batch of inline requests carries its answers in
# the listing, so pages are kept short.
LIST_PAGE = 20
MAX_FIND_SCAN = 5_000  # the list's order is not documented, so find() scans this many at most
RETRY_ITEM_CODES = {429, 500, 503, 504, 4, 8, 13, 14}  # HTTP codes, or their gRPC equivalents
RETRY_ITEM_STATUSES = {"RESOURCE_EXHAUSTED", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED"}
STATES: dict[str, BatchState] = {
    "PENDING": "running",
    "RUNNING": "running",
    "SUCCEEDED": "ended",
    "CANCELLED": "ended",
    "FAILED": "failed",
    "EXPIRED": "failed",  # an expired Gemini batch keeps no results at all: nothing to collect
}


class GeminiAdapter:
    name: ProviderName = "gemini"

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str,
        timeout_s: float,
        spool_dir: Path,
        limits: ProviderLimits,
        api_version: str = GEMINI_DEFAULT_API_VERSION,
        inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES,
    ) -> None:
        if not 0 <= inline_max_bytes < INLINE_HARD_MAX_BYTES:
            raise ValueError(f"gemini inline_max_bytes must be below {INLINE_HARD_MAX_BYTES}")
        self.limits = limits
        self._key = api_key
        self._spool_dir = spool_dir
        self._inline_max_bytes = inline_max_bytes
        root = root_url(base_url or DEFAULT_BASE_URL)
        self._base = f"{root}/{api_version}/"
        # Our own httpx2 client: with aiohttp installed the SDK would otherwise talk through
        # aiohttp and silently retry a failed connection once, after sleeping 1-10 s. Every
        # error answer is read by our hook, before the SDK (see adapters/gemini_errors.py).
        self._http = httpx2.AsyncClient(
            timeout=timeout_s, event_hooks={"response": [raise_for_status]}
        )
        options = genai_types.HttpOptions(
            base_url=root,
            api_version=api_version,
            timeout=int(timeout_s * 1000),
            httpx_async_client=self._http,
        )
        # Retries stay off (no retry_options): the daemon owns retries.
        self._sdk = genai.Client(api_key=api_key, vertexai=False, http_options=options)
        self._client = self._sdk.aio

    # -- submit ----------------------------------------------------------------------------
    async def submit(self, tag: str, model: str, items: Iterable[BatchItem]) -> Submitted:
        path, size = await asyncio.to_thread(
            write_spool, self._spool_dir, "gemini", items, self.limits, _line, _line_text
        )
        try:
            if size <= self._inline_max_bytes:  # the wire size is never below the file's
                requests = await asyncio.to_thread(_inline_requests, path)
                wire = await asyncio.to_thread(inline_wire_bytes, tag, requests)
                if fits_inline(wire, self._inline_max_bytes):
                    path.unlink()
                    return Submitted(await self._create(tag, model, inline=requests))
            with self._mapped("files.upload"):
                upload = await self._client.files.upload(
                    file=str(path), config={"mime_type": "jsonl", "display_name": tag}
                )
        finally:
            path.unlink(missing_ok=True)
        if not upload.name:
            raise TransientError("gemini files.upload: the answer named no file")
        try:
            return Submitted(await self._create(tag, model, file_name=upload.name), upload.name)
        except UnknownOutcome:
            raise  # the batch may exist and needs its input file: keep it
        except AdapterError:
            await self._delete_quietly(upload.name)
            raise

    async def _create(
        self,
        tag: str,
        model: str,
        *,
        inline: list[dict[str, Any]] | None = None,
        file_name: str | None = None,
    ) -> str:
        """Create the batch; inline requests go on the wire exactly as the daemon built them.

        The SDK's own inline shape is its snake_case ``config``, which it re-maps field by
        field (and drops what it does not know). So the SDK is given an empty inline list and
        the REST-shaped requests through ``http_options.extra_body``, which it merges into the
        request body verbatim (lists are replaced, not re-mapped).
        """
        config: genai_types.CreateBatchJobConfigDict = {"display_name": tag}
        if inline is not None:
            body = {"batch": {"inputConfig": {"requests": {"requests": inline}}}}
            config["http_options"] = {"extra_body": body}
        src: Any = [] if inline is not None else file_name
        with self._mapped("batches.create", mutating=True):
            job = await self._client.batches.create(model=model, src=src, config=config)
        if not job.name:
            raise UnknownOutcome("gemini batches.create: the answer named no batch")
        return job.name

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
        with self._mapped("batches.list"), listing("gemini batches.list"):
            pager = await self._client.batches.list(config={"page_size": 100})
            scanned = 0
            async for job in pager:
                scanned += 1
                if scanned > MAX_FIND_SCAN:
                    break
                created = job.create_time.timestamp() if job.create_time else since
                if created < since - FIND_SLACK_S or job.name in exclude:
                    continue
                if job.display_name == tag:
                    return job.name
        return None

    async def poll(self, provider_batch_id: str) -> BatchStatus:
        op = await self._get_batch(provider_batch_id, results=False)
        if op is None:
            return BatchStatus(provider_batch_id, "gone", "not_found", error="batch not found")
        return _status(op, provider_batch_id)

    async def list_batches(self) -> AsyncIterator[list[BatchStatus]]:
        """Pages of ``LIST_PAGE`` operations (plain HTTP, as for :meth:`poll`: the SDK's jobs
        drop the statistics); the next page is asked for with ``pageToken`` =
        ``nextPageToken``, while there is one."""
        token = ""
        while True:
            params = {"pageSize": str(LIST_PAGE)}
            if token:
                params["pageToken"] = token
            with self._mapped("batches.list"):
                response = await self._http.get(
                    self._base + "batches", params=params, headers=self._auth()
                )
                answer = parse_body(response.content)
            if not isinstance(answer, dict):
                raise TransientError("gemini batches.list: the answer is not a JSON object")
            ops = [op for op in answer.get("operations") or [] if isinstance(op, dict)]
            yield [_status(op, str(op.get("name") or "")) for op in ops]
            token = str(answer.get("nextPageToken") or "")
            if not token or not ops:
                return

    # -- results ---------------------------------------------------------------------------
    async def results(self, provider_batch_id: str) -> AsyncIterator[ItemResult]:
        op = await self._get_batch(provider_batch_id, results=True)
        if op is None:
            raise ResultsGone(f"gemini batch {provider_batch_id} not found")
        meta = op.get("metadata") or {}
        if STATES.get(_bare_state(str(meta.get("state")))) == "running":
            raise TransientError(f"gemini batch {provider_batch_id} has not ended yet")
        output = meta.get("output") or op.get("response") or {}
        if output.get("responsesFile"):
            async for lines in self._download_lines(str(output["responsesFile"])):
                for line in lines:
                    yield parse_result_text(line)
            return
        inlined = (output.get("inlinedResponses") or {}).get("inlinedResponses") or []
        for index, entry in enumerate(inlined):
            yield parse_result(entry, fallback_key=str(index))

    async def _get_batch(self, name: str, *, results: bool) -> dict[str, Any] | None:
        with self._mapped("batches.get", results=results):
            try:
                response = await self._http.get(self._base + name, headers=self._auth())
            except HTTPStatus as exc:
                if exc.code == 404:
                    return None
                raise
            answer = parse_body(response.content)
            if not isinstance(answer, dict):
                raise TransientError("gemini batches.get: the answer is not a JSON object")
            return answer

    async def _download_lines(self, file_name: str) -> AsyncIterator[list[str]]:
        """Stream the responses file, as :func:`jsonl_lines` gives its lines (the SDK's
        download reads it whole)."""
        with self._mapped("files.download", results=True):
            url = f"{self._base}{file_name}:download"
            request = self._http.stream("GET", url, params={"alt": "media"}, headers=self._auth())
            async with request as response:  # an error status raised in the hook
                async for lines in jsonl_lines(response.aiter_bytes()):
                    yield lines

    def _auth(self) -> dict[str, str]:
        return {"x-goog-api-key": self._key}

    # -- cancel / cleanup / close ----------------------------------------------------------
    async def cancel(self, provider_batch_id: str) -> None:
        try:
            with self._mapped("batches.cancel"):
                await self._client.batches.cancel(name=provider_batch_id)
        except (PermanentError, TransientError):
            # Cancelling a batch that has already ended is refused; that is not a failure.
            if (await self.poll(provider_batch_id)).state == "running":
                raise

    async def cleanup(self, provider_batch_id: str, input_file_id: str | None) -> None:
        names = [input_file_id]
        op = await self._get_batch(provider_batch_id, results=False)
        if op is not None:
            output = (op.get("metadata") or {}).get("output") or op.get("response") or {}
            names.append(output.get("responsesFile"))
        for name in dict.fromkeys(n for n in names if n):
            with contextlib.suppress(PermanentError), self._mapped("files.delete"):
                await self._client.files.delete(name=name)  # gone already: PermanentError

    async def close(self) -> None:
        await self._client.aclose()
        self._sdk.close()
        await self._http.aclose()  # ours: the SDK leaves a client it was given open

    async def _delete_quietly(self, name: str) -> None:
        with contextlib.suppress(AdapterError), self._mapped("files.delete"):
            await self._client.files.delete(name=name)

    # -- errors: the one place SDK and HTTP failures become the daemon's taxonomy ----------
    @contextlib.contextmanager
    def _mapped(
        self, call: str, *, mutating: bool = False, results: bool = False
    ) -> Iterator[None]:
        """Map SDK/HTTP exceptions; messages never carry the key, no SDK object is chained."""
        what = f"gemini {call}"
        try:
            yield
        except (genai_errors.APIError, HTTPStatus) as exc:
            headers = getattr(exc.response, "headers", None)
            retry_after = retry_after_s(headers) or retry_delay_s(exc.details)
            message = redact(text(exc.message) or text(exc.status) or "", self._key)
            # Gemini answers 403 PERMISSION_DENIED for a file that does not exist (any more).
            status = 404 if exc.code == 403 and call.startswith("files.") else exc.code
            raise status_error(what, status, retry_after, message, results) from None
        except httpx2.TransportError as exc:
            raise transport_error(what, exc, mutating=mutating) from None
        except Unreadable as exc:
            raise unreadable(what, str(exc), mutating=mutating) from None
        except (json.JSONDecodeError, UnicodeDecodeError):  # an answer or a line, not JSON
            raise unreadable(what, "not JSON", mutating=mutating) from None


# -- pure helpers ----------------------------------------------------------------------------


def _line(item: BatchItem) -> dict[str, Any]:
    return {"key": item.key, "request": item.body}


def _line_text(item: BatchItem, body_json: str) -> str:
    """:func:`_line` as compact JSON, written around the body's own text."""
    return f'{{"key":{quoted(item.key)},"request":{body_json}}}'


def inline_wire_bytes(tag: str, requests: list[dict[str, Any]]) -> int:
    """The size of the inline create body as the SDK sends it: ``json.dumps`` with its
    defaults, so every non-ASCII character is a 6-byte ``\\uXXXX`` escape (12 bytes outside
    the Basic Multilingual Plane, e.g. emoji) and separators are ``", "`` and ``": "``. CJK
    text is about twice its UTF-8 size on the wire, emoji three times."""
    body = {"batch": {"inputConfig": {"requests": {"requests": requests}}, "displayName": tag}}
    return len(json.dumps(body))


def fits_inline(wire_bytes: int, inline_max_bytes: int) -> bool:
    """Inline when the body on the wire is within the configured threshold and, with a
    margin, under the API's 20 MB inline limit; otherwise the batch goes as a file."""
    return wire_bytes <= min(inline_max_bytes, INLINE_HARD_MAX_BYTES - INLINE_MARGIN_BYTES)


def _inline_requests(path: Path) -> list[dict[str, Any]]:
    """The spooled lines as inline entries (small by construction: below inline_max_bytes)."""
    with path.open("rb") as fh:
        lines = (json.loads(raw) for raw in fh if raw.strip())
        return [{"request": ln["request"], "metadata": {"key": ln["key"]}} for ln in lines]


def _status(op: dict[str, Any], provider_batch_id: str) -> BatchStatus:
    """A batch operation (as batches.get and batches.list show it) as a BatchStatus."""
    meta = op.get("metadata") or {}
    word = str(meta.get("state") or "BATCH_STATE_UNSPECIFIED")
    state = STATES.get(_bare_state(word), "running")
    stats = meta.get("batchStats") or {}
    # proto3 JSON leaves out zero counters: absent means 0 once the stats are there.
    total = _int(stats.get("requestCount"))
    ok = _int(stats.get("successfulRequestCount")) or 0
    bad = _int(stats.get("failedRequestCount")) or 0
    error = None
    if state == "failed":
        error = str((op.get("error") or {}).get("message") or _bare_state(word).lower())
    return BatchStatus(
        provider_batch_id=provider_batch_id,
        state=state,
        provider_status=word,
        total=total,
        done=None if total is None else ok + bad,
        failed=None if total is None else bad,
        error=error,
        expired=_bare_state(word) == "EXPIRED",
        cancelled=_bare_state(word) == "CANCELLED",
        created_at=_timestamp(meta.get("createTime")),
    )


def _timestamp(value: Any) -> float | None:
    """An RFC 3339 time (``2026-12-01T10:00:00.123456Z``) as unix time; None if unreadable."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _bare_state(word: str) -> str:
    return word.removeprefix("BATCH_STATE_").removeprefix("JOB_STATE_")


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def parse_result_text(raw: str) -> ItemResult:
    """One responses-file line: the usual answer read for the fields the result takes alone
    (``result_lines.py``), else the whole line; a line that is not a JSON object names no
    request (``base.unreadable_line``)."""
    return gemini_answer(raw) or read_whole_line(raw, parse_result)


def parse_result(
    entry: dict[str, Any], fallback_key: str = "", raw: str | None = None
) -> ItemResult:
    """One responses-file line (``raw``: its text) or inline response (a ``response`` or an
    ``error``) as an ItemResult (docs/provider-notes.md, "Gemini")."""
    key = str(entry.get("key") or (entry.get("metadata") or {}).get("key") or fallback_key)
    error = entry.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        status = str(error.get("status") or "")
        retry = code in RETRY_ITEM_CODES or status in RETRY_ITEM_STATUSES
        outcome: ItemOutcome = "retry" if retry else "failed"
        item_error = ItemError(status or f"code_{code}", str(error.get("message") or ""), code)
        return ItemResult(key, outcome, error=item_error, response=entry, raw=raw)
    response = obj(entry.get("response"))
    candidates = response.get("candidates") or []
    if not candidates:
        reason = str((response.get("promptFeedback") or {}).get("blockReason") or "no candidates")
        item_error = ItemError("prompt_blocked", reason, reason)
        return ItemResult(key, "failed", error=item_error, response=entry, raw=raw)
    candidate = obj(candidates[0])
    parts = obj(candidate.get("content")).get("parts") or []
    usage = response.get("usageMetadata") or {}
    output_tokens = _int(usage.get("candidatesTokenCount")) or 0
    return ItemResult(
        key,
        "succeeded",
        text="".join(p.get("text") or "" for p in parts if not p.get("thought")),
        finish_reason=candidate.get("finishReason"),
        usage=Usage(
            input_tokens=_int(usage.get("promptTokenCount")) or 0,
            output_tokens=output_tokens + (_int(usage.get("thoughtsTokenCount")) or 0),
            cached_input_tokens=_int(usage.get("cachedContentTokenCount")) or 0,
        ),
        response=entry,
        raw=raw,
    )
