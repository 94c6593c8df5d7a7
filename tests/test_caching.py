"""Prompt caching at submit time: which Claude system prompts get cache_control, and the note."""

from __future__ import annotations

from dataclasses import replace

from adapters.base import BatchItem, TransientError
from daemon.caching import CACHE_CONTROL, cache_note, mark_shared_system_prompts, prepare_items
from daemon.config import Config


def item(key: str, system: object = None, **extra: object) -> BatchItem:
    body: dict[str, object] = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": []}
    if system is not None:
        body["system"] = system
    return BatchItem(key, body | extra)


def test_shared_system_prompt_marked_with_a_1h_ttl() -> None:
    items = [item("a", "LONG"), item("b", "LONG"), item("c", "other"), item("d")]
    out = mark_shared_system_prompts("anthropic", items)
    marked = [{"type": "text", "text": "LONG", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    assert [i.body.get("system") for i in out] == [marked, marked, "other", None]
    assert [i.key for i in out] == ["a", "b", "c", "d"]
    assert items[0].body["system"] == "LONG"  # the input is not mutated
    assert CACHE_CONTROL == {"type": "ephemeral", "ttl": "1h"}


def test_block_system_prompts_mark_their_last_block() -> None:
    blocks = [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]
    out = mark_shared_system_prompts("anthropic", [item("a", blocks), item("b", list(blocks))])
    assert out[0].body["system"] == [blocks[0], {**blocks[1], "cache_control": CACHE_CONTROL}]


def test_left_alone_off_other_providers_single_use_or_user_marked() -> None:
    shared = [item("a", "S"), item("b", "S")]
    assert mark_shared_system_prompts("anthropic", shared, "off") == shared
    assert mark_shared_system_prompts("openai", shared) == shared
    assert mark_shared_system_prompts("anthropic", [item("a", "S")]) == [item("a", "S")]
    own = [item("a", "S", cache_control={"type": "ephemeral"}), item("b", "S")]
    out = mark_shared_system_prompts("anthropic", own)
    assert out[0] == own[0] and out[1].body["system"][0]["cache_control"] == CACHE_CONTROL


def test_cache_note_comes_from_the_provider_counters() -> None:
    body = item("a", "S").body
    usage = {"cache_creation_input_tokens": 1200, "cached_input_tokens": 0}
    assert cache_note("anthropic", body, usage) == (
        "system prompt shared in its batch marked for prompt caching (cache_control, 1h TTL): "
        "1200 tokens written to the cache"
    )
    read = {"cached_input_tokens": 1200}
    assert cache_note("anthropic", body, read).endswith("1200 tokens read from the cache")
    assert cache_note("anthropic", body, {"input_tokens": 9}) is None
    assert cache_note("openai", body, read) is None  # OpenAI caches on its own
    assert cache_note("anthropic", {**body, "cache_control": {}}, read) is None  # the user's own


class _FailingAdapter:
    """An adapter whose create call always fails: priming must not stop the batch."""

    name = "anthropic"

    def __init__(self) -> None:
        self.calls = 0

    async def submit(self, tag: str, model: str, items: list[BatchItem]) -> None:
        self.calls += 1
        raise TransientError("overloaded")


async def test_a_failed_primer_leaves_the_batch_marked_and_unprimed() -> None:
    cfg = replace(Config(), cache_priming=True, request_timeout_s=1.0)
    adapter = _FailingAdapter()
    items = [item("a", "S"), item("b", "S")]
    out = await prepare_items("anthropic", "claude-haiku-4-5", items, cfg, adapter)  # type: ignore[arg-type]
    assert adapter.calls == 1
    assert out == mark_shared_system_prompts("anthropic", items)
    off = replace(cfg, cache_priming=False)
    await prepare_items("anthropic", "claude-haiku-4-5", items, off, adapter)  # type: ignore[arg-type]
    assert adapter.calls == 1  # priming off: no primer
