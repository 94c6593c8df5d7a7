"""The usual answer's fast path (``outcomes.answered``, ``Store.record_results``' ``answered``)
stores what the general path (``outcomes.item_update``) stores for the same item: the same
result text byte for byte, the same answer, status, attempts, error and next attempt time, for
every provider and every kind of item (hypothesis, real SQLite files)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any, get_args

from hypothesis import event, given, settings
from hypothesis import strategies as st

from adapters import anthropic_batch, gemini_batch, openai_batch
from adapters.base import (
    ItemError,
    ItemOutcome,
    ItemResult,
    ReadResult,
    Usage,
    unreadable_line,
)
from adapters.jsontext import compact
from daemon.outcomes import Answered, OutcomePolicy, RequestUpdate, answered, item_update
from daemon.states import RequestStatus
from daemon.store import Store
from daemon.store.base import answer_text

POLICIES = [OutcomePolicy(3, False), OutcomePolicy(3, True), OutcomePolicy(1, False)]
# Any text, lone surrogates too (msgspec refuses them: the dict's encoder writes them).
TEXTS = (
    st.none()
    | st.text(max_size=30)
    | st.lists(st.text(max_size=5) | st.text(st.characters(categories=["Cs"]), min_size=1))
    .map("".join)
)
# Counts as a reader gives them: up to 64 bits, Anthropic's and Gemini's sums beyond that.
COUNTS = st.integers(0, 2**63 - 1) | st.integers(0, 3 * (2**63 - 1)) | st.integers(0, 300)


def retry_at(attempt: int) -> float:
    return 1000.5 + attempt


# Any value a whole-line parse may put in an ItemResult's text (floats, lists, huge integers).
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXTS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@st.composite
def read_results(draw: st.DrawFn) -> ReadResult:
    """A succeeded item as a field reader makes it."""
    usage = Usage(draw(COUNTS), draw(COUNTS), draw(COUNTS), draw(COUNTS))
    raw = json.dumps(draw(JSON_VALUES), ensure_ascii=draw(st.booleans()))  # the line's text
    return ReadResult("r1", "succeeded", draw(TEXTS), draw(TEXTS), usage, None, None, raw)


@st.composite
def other_items(draw: st.DrawFn) -> ItemResult:
    """Any item of the general path: every outcome, with or without error, answer, raw."""
    outcome: ItemOutcome = draw(st.sampled_from(get_args(ItemOutcome)))
    codes = st.none() | st.integers(0, 600) | st.text(max_size=4)
    error = draw(st.none() | st.builds(ItemError, st.text(max_size=8), st.text(max_size=8), codes))
    response = draw(st.none() | st.dictionaries(st.text(max_size=4), JSON_VALUES, max_size=2))
    raw = draw(st.none() | st.text(min_size=2, max_size=30))
    usage = Usage(draw(COUNTS), draw(COUNTS), draw(COUNTS), draw(COUNTS))
    text: Any = draw(JSON_VALUES)  # what a whole-line parse reads: any JSON value
    return ItemResult("r1", outcome, text, draw(TEXTS), usage, error, response, raw)


def _general(rid: int, item: ItemResult) -> RequestUpdate:
    return item_update(rid, 0, item, POLICIES[0], retry_at)


def _as_general(done: Answered, item: ItemResult) -> None:
    """``done`` is what the general path stores for ``item``."""
    rid, result, raw = done
    update = _general(rid, item)
    assert update["status"] == RequestStatus.SUCCEEDED and update["attempts_inc"] == 1
    assert update["error"] is None and "next_attempt_at" not in update
    assert update["result"] is not None and result == compact(update["result"])
    assert answer_text(update["answer"]) == raw


@settings(max_examples=400, deadline=None)
@given(item=read_results(), rid=st.integers(1, 2**40))
def test_the_fast_result_text_is_the_general_one_byte_for_byte(item: ReadResult, rid: int) -> None:
    done = answered(rid, item)
    assert done is not None and done[0] == rid
    _as_general(done, item)


@settings(max_examples=200, deadline=None)
@given(item=other_items())
def test_any_other_item_takes_the_general_path(item: ItemResult) -> None:
    assert answered(7, item) is None
    assert answered(7, unreadable_line("x")) is None


def _line(provider: str, text: str | None, reason: str | None, counts: list[int]) -> str:
    a, b, c, d = counts
    if provider == "openai":
        body = {"choices": [{"message": {"content": text}, "finish_reason": reason}],
                "usage": {"prompt_tokens": a, "completion_tokens": b,
                          "prompt_tokens_details": {"cached_tokens": c}}}  # fmt: skip
        line = {"custom_id": "r1", "response": {"status_code": 200, "body": body}, "error": None}
    elif provider == "anthropic":
        message = {"content": [{"type": "text", "text": text or ""}], "stop_reason": reason,
                   "usage": {"input_tokens": a, "output_tokens": b, "cache_read_input_tokens": c,
                             "cache_creation_input_tokens": d}}  # fmt: skip
        line = {"custom_id": "r1", "result": {"type": "succeeded", "message": message}}
    else:
        candidate = {"content": {"parts": [{"text": text or ""}]}, "finishReason": reason}
        usage = {"promptTokenCount": a, "candidatesTokenCount": b, "thoughtsTokenCount": c,
                 "cachedContentTokenCount": d}  # fmt: skip
        line = {"key": "r1", "response": {"candidates": [candidate], "usageMetadata": usage}}
    return json.dumps(line, ensure_ascii=False)


PARSERS = {
    "openai": openai_batch.parse_result_text,
    "anthropic": anthropic_batch.parse_result_text,
    "gemini": gemini_batch.parse_result_text,
}


@settings(max_examples=300, deadline=None)
@given(
    provider=st.sampled_from(sorted(PARSERS)),
    text=st.none() | st.text(max_size=30),
    reason=st.none() | st.text(max_size=8),
    counts=st.lists(st.integers(0, 2**63 - 1) | st.integers(0, 500), min_size=4, max_size=4),
)
def test_a_read_answer_line_stores_as_the_general_path_stores_it(
    provider: str, text: str | None, reason: str | None, counts: list[int]
) -> None:
    item = PARSERS[provider](_line(provider, text, reason, counts))
    done = answered(3, item)
    assert done is not None  # the usual line: read by its provider's field reader
    _as_general(done, item)


# -- the rows stored, fast path against general path, on real SQLite files ------------------


def _request(line: int) -> dict[str, Any]:
    return {"line": line, "custom_id": f"c{line}", "model": "gpt-4o-mini", "provider": "openai",
            "body": {"model": "gpt-4o-mini", "messages": []}, "size_bytes": 60,
            "status": RequestStatus.PENDING, "metadata": None}  # fmt: skip


async def _store(
    path: Path, items: list[ItemResult], policy: OutcomePolicy, fast: bool, first: list[int]
) -> Any:
    """The requests' rows and answers after one batch's results are stored, by the fast path
    where it applies (as ``results.store_results`` does) or all by ``item_update``: first the
    results at the positions ``first`` (a collection cut short), then every one (run again:
    those stored already keep what they have), then every one again (changes nothing)."""
    store = await Store(path).open()
    try:
        fid = await store.claim_file("a.jsonl", "/in/a.jsonl", "/w/a.jsonl", 10)
        await store.add_requests(fid, [_request(i) for i in range(1, len(items) + 1)])
        claimed = await store.claim_batch_items(
            "openai", "gpt-4o-mini", "t1", "acct", max_items=len(items), max_bytes=10**6,
            now=1e12,
        )  # fmt: skip
        assert claimed is not None
        batch_id, rows = claimed
        await store.mark_submitted(batch_id, "batch_X", "file_1", poll_interval_s=1, now=1e12)
        for n, chosen in enumerate((first, range(len(items)), range(len(items)))):
            updates: list[RequestUpdate] = []
            answers: list[Answered] = []
            for at in chosen:
                rid, item = rows.ids[at], items[at]
                if n and (at in first or n == 2):  # stored already: another answer, not kept
                    item = _other(item)
                done = answered(rid, item) if fast else None
                if done is not None:
                    answers.append(done)
                else:
                    updates.append(item_update(rid, 1, item, policy, retry_at))
            await store.record_results(batch_id, updates, answers)
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        requests = db.execute(
            "SELECT id, status, attempts, next_attempt_at, typeof(next_attempt_at), result,"
            " error, batch_id, batch_ids FROM requests ORDER BY id"
        ).fetchall()
        stored = db.execute("SELECT request_id, answer FROM answers ORDER BY 1").fetchall()
    return requests, stored


def _other(item: ItemResult) -> ItemResult:
    """The same item with another answer (text and line)."""
    raw = None if item.raw is None else item.raw + " "
    other = ReadResult if type(item) is ReadResult else ItemResult
    return other(item.key, item.outcome, "other", item.finish_reason, item.usage, item.error,
                 None, raw)  # fmt: skip


ITEMS = st.lists(read_results() | read_results() | other_items(), min_size=1, max_size=8)


@settings(max_examples=40, deadline=None)
@given(items=ITEMS, policy=st.sampled_from(POLICIES), first=st.sets(st.integers(0, 7)))
def test_the_rows_stored_are_the_general_paths(
    items: list[ItemResult], policy: Any, first: set[int]
) -> None:
    # a text the database cannot hold (a lone surrogate) fails both paths alike: left out
    items = [i for i in items if _storable(i)]
    event(f"fast items: {min(sum(type(i) is ReadResult for i in items), 2)}")
    if not items:
        return
    cut = sorted(at for at in first if at < len(items))
    with tempfile.TemporaryDirectory(prefix="res-fast-") as tmp:
        fast = asyncio.run(_store(Path(tmp) / "fast.sqlite3", items, policy, True, cut))
        general = asyncio.run(_store(Path(tmp) / "general.sqlite3", items, policy, False, cut))
    assert fast == general


def _storable(item: ItemResult) -> bool:
    try:
        for value in (item.text, item.finish_reason):
            compact(value).encode("utf-8")
        if item.raw is not None:
            item.raw.encode("utf-8")
        else:
            compact(item.response).encode("utf-8")
        if item.error is not None:
            compact([item.error.type, item.error.message, item.error.code]).encode("utf-8")
    except (UnicodeEncodeError, TypeError, ValueError):
        return False
    return True
