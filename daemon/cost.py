"""What a request cost, from its usage and the registry's prices: at batch price and live.

Usage is the adapters' normalised form: ``input_tokens`` counts every prompt token, cached or
not; ``cached_input_tokens`` are cache reads; ``cache_creation_input_tokens`` are cache writes
(Anthropic). So the uncached part is input minus reads minus writes, and each part is priced
at its own rate. The batch discount applies to every part (Anthropic's batch and caching
discounts stack; OpenAI's and Gemini's batch price is half of each list price).

Cache writes are priced by their time to live, as the provider reported them: Anthropic's raw
``usage.cache_creation`` splits them into ``ephemeral_5m_input_tokens`` (a 5-minute write,
``cache_write_5m``, 1.25 x input) and ``ephemeral_1h_input_tokens`` (a 1-hour write,
``cache_write``, 2 x input). Writes the provider did not split are priced as 1-hour writes,
the dearer kind, so a saving is never overstated.

A missing price gives ``None``, never a guess: a model the registry has no price for, or a
cache read or write where the registry knows no cache price. Zero tokens cost zero, priced or
not (an invalid line was never sent, so it was never billed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from .registry import ModelInfo

PER = 1_000_000
DIGITS = 8  # round away float noise; a millionth of a cent is far below any bill's precision


@dataclass(frozen=True)
class Cost:
    batch_usd: float | None  # what the batch is billed
    live_usd: float | None  # what the same tokens would cost without batching


NO_COST = Cost(0.0, 0.0)
UNKNOWN = Cost(None, None)


def _tokens(usage: Mapping[str, Any] | None, key: str) -> int:
    return int((usage or {}).get(key) or 0)


class CacheWrites(NamedTuple):
    """A result's cache-write tokens by time to live, as the provider reported them."""

    five_m: int  # 5-minute writes (cache_write_5m)
    one_h: int  # 1-hour writes (cache_write)
    unsplit: int  # writes the provider did not split by TTL: priced as 1-hour writes


def cache_writes(
    usage: Mapping[str, Any] | None, response: Mapping[str, Any] | None
) -> CacheWrites:
    """The cache writes of a result: the provider's split when its raw answer (``response``,
    an Anthropic result line) has one."""
    written = _tokens(usage, "cache_creation_input_tokens")
    split = _split(response) if written else None  # (no writes: the answer is not read)
    if split is None or not written:
        return CacheWrites(0, 0, written)
    five = min(split[0], written)
    hour = min(split[1], written - five)
    return CacheWrites(five, hour, written - five - hour)


def _split(response: Mapping[str, Any] | None) -> tuple[int, int] | None:
    result = (response or {}).get("result")
    message = result.get("message") if isinstance(result, Mapping) else None
    usage = message.get("usage") if isinstance(message, Mapping) else None
    creation = usage.get("cache_creation") if isinstance(usage, Mapping) else None
    if not isinstance(creation, Mapping):
        return None
    return (
        _tokens(creation, "ephemeral_5m_input_tokens"),
        _tokens(creation, "ephemeral_1h_input_tokens"),
    )


def cost_of(
    usage: Mapping[str, Any] | None,
    info: ModelInfo | None,
    response: Mapping[str, Any] | None = None,
) -> Cost:
    """The cost of one request's ``usage`` under ``info``'s prices; ``response`` is the
    provider's raw answer, read for the time to live of cache writes."""
    total_in = _tokens(usage, "input_tokens")
    output = _tokens(usage, "output_tokens")
    read = _tokens(usage, "cached_input_tokens")
    written = _tokens(usage, "cache_creation_input_tokens")
    if total_in == 0 and output == 0:
        return NO_COST
    if info is None:
        return UNKNOWN
    p = info.prices
    if not read and not written:  # the usual case: input and output only
        batch, live_usd = _plain(total_in, output, p.input, p.output, info.batch_discount)
        return UNKNOWN if batch is None else Cost(batch, live_usd)
    five, hour, unsplit = cache_writes(usage, response)
    hour += unsplit
    parts = [
        (max(0, total_in - read - written), p.input),
        (output, p.output),
        (read, p.cached_input),
        (five, p.cache_write_5m),
        (hour, p.cache_write),
    ]
    if any(tokens and price is None for tokens, price in parts):
        return UNKNOWN
    live = sum(tokens * (price or 0.0) for tokens, price in parts) / PER
    return Cost(round(live * info.batch_discount, DIGITS), round(live, DIGITS))


def _plain(
    total_in: int, output: int, p_in: float | None, p_out: float | None, discount: float
) -> tuple[float | None, float | None]:
    """(batch, live) of input and output tokens without cache reads or writes (both given)."""
    if (total_in and p_in is None) or (output and p_out is None):
        return None, None
    live = (total_in * (p_in or 0.0) + output * (p_out or 0.0)) / PER
    return round(live * discount, DIGITS), round(live, DIGITS)


PlainPrice = Callable[[int, int], tuple[float | None, float | None]]


def plain_pricer(info: ModelInfo | None) -> PlainPrice:
    """``cost_of`` of a result without cache reads or writes (the usual one) under ``info``,
    as ``(batch_usd, live_usd)`` from its input and output tokens: the same values, without
    building a :class:`Cost`, for a writer that prices every result of a file."""
    if info is None:
        return lambda total_in, output: (0.0, 0.0) if not total_in and not output else (None, None)
    p_in, p_out, discount = info.prices.input, info.prices.output, info.batch_discount
    rate_in, rate_out = p_in or 0.0, p_out or 0.0

    def price(total_in: int, output: int) -> tuple[float | None, float | None]:
        # _plain, inlined (this runs for every result of a file): the same arithmetic
        if not total_in and not output:
            return 0.0, 0.0
        if type(total_in) is not int or type(output) is not int:
            total_in, output = int(total_in or 0), int(output or 0)
        if (total_in and p_in is None) or (output and p_out is None):
            return None, None
        live = (total_in * rate_in + output * rate_out) / PER
        return round(live * discount, DIGITS), round(live, DIGITS)

    return price


def cache_savings(
    usage: Mapping[str, Any] | None,
    info: ModelInfo | None,
    response: Mapping[str, Any] | None = None,
) -> float | None:
    """What prompt caching saved on this request at batch price, from what was charged:
    cache reads at the read price instead of the input price, minus each cache write's
    surcharge over the input price at its time to live (5-minute or 1-hour, see
    :func:`cache_writes`). Negative when the writes cost more than the reads saved; None
    without the prices."""
    read = _tokens(usage, "cached_input_tokens")
    if not read and not _tokens(usage, "cache_creation_input_tokens"):
        return 0.0
    five, hour, unsplit = cache_writes(usage, response)
    hour += unsplit
    if info is None or info.prices.input is None:
        return None
    p = info.prices
    base = info.prices.input
    needed = ((read, p.cached_input), (five, p.cache_write_5m), (hour, p.cache_write))
    if any(tokens and price is None for tokens, price in needed):
        return None
    saved = read * (base - (p.cached_input or 0.0))
    surcharge = five * ((p.cache_write_5m or 0.0) - base)
    surcharge += hour * ((p.cache_write or 0.0) - base)
    return round((saved - surcharge) / PER * info.batch_discount, DIGITS)


def estimate(input_tokens: int, info: ModelInfo | None) -> Cost:
    """The input-side cost of prompts of ``input_tokens`` (``batchd check``: no answers yet)."""
    return cost_of({"input_tokens": input_tokens}, info)


class CostTotals:
    """Sums of costs over results; counts the ones that had tokens but no price."""

    def __init__(self) -> None:
        self.batch = 0.0
        self.live = 0.0
        self.unpriced = 0

    def add(self, cost: Cost) -> None:
        """Add one result's cost; an unknown one (tokens without a price) is only counted."""
        if cost.batch_usd is None or cost.live_usd is None:
            self.unpriced += 1
            return
        self.batch += cost.batch_usd
        self.live += cost.live_usd

    def as_dict(self) -> dict[str, Any]:
        """Summary fields. Totals cover the priced results only; ``unpriced_requests`` says
        how many used tokens without a known price (then the totals are a lower bound)."""
        return {
            "cost_usd": round(self.batch, DIGITS),
            "cost_usd_live": round(self.live, DIGITS),
            "savings_usd": round(self.live - self.batch, DIGITS),
            "unpriced_requests": self.unpriced,
        }
