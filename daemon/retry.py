"""Backoff as pure functions, with the randomness injected (so tests can pin it)."""

from __future__ import annotations

import random


def backoff_s(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` >= 1 failures so far).

    Exponential with "equal jitter" (half fixed, half random), capped at ``cap_s``; a
    provider's ``Retry-After`` is a floor, never shortened by jitter.
    """
    rng = rng or random.Random()
    exp = min(cap_s, base_s * 2.0 ** max(0, attempt - 1))
    delay = exp / 2 + rng.uniform(0, exp / 2)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


def next_poll_interval_s(
    current_s: float, *, progressed: bool, initial_s: float, factor: float, max_s: float
) -> float:
    """Polling backs off per batch and resets when the batch made progress."""
    if progressed:
        return initial_s
    return min(max_s, max(initial_s, current_s * factor))
