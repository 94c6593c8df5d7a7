"""Gemini inline vs file input, decided on the bytes the SDK will actually send.

google-genai serialises the create body with ``json.dumps`` defaults: every non-ASCII
character becomes a 6-byte ``\\uXXXX`` escape (12 bytes for emoji), separators carry spaces.
CJK text is about twice its compact UTF-8 size on the wire, emoji three times, so a batch
measured on compact UTF-8 could pass a 20 MB inline limit on paper and be refused on the wire.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from adapters.base import BatchItem
from adapters.emulator import Emulator
from adapters.gemini_batch import (
    DEFAULT_INLINE_MAX_BYTES,
    INLINE_HARD_MAX_BYTES,
    INLINE_MARGIN_BYTES,
    fits_inline,
    inline_wire_bytes,
)
from adapters.registry import make_adapter

from .conftest import TEST_KEY

CJK = "漢"  # 3 bytes of UTF-8, 6 on the wire
EMOJI = "😀"  # 4 bytes of UTF-8, 12 on the wire (a surrogate pair of escapes)
LIMIT = 200_000  # a small inline_max_bytes, so the test moves kilobytes, not megabytes


def request(text: str) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


def inline(items: list[BatchItem]) -> list[dict[str, Any]]:
    """The inline entries the adapter builds from its spooled lines."""
    return [{"request": i.body, "metadata": {"key": i.key}} for i in items]


def sized(char: str, wire: int, tag: str, n: int = 4) -> list[BatchItem]:
    """``n`` items of ``char`` text whose create body is exactly ``wire`` bytes on the wire
    (padded with ASCII to land on the byte)."""
    per_char = len(json.dumps(char)) - 2
    empty = inline_wire_bytes(tag, inline([BatchItem(f"k{i}", request("")) for i in range(n)]))
    chars, pad = divmod(wire - empty, per_char * n)
    texts = [char * chars for _ in range(n)]
    texts[0] += "a" * pad
    items = [BatchItem(f"k{i}", request(t)) for i, t in enumerate(texts)]
    assert inline_wire_bytes(tag, inline(items)) == wire
    return items


def utf8_size(items: list[BatchItem]) -> int:
    return sum(len(json.dumps(i.body, ensure_ascii=False).encode()) for i in items)


def test_wire_size_counts_the_sdk_escapes() -> None:
    one = inline_wire_bytes("t", inline([BatchItem("k", request(""))]))
    assert inline_wire_bytes("t", inline([BatchItem("k", request(CJK * 10))])) == one + 60
    assert inline_wire_bytes("t", inline([BatchItem("k", request(EMOJI * 10))])) == one + 120
    assert inline_wire_bytes("t", inline([BatchItem("k", request("a" * 10))])) == one + 10


def test_the_decision_at_the_real_limit() -> None:
    """Whatever inline_max_bytes says, the wire body stays a margin under 20 MB."""
    top = INLINE_HARD_MAX_BYTES - INLINE_MARGIN_BYTES
    assert fits_inline(top, INLINE_HARD_MAX_BYTES - 1)
    assert not fits_inline(top + 1, INLINE_HARD_MAX_BYTES - 1)
    assert fits_inline(LIMIT, LIMIT) and not fits_inline(LIMIT + 1, LIMIT)
    # 9.6 MB of compact UTF-8 CJK is ~19 MB on the wire, of emoji ~29 MB: under the default
    # threshold (10 MB) on paper, both go as a file; emoji never fits, whatever the setting.
    for char, factor in ((CJK, 2), (EMOJI, 3)):
        text = char * (9_600_000 // len(char.encode()) // 4)
        items = [BatchItem(f"k{i}", request(text)) for i in range(4)]
        wire = inline_wire_bytes("t", inline(items))
        assert utf8_size(items) < DEFAULT_INLINE_MAX_BYTES < wire
        assert wire == pytest.approx(factor * utf8_size(items), rel=0.01)
        assert not fits_inline(wire, DEFAULT_INLINE_MAX_BYTES)
        assert fits_inline(wire, 19_999_999) is (char == CJK)  # 19.2 MB fits a raised setting


@pytest.fixture
async def capture() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A stand-in Gemini endpoint that records the raw create bodies it gets."""
    bodies: list[bytes] = []

    async def create(req: web.Request) -> web.Response:
        bodies.append(await req.read())
        meta = {"state": "BATCH_STATE_PENDING", "displayName": "x"}
        return web.json_response({"name": "batches/captured", "metadata": meta})

    app = web.Application()
    app.router.add_post("/{ver}/models/{model}", create)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", bodies
    await runner.cleanup()


@pytest.mark.parametrize("char", [CJK, EMOJI])
async def test_measured_size_is_the_size_on_the_wire(
    capture: tuple[str, list[bytes]], tmp_path: Path, char: str
) -> None:
    url, bodies = capture
    adapter = make_adapter(
        "gemini",
        base_url=url,
        api_key=TEST_KEY,
        timeout_s=10,
        spool_dir=tmp_path,
        options={"inline_max_bytes": LIMIT},
    )
    items = sized(char, LIMIT, "wire")
    submitted = await adapter.submit("wire", "gemini-2.5-flash", items)
    await adapter.close()
    assert submitted.input_file_id is None
    (sent,) = bodies
    assert len(sent) == LIMIT  # what the SDK put on the wire, to the byte
    assert sent.isascii()


@pytest.mark.parametrize("char", [CJK, EMOJI])
@pytest.mark.parametrize(("delta", "goes_inline"), [(0, True), (-1, True), (1, False)])
async def test_inline_just_under_and_file_just_over(
    emulator: Emulator, tmp_path: Path, char: str, delta: int, goes_inline: bool
) -> None:
    adapter = make_adapter(
        "gemini",
        base_url=emulator.url,
        api_key=TEST_KEY,
        timeout_s=10,
        spool_dir=tmp_path,
        options={"inline_max_bytes": LIMIT},
    )
    items = sized(char, LIMIT + delta, "edge")
    assert utf8_size(items) < LIMIT / 1.9  # on compact UTF-8 it would have gone inline
    submitted = await adapter.submit("edge", "gemini-2.5-flash", items)
    try:
        assert (submitted.input_file_id is None) is goes_inline
        for _ in range(20):  # time scale 0: the batch ends when it is first looked at
            status = await adapter.poll(submitted.provider_batch_id)
            if status.state != "running":
                break
        assert status.state == "ended"
        results = [r async for r in adapter.results(submitted.provider_batch_id)]
        assert sorted(r.key for r in results) == [i.key for i in items]
        assert all(r.outcome == "succeeded" for r in results)
    finally:
        await adapter.close()
