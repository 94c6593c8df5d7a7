"""Lines that used to escape as exceptions, and the reading progress, on real files.

Each kind becomes exactly one ``Invalid`` naming the line, the field and the reason; the lines
around it are untouched. Reading reports how far it got, can leave a last line still being
written for later, and counts bytes added to a line after an earlier pass read it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon import reading
from daemon.adapt import Policy
from daemon.reading import MAX_DEPTH, Progress, iter_lines, read_line
from daemon.validate import Invalid, Request, Validator

GOOD = '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'


def _unified(content: str = "hi", **raw: str) -> str:
    """A unified line written by hand, so JSON escapes reach the reader as written."""
    extra = "".join(f', "{k}": {v}' for k, v in raw.items())
    return f'{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "{content}"}}]{extra}}}'


def _read(tmp_path: Path, *lines: str | bytes, end: bytes = b"\n", **kw: Any) -> list[Any]:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join((x.encode() if isinstance(x, str) else x) + end for x in lines))
    return list(iter_lines(path, **kw))


def _reason(tmp_path: Path, line: str | bytes) -> str:
    first, bad, last = _read(tmp_path, GOOD.replace("hi", "a"), line, GOOD.replace("hi", "b"))
    assert isinstance(first, Request) and isinstance(last, Request)
    assert isinstance(bad, Invalid), bad
    assert bad.custom_id == "line-2" and bad.metadata is None
    return bad.reason


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("[" * 1100 + "]" * 1100, f"JSON nested too deeply (more than {MAX_DEPTH} levels"),
        ("{" + '"a":{' * 5000 + "}" * 5001, "JSON nested too deeply"),
        (
            '{"metadata": ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}",
            "JSON nested too deeply",
        ),
        (
            _unified("hi \\ud800"),
            "'messages[0].content' contains an unpaired surrogate (\\ud800), which is not valid "
            "Unicode; no provider can take it",
        ),
        (_unified("\\udc00 low first"), "'messages[0].content' contains an unpaired surrogate"),
        (_unified(custom_id='"id-\\udfff"'), "'custom_id' contains an unpaired surrogate"),
        (_unified(metadata='{"a": [1, {"b": "\\uD9FF"}]}'), "'metadata.a[1].b' contains an"),
        (_unified(metadata='{"\\ud83d": 1}'), "a key in 'metadata' contains an unpaired surrogate"),
        ('"\\udbff"', "the line contains an unpaired surrogate (\\udbff)"),
        (_unified(temperature="1e999"), "invalid JSON: the number 1e999 is out of range"),
        (_unified(metadata="-1E+400"), "invalid JSON: the number -1E+400 is out of range"),
        (_unified(max_tokens="1" * 5000), "invalid JSON: Exceeds the limit"),
        (_unified(temperature="Infinity"), "invalid JSON: Infinity is not valid JSON"),
    ],
)
def test_lines_that_used_to_escape_are_invalid(tmp_path: Path, line: str, expected: str) -> None:
    assert _reason(tmp_path, line).startswith(f"line 2: {expected}")


def test_what_stays_valid_near_those_limits(tmp_path: Path) -> None:
    deep = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    lines = _read(
        tmp_path,
        _unified(metadata=deep),  # the object is level 1: MAX_DEPTH levels in all
        _unified("a pair \\ud83d\\ude00 is one character"),
        _unified("an escaped backslash \\\\ud800 is text"),
        _unified(metadata='"[[[[ brackets in a string {{{{"'),
        _unified(temperature="1e-400"),  # underflows to 0.0: a finite number
    )
    assert [type(x) for x in lines] == [Request] * 5
    assert lines[1].body["messages"][0]["content"] == "a pair \U0001f600 is one character"
    assert lines[2].body["messages"][0]["content"] == "an escaped backslash \\ud800 is text"


def test_any_exception_in_one_line_makes_it_invalid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Validator.validate

    def flaky(self: Validator, n: int, value: Any) -> Any:
        if n == 2:
            raise KeyError("a bug in validation")
        return real(self, n, value)

    monkeypatch.setattr(Validator, "validate", flaky)
    lines = _read(tmp_path, GOOD, GOOD.replace("hi", "x"), _unified(custom_id='"c3"'))
    assert [type(x) for x in lines] == [Request, Invalid, Request]
    assert lines[1].reason == "line 2: could not be processed: KeyError: 'a bug in validation'"


def test_read_line_never_raises_on_raw_bytes() -> None:
    validator = Validator(Policy())
    for n, raw in enumerate([b"\xff\xfe", b"\x00", b"{", b"[" * 100_000, b'"\\ud800"'], 1):
        assert isinstance(read_line(validator, n, raw), Invalid)


# ---------------------------------------------------------------------------------------------
# Progress


def test_progress_counts_the_bytes_read(tmp_path: Path) -> None:
    progress = Progress()
    lines = _read(tmp_path, GOOD, "", GOOD.replace("hi", "b"), end=b"\r\n", progress=progress)
    assert len(lines) == 2
    assert progress.bytes == (tmp_path / "in.jsonl").stat().st_size


def test_complete_only_leaves_a_last_line_without_its_end(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(GOOD + "\n" + '{"model": "gpt-4o", "mess')
    progress = Progress()
    assert len(list(iter_lines(path, progress=progress, complete_only=True))) == 1
    assert progress.bytes == len(GOOD) + 1
    progress = Progress()
    lines = list(iter_lines(path, progress=progress))  # the default: a last line is a line
    assert [type(x) for x in lines] == [Request, Invalid]
    assert progress.bytes == path.stat().st_size


def test_complete_only_with_an_over_long_last_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(GOOD + "\n" + "x" * 5000)
    progress = Progress()
    lines = list(iter_lines(path, max_request_bytes=1000, progress=progress, complete_only=True))
    assert len(lines) == 1 and progress.bytes == len(GOOD) + 1
    with path.open("a") as f:
        f.write("\n")
    lines = list(iter_lines(path, max_request_bytes=1000, progress=progress, complete_only=True))
    assert [type(x) for x in lines] == [Request, Invalid]
    assert progress.bytes == path.stat().st_size


def test_bytes_added_to_a_line_already_read_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(GOOD + "\n" + '{"model": "gpt-4o"')
    first = Progress()
    list(iter_lines(path, progress=first))
    with path.open("a") as f:
        f.write(', "messages": []}\n' + GOOD + "\n")
    again = Progress(resume_at=first.bytes)
    assert len(list(iter_lines(path, progress=again))) == 3
    assert again.late_bytes == len(', "messages": []}\n')
    assert again.bytes == path.stat().st_size


def test_the_surrogate_search_only_walks_lines_that_need_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    walked: list[Any] = []
    real = reading._uncarriable

    def spy(value: Any, check_depth: bool) -> str | None:
        walked.append(value)
        return real(value, check_depth)

    monkeypatch.setattr(reading, "_uncarriable", spy)
    _read(tmp_path, GOOD, json.dumps({"model": "gpt-4o", "metadata": "\u00e9"}))
    assert walked == []
    _read(tmp_path, _unified("\\ud800"))
    assert len(walked) == 1
