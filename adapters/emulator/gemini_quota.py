"""Gemini batch quotas: enqueued tokens and concurrent batches per model, refused at create.

Batch mode has per-model limits on the tokens of the batches still pending or running and on
how many of them there are; the real service answers a create call that would exceed one with
429 RESOURCE_EXHAUSTED (sometimes below the documented numbers). The limits are configured in
settings.py (``enqueued_token_limits``, ``concurrent_batch_limits``); none is set by default. A
refusal creates nothing and clears as the model's batches end. The message and the ``Help``
detail are the ones Google sends for an exhausted quota (docs/emulator-gemini.md); unlike
OpenAI's, they do not print the limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .core import Context
from .gemini_files import GeminiError

QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. "
    "To monitor your current usage, head to: https://ai.dev/rate-limit. "
)
QUOTA_DETAILS = [
    {
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [
            {
                "description": "Learn more about Gemini API quotas",
                "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
            }
        ],
    }
]
ENDED = {
    "BATCH_STATE_SUCCEEDED",
    "BATCH_STATE_FAILED",
    "BATCH_STATE_CANCELLED",
    "BATCH_STATE_EXPIRED",
}


def enqueued(ctx: Context, batch: dict[str, Any]) -> bool:
    """Whether a batch still counts against its model's quotas (pending or running)."""
    if batch["state"] in ENDED:
        return False
    if ctx.time_scale <= 0:
        return True  # it ends when it is next looked at
    return ctx.phase(batch["created"], batch["n"]) in ("validating", "in_progress")


def check_quota(ctx: Context, batches: Iterable[dict[str, Any]], model: str, tokens: int) -> None:
    """Refuse (429) a new batch of ``tokens`` that would exceed one of ``model``'s quotas."""
    settings = ctx.faults.settings
    token_limit = settings.token_limit(model)
    batch_limit = settings.concurrency_limit(model)
    if token_limit is None and batch_limit is None:
        return
    live = [b for b in batches if b["model"] == model and enqueued(ctx, b)]
    over_tokens = token_limit is not None and (
        sum(b.get("tokens", 0) for b in live) + tokens > token_limit
    )
    over_batches = batch_limit is not None and len(live) + 1 > batch_limit
    if over_tokens or over_batches:
        ctx.journal.count("gemini", "enqueued_limit_refusals")
        raise GeminiError(429, "RESOURCE_EXHAUSTED", QUOTA_MESSAGE, details=QUOTA_DETAILS)
