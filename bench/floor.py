"""The floor: a bare official-SDK script doing batchd's provider work for N gpt-4o-mini requests.

    .venv/bin/python bench/floor.py http://127.0.0.1:8089 20000

Writes the batch input JSONL (one OpenAI batch line per request, built from the same requests
``bench/compare.py`` gives batchd), uploads it, creates one batch, polls it until it ends,
streams its output file and parses every result line (JSON, then the answer's text and usage).
Nothing is persisted beyond the input file: no database, no outbox, no archive. It is the
least a client can do for these requests; ``bench/compare.py`` runs it beside batchd against
the same emulator process and compares their CPU.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openai

MODEL = "gpt-4o-mini"
KEY = "bench-key"  # the emulator takes any key
POLL_S = 0.05


def request(i: int) -> dict[str, Any]:
    """Request ``i`` in batchd's unified form (the line ``bench/compare.py`` puts in the inbox)."""
    return {
        "custom_id": f"req-{i}",
        "model": MODEL,
        "max_tokens": 64,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": f"Question number {i}: what is {i} + 1?"},
        ],
    }


def write_inbox_file(path: Path, n: int) -> None:
    """The N requests as a batchd inbox file."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps(request(i)) + "\n")


def run(url: str, n: int, tmp: Path) -> dict[str, Any]:
    client = openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key=KEY, max_retries=0,
                           timeout=600)  # fmt: skip
    path = tmp / "floor.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            r = request(i)
            body = {k: r[k] for k in ("model", "max_tokens", "messages")}
            line = {"custom_id": r["custom_id"], "method": "POST",
                    "url": "/v1/chat/completions", "body": body}  # fmt: skip
            f.write(json.dumps(line) + "\n")
    with path.open("rb") as fh:
        upload = client.files.create(file=fh, purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(POLL_S)
        batch = client.batches.retrieve(batch.id)
    if batch.status != "completed" or not batch.output_file_id:
        raise SystemExit(f"floor: batch ended {batch.status}")
    ok = tokens = 0
    with client.files.with_streaming_response.content(batch.output_file_id) as response:
        for raw in response.iter_lines():
            if not raw:
                continue
            line = json.loads(raw)
            body = line["response"]["body"]
            text = body["choices"][0]["message"]["content"]
            tokens += body["usage"]["completion_tokens"]
            ok += isinstance(text, str)
    client.close()
    return {"requests": n, "succeeded": ok, "output_tokens": tokens}


def main() -> int:
    url, n = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory(prefix="batchd-floor-") as tmp:
        figures = run(url, n, Path(tmp))
    print(json.dumps(figures))
    return 0 if figures["succeeded"] == n else 1


if __name__ == "__main__":
    sys.exit(main())
