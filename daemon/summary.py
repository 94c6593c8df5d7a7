"""The summary of one input file's results (``{stem}.summary.json``), built as its result
lines stream past the writer (:mod:`daemon.outbox`), so they are read only once: counts by
status, token totals, costs at batch and live price, what prompt caching saved, the batches
and the kinds of error. Also the two lists a results line and its summary share: the
statuses a request ends with, and the token fields of ``usage``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from daemon.cost import CostTotals
from daemon.states import RequestStatus

STATUSES = (
    RequestStatus.SUCCEEDED,
    RequestStatus.FAILED,
    RequestStatus.EXPIRED,
    RequestStatus.CANCELED,
    RequestStatus.INVALID,
)
TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_creation_input_tokens",
)


def _iso(value: datetime | float | str | None) -> str | None:
    """ISO 8601 in UTC with a "Z"; accepts a datetime (naive = UTC) or unix seconds."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SummaryBuilder:
    """Accumulates a summary while result lines stream past, so they are read only once."""

    def __init__(self) -> None:
        self.lines = 0
        # plain dicts: a Counter's item update costs several times a dict's (once per line)
        self.counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        self.tokens: dict[str, int] = dict.fromkeys(TOKEN_FIELDS, 0)
        self.costs = CostTotals()
        self.cache_savings = 0.0
        self.cache_unpriced = 0
        self._errors: dict[str, dict[str, Any]] = {}

    def add(
        self,
        result: Mapping[str, Any],
        cost_live: float | None = None,
        cache_savings: float | None = None,
    ) -> None:
        """Count one result line (as built by :func:`daemon.outbox.result_line`);
        ``cost_live`` is what its tokens would have cost without batching (the line itself
        shows only the batch cost), ``cache_savings`` what prompt caching saved on it
        (:func:`daemon.cost.cache_savings`)."""
        self.add_all(((result, cost_live, cache_savings),))

    def add_all(self, lines: Iterable[Sequence[Any]]) -> None:
        """:meth:`add` for each of ``lines``, given as ``(result, cost_live, cache_savings,
        ...)`` (a :class:`daemon.outbox.ResultLine`), in order: every sum is added to in the
        same order, one line at a time, here in local variables."""
        counts, tokens, costs = self.counts, self.tokens, self.costs
        total_in_sum, output_sum = tokens["input_tokens"], tokens["output_tokens"]
        read_sum, written_sum = tokens["cached_input_tokens"], tokens["cache_creation_input_tokens"]
        batch_sum, live_sum, unpriced = costs.batch, costs.live, costs.unpriced
        saved_sum, cache_unpriced, n = self.cache_savings, self.cache_unpriced, 0
        try:
            for result, cost_live, cache_savings, *_ in lines:
                n += 1
                status = result["status"]
                counts[status] = counts.get(status, 0) + 1
                usage = result["usage"]
                total_in, output = usage["input_tokens"], usage["output_tokens"]
                read, written = usage["cached_input_tokens"], usage["cache_creation_input_tokens"]
                total_in_sum += total_in
                output_sum += output
                read_sum += read
                written_sum += written
                batch = result.get("cost_usd")
                if batch is not None and cost_live is not None:
                    batch_sum += batch
                    live_sum += cost_live
                elif total_in or output:
                    unpriced += 1
                if cache_savings is None:
                    if read or written:
                        cache_unpriced += 1
                elif cache_savings:  # (a float total: adding 0.0 would change nothing)
                    saved_sum += cache_savings
                error = result.get("error")
                if error:
                    self._add_error(error, result.get("line"))
        finally:  # (what was counted stays counted, as one add at a time would leave it)
            self.lines += n
            tokens["input_tokens"], tokens["output_tokens"] = total_in_sum, output_sum
            tokens["cached_input_tokens"] = read_sum
            tokens["cache_creation_input_tokens"] = written_sum
            costs.batch, costs.live, costs.unpriced = batch_sum, live_sum, unpriced
            self.cache_savings, self.cache_unpriced = saved_sum, cache_unpriced

    def _add_error(self, error: Mapping[str, Any], line: int | None) -> None:
        kind = str(error.get("type") or "unknown")
        entry = self._errors.get(kind)
        if entry is None:
            entry = {"type": kind, "count": 0, "example": error.get("message")}
            entry |= {"first_line": line, "last_line": line}
            self._errors[kind] = entry
        entry["count"] += 1
        entry["last_line"] = line

    def build(
        self,
        *,
        file: str,
        job_id: int | str,
        started_at: datetime | float | str | None,
        ended_at: datetime | float | str | None,
        batches: Iterable[Mapping[str, Any]] = (),
        error: str | None = None,
    ) -> dict[str, Any]:
        """The summary JSON object. Every status appears in ``counts``, zero or not.

        ``error`` says why the file as a whole could not be read (then it has no lines)."""
        errors = sorted(self._errors.values(), key=lambda e: (-e["count"], e["type"]))
        return {
            "file": file,
            "job_id": job_id,
            "started_at": _iso(started_at),
            "ended_at": _iso(ended_at),
            "lines": self.lines,
            "counts": {status: self.counts.get(status, 0) for status in STATUSES},
            "tokens": {key: self.tokens[key] for key in TOKEN_FIELDS},
            **self.costs.as_dict(),
            "prompt_cache": self._prompt_cache(),
            "batches": [_batch(b) for b in batches],
            "errors": [dict(e) for e in errors],
            "file_error": error,
        }

    def _prompt_cache(self) -> dict[str, Any]:
        """Whether prompt caching paid off for this file: the net saving of cache reads over
        cache-write surcharges (null when nothing was cached or a price is missing)."""
        written = self.tokens["cache_creation_input_tokens"]
        read = self.tokens["cached_input_tokens"]
        known = (written or read) and not self.cache_unpriced
        net = round(self.cache_savings, 8) if known else None
        return {
            "tokens_written": written,
            "tokens_read": read,
            "net_savings_usd": net,
            "paid_off": None if net is None else net > 0,
        }


def _batch(batch: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "provider": batch.get("provider"),
        "model": batch.get("model"),
        "id": batch.get("id"),
        "status": batch.get("status"),
        "counts": dict(batch.get("counts") or {}),
    }
