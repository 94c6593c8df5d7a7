"""What prompt caching costs inside a Claude batch: off, 5-minute TTL, 1-hour TTL, primed.

    .venv/bin/python bench/caching_cost.py                      # 100 and 1,000 requests
    .venv/bin/python bench/caching_cost.py --sizes 100 --emulator-option lanes=8

For each batch size and each mode, a fresh in-process emulator (so no mode reads another's
cache) receives one batch of N requests sharing a system prompt of ~5,000 tokens (20,000
characters), sent through batchd's Anthropic adapter and marked by batchd's own caching
code with the mode's TTL; "primed" first runs a one-request batch with the prefix (1-hour
TTL) and waits for it, as ``cache_priming`` does. The results are priced by batchd's cost
code from the counters the emulator reported (writes at their TTL's price, reads at the read
price), at batch price. Then the table: cache writes and reads, the cost of the batch (and of
the primer), the saving against no caching, and what ``prompt_cache = "auto"`` would choose
for that size with its expected costs.

The figures depend on how the emulator runs a batch's requests: one after another (one
write, then reads) or in concurrent lanes (a write per lane before the first one lands).
``--emulator-option NAME=VALUE`` passes options to ``Emulator(...)`` (e.g. its number of
lanes, where the emulator has that option); the table says which emulator options were used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from adapters.base import BatchItem, ProviderAdapter
from adapters.emulator import Emulator
from adapters.registry import make_adapter
from daemon.caching import _system_key, mark, plan_batch
from daemon.cost import cost_of
from daemon.registry import ModelInfo, default_registry

KEY = "bench-key"
MODES = ("off", "5m", "1h", "primed")


@dataclass
class Outcome:
    mode: str
    writes: int  # results that wrote the cache
    reads: int  # results that read it
    batch_usd: float
    primer_usd: float
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
) -> tuple[float, int, int]:
    """(batch cost, results that wrote, results that read)."""
    submitted = await adapter.submit(f"bench-{time.monotonic_ns()}", model, items)
    for _ in range(600):
        status = await adapter.poll(submitted.provider_batch_id)
        if status.state != "running":
            break
        await asyncio.sleep(0.05)
    else:
        raise TimeoutError("the batch did not end")
    cost = 0.0
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
        if priced is None:
            raise RuntimeError(f"{model} has no price")
        cost += priced
        writes += bool(usage["cache_creation_input_tokens"])
        reads += bool(usage["cached_input_tokens"])
    return cost, writes, reads


def _marked(items: list[BatchItem], info: ModelInfo, ttl: str | None) -> list[BatchItem]:
    """The items marked by batchd's caching code, with the mode's TTL forced."""
    if ttl is None:
        return items
    plans = {k: replace(p, ttl=ttl) for k, p in plan_batch(items, info).items()}
    return mark(items, plans)


async def _one(
    n: int, mode: str, model: str, prompt_tokens: int, options: dict[str, Any]
) -> Outcome:
    info = default_registry().lookup(model)
    assert info is not None
    system = _system(prompt_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        async with Emulator(time_scale=0, state_dir=Path(tmp) / "emu", **options) as emu:
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
            ttl = {"off": None, "5m": "5m", "1h": "1h", "primed": "1h"}[mode]
            items = _marked(_items(n, model, system), info, ttl)
            if mode == "primed":
                body = {**items[0].body, "max_tokens": 1}
                body["messages"] = [{"role": "user", "content": "ok"}]
                primer, _, _ = await _run_batch(adapter, model, [BatchItem("prime", body)], info)
            cost, writes, reads = await _run_batch(adapter, model, items, info)
            await adapter.close()
            return Outcome(mode, writes, reads, cost, primer, time.monotonic() - started)


def _auto(n: int, model: str, prompt_tokens: int) -> str:
    info = default_registry().lookup(model)
    assert info is not None
    plans = plan_batch(_items(n, model, _system(prompt_tokens)), info)
    plan = plans[_system_key(_items(1, model, _system(prompt_tokens))[0].body) or ""]
    figures = ", ".join(f"{k} {v:.1f}" for k, v in plan.costs.items())
    return f"{plan.ttl or 'not marked'} (expected, in prefix-at-input-price units: {figures})"


def _table(rows: list[tuple[int, Outcome]], off: dict[int, float]) -> str:
    lines = [
        "| requests | caching | wrote | read | batch USD | primer USD | total USD | saved |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n, o in rows:
        total = o.batch_usd + o.primer_usd
        saving = 1 - total / off[n]
        lines.append(
            f"| {n:,} | {o.mode} | {o.writes} | {o.reads} | {o.batch_usd:.4f} "
            f"| {o.primer_usd:.4f} | {total:.4f} | {saving:.0%} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--model", default="claude-sonnet-4-5")
    parser.add_argument("--prompt-tokens", type=int, default=5000)
    parser.add_argument(
        "--emulator-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="passed to Emulator(...) (JSON value, else a string)",
    )
    args = parser.parse_args()
    options: dict[str, Any] = {}
    for option in args.emulator_option:
        name, _, value = option.partition("=")
        try:
            options[name] = json.loads(value)
        except json.JSONDecodeError:
            options[name] = value
    rows: list[tuple[int, Outcome]] = []
    off: dict[int, float] = {}
    for n in args.sizes:
        for mode in MODES:
            outcome = await _one(n, mode, args.model, args.prompt_tokens, options)
            off.setdefault(n, outcome.batch_usd)
            rows.append((n, outcome))
            print(f"  {n} {mode}: {outcome.seconds:.1f}s", flush=True)
    print()
    print(
        f"{args.model}, a ~{args.prompt_tokens:,}-token system prompt shared by every request, "
        f"batch prices; emulator options: {options or 'its defaults'}"
    )
    print()
    print(_table(rows, off))
    print()
    for n in args.sizes:
        chosen = _auto(n, args.model, args.prompt_tokens)
        print(f'* {n:,} requests: prompt_cache = "auto" chooses {chosen}')


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except TypeError as exc:  # an --emulator-option this emulator does not have
        raise SystemExit(f"caching_cost: {exc}") from None
