"""Streaming, validation and native conversion of inbox lines, on real files."""

from __future__ import annotations

import contextlib
import json
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.reading import DEFAULT_MAX_REQUEST_BYTES, iter_lines, sniff
from daemon.validate import Invalid, Line, Request

USER_HI = [{"role": "user", "content": "hi"}]


def write(tmp_path: Path, *lines: str | bytes | dict[str, Any], end: bytes = b"\n") -> Path:
    """A JSONL file from dicts (dumped), str (UTF-8) or raw bytes, one per line."""
    path = tmp_path / "in.jsonl"
    with open(path, "wb") as f:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line, ensure_ascii=False)
            f.write(line.encode("utf-8") if isinstance(line, str) else line)
            f.write(end)
    return path


def parse(tmp_path: Path, *lines: str | bytes | dict[str, Any], **kwargs: Any) -> list[Line]:
    return list(iter_lines(write(tmp_path, *lines), **kwargs))


def one(tmp_path: Path, line: str | bytes | dict[str, Any], **kwargs: Any) -> Line:
    (result,) = parse(tmp_path, line, **kwargs)
    return result


def reason(tmp_path: Path, line: str | bytes | dict[str, Any], **kwargs: Any) -> str:
    result = one(tmp_path, line, **kwargs)
    assert isinstance(result, Invalid), result
    return result.reason


def unified(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": USER_HI} | fields


# ---------------------------------------------------------------------------------------------
# File framing


def test_bom_crlf_blank_lines_and_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    a, b = json.dumps(unified(custom_id="a")), json.dumps(unified(custom_id="b"))
    path.write_bytes(b"\xef\xbb\xbf" + f"{a}\r\n\r\n   \t\r\n\n{b}".encode())  # no final newline
    lines = list(iter_lines(path))
    assert [(x.line, x.custom_id, type(x)) for x in lines] == [(1, "a", Request), (5, "b", Request)]


def test_invalid_utf8_line_is_one_invalid_line(tmp_path: Path) -> None:
    lines = parse(tmp_path, unified(), b'{"model": "caf\xe9"}', unified())
    assert [type(x) for x in lines] == [Request, Invalid, Request]
    assert lines[1].reason == "line 2: not valid UTF-8 (byte 0xe9 at byte 15 of the line)"
    assert lines[1].custom_id == "line-2"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '{"model": "gpt-4o",',
            "line 1: invalid JSON: Expecting property name enclosed in double quotes (column 20)",
        ),
        ('{"model": "gpt-4o"} x', "line 1: invalid JSON: Extra data (column 21)"),
        ('{"model": NaN}', "line 1: invalid JSON: NaN is not valid JSON"),
        ("[1, 2]", "line 1: expected a JSON object, got list"),
        ('"text"', "line 1: expected a JSON object, got string"),
        ("42", "line 1: expected a JSON object, got number"),
    ],
)
def test_unreadable_lines(tmp_path: Path, line: str, expected: str) -> None:
    assert reason(tmp_path, line) == expected


# ---------------------------------------------------------------------------------------------
# Validation of the unified form


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"model": None}, "'model' must be a non-empty string, got null"),
        ({"model": ""}, "'model' must be a non-empty string, got empty string"),
        ({"model": 4}, "'model' must be a non-empty string, got number"),
        ({"messages": []}, "'messages' is empty"),
        ({"messages": "hi"}, "'messages' must be a list of messages, got string"),
        ({"messages": ["hi"]}, "messages[0] must be an object, got string"),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            "messages[0].role must be one of system, user, assistant, developer, got 'tool'",
        ),
        (
            {"messages": [{"content": "x"}]},
            "messages[0].role must be one of system, user, assistant, developer, got null",
        ),
        ({"messages": [{"role": "user"}]}, "messages[0].content is missing"),
        (
            {"messages": [{"role": "user", "content": 5}]},
            "messages[0].content must be a string or a non-empty list of text parts",
        ),
        (
            {"messages": [*USER_HI, {"role": "user", "content": [{"type": "image_url"}]}]},
            'messages[1].content[0] must be a text part {"type": "text", "text": "..."}',
        ),
        (
            {"messages": [{"role": "user", "content": "x", "name": "bob"}]},
            "messages[0] has unknown key(s) 'name' (allowed: 'role', 'content')",
        ),
        (
            {"messages": [{"role": "system", "content": "x"}]},
            "'messages' has no user or assistant message",
        ),
        ({"system": ["x"]}, "'system' must be a string, got list"),
        ({"temperature": "hot"}, "'temperature' must be a number, got string"),
        ({"temperature": True}, "'temperature' must be a number, got boolean"),
        ({"temperature": 2.5}, "'temperature' must be between 0 and 2, got 2.5"),
        ({"temperature": -0.1}, "'temperature' must be between 0 and 2, got -0.1"),
        ({"top_p": "x"}, "'top_p' must be a number, got string"),
        ({"top_p": 1.5}, "'top_p' must be between 0 and 1, got 1.5"),
        ({"max_tokens": 0}, "'max_tokens' must be a positive integer, got 0"),
        ({"max_tokens": 1.5}, "'max_tokens' must be a positive integer, got 1.5"),
        ({"max_tokens": "10"}, "'max_tokens' must be a positive integer, got string"),
        ({"stop": 5}, "'stop' must be a string or a list of strings, got number"),
        ({"stop": ["a", 1]}, "'stop' must be a string or a list of strings, got list"),
        ({"provider": "azure"}, "'provider' must be one of openai, anthropic, gemini, got 'azure'"),
        ({"top_k": -1}, "'top_k' must be an integer of 0 or more, got -1"),
        ({"presence_penalty": 3}, "'presence_penalty' must be between -2 and 2, got 3"),
        ({"logprobs": 1}, "'logprobs' must be true or false, got number"),
        (
            {"reasoning_effort": "extreme"},
            "'reasoning_effort' must be one of none, minimal, low, medium, high, xhigh, max, got "
            "'extreme'",
        ),
        (
            {"model": "llama-3"},
            "unknown model 'llama-3': no provider is known for it; to use it, add it to the config "
            'as [models."llama-3"] with provider = "openai", "anthropic" or "gemini" (or give the '
            "line a 'provider' field)",
        ),
        ({"temp": 1, "n": 2}, "unknown key(s) 'n', 'temp'"),
        ({"custom_id": 7}, "'custom_id' must be a non-empty string, got number"),
        ({"custom_id": ""}, "'custom_id' must be a non-empty string, got empty string"),
    ],
)
def test_validation_reasons(tmp_path: Path, fields: dict[str, Any], expected: str) -> None:
    assert reason(tmp_path, unified(**fields)) == f"line 1: {expected}"


def test_missing_model_and_messages(tmp_path: Path) -> None:
    result = one(tmp_path, {"custom_id": "c1", "metadata": {"k": 1}})
    assert result == Invalid(
        1, "c1", "line 1: 'model' is missing; 'messages' is missing", metadata={"k": 1}
    )


def test_every_problem_of_a_line_is_named_once(tmp_path: Path) -> None:
    result = one(tmp_path, unified(temperature="hot", top_p=2, extra=1))
    assert isinstance(result, Invalid)
    assert result.reason == (
        "line 1: unknown key(s) 'extra'; 'temperature' must be a number, got string; "
        "'top_p' must be between 0 and 1, got 2"
    )
    assert (result.model, result.provider) == ("gpt-4o", "openai")


@pytest.mark.parametrize("metadata", [None, "x", 3, [1, {"a": None}], {"deep": {"list": [1.5]}}])
def test_metadata_is_any_json_and_echoed(tmp_path: Path, metadata: Any) -> None:
    result = one(tmp_path, unified(metadata=metadata))
    assert isinstance(result, Request)
    assert result.metadata == metadata
    assert "metadata" not in result.body


def test_line_provider_and_config_overrides(tmp_path: Path) -> None:
    lines = parse(
        tmp_path,
        unified(model="my-llama", provider="openai"),
        unified(model="house-claude"),
        overrides={"house-*": "anthropic"},
    )
    assert [(x.model, x.provider, type(x)) for x in lines] == [
        ("my-llama", "openai", Request),
        ("house-claude", "anthropic", Request),
    ]


# ---------------------------------------------------------------------------------------------
# Duplicate ids and size limit


def test_duplicate_custom_id_second_occurrence_is_invalid(tmp_path: Path) -> None:
    lines = parse(
        tmp_path,
        unified(custom_id="a"),
        unified(custom_id="b"),
        unified(custom_id="a"),
        unified(custom_id="a", temperature=9),
    )
    assert [type(x) for x in lines] == [Request, Request, Invalid, Invalid]
    assert lines[2].reason == "line 3: duplicate custom_id 'a' (first used on line 1)"
    assert lines[3].reason == "line 4: duplicate custom_id 'a' (first used on line 1)"


def test_default_ids_collide_with_explicit_ones_both_ways(tmp_path: Path) -> None:
    lines = parse(
        tmp_path,
        unified(),  # line-1 by default
        unified(custom_id="line-3"),
        unified(),  # line-3 by default: taken by line 2
        unified(custom_id="line-1"),  # taken by line 1's default
        "not json",  # an unreadable line still holds line-5
        unified(custom_id="line-5"),
        unified(custom_id="line-02"),  # not a default id form: fine
    )
    assert [x.custom_id for x in lines] == [
        "line-1",
        "line-3",
        "line-3",
        "line-1",
        "line-5",
        "line-5",
        "line-02",
    ]
    assert [type(x).__name__ for x in lines] == [
        "Request",
        "Request",
        "Invalid",
        "Invalid",
        "Invalid",
        "Invalid",
        "Request",
    ]
    assert lines[2].reason == "line 3: duplicate custom_id 'line-3' (first used on line 2)"
    assert lines[3].reason == "line 4: duplicate custom_id 'line-1' (first used on line 1)"
    assert lines[5].reason == "line 6: duplicate custom_id 'line-5' (first used on line 5)"


def test_line_over_max_request_bytes(tmp_path: Path) -> None:
    small = json.dumps(unified())
    big = json.dumps(unified(custom_id="big", metadata="x" * 500))
    lines = parse(tmp_path, small, big, small.replace("gpt-4o", "gpt-4.1"), max_request_bytes=200)
    assert [type(x) for x in lines] == [Request, Invalid, Request]
    assert lines[1] == Invalid(
        2,
        "line-2",
        f"line 2: {len(big)} bytes, over the per-request limit of 200 bytes (max_request_bytes)",
    )


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b""])
def test_line_of_exactly_the_limit_fits(tmp_path: Path, end: bytes) -> None:
    line = json.dumps(unified())
    for limit, kind in ((len(line), Request), (len(line) - 1, Invalid)):
        path = tmp_path / f"{limit}.jsonl"
        path.write_bytes(line.encode() + end)
        (result,) = iter_lines(path, max_request_bytes=limit)
        assert type(result) is kind


def test_default_max_request_bytes() -> None:
    assert DEFAULT_MAX_REQUEST_BYTES == 10 * 1024 * 1024


# ---------------------------------------------------------------------------------------------
# Conversions


def test_openai_conversion(tmp_path: Path) -> None:
    line = unified(
        custom_id="q1",
        system="be brief",
        messages=[
            {"role": "developer", "content": "d"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        temperature=0.3,
        top_p=0.9,
        max_tokens=50,
        stop="END",
    )
    result = one(tmp_path, line)
    assert result == Request(
        line=1,
        custom_id="q1",
        model="gpt-4o",
        provider="openai",
        body={
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": "d"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ],
            "temperature": 0.3,
            "top_p": 0.9,
            "max_tokens": 50,
            "stop": "END",
        },
        metadata=None,
        adaptations=[],
        size_bytes=len(json.dumps(result.body, separators=(",", ":")).encode()),
    )


def test_anthropic_conversion(tmp_path: Path) -> None:
    line = {
        "custom_id": "c",
        "model": "claude-sonnet-4-5",
        "system": "s0",
        "messages": [
            {"role": "system", "content": "s1"},
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "c"},
            {"role": "developer", "content": [{"type": "text", "text": "s2"}]},
            {"role": "user", "content": [{"type": "text", "text": "d"}]},
            {"role": "user", "content": "e"},
        ],
        "temperature": 1.4,
        "top_p": 0.5,
        "stop": "END",
        "metadata": {"k": "v"},
    }
    result = one(tmp_path, line)
    assert isinstance(result, Request)
    assert result.provider == "anthropic"
    assert result.body == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": "s0\n\ns1\n\ns2",
        "messages": [
            {"role": "user", "content": "a\n\nb"},
            {"role": "assistant", "content": "c"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "d"}, {"type": "text", "text": "e"}],
            },
        ],
        "stop_sequences": ["END"],
        "temperature": 1.0,
    }
    assert result.adaptations == [
        "3 system messages joined into the top-level system field",
        "developer messages treated as system messages",
        "consecutive same-role messages merged (5 messages → 3 turns)",
        "max_tokens set to 1024 (Claude requires it)",
        "temperature 1.4 clamped to 1.0 (Claude range 0-1)",
        # Sonnet 4.5 refuses temperature and top_p together: the temperature is kept.
        "top_p removed: claude-sonnet-4-5 does not accept temperature and top_p together "
        "(temperature kept)",
    ]
    assert result.metadata == {"k": "v"}


def test_anthropic_conversion_without_changes(tmp_path: Path) -> None:
    result = one(
        tmp_path, unified(model="claude-haiku-4-5", max_tokens=10, temperature=0.7, stop=["x"])
    )
    assert isinstance(result, Request)
    assert result.body == {
        "model": "claude-haiku-4-5",
        "max_tokens": 10,
        "messages": USER_HI,
        "stop_sequences": ["x"],
        "temperature": 0.7,
    }
    assert result.adaptations == []


def test_gemini_conversion(tmp_path: Path) -> None:
    line = unified(
        model="gemini-2.5-flash",
        system="be brief",
        messages=[
            {"role": "system", "content": "s1"},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": [{"type": "text", "text": "b"}]},
            {"role": "user", "content": "c"},
        ],
        temperature=0.2,
        top_p=0.8,
        max_tokens=64,
        stop="END",
    )
    result = one(tmp_path, line)
    assert isinstance(result, Request)
    assert (result.model, result.provider) == ("gemini-2.5-flash", "gemini")
    assert result.body == {
        "contents": [
            {"role": "user", "parts": [{"text": "a"}]},
            {"role": "model", "parts": [{"text": "b"}]},
            {"role": "user", "parts": [{"text": "c"}]},
        ],
        "systemInstruction": {"parts": [{"text": "be brief\n\ns1"}]},
        "generationConfig": {
            "maxOutputTokens": 64,
            "temperature": 0.2,
            "topP": 0.8,
            "stopSequences": ["END"],
        },
    }
    assert result.adaptations == ["2 system messages joined into systemInstruction"]


def test_gemini_minimal_body_has_no_empty_sections(tmp_path: Path) -> None:
    result = one(tmp_path, unified(model="gemini-2.0-flash"))
    assert isinstance(result, Request)
    assert result.body == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


# ---------------------------------------------------------------------------------------------
# Native forms


def test_native_openai_line(tmp_path: Path) -> None:
    body = {"model": "ft:gpt-4o:acme", "messages": USER_HI, "max_completion_tokens": 5}
    line = {"custom_id": "n1", "method": "POST", "url": "/v1/chat/completions", "body": body}
    result = one(tmp_path, line)
    assert result == Request(
        1,
        "n1",
        "ft:gpt-4o:acme",
        "openai",
        body,
        None,
        [],
        len(json.dumps(body, separators=(",", ":"))),
    )


def test_native_anthropic_line(tmp_path: Path) -> None:
    params = {"model": "claude-opus-4-1", "max_tokens": 10, "messages": USER_HI, "top_k": 5}
    result = one(tmp_path, {"custom_id": "n2", "params": params, "metadata": [1]})
    assert isinstance(result, Request)
    assert (result.model, result.provider, result.body) == ("claude-opus-4-1", "anthropic", params)
    assert (result.metadata, result.adaptations) == ([1], [])


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            {"custom_id": "x", "method": "GET", "url": "/v1/embeddings", "body": {}},
            "'method' must be \"POST\", got 'GET'; 'url' must be \"/v1/chat/completions\", got "
            "'/v1/embeddings'; 'body.model' is missing; 'body.messages' is missing",
        ),
        (
            {"custom_id": "x", "body": {"model": "gpt-4o", "messages": USER_HI}},
            "'method' is missing; 'url' is missing",
        ),
        (
            {"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": [1]},
            "'body' must be an object, got list",
        ),
        (
            {"custom_id": "x", "params": {"model": "claude-x", "messages": USER_HI}, "extra": 1},
            "unknown key(s) 'extra'; 'params.max_tokens' is missing",
        ),
        (
            {"custom_id": "x", "params": {"model": "", "messages": [], "max_tokens": 0}},
            "'params.model' must be a non-empty string, got empty string; 'params.messages' must "
            "be a non-empty list, got list; 'params.max_tokens' must be a positive integer, got 0",
        ),
    ],
)
def test_native_line_reasons(tmp_path: Path, line: dict[str, Any], expected: str) -> None:
    assert reason(tmp_path, line) == f"line 1: {expected}"


# ---------------------------------------------------------------------------------------------
# sniff


def test_sniff_accepts_jsonl_empty_and_a_file_with_one_bad_line(tmp_path: Path) -> None:
    assert sniff(write(tmp_path, unified(), unified())) is None
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert sniff(tmp_path / "empty.jsonl") is None
    assert sniff(write(tmp_path, unified(), b'{"model": "caf\xe9"}')) is None
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(unified()).encode())
    assert sniff(bom) is None


def test_sniff_binary_content(tmp_path: Path) -> None:
    path = tmp_path / "image.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(20000))
    assert sniff(path) == (
        "binary content: NUL byte at offset 8 in the first 8 KiB (not a text file)"
    )


def test_sniff_utf16_and_latin1(tmp_path: Path) -> None:
    utf16 = tmp_path / "utf16.jsonl"
    utf16.write_bytes(json.dumps(unified()).encode("utf-16"))
    assert sniff(utf16) == (
        "not UTF-8: the file starts with a UTF-16 byte order mark (save it as UTF-8)"
    )
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes("\n".join(['{"model": "café"}'] * 3).encode("latin-1"))
    assert sniff(latin1) == "not UTF-8: byte 0xe9 at offset 14 (save the file as UTF-8)"


def test_sniff_directory_and_missing_file(tmp_path: Path) -> None:
    assert sniff(tmp_path) == "cannot read: is a directory"
    assert sniff(tmp_path / "gone.jsonl") == "cannot read: no such file"


@contextlib.contextmanager
def unprivileged() -> Iterator[None]:
    """Run the body without root's read-anything power (root: effective uid nobody)."""
    if os.geteuid() != 0:
        yield
        return
    try:
        os.seteuid(65534)
    except PermissionError:
        pytest.skip("running as root without the right to drop privileges")
    try:
        yield
    finally:
        os.seteuid(0)


def test_sniff_permission_denied(tmp_path: Path) -> None:
    path = write(tmp_path, unified())
    path.chmod(0)
    try:
        with unprivileged():
            assert sniff(path) == "cannot read: permission denied"
    finally:
        path.chmod(0o600)


# ---------------------------------------------------------------------------------------------
# Memory


def test_large_file_streams_with_flat_memory(tmp_path: Path) -> None:
    """50k lines of ~600 bytes: tracemalloc slows parsing ~6x, so fewer, fatter lines keep the
    test quick while the file is still ~100x the memory the parser may use."""
    path = tmp_path / "big.jsonl"
    question = {"role": "user", "content": "Summarise this paragraph. " * 20}
    line = (json.dumps(unified(messages=[question], temperature=0.2)) + "\n").encode()
    n = 50_000
    with open(path, "wb") as f:
        for _ in range(n // 1000):
            f.write(line * 1000)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        count = sum(1 for x in iter_lines(path) if isinstance(x, Request))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    assert size > 25_000_000
    assert peak < size / 50, (peak, size)


def test_huge_line_is_skipped_without_being_held(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    head, tail = b'{"model": "gpt-4o", "metadata": "', b'"}'
    with open(path, "wb") as f:
        f.write(head)
        for _ in range(64):
            f.write(b"x" * (1 << 20))
        f.write(tail + b"\n" + json.dumps(unified()).encode() + b"\n")
    size = len(head) + (64 << 20) + len(tail)
    tracemalloc.start()
    try:
        lines = list(iter_lines(path, max_request_bytes=1 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [type(x) for x in lines] == [Invalid, Request]
    assert lines[0].reason.startswith(f"line 1: {size} bytes, over the per-request limit")
    assert peak < 4 << 20, peak
