"""The emulator must never be the bottleneck: N items across the three providers at time scale 0.

    .venv/bin/python bench/emulator_speed.py 100000

Starts ``batchd emulator`` as its own process (so the clients' work is not counted against it),
then with the official SDKs: OpenAI uploads a JSONL file and creates a batch, Anthropic creates
a batch inline, Gemini uploads a JSONL file and creates a batch; each batch is polled until it
ends and its results are downloaded. Prints the seconds of each phase and items per second, and
the emulator's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anthropic
import openai
import psutil
from google import genai

KEY = "bench-key"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Question {i}: what is {i} + 1?"}]


async def _openai(url: str, n: int, tmp: Path) -> int:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=600)
    path = tmp / "openai.jsonl"
    with path.open("w") as f:
        for i in range(n):
            body = {"model": "gpt-4o-mini", "messages": _messages(i), "max_tokens": 64}
            f.write(
                json.dumps(
                    {
                        "custom_id": f"o{i}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": body,
                    }
                )
                + "\n"
            )
    up = await client.files.create(file=path.open("rb"), purpose="batch")
    batch = await client.batches.create(
        input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        batch = await client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch
    lines = 0
    async with client.files.with_streaming_response.content(batch.output_file_id) as resp:
        async for _ in resp.iter_lines():
            lines += 1
    return lines


async def _anthropic(url: str, n: int) -> int:
    client = anthropic.AsyncAnthropic(
        base_url=url,
        api_key=KEY,
        max_retries=0,
        timeout=600,
        default_headers={"anthropic-version": "2023-06-01"},
    )
    requests = [
        {
            "custom_id": f"a{i}",
            "params": {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": _messages(i)},
        }
        for i in range(n)
    ]
    batch = await client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    while batch.processing_status != "ended":
        batch = await client.messages.batches.retrieve(batch.id)
    lines = 0
    async for _ in await client.messages.batches.results(batch.id):
        lines += 1
    return lines


async def _gemini(url: str, n: int, tmp: Path) -> int:
    client = genai.Client(api_key=KEY, http_options={"base_url": url, "api_version": "v1beta"})
    path = tmp / "gemini.jsonl"
    with path.open("w") as f:
        for i in range(n):
            req = {"contents": [{"role": "user", "parts": [{"text": _messages(i)[0]["content"]}]}]}
            f.write(json.dumps({"key": f"g{i}", "request": req}) + "\n")
    up = await client.aio.files.upload(file=str(path), config={"mime_type": "jsonl"})
    job = await client.aio.batches.create(model="gemini-2.5-flash", src=up.name)
    while not job.done:
        job = await client.aio.batches.get(name=job.name)
    data = await client.aio.files.download(file=job.dest.file_name)
    return data.count(b"\n")


async def _run(url: str, n: int, tmp: Path) -> dict[str, float]:
    third = n // 3
    t0 = time.perf_counter()
    counts = await asyncio.gather(
        _openai(url, third, tmp), _anthropic(url, third), _gemini(url, n - 2 * third, tmp)
    )
    elapsed = time.perf_counter() - t0
    assert sum(counts) == n, counts
    return {"items": n, "seconds": round(elapsed, 2), "items_per_s": round(n / elapsed)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=100_000)
    args = ap.parse_args()
    port = _port()
    with tempfile.TemporaryDirectory(prefix="batchd-emu-bench-") as tmp:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daemon.cli",
                "emulator",
                "--port",
                str(port),
                "--time-scale",
                "0",
                "--state-dir",
                str(Path(tmp) / "state"),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert proc.stdout is not None and "listening" in proc.stdout.readline()
            peak = 0
            ps = psutil.Process(proc.pid)

            async def sample() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, ps.memory_info().rss)
                    await asyncio.sleep(0.05)

            async def both() -> dict[str, float]:
                sampler = asyncio.create_task(sample())
                try:
                    return await _run(f"http://127.0.0.1:{port}", args.n, Path(tmp))
                finally:
                    sampler.cancel()

            figures = asyncio.run(both())
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    figures["emulator_peak_rss_mib"] = round(peak / 2**20, 1)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
