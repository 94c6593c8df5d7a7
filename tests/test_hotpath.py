"""The data path's shortcuts give what the long way gives: JSON text by orjson or the standard
library, spool lines written around stored bodies, a claimed batch's items streamed from the
store page by page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters import gemini_batch, openai_batch, spool
from adapters.base import BatchItem, PermanentError, ProviderLimits
from adapters.facts import PROVIDER_LIMITS
from adapters.jsontext import compact, fast_loads, loads
from adapters.spool import write_spool
from daemon.reading import iter_lines
from daemon.store import Store, StoredItems

VALUES: list[Any] = [
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "héllo \u2028 😀 \"q\""}]},
    {"a": [1, -2, 3.5, 0.1, 1e16, True, False, None], "b": {"c": {"d": []}}, "e": ""},
    {"big": 2**70, "neg": -(2**64)},
    {"seed": 12345678901234567890, "id": "chatcmpl-00000000000000000000000000001"},
    "\x00\x1f control \t characters",
    [],
]


@pytest.mark.parametrize("value", VALUES)
def test_json_text_is_the_standard_librarys(value: Any) -> None:
    text = compact(value)
    assert json.loads(text) == value
    assert text == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for form in (text, text.encode()):
        assert loads(form) == value
        assert type(loads(form)) is type(value)


def test_integers_beyond_64_bits_stay_integers() -> None:
    text = '{"a": [1, 123456789012345678901234567890], "b": "x1234567890123456789012"}'
    done, _ = fast_loads(text)
    assert not done  # orjson would read the integer as a float
    assert loads(text)["a"][1] == 123456789012345678901234567890
    assert fast_loads('{"b": "x1234567890123456789012"}') == (
        True,
        {"b": "x1234567890123456789012"},
    )


def test_bad_text_raises_the_standard_librarys_error() -> None:
    with pytest.raises(json.JSONDecodeError, match="Expecting value: line 1 column 7"):
        loads('{"a": }')
    assert loads("NaN") != loads("NaN")  # the standard library reads NaN; orjson refuses it


def test_inbox_lines_keep_their_values_and_reasons(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = [
        '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a"}], '
        '"metadata": {"n": 123456789012345678901234567890, "f": 0.1}}',
        '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\\ud800"}]}',
        '{"model": "gpt-4o-mini", "max_tokens": 1e999}',
        '{"model": ',
    ]
    path.write_text("\n".join(lines) + "\n")
    got = list(iter_lines(path))
    assert got[0].metadata == {"n": 123456789012345678901234567890, "f": 0.1}
    assert "unpaired surrogate (\\ud800)" in got[1].reason  # type: ignore[union-attr]
    assert "out of range" in got[2].reason  # type: ignore[union-attr]
    assert got[3].reason == (  # type: ignore[union-attr]
        "line 4: invalid JSON: Expecting value (column 11)"
    )
    body = got[0].body  # type: ignore[union-attr]
    assert got[0].body_json == json.dumps(body, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("adapter", [openai_batch, gemini_batch])
def test_spool_lines_around_stored_text_are_the_encoded_lines(
    tmp_path: Path, adapter: Any
) -> None:
    bodies = [v for v in VALUES if isinstance(v, dict)]
    keys = ["r0", "line-7_x", 'say "hi" \\', "ключ2", "r4", "r5"]  # written raw or escaped
    plain = [BatchItem(key=keys[i], body=b) for i, b in enumerate(bodies)]
    stored = [BatchItem(key=i.key, body=i.body, body_json=compact(i.body)) for i in plain]
    limits = PROVIDER_LIMITS[adapter.__name__.split(".")[-1].split("_")[0]]
    files = []
    for items in (plain, stored):
        path, _ = write_spool(tmp_path, "x", items, limits, adapter._line, adapter._line_text)
        files.append(path.read_bytes())
    assert files[0] == files[1]


def test_spool_files_hold_each_line_as_encoded_and_refuse_at_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "WRITE_BYTES", 300)  # several joined writes, and lines across
    bodies = [{"model": "m", "messages": [{"role": "user", "content": "é😀" * (i % 7) + str(i)}]}
              for i in range(40)]  # fmt: skip
    items = [BatchItem(key=f"r{i}", body=b, body_json=compact(b)) for i, b in enumerate(bodies)]
    expected = b"".join(
        (json.dumps(openai_batch._line(i), ensure_ascii=False, separators=(",", ":")) + "\n")
        .encode() for i in items
    )  # fmt: skip
    for texts in (openai_batch._line_text, None):
        limits = ProviderLimits(max_items=40, max_bytes=len(expected))
        path, size = write_spool(tmp_path, "x", items, limits, openai_batch._line, texts)
        assert path.read_bytes() == expected and size == len(expected)
        for tight in (ProviderLimits(39, len(expected)), ProviderLimits(40, len(expected) - 1)):
            with pytest.raises(PermanentError, match="batch exceeds"):
                write_spool(tmp_path / "tight", "x", items, tight, openai_batch._line, texts)
            assert list((tmp_path / "tight").iterdir()) == []  # the half-written file removed


async def test_a_claimed_batch_streams_its_items_page_by_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await Store(tmp_path / "b.sqlite3").open()
    fid = await store.claim_file("a.jsonl", "/in/a.jsonl", "/w/a.jsonl", 10)
    bodies = [{"model": "m", "messages": [{"role": "user", "content": f"q{i} é"}]} for i in
              range(25)]  # fmt: skip
    rows = [
        {"line": i + 1, "custom_id": f"c{i}", "model": "m", "provider": "openai", "body": b,
         "size_bytes": 100 * (i + 1), "status": "pending"}
        for i, b in enumerate(bodies)
    ]  # fmt: skip
    await store.add_requests(fid, rows)
    monkeypatch.setattr(StoredItems, "PAGE_ITEMS", 4)
    monkeypatch.setattr(StoredItems, "PAGE_BYTES", 1000)
    claimed = await store.claim_batch_items(
        "openai", "m", "t", "acct", max_items=20, max_bytes=10**9, now=1e12
    )
    assert claimed is not None
    batch_id, items = claimed
    assert len(items) == 20 and (await store.batch(batch_id) or {})["n_items"] == 20
    # sizes 100, 200, ...: the first page holds 4 (1,000 bytes), then each is alone
    assert [len(p) for p in items._pages()] == [4] + [1] * 16
    first = next(iter(items))  # its body is decoded when read, not before (spool never does)
    assert "body" not in vars(first) and first.body == bodies[0] and "body" in vars(first)
    got = list(items)
    assert [i.body for i in got] == bodies[:20]
    assert [i.key for i in got] == [f"r{rid}" for rid in items.ids]
    assert all(i.body_json == compact(i.body) for i in got)
    assert items[3] == got[3] and items[1:3] == got[1:3]
    assert [rid for rid, _ in await store.batch_requests(batch_id)] == list(items.ids)
    assert await store.claim_batch_items(
        "openai", "m", "t2", "acct", max_items=20, max_bytes=10**9, now=1e12
    ) is not None  # the 5 left
    await store.close()
