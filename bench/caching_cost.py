"""What prompt caching costs inside a Claude batch: off, 5-minute TTL, 1-hour TTL, primed.

    .venv/bin/python bench/caching_cost.py                        # 100 and 1,000 requests
    .venv/bin/python bench/caching_cost.py --lanes 4 8            # each lane count in turn
    .venv/bin/python bench/caching_cost.py --sizes 8 10 11 12 13 16 --lanes 8   # threshold

For each lane count, batch size and mode, a fresh in-process emulator (so no mode reads
another's cache) receives one batch of N requests sharing a system prompt of ~5,000 tokens
(20,000 characters), sent through batchd's Anthropic adapter and marked by batchd's own caching
code with the mode's TTL; "primed" first runs a one-request batch with the prefix (1-hour TTL)
and waits for it, as ``cache_priming`` does. The emulator runs a batch's requests in
concurrent lanes (its ``cache_lanes`` setting, default 4): the first request of each lane
writes the cache, the later ones read it. ``--lanes`` sets that setting.

The results are priced by batchd's cost code from the counters the emulator reported (writes
at their TTL's price, reads at the read price), at batch price. The table: cache writes and
reads, the cost of the batch (and of the primer), the saving against no caching, and the
summary's ``paid_off`` as batchd computes it from the same counters (``net`` its net saving,
which must equal the measured saving). Then, per size, what ``prompt_cache = "auto"`` chooses
with its expected costs, against the cheapest mode measured without priming.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from adapters.base import BatchItem, ProviderAdapter
from adapters.emulator import Emulator
from adapters.registry import make_adapter
from daemon.caching import _system_key, mark, plan_batch
from daemon.cost import cache_savings, cost_of
from daemon.registry import ModelInfo, default_registry

KEY = "bench-key"
MODES = ("off", "5m", "1h", "primed")
TTL = {"off": None, "5m": "5m", "1h": "1h", "primed": "1h"}


@dataclass
class Outcome:
    mode: str
    writes: int  # results that wrote the cache
    reads: int  # results that read it
    batch_usd: float
    primer_usd: float
    net_usd: float  # the batch's net caching saving as batchd's summary computes it
    seconds: float


def _system(prompt_tokens: int) -> str:
    sentence = "You translate legal contracts into plain English, clause by clause. "
    return (sentence * (prompt_tokens * 4 // len(sentence) + 1))[: prompt_tokens * 4]


def _items(n: int, model: str, system: str) -> list[BatchItem]:
    return [
        BatchItem(
            f"r{i}",
            {
                "model": model,
                "max_tokens": 64,
                "system": system,
                "messages": [{"role": "user", "content": f"Clause {i}: the tenant pays rent."}],
            },
        )
        for i in range(n)
    ]


async def _run_batch(
    adapter: ProviderAdapter, model: str, items: list[BatchItem], info: ModelInfo
) -> tuple[float, int, int, float]:
    """(batch cost, results that wrote, results that read, batchd's net caching saving)."""
    submitted = await adapter.submit(f"bench-{time.monotonic_ns()}", model, items)
    for _ in range(600):
        status = await adapter.poll(submitted.provider_batch_id)
        if status.state != "running":
            break
        await asyncio.sleep(0.05)
    else:
        raise TimeoutError("the batch did not end")
    cost = net = 0.0
    writes = reads = 0
    async for result in adapter.results(submitted.provider_batch_id):
        if result.outcome != "succeeded":
            raise RuntimeError(f"{result.key}: {result.error}")
        usage = {
            "input_tokens": result.usage.input_tokens,
            "output_tokens": result.usage.output_tokens,
            "cached_input_tokens": result.usage.cached_input_tokens,
            "cache_creation_input_tokens": result.usage.cache_creation_input_tokens,
        }
        priced = cost_of(usage, info, result.response).batch_usd
        saved = cache_savings(usage, info, result.response)
        if priced is None or saved is None:
            raise RuntimeError(f"{model} has no price")
        cost += priced
        net += saved
        writes += bool(usage["cache_creation_input_tokens"])
        reads += bool(usage["cached_input_tokens"])
    return cost, writes, reads, net


def _marked(items: list[BatchItem], info: ModelInfo, ttl: str | None) -> list[BatchItem]:
    """The items marked by batchd's caching code, with the mode's TTL forced."""
    if ttl is None:
        return items
    plans = {k: replace(p, ttl=ttl) for k, p in plan_batch(items, info).items()}
    return mark(items, plans)


async def _one(n: int, mode: str, model: str, prompt_tokens: int, lanes: int) -> Outcome:
    info = default_registry().lookup(model)
    assert info is not None
    system = _system(prompt_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        settings = {"cache_lanes": lanes}
        async with Emulator(time_scale=0, state_dir=Path(tmp) / "emu", faults=settings) as emu:
            adapter = make_adapter(
                "anthropic",
                base_url=emu.url,
                api_key=KEY,
                timeout_s=120,
                spool_dir=Path(tmp) / "spool",
                options={},
            )
            started = time.monotonic()
            primer = 0.0
            items = _marked(_items(n, model, system), info, TTL[mode])
            if mode == "primed":
                body = {**items[0].body, "max_tokens": 1}
                body["messages"] = [{"role": "user", "content": "ok"}]
                primer, *_ = await _run_batch(adapter, model, [BatchItem("prime", body)], info)
            cost, writes, reads, net = await _run_batch(adapter, model, items, info)
            await adapter.close()
            return Outcome(mode, writes, reads, cost, primer, net, time.monotonic() - started)


def _auto(n: int, model: str, prompt_tokens: int) -> tuple[str, str]:
    """(the TTL prompt_cache = "auto" chooses for n requests or "off", its expected costs)."""
    info = default_registry().lookup(model)
    assert info is not None
    items = _items(n, model, _system(prompt_tokens))
    plan = plan_batch(items, info)[_system_key(items[0].body) or ""]
    figures = ", ".join(f"{k} {v:.1f}" for k, v in plan.costs.items())
    return plan.ttl or "off", figures


def _table(rows: list[tuple[int, int, Outcome]], off: dict[tuple[int, int], float]) -> str:
    lines = [
        "| lanes | requests | caching | wrote | read | batch USD | primer USD | total USD | saved "
        "| paid_off (net USD) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for lanes, n, o in rows:
        total = o.batch_usd + o.primer_usd
        saving = 1 - total / off[lanes, n]
        paid = "-" if o.mode == "off" else f"{str(o.net_usd > 0).lower()} ({o.net_usd:+.4f})"
        lines.append(
            f"| {lanes} | {n:,} | {o.mode} | {o.writes} | {o.reads} | {o.batch_usd:.4f} "
            f"| {o.primer_usd:.4f} | {total:.4f} | {saving:.0%} | {paid} |"
        )
    return "\n".join(lines)


def _check(rows: list[tuple[int, int, Outcome]], off: dict[tuple[int, int], float]) -> list[str]:
    """Where batchd's summary (net saving, paid_off) disagrees with what was charged."""
    problems = []
    for lanes, n, o in rows:
        measured = off[lanes, n] - o.batch_usd
        if abs(measured - o.net_usd) > 1e-6 * max(1, n):
            problems.append(f"{lanes} lanes, {n} {o.mode}: net {o.net_usd} != {measured}")
    return problems


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--lanes", type=int, nargs="+", default=[4], help="cache_lanes")
    parser.add_argument("--model", default="claude-sonnet-4-5")
    parser.add_argument("--prompt-tokens", type=int, default=5000)
    args = parser.parse_args()
    rows: list[tuple[int, int, Outcome]] = []
    off: dict[tuple[int, int], float] = {}
    for lanes in args.lanes:
        for n in args.sizes:
            for mode in MODES:
                outcome = await _one(n, mode, args.model, args.prompt_tokens, lanes)
                off.setdefault((lanes, n), outcome.batch_usd)
                rows.append((lanes, n, outcome))
                print(f"  {lanes} lanes, {n} {mode}: {outcome.seconds:.1f}s", flush=True)
    print()
    print(
        f"{args.model}, a ~{args.prompt_tokens:,}-token system prompt shared by every request, "
        "batch prices"
    )
    print()
    print(_table(rows, off))
    print()
    for lanes in args.lanes:
        for n in args.sizes:
            ours = [o for ln, size, o in rows if (ln, size) == (lanes, n) and o.mode != "primed"]
            cheapest = min(ours, key=lambda o: o.batch_usd).mode
            chosen, figures = _auto(n, args.model, args.prompt_tokens)
            verdict = "agrees" if chosen == cheapest else "DISAGREES"
            print(
                f'* {lanes} lanes, {n:,} requests: prompt_cache = "auto" chooses {chosen} '
                f"(expected, in prefix-at-input-price units: {figures}); cheapest measured "
                f"without priming: {cheapest} ({verdict})"
            )
    problems = _check(rows, off)
    print()
    print("paid_off and net saving agree with what was charged" if not problems else problems)


if __name__ == "__main__":
    asyncio.run(main())
