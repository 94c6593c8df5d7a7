"""Property-based tests (hypothesis) of the backoff: every wait stays within its bounds.

For any attempt number (a consecutive-failure counter can grow for as long as a provider is
down), any base and cap, any Retry-After a provider or a proxy sends (zero, huge, infinite,
NaN) and any random draw: the wait is a finite number of seconds, at least half the exponential
step, at most the cap unless the provider's Retry-After says longer, and never shorter than that
Retry-After (up to ``RETRY_AFTER_MAX_S``).

Short profile in ``make test``; ``HYPOTHESIS_PROFILE=long`` (or ``bench/properties.py``) for many
more examples.
"""

from __future__ import annotations

import math
import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.polling import poll_interval_s
from daemon.retry import RETRY_AFTER_MAX_S, backoff_s

settings.register_profile(
    "long", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])

attempts = st.integers(min_value=-3, max_value=10**7)
bases = st.floats(min_value=0.001, max_value=10_000)
caps = st.floats(min_value=0.0, max_value=10**6)
retry_afters = st.none() | st.floats(min_value=-10, allow_infinity=True) | st.just(math.nan)
seeds = st.integers(min_value=0, max_value=2**32)


@given(attempts, bases, caps, retry_afters, seeds)
def test_backoff_stays_within_its_bounds(
    attempt: int, base: float, cap: float, retry_after: float | None, seed: int
) -> None:
    delay = backoff_s(
        attempt, base_s=base, cap_s=cap, retry_after_s=retry_after, rng=random.Random(seed)
    )
    assert math.isfinite(delay) and delay >= 0
    step = min(cap, base * 2.0 ** min(1000, max(0, attempt - 1)))  # the exponential step
    assert delay >= step / 2
    floor = None if retry_after is None or math.isnan(retry_after) else retry_after
    if floor is not None:
        assert delay >= min(floor, RETRY_AFTER_MAX_S)
    if floor is None or floor <= cap:
        assert delay <= cap
    assert delay <= max(cap, RETRY_AFTER_MAX_S)


@given(st.integers(min_value=1, max_value=60), bases, st.floats(min_value=1, max_value=10**5))
def test_backoff_never_shrinks_below_the_previous_steps_floor(
    attempt: int, base: float, cap: float
) -> None:
    """The fixed half of the wait grows with each failure until the cap: the next attempt's
    shortest wait is at least the previous attempt's shortest wait."""
    lowest = backoff_s(attempt, base_s=base, cap_s=cap, rng=_Extreme(0.0))
    next_lowest = backoff_s(attempt + 1, base_s=base, cap_s=cap, rng=_Extreme(0.0))
    assert next_lowest >= lowest
    assert backoff_s(attempt, base_s=base, cap_s=cap, rng=_Extreme(1.0)) <= cap


class _Extreme(random.Random):
    """A random source pinned to one end of every range (0: lowest, 1: highest)."""

    def __init__(self, end: float) -> None:
        super().__init__(0)
        self.end = end

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.end


@given(
    st.floats(min_value=0, max_value=10**7),
    st.floats(min_value=0.01, max_value=100),
    st.floats(min_value=1, max_value=10),
    st.floats(min_value=0.01, max_value=10**5),
)
def test_poll_interval_stays_between_initial_and_max(
    age: float, initial: float, factor: float, max_s: float
) -> None:
    interval = poll_interval_s(age, initial_s=initial, factor=factor, max_s=max_s)
    assert interval <= max_s and (interval >= initial or interval == max_s)
    older = poll_interval_s(age * 2 + 1, initial_s=initial, factor=factor, max_s=max_s)
    assert older >= interval  # an older batch is never polled more often
