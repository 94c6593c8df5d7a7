"""Anthropic prompt caching as a batch really experiences it: lanes, minimum prefix, TTL.

The real service runs a batch's requests concurrently and in any order, so requests sharing a
prefix can each pay a cache *write* before any of them can read it. The emulator models that
with lanes: a batch's requests run in ``lanes`` concurrent lanes, request *i* in lane
``i % lanes`` at step ``i // lanes`` (deterministic). What a step writes becomes readable from
the next step on, so the first step of every lane misses the cache.

A breakpoint (a ``cache_control`` mark) is cacheable only when the prompt up to and including
its block is at least the model's minimum (1,024, 2,048 or 4,096 tokens): below it there is no
write and no read, and no error. Entries live for their ``ttl`` ("5m" or "1h", default "5m") of
emulator time (``Context.now``), and every read extends the entry by its TTL again. The usage
splits written tokens by TTL (``cache_creation.ephemeral_5m_input_tokens`` /
``ephemeral_1h_input_tokens``), so a client can price 5-minute writes at 1.25x and 1-hour writes
at 2x the input price. Sources: docs/emulator-anthropic.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .answers import estimate_tokens

TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


def _block_text(block: dict[str, Any]) -> str:
    if block.get("type") == "text":
        return str(block.get("text", ""))
    rest = {k: v for k, v in block.items() if k != "cache_control"}
    return json.dumps(rest, sort_keys=True, separators=(",", ":"))


def prompt_segments(params: dict[str, Any]) -> list[tuple[str, Any]]:
    """The prompt in cache order (tools, system, messages): (text, cache_control) per block."""
    segments: list[tuple[str, Any]] = []
    for tool in params.get("tools") or []:
        rest = {k: v for k, v in tool.items() if k != "cache_control"}
        segments.append((json.dumps(rest, sort_keys=True), tool.get("cache_control")))
    system = params.get("system")
    if isinstance(system, str) and system:
        segments.append((system, None))
    elif isinstance(system, list):
        segments.extend((_block_text(b), b.get("cache_control")) for b in system)
    for message in params["messages"]:
        content = message["content"]
        if isinstance(content, str):
            segments.append((content, None))
        else:
            segments.extend((_block_text(b), b.get("cache_control")) for b in content)
    top = params.get("cache_control")
    if top is not None and segments and segments[-1][1] is None:
        segments[-1] = (segments[-1][0], top)
    return segments


@dataclass
class CacheUsage:
    total: int  # prompt tokens, cached or not
    read: int = 0
    created_5m: int = 0
    created_1h: int = 0

    @property
    def created(self) -> int:
        return self.created_5m + self.created_1h


class PromptCache:
    """The prefix cache as one batch run sees it (owned by the worker thread running it).

    ``known`` maps prefix digests to the emulator time their entry expires, as they stood when
    the batch started; :attr:`changes` collects the entries this run wrote or refreshed, for the
    caller to keep.
    """

    def __init__(self, known: dict[str, float], now: float, lanes: int) -> None:
        self.entries = dict(known)
        self.now = now
        self.lanes = max(1, lanes)
        self.changes: dict[str, float] = {}
        self._step: dict[str, float] = {}  # written in the current step, readable after it
        self._in_step = 0

    def usage(self, model: str, segments: list[tuple[str, Any]], min_tokens: int) -> CacheUsage:
        """Token accounting for one request that runs: the longest live cacheable breakpoint
        prefix is read, the part after it up to the last cacheable breakpoint is written."""
        texts = [text for text, _ in segments]
        usage = CacheUsage(total=estimate_tokens("\n".join(texts)) if texts else 0)
        points = [i for i, (_, cache_control) in enumerate(segments) if cache_control]
        if points:
            self._account(usage, model, segments, texts, points, min_tokens)
        self._in_step += 1
        if self._in_step >= self.lanes:
            self._end_step()
        return usage

    def _account(
        self,
        usage: CacheUsage,
        model: str,
        segments: list[tuple[str, Any]],
        texts: list[str],
        points: list[int],
        min_tokens: int,
    ) -> None:
        tokens = {i: estimate_tokens("\n".join(texts[: i + 1])) for i in points}
        cacheable = [i for i in points if tokens[i] >= min_tokens]
        if not cacheable:
            return
        digests = self._digests(model, texts, cacheable)
        ttls = {i: segments[i][1].get("ttl", "5m") for i in cacheable}
        live = [i for i in cacheable if self.entries.get(digests[i], 0.0) > self.now]
        read_at = max(live, default=-1)
        done = 0
        if read_at >= 0:
            usage.read = done = tokens[read_at]
            self._keep(digests[read_at], ttls[read_at], now_visible=True)
        for i in cacheable:
            if i <= read_at:
                continue
            written = tokens[i] - done
            if ttls[i] == "1h":
                usage.created_1h += written
            else:
                usage.created_5m += written
            done = tokens[i]
            self._keep(digests[i], ttls[i], now_visible=False)

    @staticmethod
    def _digests(model: str, texts: list[str], points: list[int]) -> dict[int, str]:
        running = hashlib.blake2b(model.encode(), digest_size=16)
        out: dict[int, str] = {}
        wanted = set(points)
        for index, text in enumerate(texts[: max(points) + 1]):
            running.update(b"\x00" + text.encode())
            if index in wanted:
                out[index] = running.copy().hexdigest()
        return out

    def _keep(self, digest: str, ttl: str, *, now_visible: bool) -> None:
        expires = self.now + TTL_SECONDS.get(ttl, TTL_SECONDS["5m"])
        target = self.entries if now_visible else self._step
        target[digest] = max(target.get(digest, 0.0), expires)
        self.changes[digest] = max(self.changes.get(digest, 0.0), expires)

    def _end_step(self) -> None:
        for digest, expires in self._step.items():
            self.entries[digest] = max(self.entries.get(digest, 0.0), expires)
        self._step.clear()
        self._in_step = 0
