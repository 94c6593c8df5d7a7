"""The emulator's shared machinery: fault files, the journal's duplicate counter, the store,
the control routes and the ``batchd emulator`` command."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from adapters.emulator import Emulator, FaultSet
from adapters.emulator.core import ApiError, Context, json_response
from adapters.emulator.faults import FaultConfigError
from adapters.emulator.journal import RETRYABLE, SUCCEEDED, Journal, item_digest
from adapters.emulator.store import EmulatorStore


def test_fault_file_toml_and_json_parse_the_same(tmp_path: Path) -> None:
    toml = tmp_path / "f.toml"
    toml.write_text(
        'seed = 3\n[auth]\nopenai = "sk-right"\n'
        '[[faults]]\nkind = "http"\nprovider = "openai"\nroute = "batches.create"\n'
        "status = 429\nretry_after = 2\ntimes = 1\n"
    )
    js = tmp_path / "f.json"
    js.write_text(
        json.dumps(
            {
                "seed": 3,
                "auth": {"openai": "sk-right"},
                "faults": [
                    {
                        "kind": "http",
                        "provider": "openai",
                        "route": "batches.create",
                        "status": 429,
                        "retry_after": 2,
                        "times": 1,
                    }
                ],
            }
        )
    )
    a, b = FaultSet.load(toml), FaultSet.load(js)
    assert a.describe() == b.describe()
    assert a.expected_key("openai") == "sk-right"
    assert a.expected_key("gemini") is None


@pytest.mark.parametrize(
    "bad",
    [
        {"faults": [{"kind": "explode"}]},
        {"faults": [{"kind": "http", "status": 200}]},
        {"faults": [{"kind": "item_error", "error": "nope"}]},
        {"faults": [{"kind": "http", "colour": "red"}]},
        {"faults": [{"kind": "http", "provider": "azure"}]},
        {"bogus": 1},
        {"auth": {"azure": "k"}},
    ],
)
def test_fault_config_errors_are_named(bad: dict) -> None:
    with pytest.raises(FaultConfigError):
        FaultSet.parse(bad)


def test_request_fault_times_skip_and_route_glob() -> None:
    fs = FaultSet.parse(
        {
            "faults": [
                {
                    "kind": "http",
                    "provider": "anthropic",
                    "route": "batches.*",
                    "skip": 1,
                    "times": 2,
                }
            ]
        }
    )
    fired = [bool(fs.request_faults("anthropic", "batches.get")) for _ in range(5)]
    assert fired == [False, True, True, False, False]
    assert fs.request_faults("anthropic", "files.get") == []
    assert fs.request_faults("openai", "batches.get") == []


def test_item_error_rate_is_seeded_and_match_filters() -> None:
    spec = {"seed": 11, "faults": [{"kind": "item_error", "rate": 0.2, "error": "overloaded"}]}
    runs = []
    for _ in range(2):
        fs = FaultSet.parse(spec)
        runs.append([fs.item_error("openai", "gpt-4o", "x") for _ in range(500)])
    assert runs[0] == runs[1]
    hits = sum(1 for r in runs[0] if r == "overloaded")
    assert 60 < hits < 140  # about 20 %
    fs = FaultSet.parse({"faults": [{"kind": "item_error", "match": "POISON", "error": "invalid"}]})
    assert fs.item_error("gemini", "gemini-2.5-flash", "hello") is None
    assert fs.item_error("gemini", "gemini-2.5-flash", "a POISON pill") == "invalid"


def test_batch_faults_are_armed_by_model() -> None:
    fs = FaultSet.parse(
        {"faults": [{"kind": "expire", "model": "gpt-4o*", "fraction": 0.25, "times": 1}]}
    )
    assert fs.arm_batch("openai", "claude-x") == {}
    assert fs.arm_batch("openai", "gpt-4o-mini") == {"expire": {"fraction": 0.25}}
    assert fs.arm_batch("openai", "gpt-4o-mini") == {}


def test_journal_counts_duplicates_but_not_retries(tmp_path: Path) -> None:
    store = EmulatorStore(tmp_path)
    journal = Journal(store)
    a, b, c = (item_digest("m", {"q": i}) for i in range(3))
    assert item_digest("m", {"x": 1, "y": 2}) == item_digest("m", {"y": 2, "x": 1})
    assert journal.receive_items("openai", [a, b]) == 0
    # b failed with a retryable error, a succeeded
    journal.settle_items("openai", [(a, SUCCEEDED), (b, RETRYABLE)])
    # resending b is a retry, resending a is paying twice
    assert journal.receive_items("openai", [b, c]) == 0
    assert journal.receive_items("openai", [a]) == 1
    # an item still pending in an earlier batch counts too (a crash resubmission)
    assert journal.receive_items("openai", [c]) == 1
    snap = journal.snapshot()["providers"]["openai"]
    assert snap["batches_created"] == 4
    assert snap["items_received"] == 6
    assert snap["duplicate_items"] == 2
    assert journal.receive_items("gemini", [a]) == 0  # per provider
    store.close()
    # counters survive a reopen of the same state dir
    again = Journal(EmulatorStore(tmp_path))
    assert again.snapshot()["providers"]["openai"]["duplicate_items"] == 2


def test_store_pages_newest_first_with_cursor(tmp_path: Path) -> None:
    store = EmulatorStore(tmp_path)
    for i in range(5):
        store.put("thing", f"t{i}", {"id": f"t{i}"})
    page, more = store.list("thing", limit=2)
    assert [o["id"] for o in page] == ["t4", "t3"] and more
    page, more = store.list("thing", limit=2, after="t3")
    assert [o["id"] for o in page] == ["t2", "t1"] and more
    page, more = store.list("thing", limit=2, after="t1")
    assert [o["id"] for o in page] == ["t0"] and not more
    page, _ = store.list("thing", newest_first=False, limit=10)
    assert [o["id"] for o in page] == [f"t{i}" for i in range(5)]
    store.put("thing", "t0", {"id": "t0", "v": 2})
    assert store.get("thing", "t0") == {"id": "t0", "v": 2}
    assert store.delete("thing", "t0") and store.get("thing", "t0") is None
    store.close()


class _Echo:
    """A minimal provider, to exercise the route wrapper without a real wire protocol."""

    name = "openai"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def error_response(self, err: ApiError, request_id: str) -> web.Response:
        return json_response({"error": {"code": err.code, "message": err.message}}, err.status)

    def api_key(self, request: web.Request) -> str | None:
        return request.headers.get("authorization", "").removeprefix("Bearer ") or None

    def request_id_header(self) -> str:
        return "x-request-id"


async def _echo_server(tmp_path: Path, faults: dict) -> tuple[web.AppRunner, str, Context]:
    store = EmulatorStore(tmp_path / "s")
    ctx = Context(store=store, journal=Journal(store), faults=FaultSet.parse(faults), time_scale=0)
    provider = _Echo(ctx)

    async def handler(request: web.Request) -> web.Response:
        return json_response({"hello": "world" * 50})

    app = web.Application()
    app.router.add_get("/echo", ctx.route(provider, "echo.get", handler))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}", ctx


async def test_route_wrapper_auth_http_slow_and_drop(tmp_path: Path) -> None:
    faults = {
        "auth": {"openai": "good"},
        "faults": [
            {"kind": "http", "route": "echo.get", "status": 429, "retry_after": 3, "times": 1},
            {"kind": "slow", "route": "echo.get", "delay_s": 0.5, "skip": 1, "times": 1},
            {"kind": "drop", "route": "echo.get", "skip": 2, "times": 1},
        ],
    }
    runner, url, ctx = await _echo_server(tmp_path, faults)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            r = await client.get("/echo")
            assert r.status_code == 401  # no key: before any fault counts
            good = {"authorization": "Bearer good"}
            bad = await client.get("/echo", headers={"authorization": "Bearer bad"})
            assert bad.status_code == 401
            r = await client.get("/echo", headers=good)
            assert r.status_code == 429 and r.headers["retry-after"] == "3"
            assert r.headers["x-request-id"].startswith("req_")
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/echo", headers=good, timeout=0.1)
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                await client.get("/echo", headers=good)
            r = await client.get("/echo", headers=good)
            assert r.status_code == 200 and r.json()["hello"].startswith("world")
        routes = [(c["route"], c["status"]) for c in ctx.journal.snapshot()["calls"]]
        assert ("echo.get", 429) in routes and ("echo.get", 401) in routes
    finally:
        await runner.cleanup()


async def test_control_routes_faults_journal_reset(tmp_path: Path) -> None:
    async with Emulator(time_scale=0, state_dir=tmp_path) as emu:
        async with httpx.AsyncClient(base_url=emu.url, timeout=5) as client:
            assert (await client.get("/_emulator/health")).json()["ok"] is True
            body = {"faults": [{"kind": "http", "provider": "gemini", "status": 503}]}
            r = await client.put("/_emulator/faults", json=body)
            assert r.status_code == 200 and len(r.json()["faults"]) == 1
            r = await client.post("/_emulator/faults", json={"auth": {"openai": "k"}})
            assert len(r.json()["faults"]) == 1 and r.json()["auth"] == {"openai": "<set>"}
            r = await client.post("/_emulator/faults", json={"faults": [{"kind": "nope"}]})
            assert r.status_code == 400 and "nope" in r.json()["error"]
            emu.ctx.journal.receive_items("openai", ["d1"])
            j = (await client.get("/_emulator/journal")).json()
            assert j["providers"]["openai"]["items_received"] == 1
            assert set(j["providers"]) == {"openai", "anthropic", "gemini"}
            assert (await client.post("/_emulator/reset")).json() == {"reset": True}
            j = (await client.get("/_emulator/journal")).json()
            assert j["providers"]["openai"]["items_received"] == 0
            assert (await client.get("/_emulator/faults")).json()["faults"] == []
            r = await client.delete("/_emulator/faults")
            assert r.status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_runs_the_emulator_as_a_process_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    faults = tmp_path / "faults.json"
    faults.write_text(
        json.dumps({"faults": [{"kind": "http", "provider": "openai", "status": 500}]})
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daemon.cli",
            "emulator",
            "--port",
            str(port),
            "--state-dir",
            str(tmp_path / "st"),
            "--time-scale",
            "0",
            "--faults",
            str(faults),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in line
        r = httpx.get(f"http://127.0.0.1:{port}/_emulator/faults", timeout=5)
        assert r.json()["faults"][0]["status"] == 500
        assert (tmp_path / "st" / "emulator.sqlite3").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_cli_refuses_a_bad_fault_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"faults": [{"kind": "meteor"}]}')
    r = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "emulator", "--port", "0", "--faults", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "meteor" in r.stderr


async def test_emulator_url_and_restart_on_same_state_dir(tmp_path: Path) -> None:
    emu = Emulator(time_scale=0, state_dir=tmp_path)
    with pytest.raises(RuntimeError):
        _ = emu.url
    await emu.start()
    emu.ctx.journal.receive_items("anthropic", ["x", "y"])
    await emu.stop()
    async with Emulator(time_scale=0, state_dir=tmp_path) as again:
        snap = again.ctx.journal.snapshot()
        assert snap["providers"]["anthropic"]["items_received"] == 2
