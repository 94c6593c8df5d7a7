"""Result lines read for the fields an answer needs (adapters/result_lines.py) give the very
ItemResult (or the very error) the adapters' parsers give for the whole decoded line, and result
files are split into lines at line ends only (adapters/jsontext.jsonl_lines)."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from adapters import anthropic_batch, gemini_batch, openai_batch
from adapters.base import UNREADABLE_KEY, ItemResult
from adapters.jsontext import jsonl_lines, loads_kept
from adapters.result_lines import anthropic_answer, gemini_answer, openai_answer

OPENAI = {
    "id": "batch_req_1",
    "custom_id": "r1",
    "response": {
        "status_code": 200,
        "request_id": "req_1",
        "body": {
            "id": "chatcmpl-1",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hi \u2028 there é"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 13,
                "completion_tokens": 14,
                "prompt_tokens_details": {"cached_tokens": 5, "audio_tokens": 0},
            },
        },
    },
    "error": None,
}
ANTHROPIC = {
    "custom_id": "r2",
    "result": {
        "type": "succeeded",
        "message": {
            "id": "msg_1",
            "content": [
                {"type": "thinking", "thinking": "hmm"},
                {"type": "text", "text": "Hello"},
                {"type": "text", "text": " world"},
            ],
            "stop_reason": "end_turn",
            "usage": {
                "input_tokens": 10,
                "output_tokens": 3,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 7,
                "cache_creation": {"ephemeral_5m_input_tokens": 7},
            },
        },
    },
}
GEMINI = {
    "key": "r3",
    "response": {
        "candidates": [
            {
                "content": {"parts": [{"text": "plan", "thought": True}, {"text": "Done"}]},
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 8,
            "candidatesTokenCount": 2,
            "thoughtsTokenCount": 4,
            "cachedContentTokenCount": 1,
        },
    },
}


def _openai_whole(raw: str) -> ItemResult:
    return openai_batch.parse_result_line(loads_kept(raw), raw=raw)


def _anthropic_whole(raw: str) -> ItemResult:
    return anthropic_batch.parse_result(loads_kept(raw), raw=raw)


def _gemini_whole(raw: str) -> ItemResult:
    return gemini_batch.parse_result(loads_kept(raw), raw=raw)


# (template, the reader, what the adapter reads a line with, the whole-line parse)
PROVIDERS: dict[str, tuple[dict[str, Any], Callable[[str], Any], Callable[[str], ItemResult]]] = {
    "openai": (OPENAI, openai_answer, _openai_whole),
    "anthropic": (ANTHROPIC, anthropic_answer, _anthropic_whole),
    "gemini": (GEMINI, gemini_answer, _gemini_whole),
}
# Where a provider's line may hold something unexpected (a path of keys and list indexes).
PATHS: dict[str, list[tuple[Any, ...]]] = {
    "openai": [
        ("custom_id",), ("error",), ("response",), ("response", "status_code"),
        ("response", "body"), ("response", "body", "choices"),
        ("response", "body", "choices", 0), ("response", "body", "choices", 0, "message"),
        ("response", "body", "choices", 0, "message", "content"),
        ("response", "body", "choices", 0, "finish_reason"), ("response", "body", "usage"),
        ("response", "body", "usage", "prompt_tokens"),
        ("response", "body", "usage", "completion_tokens"),
        ("response", "body", "usage", "prompt_tokens_details"),
        ("response", "body", "usage", "prompt_tokens_details", "cached_tokens"),
        ("response", "body", "id"),
    ],
    "anthropic": [
        ("custom_id",), ("result",), ("result", "type"), ("result", "message"),
        ("result", "message", "content"), ("result", "message", "content", 0),
        ("result", "message", "content", 1, "type"), ("result", "message", "content", 1, "text"),
        ("result", "message", "stop_reason"), ("result", "message", "usage"),
        ("result", "message", "usage", "input_tokens"),
        ("result", "message", "usage", "cache_read_input_tokens"),
        ("result", "message", "usage", "cache_creation_input_tokens"),
        ("result", "message", "usage", "output_tokens"), ("result", "message", "id"),
    ],
    "gemini": [
        ("key",), ("error",), ("response",), ("response", "candidates"),
        ("response", "candidates", 0), ("response", "candidates", 0, "content"),
        ("response", "candidates", 0, "content", "parts"),
        ("response", "candidates", 0, "content", "parts", 0),
        ("response", "candidates", 0, "content", "parts", 0, "thought"),
        ("response", "candidates", 0, "content", "parts", 1, "text"),
        ("response", "candidates", 0, "finishReason"), ("response", "usageMetadata"),
        ("response", "usageMetadata", "promptTokenCount"),
        ("response", "usageMetadata", "candidatesTokenCount"),
        ("response", "usageMetadata", "thoughtsTokenCount"),
        ("response", "usageMetadata", "cachedContentTokenCount"),
    ],
}  # fmt: skip

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["", "stop", "succeeded", "errored", "text", "200", "r9"])
    | st.sampled_from([0, 200, 204, 299, 300, 429, 500]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def _outcome(parse: Callable[[str], ItemResult], raw: str) -> Any:
    """The ItemResult, or the error (its type and message) a line gives."""
    try:
        return parse(raw)
    except Exception as exc:  # the whole-line parsers' own errors, compared as they are
        return (type(exc), str(exc))


def _same(reader: Callable[[str], Any], whole: Callable[[str], ItemResult], raw: str) -> bool:
    """The adapter's way of reading ``raw`` (the reader, else the whole line) gives what the
    whole-line parse gives; whether the reader read it."""
    read = reader(raw)
    expected = _outcome(whole, raw)
    if read is not None:
        assert isinstance(expected, ItemResult), raw
        assert read == expected, raw
        # decoded when asked for, as the whole line is (``loads_kept``: a number beyond 64 bits
        # read as a float; the kept text is the line's own)
        assert read.response == loads_kept(raw)
    else:
        assert _outcome(lambda r: reader(r) or whole(r), raw) == expected
    return read is not None


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_the_usual_answer_is_read_for_its_fields_alone(provider: str) -> None:
    template, reader, whole = PROVIDERS[provider]
    raw = json.dumps(template, ensure_ascii=False)
    read = reader(raw)
    assert read is not None and read == whole(raw) and read.outcome == "succeeded"
    assert read.raw == raw
    _same(reader, whole, raw)


def test_the_readers_give_the_adapters_values() -> None:
    openai = openai_answer(json.dumps(OPENAI))
    assert openai is not None
    assert (openai.key, openai.text, openai.finish_reason) == ("r1", "Hi \u2028 there é", "stop")
    assert (openai.usage.input_tokens, openai.usage.output_tokens) == (13, 14)
    assert openai.usage.cached_input_tokens == 5
    anthropic = anthropic_answer(json.dumps(ANTHROPIC))
    assert anthropic is not None and anthropic.text == "Hello world"
    assert (anthropic.usage.input_tokens, anthropic.usage.cached_input_tokens) == (117, 100)
    assert anthropic.usage.cache_creation_input_tokens == 7
    gemini = gemini_answer(json.dumps(GEMINI))
    assert gemini is not None and (gemini.text, gemini.finish_reason) == ("Done", "STOP")
    assert (gemini.usage.input_tokens, gemini.usage.output_tokens) == (8, 6)


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        '{"custom_id": "r1", "response": {"status_code": 200, "body": {}}} trailing',
        '{"custom_id": "r1", "response": {"status_code": 200, "body": {"choices": '
        '[{"message": {"content": "\\ud800"}}]}}}',  # a lone surrogate: json.loads reads it
        '{"custom_id": "r1", "response": {"status_code": 200, "body": {"usage": '
        '{"prompt_tokens": 12345678901234567890123}}}}',
        '{"custom_id": "r1", "custom_id": "r2", "response": {"status_code": 200}}',
        '{"custom_id": "r1", "response": {"status_code": 200, "body": {"x": NaN}}}',
        "[1, 2]",
    ],
)
def test_odd_openai_lines_read_as_before(raw: str) -> None:
    _same(openai_answer, _openai_whole, raw)


@settings(max_examples=300, deadline=None)
@given(
    provider=st.sampled_from(sorted(PROVIDERS)),
    changes=st.lists(st.tuples(st.integers(0, 100), JSON_VALUES, st.booleans()), max_size=3),
)
def test_any_line_reads_as_the_whole_line_parse_reads_it(
    provider: str, changes: list[tuple[int, Any, bool]]
) -> None:
    template, reader, whole = PROVIDERS[provider]
    line = copy.deepcopy(template)
    paths = PATHS[provider]
    for index, value, drop in changes:
        *parents, last = paths[index % len(paths)]
        node: Any = line
        for step in parents:
            node = _child(node, step)
        if isinstance(node, dict) and isinstance(last, str):
            if drop:
                node.pop(last, None)
            else:
                node[last] = value
        elif isinstance(node, list) and isinstance(last, int) and last < len(node):
            node[last] = value
    fields = _same(reader, whole, json.dumps(line, ensure_ascii=False))
    event(f"{provider}: read for its fields" if fields else f"{provider}: read whole")


def _child(node: Any, step: str | int) -> Any:
    """``node[step]`` where ``node`` is an object (``step`` a key) or an array (an index)."""
    if isinstance(node, dict) and isinstance(step, str):
        return node.get(step)
    if isinstance(node, list) and isinstance(step, int) and step < len(node):
        return node[step]
    return None


async def _lines(chunks: list[bytes]) -> list[str]:
    async def source() -> Any:
        for chunk in chunks:
            yield chunk

    return [line async for lines in jsonl_lines(source()) for line in lines]


@given(st.data())
def test_result_files_split_at_line_ends_only(data: st.DataObject) -> None:
    lines = [
        '{"a": "x\u2028y\u0085z\x1c"}',  # str.splitlines would split these
        '{"b": "é 😀"}',
        "",
        "   ",
        '{"c": 1}\r',  # a line ended by \r\n
        '{"d": 2}',
    ]
    file = "\n".join(lines).encode()  # no line end after the last line
    cuts = sorted(data.draw(st.lists(st.integers(0, len(file)), max_size=8)))
    chunks = [file[a:b] for a, b in zip([0, *cuts], [*cuts, len(file)], strict=True)]
    got = asyncio.run(_lines([c for c in chunks if c]))
    assert got == ['{"a": "x\u2028y\u0085z\x1c"}', '{"b": "é 😀"}', '{"c": 1}', '{"d": 2}']


def test_a_byte_that_is_not_utf8_reads_as_a_replacement_character() -> None:
    assert asyncio.run(_lines([b'{"a": "\xff"}\n'])) == ['{"a": "\ufffd"}']


@pytest.mark.parametrize(
    "parse",
    [openai_batch.parse_result_text, anthropic_batch.parse_result_text,
     gemini_batch.parse_result_text],
    ids=["openai", "anthropic", "gemini"],
)
@pytest.mark.parametrize(
    "raw",
    ['{"custom_id": "r1", "response": {"status_co', "not json", "[1, 2]", '"a string"', "null",
     "\ufffd\ufffd"],
)
def test_a_line_that_is_not_a_json_object_names_no_request(
    parse: Callable[[str], ItemResult], raw: str
) -> None:
    """A corrupt or cut-short results line becomes an item of no request (so the collector
    stores the batch's other results and counts its request as missing), never an exception
    that fails the whole batch's collection."""
    item = parse(raw)
    assert item.key == UNREADABLE_KEY and item.outcome == "failed"
    assert item.error is not None and item.error.type == "malformed_result"
    assert "result line is not a JSON object" in item.error.message
