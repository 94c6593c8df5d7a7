"""End to end: batchd as a service — systemd's notification protocol and the metrics endpoint.

A real ``batchd run`` subprocess against the in-process emulator. One provider (OpenAI) has a
key; the others have none, so their requests wait and the providers show as paused.

* Notify: the test binds the ``NOTIFY_SOCKET`` datagram socket systemd would, with
  ``WATCHDOG_USEC``, and reads what the daemon sends: ``READY=1`` (with a ``STATUS=`` line
  naming the files, requests and paused providers) once start-up recovery and reconcile ended,
  ``WATCHDOG=1`` pings at half the interval, ``STOPPING=1`` after SIGTERM.
* Metrics: ``--metrics-listen`` on a free loopback port; ``GET /metrics`` during the run shows
  the requests by state, provider and model, items succeeded, cost, the paused providers with
  their reason, the age of the oldest pending request, the last poll, the durations and disk use.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from adapters.emulator import Emulator

from .daemon_harness import emulator_base_urls, finish, start_daemon, write_jsonl

N_OPENAI = 3
N_ANTHROPIC = 2


def _lines() -> list[dict[str, object]]:
    lines: list[dict[str, object]] = [
        {"custom_id": f"o{i}", "model": "gpt-4o-mini",
         "messages": [{"role": "user", "content": f"hello {i}"}]}
        for i in range(N_OPENAI)
    ]  # fmt: skip
    lines += [
        {"custom_id": f"a{i}", "model": "claude-haiku-4-5", "max_tokens": 50,
         "messages": [{"role": "user", "content": f"hello {i}"}]}
        for i in range(N_ANTHROPIC)
    ]  # fmt: skip
    return lines


class Listener:
    """The systemd side of ``NOTIFY_SOCKET``: every datagram received, as ``KEY=value`` lists."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[list[str]] = []

    def receive_until(self, done: str, timeout: float) -> bool:
        """Read messages until one holds the assignment ``done``; False when time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            message = data.decode().split("\n")
            self.messages.append(message)
            if done in message:
                return True
        return False

    def count(self, assignment: str) -> int:
        return sum(assignment in m for m in self.messages)

    def first(self, prefix: str) -> tuple[int, str]:
        for i, message in enumerate(self.messages):
            for a in message:
                if a.startswith(prefix):
                    return i, a
        raise AssertionError(f"no {prefix!r} in {self.messages}")

    def close(self) -> None:
        self.sock.close()


async def test_systemd_is_told_ready_status_watchdog_and_stopping(
    tmp_path: Path, emulator: Emulator
) -> None:
    write_jsonl(tmp_path / "inbox" / "mixed.jsonl", _lines())
    listener = Listener(tmp_path / "notify.sock")
    try:
        proc = await start_daemon(
            tmp_path,
            None,
            once=False,
            config_extra=emulator_base_urls(emulator.url),
            keys=("openai",),
            env={"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "300000"},
        )
        assert await asyncio.to_thread(listener.receive_until, "READY=1", 60), proc.log()[-3000:]
        # The pings keep coming while the daemon runs (every 0.15 s here).
        got = await asyncio.to_thread(lambda: _pings(listener, 3, 10))
        assert got, (listener.messages, proc.log()[-3000:])
        proc.signal(signal.SIGTERM)
        assert await asyncio.to_thread(listener.receive_until, "STOPPING=1", 30)
        run = await finish(proc, timeout=30)
    finally:
        listener.close()
    assert run.returncode == 0, run.stderr[-3000:]
    ready_at, _ = listener.first("READY=1")
    ready = listener.messages[ready_at]
    status = next(a for a in ready if a.startswith("STATUS="))
    assert "files in progress" in status and "requests pending" in status, status
    assert "in flight" in status
    assert "paused: anthropic (no API key), gemini (no API key)" in status, status
    assert "\n" not in status
    stopping_at, _ = listener.first("STOPPING=1")
    assert stopping_at > ready_at
    assert listener.count("WATCHDOG=1") >= 3
    # Nothing after STOPPING says the daemon is ready again.
    assert all("READY=1" not in m for m in listener.messages[stopping_at:])


def _pings(listener: Listener, n: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while listener.count("WATCHDOG=1") < n and time.monotonic() < deadline:
        listener.receive_until("WATCHDOG=1", max(0.0, deadline - time.monotonic()))
    return listener.count("WATCHDOG=1") >= n


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse(text: str) -> dict[str, float]:
    """Exposition text as ``{'name{labels}': value}`` (labels as the server wrote them)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


text_of_last_scrape = [""]  # kept for a look after the run (the report quotes one)


async def _scrape(url: str) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text_of_last_scrape[0] = response.text
    return parse(response.text)


async def test_metrics_scraped_during_a_run(tmp_path: Path, emulator: Emulator) -> None:
    port = _free_port()
    write_jsonl(tmp_path / "inbox" / "mixed.jsonl", _lines())
    proc = await start_daemon(
        tmp_path,
        None,
        once=False,
        config_extra=f'metrics_listen = "127.0.0.1:{port}"\n' + emulator_base_urls(emulator.url),
        keys=("openai",),
    )
    url = f"http://127.0.0.1:{port}/metrics"
    ok = 'batchd_requests{model="gpt-4o-mini",provider="openai",state="succeeded"}'
    cost = 'batchd_cost_usd_total{model="gpt-4o-mini",provider="openai"}'
    metrics: dict[str, float] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.running(), proc.log()[-3000:]
        try:
            metrics = await _scrape(url)
        except httpx.ConnectError:  # not listening yet
            await asyncio.sleep(0.2)
            continue
        # The totals (tokens, cost) are read again at most every few seconds.
        if metrics.get(ok) == N_OPENAI and cost in metrics:
            break
        await asyncio.sleep(0.2)
    assert metrics.get(ok) == N_OPENAI and cost in metrics, (metrics, proc.log()[-3000:])
    (tmp_path / "scrape.txt").write_text(text_of_last_scrape[0])
    waiting = 'batchd_requests{model="claude-haiku-4-5",provider="anthropic",state="pending"}'
    assert metrics[waiting] == N_ANTHROPIC
    assert metrics['batchd_items_total{outcome="succeeded"}'] == N_OPENAI
    assert metrics['batchd_items_total{outcome="failed"}'] == 0
    assert metrics['batchd_batches{provider="openai",state="collected"}'] >= 1
    assert metrics['batchd_files{state="active"}'] == 1
    assert metrics[cost] > 0
    assert metrics["batchd_items_retried_total"] == 0
    assert metrics['batchd_tokens_total{kind="output",model="gpt-4o-mini",provider="openai"}'] > 0
    assert metrics['batchd_provider_paused{provider="anthropic",reason="no API key"}'] == 1
    assert metrics['batchd_provider_paused{provider="openai",reason=""}'] == 0
    assert metrics["batchd_oldest_pending_request_age_seconds"] > 0
    last_poll = metrics['batchd_last_successful_poll_timestamp_seconds{provider="openai"}']
    assert time.time() - 120 < last_poll <= time.time()
    assert metrics["batchd_ingest_duration_seconds_count"] == 1
    assert metrics['batchd_collection_duration_seconds_count{provider="openai"}'] >= 1
    assert metrics['batchd_disk_usage_bytes{folder="state"}'] > 0
    assert metrics["batchd_ready"] == 1
    assert metrics["batchd_state_readable"] == 1
    assert metrics["batchd_process_resident_memory_bytes"] > 0
    proc.signal(signal.SIGTERM)
    run = await finish(proc, timeout=30)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"metrics at http://127.0.0.1:{port}/metrics" in run.stderr
    with pytest.raises(httpx.ConnectError):
        await _scrape(url)  # the endpoint closed with the daemon


async def test_metrics_are_off_by_default_and_a_taken_port_is_a_startup_error(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        extra = f'emulate = true\nmetrics_listen = "127.0.0.1:{port}"\n'
        proc = await start_daemon(tmp_path, None, once=True, config_extra=extra)
        run = await finish(proc, timeout=60)
    assert run.returncode == 2, run.stderr[-3000:]
    assert "cannot serve metrics at metrics_listen" in run.stderr
    proc = await start_daemon(tmp_path / "off", None, once=True, config_extra="emulate = true\n")
    run = await finish(proc, timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "metrics at" not in run.stderr
