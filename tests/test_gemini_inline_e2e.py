"""Gemini's inline limit end to end: CJK and emoji files just under and just over it.

google-genai sends the inline create body with ``json.dumps`` defaults, so a CJK character is
6 bytes on the wire and an emoji 12, two and three times their UTF-8 size. batchd measures the
body the SDK will send (adapters/gemini_batch.py) and keeps inline batches a margin under the
API's 20,000,000-byte limit; above that the batch goes as an uploaded JSONL file. Here a real
``batchd run --once`` (with ``inline_max_bytes`` raised to its highest value, so the real limit
is the one that decides) gets a file of 4 requests whose create body would be

* just under batchd's inline bound (20,000,000 less the margin): it goes inline, and the
  emulator's journal shows one create call of that size and no upload;
* just over the API's own limit (while its compact UTF-8 is a third to a half of it, which is
  what used to be measured): it goes as a file, and the journal shows the upload and a small
  create call.

Every line succeeds either way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters.emulator import Emulator
from adapters.gemini_batch import INLINE_HARD_MAX_BYTES, INLINE_MARGIN_BYTES, inline_wire_bytes

from .daemon_harness import journal, read_results, run_once

MODEL = "gemini-2.5-flash"
TAG = "batchd-0123456789abcdef"  # the shape of batchd's batch tags: the length is what counts
N = 4
CONFIG = "[providers.gemini]\ninline_max_bytes = 19999999\n"
INLINE_BOUND = INLINE_HARD_MAX_BYTES - INLINE_MARGIN_BYTES
SLACK = 64  # request ids of a fresh database are r1..r4; leave room for longer ones
SIZES = {"under": INLINE_BOUND - SLACK, "over": INLINE_HARD_MAX_BYTES + SLACK}


def body(text: str) -> dict[str, Any]:
    """What batchd sends for a unified line with this prompt and max_tokens 8."""
    return {
        "contents": [{"role": "user", "parts": [{"text": text}]}],
        "generationConfig": {"maxOutputTokens": 8},
    }


def wire(texts: list[str]) -> int:
    requests = [{"request": body(t), "metadata": {"key": f"r{i + 1}"}} for i, t in enumerate(texts)]
    return inline_wire_bytes(TAG, requests)


def texts_for(char: str, target: int) -> list[str]:
    """N prompts of ``char`` whose inline create body is ``target`` bytes on the wire."""
    per_char = len(json.dumps(char)) - 2
    chars, pad = divmod(target - wire([""] * N), per_char * N)
    texts = [char * chars for _ in range(N)]
    texts[0] += "a" * pad
    assert wire(texts) == target
    return texts


@pytest.mark.parametrize("side", ["under", "over"])
@pytest.mark.parametrize("char", ["漢", "😀"], ids=["cjk", "emoji"])
async def test_cjk_and_emoji_around_the_inline_limit(
    tmp_path: Path, emulator: Emulator, char: str, side: str
) -> None:
    texts = texts_for(char, SIZES[side])
    lines = [
        {"custom_id": f"c{i}", "model": MODEL, "messages": [{"role": "user", "content": t}],
         "max_tokens": 8}
        for i, t in enumerate(texts)
    ]  # fmt: skip
    utf8 = sum(len(json.dumps(ln, ensure_ascii=False).encode()) for ln in lines)
    assert utf8 < SIZES[side] / 1.9  # on compact UTF-8 every case would have gone inline
    inbox = tmp_path / "inbox"
    inbox.mkdir(parents=True)
    with (inbox / "wide.jsonl").open("w", encoding="utf-8") as fh:
        for ln in lines:
            fh.write(json.dumps(ln, ensure_ascii=False) + "\n")
    del texts, lines

    run = await run_once(tmp_path, emulator.url, config_extra=CONFIG)
    assert run.returncode == 0, run.stderr[-3000:]
    results = read_results(tmp_path / "outbox" / "wide.results.jsonl")
    assert [r["custom_id"] for r in results] == [f"c{i}" for i in range(N)]
    assert all(r["status"] == "succeeded" for r in results), [r.get("error") for r in results]

    record = await journal(emulator.url)
    calls = [c for c in record["calls"] if c["provider"] == "gemini"]
    creates = [c for c in calls if c["route"] == "batches.create"]
    uploads = [c for c in calls if c["route"] in ("files.create", "upload")]
    assert len(creates) == 1 and creates[0]["status"] == 200, creates
    assert record["providers"]["gemini"]["batches_created"] == 1
    if side == "under":  # inline: the whole body in the create call, under the API's limit
        assert uploads == []
        assert SIZES[side] - SLACK <= creates[0]["bytes"] <= INLINE_BOUND, creates
    else:  # a file: uploaded, then a create call that only names it
        assert uploads and all(c["status"] == 200 for c in uploads), uploads
        assert creates[0]["bytes"] < 10_000
        assert sum(c["bytes"] or 0 for c in uploads) >= utf8
