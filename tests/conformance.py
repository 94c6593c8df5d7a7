"""Shared by the conformance matrix (tests/test_conformance.py, tests/test_conformance_grid.py):
a request turned into a batchd input line and read by batchd's own line reader, and a batch of
provider-native bodies sent to the emulator through batchd's adapters (the official SDKs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adapters.base import BatchItem, ItemResult
from adapters.facts import ANTHROPIC_DEFAULT_API_VERSION
from adapters.registry import make_adapter
from daemon.adapt import Policy
from daemon.reading import iter_lines
from daemon.validate import UNIFIED_KEYS, Invalid, Request

from .daemon_harness import TEST_KEY

OPENAI_URL = "/v1/chat/completions"
GEMINI_CONFIG = {"maxOutputTokens": "max_tokens", "temperature": "temperature", "topP": "top_p"}


def read_line(
    tmp_path: Path, line: dict[str, Any], policy: Policy | None = None
) -> Request | Invalid:
    """One input line as batchd reads it: validated, routed and adapted."""
    path = tmp_path / "line.jsonl"
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    (result,) = iter_lines(path, policy=policy or Policy())
    return result


def native_line(provider: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """The native batchd line carrying a provider body (None: Gemini has no native form)."""
    if provider == "openai":
        return {"custom_id": "native", "method": "POST", "url": OPENAI_URL, "body": body}
    if provider == "anthropic":
        return {"custom_id": "native", "params": body}
    return None


def unified_line(provider: str, model: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """The same request as a unified line, where every field of it has a unified name."""
    if provider == "gemini":
        config = body.get("generationConfig", {})
        if set(body) - {"contents", "generationConfig"} or set(config) - set(GEMINI_CONFIG):
            return None
        messages = [
            {
                "role": "assistant" if c["role"] == "model" else "user",
                "content": "".join(p["text"] for p in c["parts"]),
            }
            for c in body["contents"]
        ]
        line = {"model": model, "messages": messages}
        line.update({GEMINI_CONFIG[k]: v for k, v in config.items()})
        return {"custom_id": "unified", **line}
    if set(body) - set(UNIFIED_KEYS):
        return None
    return {"custom_id": "unified", **body}


async def run_batch(
    url: str,
    spool: Path,
    provider: str,
    model: str,
    bodies: dict[str, dict[str, Any]],
    *,
    api_version: str = ANTHROPIC_DEFAULT_API_VERSION,
) -> dict[str, ItemResult]:
    """Send ``bodies`` (key -> provider-native body) as one batch, wait for it to end (the
    emulator runs at time scale 0: the first poll ends it) and return each item's result."""
    options = {"api_version": api_version} if provider == "anthropic" else {}
    adapter = make_adapter(
        provider, base_url=url, api_key=TEST_KEY, timeout_s=60, spool_dir=spool, options=options
    )
    try:
        items = [BatchItem(key, body) for key, body in bodies.items()]
        submitted = await adapter.submit(f"conformance-{provider}", model, items)
        for _ in range(50):
            status = await adapter.poll(submitted.provider_batch_id)
            if status.state != "running":
                break
        assert status.state == "ended", status
        return {r.key: r async for r in adapter.results(submitted.provider_batch_id)}
    finally:
        await adapter.close()


def failure(result: ItemResult | None) -> str:
    """Why an item did not succeed, for assertion messages."""
    if result is None:
        return "no result"
    return f"{result.outcome}: {result.error}"
