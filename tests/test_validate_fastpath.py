"""The fast answers for the usual line give the very answers of the full checks (hypothesis).

``Validator.usual_row`` (through ``reading.iter_rows``) makes the usual line the row ingest
stores without a Request; a file of lines near the usual one must give the rows (and the
Requests and Invalids) that ``reading.iter_lines`` and ingest's conversion give.

The same for adaptation: ``adapt._plain_openai`` builds the usual OpenAI body without the
rules; whenever it answers, the rules must build that very body and record nothing.

``fields.all_fine`` says a unified line has nothing wrong without wording anything; it must be
True exactly when the full checks (``unknown_keys`` and ``check_fields``) find no error, since a
False sends the line to them for its reason. ``fields.messages`` answers a well-formed message
without building its name; its answer must stay the one of checking every message fully, which
is written out here as it was before the fast path.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon import adapt, chunks, fields
from daemon.adapt import SYSTEM_ROLES, Policy
from daemon.adapt_rules import Ctx
from daemon.reading import iter_lines, iter_rows
from daemon.registry import ModelInfo, default_registry
from daemon.validate import _UNCHECKED, _UNIFIED_REQUIRED, UNIFIED_CHECKS, UNIFIED_KEYS

leaf = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-3, 3) | st.text(max_size=3)
value = st.recursive(
    leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)  # fmt: skip
role = st.sampled_from(["system", "user", "assistant", "developer", "tool"]) | value
part = st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=3)}) | value
message = (
    st.fixed_dictionaries({"role": role}, optional={"content": st.text() | st.lists(part)})
    | st.fixed_dictionaries({"role": role, "content": st.text(), "name": value})
    | value
)
messages = st.lists(message, max_size=4) | value
line = st.dictionaries(
    st.sampled_from([*UNIFIED_KEYS, "bogus"]),
    value | st.sampled_from(["gpt-4o-mini", "low", "openai", 64, 0.5]),
    max_size=6,
).flatmap(
    lambda obj: st.builds(lambda m: obj | {"messages": m}, messages) | st.just(obj)
)  # fmt: skip


def _messages_before(name: str, value: Any) -> str | None:
    """``fields.messages`` as it was: every message through the full check."""
    if not isinstance(value, list):
        return f"'{name}' must be a list of messages, got {fields.kind(value)}"
    if not value:
        return f"'{name}' is empty"
    for i, item in enumerate(value):
        error = fields._message(f"{name}[{i}]", item)
        if error:
            return error
    if all(m["role"] in SYSTEM_ROLES for m in value):
        return f"'{name}' has no user or assistant message"
    return None


@given(messages)
def test_messages_says_what_the_full_check_of_every_message_says(value: Any) -> None:
    assert fields.messages("messages", value) == _messages_before("messages", value)


@given(st.lists(st.fixed_dictionaries({"role": role, "content": st.text(max_size=2)}) | message,
                min_size=1, max_size=4))  # fmt: skip
def test_usual_messages_only_where_the_full_check_finds_nothing(value: list[Any]) -> None:
    if fields.usual_messages(value):
        assert fields.messages("messages", value) is None


@given(line)
def test_all_fine_exactly_when_the_full_checks_find_nothing(obj: dict[str, Any]) -> None:
    errors = fields.unknown_keys(obj, UNIFIED_KEYS)
    errors += fields.check_fields(obj, UNIFIED_CHECKS, _UNIFIED_REQUIRED, "")
    assert fields.all_fine(obj, UNIFIED_CHECKS, _UNIFIED_REQUIRED, _UNCHECKED) == (not errors)


def test_the_usual_line_is_fine() -> None:
    said = [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]
    obj = {"custom_id": "a", "model": "gpt-4o-mini", "max_tokens": 64, "messages": said}
    assert fields.all_fine(obj, UNIFIED_CHECKS, _UNIFIED_REQUIRED, _UNCHECKED)
    assert not fields.all_fine(obj | {"top_p": 2}, UNIFIED_CHECKS, _UNIFIED_REQUIRED, _UNCHECKED)


OPENAI_INFOS = [
    *(i for i in default_registry().families.values() if i.provider == "openai"),
    default_registry().defaults["openai"],
    ModelInfo("x*", "openai", "system", "max_tokens", True, {}, output_max=None),
    ModelInfo("y*", "openai", "developer", "max_tokens", True, {}, output_max=100),
]
plain_line = st.builds(
    lambda line, extra: line | extra,
    st.fixed_dictionaries(
        {"model": st.just("m"), "messages": st.just([{"role": "user", "content": "q"}])},
        optional={
            "max_tokens": st.integers(-1, 40_000)
            | st.sampled_from([True, 1.0, 2**31 - 1, 2**31, 2**40]),
            "custom_id": st.text(max_size=2), "metadata": value, "provider": st.just("openai"),
        },
    ),
    st.sampled_from([{}, {}, {}, {"system": "s"}, {"temperature": 0.5}, {"stop": "x"}]),
)  # fmt: skip


@given(plain_line, st.sampled_from(OPENAI_INFOS))
def test_the_plain_openai_body_is_what_the_rules_build(obj: dict[str, Any], info: Any) -> None:
    body = adapt._plain_openai(obj, info)
    ctx = Ctx("m", "openai", info, Policy(), [])
    ruled = adapt._to_openai(obj, ctx)
    if body is not None:
        assert (body, []) == (ruled, ctx.notes)
        assert list(body) == list(ruled)  # the same order of keys: the same stored text


def test_the_usual_line_takes_the_plain_openai_body() -> None:
    said = [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]
    obj = {"custom_id": "a", "model": "gpt-4o-mini", "max_tokens": 64, "messages": said}
    info = default_registry().info("gpt-4o-mini", "openai")
    assert adapt._plain_openai(obj, info) == {"model": "gpt-4o-mini", "messages": said,
                                              "max_tokens": 64}  # fmt: skip
    assert adapt._plain_openai(obj | {"max_tokens": 10**9}, info) is None  # clamped by a rule


# Lines near the usual one: each part sometimes off in a way the long way words or adapts.
said = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "developer"]),
     "content": st.text(max_size=3)}
)  # fmt: skip


def mostly(usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> Any:
    """``usual`` four times in five, else ``other``."""
    return st.tuples(st.integers(0, 4), usual, other).map(lambda t: t[2] if t[0] == 4 else t[1])


usual_message = mostly(said, message)
EXTRAS: list[dict[str, Any]] = [
    {}, {}, {}, {}, {"provider": "openai"}, {"system": "s"}, {"temperature": 0.5}, {"body": {}},
    {"bogus": 1}, {"max_tokens": None}, {"top_k": 2**70}, {"custom_id": 2**70},
    {"model": 12345678901234567890123},  # (None: no max_tokens; integers beyond 64 bits)
]  # fmt: skip
usual_line = st.fixed_dictionaries(
    {"model": mostly(st.sampled_from(["gpt-4o-mini", "gpt-4o-mini", "gpt-4.1", "o3-mini",
                                      "gpt-5", "gpt-5-chat", "claude-haiku-4-5",
                                      "gemini-2.5-flash", "routed", "nobody", ""]), value),
     "messages": mostly(st.lists(usual_message, min_size=1, max_size=3), value),
     "max_tokens": mostly(st.sampled_from([64, 64, 1, 0, -1, 16384, 16385, 32768, 2**31 - 1,
                                           2**31, 2**64, 2**70]), value)},
    optional={
        "custom_id": mostly(st.sampled_from(["a", "b", "line-1", "line-2", "line-02", "line-x",
                                             ""]), value),
        "metadata": value | st.just({"n": 2**70, "s": "é\u2028"}),
    },
).flatmap(
    lambda obj: st.sampled_from(EXTRAS).map(
        lambda extra: {k: v for k, v in (obj | extra).items() if v is not None}
    )
)  # fmt: skip


def _stored(items: list[Any]) -> list[Any]:
    return [item if isinstance(item, tuple) else chunks.stored(item) for item in items]


@settings(max_examples=300)
@given(st.lists(usual_line, max_size=6), st.booleans(), st.sampled_from(["adapt", "reject"]))
def test_the_usual_row_is_the_row_of_the_long_way(
    lines: list[dict[str, Any]], ascii_only: bool, on_unsupported: str
) -> None:
    policy = Policy(routes={"routed": "openai"}, on_unsupported=on_unsupported)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_text("".join(json.dumps(x, ensure_ascii=ascii_only) + "\n" for x in lines))
        long_way = _stored(list(iter_lines(path, policy=policy)))
        assert _stored(list(iter_rows(path, policy=policy))) == long_way


def test_the_usual_line_comes_as_its_row(tmp_path: Path) -> None:
    said = [{"role": "system", "content": "x"}, {"role": "user", "content": "é"}]
    obj = {"custom_id": "a", "model": "gpt-4o-mini", "max_tokens": 64, "messages": said}
    path = tmp_path / "in.jsonl"
    lines = [obj, obj | {"custom_id": "b", "metadata": {"k": [1]}}, obj, {**obj, "top_p": 2},
             obj | {"custom_id": "c", "metadata": {"n": 2**70}},
             obj | {"custom_id": "d", "max_tokens": 2**70}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    rows = list(iter_rows(path))
    # (an integer beyond 64 bits: the long way, which reads it as an integer, not a float)
    assert [type(x).__name__ for x in rows[:5]] == ["tuple", "tuple", "Invalid", "Invalid",
                                                    "Request"]  # fmt: skip
    assert _stored(rows) == _stored(list(iter_lines(path)))
    assert _stored(rows)[4][6] == '{"n":1180591620717411303424}'
    assert "1180591620717411303424" in str(rows[5])  # (the reason names it)
    body = '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"x"},{"role":"user",' \
        '"content":"é"}],"max_tokens":64}'  # fmt: skip
    assert rows[1] == (2, "b", "gpt-4o-mini", "openai", body, len(body.encode()), '{"k":[1]}',
                       "[]", "pending", None)  # fmt: skip
