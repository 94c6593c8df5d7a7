"""End to end: retried requests of one model wait together and go out as full batches.

1,000 requests of one model, a batch size that holds them all, and the emulator failing 10 % of
the items with a retryable error, again at each try. Each retry wave must go out as one batch:
the requests a batch sends back share one retry time, and the linger is measured from when
they became due. It used to be measured from their last update, already older than the linger
when the backoff ended, so the retries went out one batch per request or so (41 batches for
43 retried requests in the report that found it).
"""

from __future__ import annotations

from pathlib import Path

from adapters.emulator import Emulator, FaultSet

from .daemon_harness import journal, read_results, run_once, unified, write_jsonl

N = 1000
MODEL = "gpt-4o-mini"
# Backoffs of 0.5 to 1 s for a first retry (longer than the linger, as with the defaults: 2.5
# to 5 s against 2 s), a linger of 0.5 s, and one batch big enough for the whole file.
CONFIG = """
batch_linger_s = 0.5
retry_base_s = 1.0
retry_max_s = 4.0
[providers.openai]
batch_size = 1000
"""
# Expected retry waves: 1,000 x 0.1 = 100, then 10, then 1, then (most runs) none; a few more
# at most, should the dice fall badly. One batch per wave.
MAX_RETRY_BATCHES = 5


async def test_retried_requests_go_out_together_not_one_batch_each(
    tmp_path: Path, emulator: Emulator
) -> None:
    assert emulator.ctx is not None
    emulator.ctx.faults = FaultSet.parse(
        {
            "seed": 11,
            "faults": [
                {"kind": "item_error", "provider": "openai", "rate": 0.1, "error": "rate_limit"}
            ],
        }
    )
    lines = [unified(f"c{i}", MODEL, f"question {i}") for i in range(N)]
    write_jsonl(tmp_path / "inbox" / "big.jsonl", lines)
    run = await run_once(tmp_path, emulator.url, config_extra=CONFIG)
    assert run.returncode == 0, run.stderr[-4000:]
    results = read_results(tmp_path / "outbox" / "big.results.jsonl")
    assert [r["status"] for r in results] == ["succeeded"] * N
    retried = sum(r["attempts"] > 1 for r in results)
    stats = (await journal(emulator.url))["providers"]["openai"]
    retry_batches = stats["batches_created"] - 1
    print(f"retried requests: {retried}; retry batches: {retry_batches}")
    assert retried >= 50, "10 % of 1,000 should have failed at least once"
    assert 1 <= retry_batches <= MAX_RETRY_BATCHES, (retried, retry_batches)
    assert stats["duplicate_items"] == 0
