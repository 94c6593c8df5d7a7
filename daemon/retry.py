"""Backoff as pure functions, with the randomness injected (so tests can pin it)."""

from __future__ import annotations

import math
import random

# A provider's Retry-After is honoured up to this long (longer, infinite included, is taken as
# this long; NaN as absent): a mad header must not stall a provider for days.
RETRY_AFTER_MAX_S = 3600.0
# 2**MAX_DOUBLINGS exceeds any cap; a higher power of two would overflow a float (a counter of
# consecutive failures grows for as long as a provider stays down).
MAX_DOUBLINGS = 1000


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
    provider's ``Retry-After`` is a floor, never shortened by jitter (nor by the cap), up to
    ``RETRY_AFTER_MAX_S``.
    """
    rng = rng or random.Random()
    exp = min(cap_s, base_s * 2.0 ** min(MAX_DOUBLINGS, max(0, attempt - 1)))
    delay = exp / 2 + rng.uniform(0, exp / 2)
    if retry_after_s is not None and not math.isnan(retry_after_s):
        delay = max(delay, min(retry_after_s, RETRY_AFTER_MAX_S))
    return delay


