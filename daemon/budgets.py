"""Enqueued-token budgets: how many prompt tokens of a model may wait at a provider at once.

Providers cap the prompt tokens of a model's batches that are queued or running, per account
(OpenAI's ``token_limit_exceeded``: the batch fails at validation and the message prints the
limit; Gemini answers 429 RESOURCE_EXHAUSTED at create; Anthropic limits the requests waiting
in its queue). Such a refusal says nothing about the requests: they go back to pending
without an attempt counted, and the limit is kept per account and model (read from the
message, or set as ``[models."…"] enqueued_token_limit``). New batches of the model then wait
while the tokens of its open batches plus the next batch would exceed it, and a batch is cut
to the room left. The tokens are estimated from the request bodies (``daemon/packing.py``).

A refusal where the estimate said the batch fitted and nothing of ours was open (someone else
fills the quota, or the estimate is low) lowers the share of the limit batchd fills, holds
the model for a backoff and counts an attempt: the budget cannot explain it, so it must not
loop for ever (so does a batch of one request refused with nothing else open: it cannot be
cut). A bare 429 at create (Gemini: no number given) is a quota refusal only while other
batches of the model are open (else an ordinary rate limit, retried without an attempt);
the limit learned from it is a guess, the tokens open when it came, forgotten after
``LEARNED_TTL_S``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loguru import logger

from .config import adapt_policy

if TYPE_CHECKING:
    from .scheduler import Scheduler

TOKEN_LIMIT_CODE = "token_limit_exceeded"  # OpenAI: the batch failed at validation
QUOTA_AT_CREATE = "RESOURCE_EXHAUSTED"  # Gemini: 429 at create
QUOTA_429_PROVIDERS = ("gemini", "anthropic")  # whose 429 at create may be a queue quota
LIMIT_IN_MESSAGE = re.compile(r"Limit:\s*([0-9][0-9,]*)\s*enqueued tokens", re.IGNORECASE)
SOURCE_MESSAGE = "read from the provider's message"
SOURCE_CONFIG = "[models] enqueued_token_limit"
SOURCE_LEARNED = "learned from a refused create (a guess)"
SURPRISE_SCALE = 0.8  # the share filled drops by this factor at each surprise
MIN_SCALE = 0.1
LEARNED_TTL_S = 900.0


def limit_from_message(text: str | None) -> int | None:
    """The limit an OpenAI ``token_limit_exceeded`` message prints ("Limit: 2,000,000
    enqueued tokens"), or None."""
    match = LIMIT_IN_MESSAGE.search(text or "")
    return int(match.group(1).replace(",", "")) if match else None


@dataclass(frozen=True)
class Room:
    """A model's budget as it stands: ``limit`` (the share batchd fills; None when no limit
    is known), the estimated tokens of its open batches and how many there are."""

    limit: int | None
    in_flight: int
    batches: int
    source: str = ""

    @property
    def left(self) -> int | None:
        return None if self.limit is None else self.limit - self.in_flight


@dataclass
class Budgets:
    sched: Scheduler
    _blocked: dict[tuple[str, str], int] = field(default_factory=dict)  # -> tokens in flight
    refusals: int = 0  # batches refused for a quota in this run

    def _account(self, provider: str) -> str:
        return self.sched.providers[provider].account

    def _configured(self, provider: str, model: str) -> int | None:
        info = adapt_policy(self.sched.cfg).registry.info(model, provider)
        return None if info is None else info.enqueued_token_limit

    async def room(self, provider: str, model: str) -> Room:
        store = self.sched.store
        account = self._account(provider)
        tokens, batches = await store.tokens_in_flight(account, model)
        configured = self._configured(provider, model)
        known = await store.budget(account, model)
        if known is not None and known.source == SOURCE_LEARNED:
            if time.time() - known.updated_at > LEARNED_TTL_S:
                known = None
        scale = known.scale if known is not None else 1.0
        if configured is not None:
            return Room(int(configured * scale), tokens, batches, SOURCE_CONFIG)
        if known is None:
            return Room(None, tokens, batches)
        return Room(int(known.limit_tokens * scale), tokens, batches, known.source)

    def blocked(self, provider: str, model: str, room: Room) -> bool:
        """Held by the budget: nothing fitted last time and the open batches are the same."""
        if not room.batches:
            return False  # nothing open: one request always goes (and nothing would unblock it)
        if room.left is not None and room.left <= 0:
            return True
        return self._blocked.get((provider, model)) == room.in_flight

    def note_blocked(self, provider: str, model: str, room: Room) -> None:
        """Nothing fitted the room left: wait until the model's open batches change."""
        if not room.batches:
            return
        if self._blocked.get((provider, model)) != room.in_flight:
            logger.bind(provider=provider, model=model).info(
                "enqueued-token budget of {}: {:,} of {:,} tokens in {} open batch(es); new "
                "batches wait for room ({})",
                model, room.in_flight, room.limit or 0, room.batches, room.source,
            )  # fmt: skip
        self._blocked[(provider, model)] = room.in_flight

    async def refused(
        self, provider: str, model: str, batch: dict[str, Any], limit: int | None
    ) -> tuple[bool, float]:
        """A batch refused for the model's quota (``limit``: printed by the provider, None
        when not). Records the budget; returns (count an attempt, hold the model this long)."""
        store = self.sched.store
        account = self._account(provider)
        # What else of ours was open when it was created (not now: some may have ended since).
        at = float(batch.get("created_at") or time.time())
        others = await store.tokens_open_beside(account, model, int(batch["id"]), at)
        known = await store.budget(account, model)
        scale = known.scale if known is not None else 1.0
        source = SOURCE_MESSAGE
        if limit is None:
            configured = self._configured(provider, model)
            limit = configured or max(others, int(batch.get("tokens") or 0) // 2, 1)
            source = SOURCE_CONFIG if configured else SOURCE_LEARNED
        fitted = others + int(batch.get("tokens") or 0) <= limit * scale
        # Nothing else open and one request alone: it cannot be cut, so it cannot loop for ever.
        count = others == 0 and int(batch.get("n_items") or 0) <= 1
        hold = 0.0
        if others == 0 and fitted and source != SOURCE_LEARNED:
            # Nothing of ours was open and the estimate said it fitted: the quota is used by
            # someone else, or the estimate is low. Fill less of it, and wait a while; the
            # budget cannot explain it, so it counts an attempt (it cannot loop for ever).
            scale = max(MIN_SCALE, scale * SURPRISE_SCALE)
            hold = self.sched.unit_failed(provider, f"budget:{model}")
            count = True
        elif others == 0:
            hold = self.sched.unit_failed(provider, f"budget:{model}")
        else:
            self.sched.unit_ok(provider, f"budget:{model}")
        await store.set_budget(account, model, limit, source, scale)
        self._blocked.pop((provider, model), None)
        logger.bind(provider=provider, model=model).warning(
            "batch refused for the enqueued-token limit of {} ({:,} tokens, {}; batchd fills "
            "{:.0%} of it): its {} requests go back to pending{}; {:,} tokens of {} other open "
            "batch(es); new batches wait for room{}",
            model, limit, source, scale, batch.get("n_items"),
            " (an attempt counted: one request cannot be cut)" if count else
            " without counting an attempt", others, model,
            f" and {hold:.1f}s" if hold else "",
        )  # fmt: skip
        return count, hold

    async def batch_lost(self, row: dict[str, Any], error: str | None) -> bool:
        """A batch that failed whole: when for the enqueued-token limit, its requests go back
        to pending (an attempt counted only as ``refused`` says) and True; else False."""
        if TOKEN_LIMIT_CODE not in (error or ""):
            return False
        provider, model = row["provider"], row["model"]
        count, hold = await self.refused(provider, model, row, limit_from_message(error))
        await self._requeue(row, error or TOKEN_LIMIT_CODE, count, hold)
        return True

    async def create_refused(self, batch_id: int, err: str) -> bool:
        """A create call refused: when for the model's quota (Gemini's 429
        RESOURCE_EXHAUSTED), as ``batch_lost``; else False."""
        row = await self.sched.store.batch(batch_id)
        if row is None:
            return False
        said = "HTTP 429" in err or QUOTA_AT_CREATE in err
        quota = row["provider"] in QUOTA_429_PROVIDERS and said
        if not quota and TOKEN_LIMIT_CODE not in err:
            return False
        limit = limit_from_message(err)
        if limit is None and self._configured(row["provider"], row["model"]) is None:
            tokens, _ = await self.sched.store.tokens_in_flight(row["account"], row["model"])
            if tokens <= int(row.get("tokens") or 0):
                return False  # nothing else of the model open: an ordinary rate limit
        count, hold = await self.refused(row["provider"], row["model"], row, limit)
        await self._requeue(row, err, count, hold)
        return True

    async def _requeue(self, row: dict[str, Any], error: str, count: bool, hold: float) -> None:
        sched = self.sched
        self.refusals += 1
        await sched.store.abort_batch(
            row["id"],
            error,
            next_attempt_at=time.time() + hold,
            count_attempt=count,
            max_attempts=sched.cfg.max_attempts,
            final_error={"type": TOKEN_LIMIT_CODE, "message": error, "code": TOKEN_LIMIT_CODE},
        )
        sched.wake.set()

    async def in_use(self) -> list[tuple[str, str, int, int]]:
        """(provider, model, limit, estimated tokens in flight) of every known budget: what
        ``batchd status`` shows (``Store.budget_use``)."""
        return await self.sched.store.budget_use()
