"""Where batchd's per-request CPU goes: the data path's stages, one at a time, in one process.

    .venv/bin/python bench/stages.py 20000
    .venv/bin/python bench/stages.py 20000 --profile ingest   # cProfile of one stage

No network and no emulator: each stage is the daemon's own code on N gpt-4o-mini requests
(the requests of ``bench/compare.py``), timed with the process's CPU clock (every thread):

* ``ingest``: an inbox file claimed, read, validated, adapted and stored (``ingest.claim``);
* ``claim``: the batch's intent row and its requests moved into it
  (``Store.claim_batch_items``);
* ``spool``: the batch's items streamed from the store and written as the OpenAI input JSONL;
* ``results``: the provider's output file (synthesised, as the emulator writes it) parsed
  line by line and stored (``parse_result_text``, ``answered`` or ``item_update``,
  ``Store.record_results``);
* ``finish``: the results and summary files written from the store (``finish._rows``,
  ``outbox.write_outputs``).

Prints CPU per stage, in seconds and in µs per request. With ``--profile STAGE`` the work
that the daemon runs in worker threads runs inline, and a cProfile of the thread's CPU time
(not wall time: the GIL would blur it) is printed for that stage.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from floor import write_inbox_file  # noqa: E402

from adapters import openai_batch  # noqa: E402
from adapters.facts import PROVIDER_LIMITS  # noqa: E402
from adapters.spool import write_spool  # noqa: E402
from daemon import finish, ingest, outbox  # noqa: E402
from daemon.availability import freeze_heap  # noqa: E402
from daemon.config import adapt_policy, load_config  # noqa: E402
from daemon.outcomes import OutcomePolicy, answered, item_update  # noqa: E402
from daemon.store import Store  # noqa: E402

MODEL = "gpt-4o-mini"
RESULT_CHUNK = 2000  # as daemon/results.py


def output_line(key: str, i: int) -> bytes:
    """One OpenAI output-file line, shaped as the emulator writes it."""
    body = {
        "id": f"chatcmpl-{i:029d}", "object": "chat.completion", "created": 1796167154,
        "model": MODEL,
        "choices": [{"index": 0, "message": {
            "role": "assistant", "content": f"[{MODEL}] Answer: Question number {i}: what is "
            f"{i} + 1?", "refusal": None, "annotations": []},
            "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 13, "completion_tokens": 14, "total_tokens": 27,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                "accepted_prediction_tokens": 0,
                                                "rejected_prediction_tokens": 0}},
        "service_tier": "default", "system_fingerprint": "fp_d9d2a7dc29",
    }  # fmt: skip
    line = {"id": f"batch_req_{i:032x}", "custom_id": key,
            "response": {"status_code": 200, "request_id": f"req_{i:032x}", "body": body},
            "error": None}  # fmt: skip
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


class Stages:
    def __init__(self, n: int, root: Path, profile: str | None) -> None:
        self.n = n
        self.root = root
        self.profile = profile
        self.cpu: dict[str, float] = {}
        self.cfg = load_config(None, {"root": str(root)})
        for sub in ("inbox", "outbox", "processed", "state"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.store = Store(self.cfg.state_dir / "batchd.sqlite3")

    async def timed(self, name: str, work: Callable[[], Awaitable[Any]]) -> Any:
        prof = cProfile.Profile(time.thread_time) if self.profile == name else None
        t0 = time.process_time()
        if prof is not None:
            prof.enable()
        try:
            return await work()
        finally:
            if prof is not None:
                prof.disable()
            self.cpu[name] = time.process_time() - t0
            if prof is not None:
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(35)
                print(out.getvalue(), file=sys.stderr)

    async def run(self) -> None:
        await self.store.open()
        path = self.root / "inbox" / "requests.jsonl"
        write_inbox_file(path, self.n)
        file_id = await self.timed("ingest", lambda: ingest.claim(self.cfg, self.store, path))
        assert file_id is not None
        claimed = await self.timed("claim", self._claim)
        assert claimed is not None
        batch_id, rows = claimed
        await self.timed("spool", lambda: self._spool(batch_id, rows))
        data = b"".join(output_line(f"r{rid}", i) for i, rid in enumerate(rows.ids))
        await self.timed("results", lambda: self._results(batch_id, data))
        await self.timed("finish", lambda: self._finish(file_id))
        await self.store.close()

    async def _claim(self) -> Any:
        limits = PROVIDER_LIMITS["openai"]
        return await self.store.claim_batch_items(
            "openai", MODEL, "batchd-bench", "acct", max_items=self.n,
            max_bytes=limits.max_bytes, now=time.time() + 1,
        )  # fmt: skip

    async def _spool(self, batch_id: int, items: Any) -> None:
        """The input file written from the store, then the batch marked submitted (as
        ``submit.py`` does once the create call answered)."""
        path, _ = await asyncio.to_thread(
            write_spool, self.root / "spool", "openai", items, PROVIDER_LIMITS["openai"],
            openai_batch._line, openai_batch._line_text,
        )  # fmt: skip
        path.unlink()
        await self.store.mark_submitted(
            batch_id, "batch_bench", "file_bench", poll_interval_s=60, now=time.time()
        )

    async def _results(self, batch_id: int, data: bytes) -> None:
        outstanding, _ = await self.store.batch_rows(batch_id)  # as daemon/collect.py reads it
        policy = OutcomePolicy(max_attempts=5, keep_cancelled=False)
        chunk: list[Any] = []
        fast: list[Any] = []
        for raw in data.splitlines():  # as daemon/results.py's store_results
            line = raw.decode()  # as the adapter reads it
            item = openai_batch.parse_result_text(line)
            rid = int(item.key[1:])
            attempts = outstanding.pop(rid)
            done = answered(rid, item)
            if done is not None:
                fast.append(done)
            else:
                chunk.append(item_update(rid, attempts, item, policy, lambda _: 0.0))
            if len(chunk) + len(fast) >= RESULT_CHUNK:
                await self.store.record_results(batch_id, chunk, fast)
                chunk, fast = [], []
        if chunk or fast:
            await self.store.record_results(batch_id, chunk, fast)

    async def _finish(self, file_id: int) -> None:
        rows = finish._rows(self.store.path, file_id, adapt_policy(self.cfg).registry)
        out = self.root / "outbox"
        targets = (out / "requests.results.jsonl", out / "requests.summary.json")
        await asyncio.to_thread(
            outbox.write_outputs, out, "requests", file_id, rows,
            summary_meta={"file": "requests.jsonl"}, targets=targets,
        )  # fmt: skip


async def _inline(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", type=int, nargs="?", default=20_000)
    ap.add_argument("--profile", help="cProfile this stage (main thread only)")
    ap.add_argument("--inline", action="store_true", help="run worker-thread work inline")
    args = ap.parse_args()
    if args.profile or args.inline:  # worker-thread work runs inline, so the profile sees it
        asyncio.to_thread = _inline
    root = Path(tempfile.mkdtemp(prefix="batchd-stages-"))
    try:
        freeze_heap()  # as the daemon does after start-up and after importing an SDK
        stages = Stages(args.n, root, args.profile)
        asyncio.run(stages.run())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    total = sum(stages.cpu.values())
    for name, cpu in [*stages.cpu.items(), ("total", total)]:
        print(f"{name:<8} {cpu:7.3f} s CPU  {cpu / args.n * 1e6:7.1f} µs/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
