"""A finished file's results lines, byte for byte: what ``finish`` writes from the store (stored
JSON placed as it is, the usual result priced by its model's plain pricer) is exactly what the
general path writes for the same requests given as plain rows (``outbox.result_line``, priced
by ``cost_of`` and ``cache_savings``): succeeded, failed, retried, invalid, unpriced and Claude
lines with cache writes and reads, and a line orjson cannot write.

A stored result is read by msgspec into the three fields a line takes where it holds what
batchd writes (``finish._result``); whatever it holds, that must give what reading it whole
gives (``finish._result_plain``), types and key order included (hypothesis)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from adapters.jsontext import RawJSON, compact
from daemon import finish, outbox
from daemon.caching import cache_note
from daemon.cost import cache_savings, cost_of
from daemon.outcomes import RequestUpdate
from daemon.registry import default_registry
from daemon.states import RequestStatus
from daemon.store import Store, iter_file_rows

GPT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
CLAUDE = {"model": "claude-sonnet-4-5", "max_tokens": 10, "system": "You are terse.",
          "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
CLAUDE_OWN_CACHE = {**CLAUDE, "system": [
    {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]}
# As a provider may write it: spaces, its own key order, an integer beyond 64 bits.
OPENAI_ANSWER = '{"id": "batch_req_1",  "custom_id": "r1", "response": {"status_code": 200, ' \
    '"body": {"big": 123456789012345678901234567890}}, "error": null}'
CLAUDE_ANSWER = json.dumps({"custom_id": "k", "result": {"type": "succeeded", "message": {
    "usage": {"cache_creation": {"ephemeral_5m_input_tokens": 600,
                                 "ephemeral_1h_input_tokens": 400}}}}})  # fmt: skip
NOW = 1e12


def _request(line: int, model: str, provider: str, body: Any, **more: Any) -> dict[str, Any]:
    return {"line": line, "custom_id": f"c{line}", "model": model, "provider": provider,
            "body": body, "size_bytes": 60, "status": RequestStatus.PENDING, **more}  # fmt: skip


def _usage(i: int, o: int, read: int = 0, written: int = 0) -> dict[str, int]:
    return {"input_tokens": i, "output_tokens": o, "cached_input_tokens": read,
            "cache_creation_input_tokens": written}  # fmt: skip


def _done(rid: int, usage: dict[str, int], answer: str, text: str = "ok") -> RequestUpdate:
    update = RequestUpdate(request_id=rid, status=RequestStatus.SUCCEEDED, attempts_inc=1,
                           result={"text": text, "finish_reason": "stop", "usage": usage},
                           error=None)  # fmt: skip
    update["answer"] = RawJSON(answer)
    return update


def _ended(rid: int, status: RequestStatus, error: dict[str, Any], **more: Any) -> RequestUpdate:
    return RequestUpdate(request_id=rid, status=status, attempts_inc=1, result=None, error=error,
                         **more)  # fmt: skip


async def _batch(store: Store, provider: str, model: str, tag: str, pbid: str) -> list[int]:
    claimed = await store.claim_batch_items(
        provider, model, tag, "acct", max_items=100, max_bytes=10**6, now=NOW
    )
    assert claimed is not None
    batch_id, items = claimed
    await store.mark_submitted(batch_id, pbid, "file_1", poll_interval_s=1, now=NOW)
    return [batch_id, *items.ids]


async def _finished_file(store: Store) -> int:
    fid = await store.claim_file("a.jsonl", "/in/a.jsonl", "/w/a.jsonl", 10)
    invalid = {"type": "invalid_request", "message": "line 4: no messages", "code": None}
    await store.add_requests(fid, [
        _request(1, "gpt-4o-mini", "openai", GPT, metadata={"k": [1, "é"]},
                 adaptations=["max_tokens renamed max_completion_tokens"]),
        _request(2, "gpt-4o-mini", "openai", GPT),  # fails
        _request(3, "gpt-4o-mini", "openai", GPT),  # retried, then succeeds
        {**_request(4, "gpt-4o-mini", "openai", None), "status": RequestStatus.INVALID,
         "error": invalid},
        _request(5, "gpt-4o-mini", "openai", GPT),  # no tokens
        _request(6, "gpt-4o-mini", "openai", GPT),  # an error code orjson cannot write
        _request(7, "claude-sonnet-4-5", "anthropic", CLAUDE),  # cache writes: a note
        _request(8, "claude-sonnet-4-5", "anthropic", CLAUDE_OWN_CACHE),  # reads, no note
        _request(9, "gpt-unpriced-9", "openai", GPT),  # the provider's defaults: no price
    ])  # fmt: skip
    batch_id, *ids = await _batch(store, "openai", "gpt-4o-mini", "t1", "batch_X")
    server = {"type": "server_error", "message": "try again", "code": 500}
    await store.record_results(batch_id, [
        _done(ids[0], _usage(13, 14), OPENAI_ANSWER, text="hello"),
        _ended(ids[1], RequestStatus.FAILED, {"type": "invalid_request_error",
                                              "message": "bad 'x'", "code": "bad"}),
        _ended(ids[2], RequestStatus.PENDING, server, next_attempt_at=NOW - 1),
        _done(ids[3], _usage(0, 0), "{}", text=""),
        _ended(ids[4], RequestStatus.FAILED, {**server, "code": 2**70}),
    ])  # fmt: skip
    batch_id, again = await _batch(store, "openai", "gpt-4o-mini", "t2", "batch_Y")
    await store.record_results(batch_id, [_done(again, _usage(20, 5), OPENAI_ANSWER)])
    batch_id, *ids = await _batch(store, "anthropic", "claude-sonnet-4-5", "t3", "msgbatch_Z")
    await store.record_results(batch_id, [
        _done(ids[0], _usage(3000, 10, written=1000), CLAUDE_ANSWER),
        _done(ids[1], _usage(3000, 10, read=2500), CLAUDE_ANSWER),
    ])  # fmt: skip
    batch_id, unpriced = await _batch(store, "openai", "gpt-unpriced-9", "t4", "batch_W")
    await store.record_results(batch_id, [_done(unpriced, _usage(7, 8), "{}")])
    return fid


def _plain_rows(store: Store, fid: int) -> list[dict[str, Any]]:
    """The file's requests as plain rows for ``outbox.result_line``, from the decoded store."""
    registry, rows = default_registry(), []
    for r in iter_file_rows(store.path, fid):
        result = r["result"] or {}
        usage = {**dict.fromkeys(outbox.TOKEN_FIELDS, 0), **(result.get("usage") or {})}
        info = registry.info(r["model"], r["provider"])
        response = json.loads(r["answer"]) if r["answer"] else None
        cost = cost_of(usage, info, response)
        note = cache_note(r["provider"], r["body"], usage, response)
        rows.append({
            **{key: r[key] for key in ("custom_id", "line", "model", "provider", "status",
                                       "error", "attempts", "batch_ids", "metadata")},
            "text": result.get("text"), "finish_reason": result.get("finish_reason"),
            "usage": usage, "cost_usd": cost.batch_usd, "cost_usd_live": cost.live_usd,
            "cache_savings_usd": cache_savings(usage, info, response),
            "adaptations": [*r["adaptations"], *([note] if note else [])],
            "response": None if r["answer"] is None else RawJSON(r["answer"]),
        })  # fmt: skip
    return rows


def _write(out: Path, fid: int, rows: Any) -> tuple[list[bytes], dict[str, Any]]:
    out.mkdir()
    targets = (out / "a.results.jsonl", out / "a.summary.json")
    meta = {"file": "a.jsonl", "started_at": 1.0, "ended_at": 2.0}
    outbox.write_outputs(out, "a", fid, rows, summary_meta=meta, targets=targets)
    return targets[0].read_bytes().splitlines(), json.loads(targets[1].read_text())


async def test_finished_lines_are_the_result_line_form_byte_for_byte(tmp_path: Path) -> None:
    store = await Store(tmp_path / "b.sqlite3").open()
    fid = await _finished_file(store)
    await store.close()
    lines, summary = _write(tmp_path / "fast", fid, finish._rows(store.path, fid,
                                                                 default_registry()))
    expected, expected_summary = _write(tmp_path / "plain", fid, _plain_rows(store, fid))

    assert len(lines) == 9
    for got, want in zip(lines, expected, strict=True):
        assert got == want
    assert summary == expected_summary
    decoded = [json.loads(line) for line in lines]
    assert [d["status"] for d in decoded] == [
        "succeeded", "failed", "succeeded", "invalid", "succeeded", "failed", "succeeded",
        "succeeded", "succeeded"]  # fmt: skip
    # each kind of line is what it should be, not only the same on both paths
    assert lines[0].startswith(b'{"custom_id":"c1","line":1,"model":"gpt-4o-mini",')
    assert lines[0].endswith(b',"response":' + OPENAI_ANSWER.encode()
                             + b',"metadata":{"k":[1,"\xc3\xa9"]}}')  # fmt: skip
    assert decoded[1]["error"]["code"] == "bad" and decoded[1]["text"] is None
    assert decoded[2]["attempts"] == 2 and decoded[2]["batch_ids"] == ["batch_X", "batch_Y"]
    assert lines[3] == (
        b'{"custom_id":"c4","line":4,"model":"gpt-4o-mini","provider":"openai",'
        b'"status":"invalid","text":null,"finish_reason":null,"usage":{"input_tokens":0,'
        b'"output_tokens":0,"cached_input_tokens":0,"cache_creation_input_tokens":0},'
        b'"cost_usd":0.0,"error":{"type":"invalid_request","message":"line 4: no messages",'
        b'"code":null},"attempts":0,"batch_ids":[],"adaptations":[],"response":null,'
        b'"metadata":null}'
    )
    assert decoded[4]["cost_usd"] == 0.0
    assert decoded[5]["error"]["code"] == 2**70  # written by the standard library instead
    assert decoded[6]["adaptations"][-1].endswith("600 tokens written to the cache (5m TTL), "
                                                  "400 tokens written to the cache (1h TTL)")
    assert decoded[7]["adaptations"] == [] and decoded[7]["cost_usd"] > 0
    assert decoded[8]["cost_usd"] is None and summary["unpriced_requests"] == 1
    assert summary["prompt_cache"]["tokens_read"] == 2500


count = st.sampled_from([0, 13, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 1.0, True]) \
    | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.none()  # fmt: skip
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=5)
stored_usage = (
    st.dictionaries(st.sampled_from([*outbox.TOKEN_FIELDS, "other"]), count, max_size=5)
    | st.none() | st.lists(st.integers(), max_size=1) | any_text
)  # fmt: skip
stored_result = st.fixed_dictionaries(
    {},
    optional={"text": any_text | st.none() | st.integers(), "usage": stored_usage,
              "finish_reason": st.sampled_from(["stop", "length"]) | st.none() | count,
              "error": st.none() | st.dictionaries(any_text, any_text, max_size=2)},
) | st.lists(st.integers(), max_size=1) | st.none()  # fmt: skip


@given(stored_result, st.booleans())
def test_a_stored_result_reads_as_reading_it_whole(result: Any, ascii_only: bool) -> None:
    text = json.dumps(result) if ascii_only else compact(result)
    _same_parts(text)


@given(st.sampled_from([
    '{"usage":{"input_tokens":1,"input_tokens":2},"text":"a","text":"b"}',
    '{"usage":{"output_tokens":1,"input_tokens":2}}', '{"text":"\\ud800"}', '{"usage":{}}',
    '{"a":1e999,"text":"x"}', '{"usage":{"input_tokens":123456789012345678901234567890}}',
]))  # fmt: skip
def test_odd_stored_results_read_as_reading_them_whole(text: str) -> None:
    _same_parts(text)


def _same_parts(text: str) -> None:
    try:
        expected: Any = repr(finish._result_plain(text))
    except Exception as exc:  # (not what batchd writes: the same error, then)
        expected = type(exc)
    try:
        got: Any = repr(finish._result(text))
    except Exception as exc:
        got = type(exc)
    assert got == expected
