"""Provider faults, end to end: the emulator misbehaves on purpose, ``batchd run`` is a real
subprocess, and every request must still end in its true final state with the daemon alive.

The twelve provider faults of docs/reliability.md, each on every provider where it exists. Each
test arranges a fault configuration, drops a file, runs the daemon and asserts on the outbox,
the daemon's log and the emulator's journal (which proves what was, and was not, submitted
twice).
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.emulator import Emulator, FaultSet

from .daemon_harness import (
    TEST_KEY,
    finish,
    journal,
    log_of,
    provider_batch_ids,
    read_results,
    request_states,
    run_once,
    start_daemon,
    stop,
    unified,
    wait_for,
    wait_for_log,
    write_jsonl,
)

PROVIDERS = ("openai", "anthropic", "gemini")
MODELS = {
    "openai": ("gpt-4o-mini", "gpt-4.1-mini", "gpt-4o", "gpt-4.1"),
    "anthropic": ("claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-1", "claude-sonnet-4-0"),
    "gemini": ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash", "gemini-2.5-flash-lite"),
}
# The route class an SDK's results download goes through (Gemini's small batches carry their
# results inline in the batch itself, so reading them is a batches.get).
RESULTS_ROUTE = {
    "openai": "batches.results",
    "anthropic": "batches.results",
    "gemini": "batches.get",
}
# A provider's own wording for a batch that failed as a whole, as the emulator renders it.
BATCH_FAIL_TEXT = {
    "openai": "Enqueued token limit reached",
    "anthropic": "Internal server error",
    "gemini": "internal error",
}
PERMANENT_TEXT = {
    "openai": "maximum context length",
    "anthropic": "Invalid request",
    "gemini": "invalid argument",
}


def _lines(provider: str, per_model: dict[int, int], tag: str = "q") -> list[dict[str, Any]]:
    """``per_model`` maps a model index to how many lines it gets."""
    lines = []
    for index, n in per_model.items():
        model = MODELS[provider][index]
        lines += [unified(f"{tag}-{index}-{i}", model, f"{tag} {model} {i}") for i in range(n)]
    return lines


def _set_faults(emulator: Emulator, *faults: dict[str, Any], **top: Any) -> None:
    assert emulator.ctx is not None
    emulator.ctx.faults = FaultSet.parse({"seed": 11, "faults": list(faults), **top})


def _fired(emulator: Emulator) -> list[int]:
    assert emulator.ctx is not None
    return [f.fired for f in emulator.ctx.faults.faults]


def _by_status(results: list[dict[str, Any]]) -> Counter[str]:
    return Counter(r["status"] for r in results)


def _assert_succeeded(results: list[dict[str, Any]], lines: list[dict[str, Any]]) -> None:
    assert [r["custom_id"] for r in results] == [x["custom_id"] for x in lines]
    for res, src in zip(results, lines, strict=True):
        assert res["status"] == "succeeded", res
        assert res["text"].endswith("Answer: " + src["messages"][-1]["content"]), res["text"]


async def _drain(tmp_path: Path, emulator: Emulator, lines: list[dict], **kw: Any) -> list[dict]:
    """Drop ``lines`` as one file, run the daemon until it is done, return the results."""
    write_jsonl(tmp_path / "inbox" / "f.jsonl", lines)
    run = await run_once(tmp_path, emulator.url, **kw)
    assert run.returncode == 0, run.stderr[-4000:]
    return read_results(tmp_path / "outbox" / "f.results.jsonl")


# -- 1, 2: rate limits with Retry-After, 5xx and 529 bursts ------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_rate_limits_and_server_error_bursts(
    tmp_path: Path, emulator: Emulator, provider: str
):
    """429 + Retry-After on create, poll and results download; bursts of 5xx (529 on Anthropic,
    its "overloaded"). Nothing is created twice, and Retry-After is the floor of the wait."""
    burst = 529 if provider == "anthropic" else 503
    _set_faults(
        emulator,
        {"kind": "http", "provider": provider, "route": "batches.create", "status": 429,
         "retry_after": 0.5, "times": 1},
        {"kind": "http", "provider": provider, "route": "batches.create", "status": burst,
         "times": 2},
        {"kind": "http", "provider": provider, "route": "batches.get", "status": 429,
         "retry_after": 0.2, "times": 1},
        {"kind": "http", "provider": provider, "route": "batches.get", "status": 500, "times": 3},
        {"kind": "http", "provider": provider, "route": RESULTS_ROUTE[provider], "status": 429,
         "retry_after": 0.2, "times": 2},
    )  # fmt: skip
    lines = _lines(provider, {0: 4})
    write_jsonl(tmp_path / "inbox" / "f.jsonl", lines)
    run = await run_once(tmp_path, emulator.url)
    assert run.returncode == 0, run.stderr[-4000:]
    _assert_succeeded(read_results(tmp_path / "outbox" / "f.results.jsonl"), lines)
    assert all(_fired(emulator)), _fired(emulator)
    assert "retry scheduled in 0.5s" in run.stderr  # the provider's Retry-After, not less
    assert "poll failed" in run.stderr
    stats = (await journal(emulator.url))["providers"][provider]
    assert stats["batches_created"] == 1
    assert stats["duplicate_items"] == 0
    assert stats["faults_http_429"] >= 3 and stats[f"faults_http_{burst}"] == 2


# -- 3, 4: slow answers beyond the timeout, dropped connections ---------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_timeouts_and_dropped_connections_are_reconciled_not_resubmitted(
    tmp_path: Path, emulator: Emulator, provider: str
):
    """A create that times out or loses its connection took effect at the provider: batchd
    looks the batch up instead of sending it again. Poll and results calls are just retried."""
    _set_faults(
        emulator,
        {"kind": "slow", "provider": provider, "route": "batches.create", "delay_s": 2.5,
         "times": 1},
        {"kind": "drop", "provider": provider, "route": "batches.create", "skip": 1, "times": 1},
        {"kind": "slow", "provider": provider, "route": "batches.get", "delay_s": 2.5,
         "times": 1},
        {"kind": "drop", "provider": provider, "route": "batches.get", "skip": 2, "times": 2},
        {"kind": "drop", "provider": provider, "route": RESULTS_ROUTE[provider], "skip": 1,
         "times": 1},
    )  # fmt: skip
    # Two models, so two creates: one answered too late, one cut off mid-answer.
    lines = _lines(provider, {0: 3, 1: 4})
    results = await _drain(tmp_path, emulator, lines, config_extra="request_timeout_s = 1\n")
    _assert_succeeded(results, lines)
    assert all(_fired(emulator)), _fired(emulator)
    log = (tmp_path / "daemon.log").read_text()
    assert log.count("outcome unknown") == 2 and log.count("found at the provider") == 2, log
    stats = (await journal(emulator.url))["providers"][provider]
    assert stats["batches_created"] == 2
    assert stats["duplicate_items"] == 0
    assert all(r["attempts"] == 1 for r in results)


# -- 5, 6: per-item retryable errors at 20 %, per-item permanent errors --------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_item_errors_retryable_retried_permanent_failed(
    tmp_path: Path, emulator: Emulator, provider: str
):
    _set_faults(
        emulator,
        {"kind": "item_error", "provider": provider, "match": "POISON", "error": "invalid"},
        {"kind": "item_error", "provider": provider, "rate": 0.2, "error": "rate_limit"},
    )
    lines = _lines(provider, {0: 30})
    lines += [unified(f"p{i}", MODELS[provider][0], f"POISON {i}") for i in range(3)]
    results = await _drain(tmp_path, emulator, lines)
    assert _by_status(results) == {"succeeded": 30, "failed": 3}
    _assert_succeeded(results[:30], lines[:30])
    assert any(r["attempts"] > 1 for r in results[:30]), "20 % should have hit some items"
    for r in results[30:]:
        assert r["attempts"] == 1  # a permanent error is not retried
        assert PERMANENT_TEXT[provider].lower() in r["error"]["message"].lower(), r["error"]
    stats = (await journal(emulator.url))["providers"][provider]
    assert stats["items_retryable"] > 0 and stats["items_failed"] >= 3
    assert stats["duplicate_items"] == 0


# -- 7, 8, 9: a batch failing whole, expiring with partial results, results gone ----------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_batch_fates_failed_expired_results_gone(
    tmp_path: Path, emulator: Emulator, provider: str
):
    """One model per fate: a batch that fails once (re-queued, then answered), one that always
    fails (final ``failed`` with the provider's reason), one that expires half done (the rest
    re-queued) and one whose results are gone (re-queued, with a clear log line)."""
    once, always, expires, gone = MODELS[provider]
    _set_faults(
        emulator,
        {"kind": "batch_fail", "provider": provider, "model": once, "times": 1},
        {"kind": "batch_fail", "provider": provider, "model": always},
        {"kind": "expire", "provider": provider, "model": expires, "fraction": 0.5, "times": 1},
        {"kind": "results_gone", "provider": provider, "model": gone, "times": 1},
    )
    lines = _lines(provider, {0: 3, 1: 3, 2: 6, 3: 3})
    results = await _drain(tmp_path, emulator, lines, config_extra="max_attempts = 3\n")
    by_model: dict[str, list[dict]] = {}
    for r in results:
        by_model.setdefault(r["model"], []).append(r)
    for r in by_model[once] + by_model[expires] + by_model[gone]:
        assert r["status"] == "succeeded", r
    assert all(r["attempts"] == 2 for r in by_model[once] + by_model[gone])
    if provider == "gemini":  # an expired Gemini batch returns nothing: all sent again
        assert all(r["attempts"] == 2 for r in by_model[expires])
    else:  # the half that ran keeps its answers; only the rest is sent again
        assert sorted(r["attempts"] for r in by_model[expires]) == [1, 1, 1, 2, 2, 2]
    for r in by_model[always]:
        assert r["status"] == "failed" and r["attempts"] == 3, r
        assert BATCH_FAIL_TEXT[provider].lower() in r["error"]["message"].lower(), r["error"]
    log = (tmp_path / "daemon.log").read_text()
    assert "re-queued" in log
    assert "gone" in log or "missing" in log  # results gone is said out loud
    stats = (await journal(emulator.url))["providers"][provider]
    # Only the gone results were paid twice: they were answered, and batchd never got them.
    assert stats["duplicate_items"] == len(by_model[gone])


# -- 10: a batch cancelled outside batchd --------------------------------------------------------


def _canceller(url: str, provider: str) -> Callable[[str], Awaitable[Any]]:
    """Cancel a batch at the emulator with the official SDK, as an operator's console would.
    The client is built before the race starts. (The batch is not found by listing: at time
    scale 0 any look at a batch, a list too, ends it.)"""
    if provider == "openai":
        import openai

        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=TEST_KEY, max_retries=0)
        return client.batches.cancel
    if provider == "anthropic":
        import anthropic

        claude = anthropic.AsyncAnthropic(base_url=url, api_key=TEST_KEY, max_retries=0)
        return claude.messages.batches.cancel
    from google import genai

    gemini = genai.Client(api_key=TEST_KEY, http_options={"base_url": url})
    return lambda name: gemini.aio.batches.cancel(name=name)


@pytest.mark.parametrize("mode", ["requeue", "cancel"])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_batch_cancelled_outside_batchd(
    tmp_path: Path, emulator: Emulator, provider: str, mode: str
):
    """At time scale 0 a batch ends at its first poll, so the daemon polls late (0.8 s) and the
    test cancels the batch before that, the way an operator would in the provider's console."""
    lines = _lines(provider, {0: 4})
    write_jsonl(tmp_path / "inbox" / "f.jsonl", lines)
    cancel = _canceller(emulator.url, provider)
    extra = f'poll_initial_s = 0.8\non_external_cancel = "{mode}"\n'
    proc = await start_daemon(tmp_path, emulator.url, config_extra=extra)

    async def recorded() -> bool:
        return bool(provider_batch_ids(tmp_path))

    await wait_for(recorded, what="the batch to be created")
    await cancel(provider_batch_ids(tmp_path)[0])
    run = await finish(proc)  # --once: it ends by itself
    assert run.returncode == 0, run.stderr[-4000:]
    results = read_results(tmp_path / "outbox" / "f.results.jsonl")
    if mode == "requeue":
        _assert_succeeded(results, lines)
        assert all(r["attempts"] == 2 and len(r["batch_ids"]) == 2 for r in results)
    else:
        assert _by_status(results) == {"canceled": len(lines)}
    stats = (await journal(emulator.url))["providers"][provider]
    assert stats["duplicate_items"] == 0


# -- 11: a wrong API key pauses the provider -----------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_wrong_key_pauses_the_provider_until_fixed(
    tmp_path: Path, emulator: Emulator, provider: str
):
    """401: the provider is paused, its requests are not failed: a loud error line every
    auth_pause_s, the others are served; after the key is fixed and batchd restarted, the
    paused requests go through. The key goes wrong while a batch is running (its polls get
    401) and stays wrong for the next file (its create gets 401)."""
    write_jsonl(tmp_path / "inbox" / "running.jsonl", _lines(provider, {0: 3}, tag="run"))
    extra = "auth_pause_s = 0.4\npoll_initial_s = 0.8\n"  # at time scale 0 a poll ends it
    proc = await start_daemon(tmp_path, emulator.url, once=False, config_extra=extra)
    await wait_for(lambda: _recorded(tmp_path), what="the batch to be created")
    _set_faults(emulator, auth={provider: "the-right-key"})  # our key is wrong from now on
    write_jsonl(tmp_path / "inbox" / "new.jsonl", _lines(provider, {0: 3}, tag="new"))
    others = [p for p in PROVIDERS if p != provider]
    for other in others:
        write_jsonl(tmp_path / "inbox" / f"{other}.jsonl", _lines(other, {0: 2}))
    await wait_for_log(proc, "provider paused: authentication failed", count=3)
    for other in others:  # the others are served meanwhile
        await wait_for(
            lambda o=other: _exists(tmp_path / "outbox" / f"{o}.results.jsonl"),
            what=f"{other} results",
        )
    # Not failed: the running batch's requests wait in it, the new file's are pending. (Each
    # time a pause ends, a create is tried again and refused: for that instant the new file's
    # requests are in a batch, so the states are awaited, not read once.)
    expected = {"batched": 3, "pending": 3, "succeeded": 4}

    async def settled() -> bool:
        return request_states(tmp_path) == expected

    await wait_for(settled, what=f"request states {expected}")
    run = await stop(proc)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "Fix the API key" in run.stderr and TEST_KEY not in run.stderr  # never the key
    key_var = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}.get(
        provider, "GEMINI_API_KEY"
    )
    run = await run_once(tmp_path, emulator.url, env={key_var: "the-right-key"})
    assert run.returncode == 0, run.stderr[-4000:]
    for name in ("running", "new"):
        results = read_results(tmp_path / "outbox" / f"{name}.results.jsonl")
        assert _by_status(results) == {"succeeded": 3}
    stats = (await journal(emulator.url))["providers"][provider]
    assert stats["faults_auth"] >= 3 and stats["duplicate_items"] == 0


async def _recorded(root: Path) -> bool:
    return bool(provider_batch_ids(root))


# -- 12: a provider down at start-up -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _base_urls(urls: dict[str, str]) -> str:
    paths = {"openai": "/v1", "anthropic": "", "gemini": ""}
    return "".join(f'\n[providers.{p}]\nbase_url = "{url}{paths[p]}"\n' for p, url in urls.items())


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_provider_down_at_start_up_is_retried_others_served(
    tmp_path: Path, emulator: Emulator, provider: str
):
    """Nothing listens on the down provider's port when batchd starts: it starts anyway, serves
    the other two, keeps retrying, and finishes the third once it comes up."""
    port = _free_port()
    urls = {p: emulator.url for p in PROVIDERS}
    urls[provider] = f"http://127.0.0.1:{port}"
    write_jsonl(tmp_path / "inbox" / "down.jsonl", _lines(provider, {0: 3}))
    others = [p for p in PROVIDERS if p != provider]
    for other in others:
        write_jsonl(tmp_path / "inbox" / f"{other}.jsonl", _lines(other, {0: 2}))
    proc = await start_daemon(tmp_path, None, config_extra=_base_urls(urls))
    for other in others:
        await wait_for(
            lambda o=other: _exists(tmp_path / "outbox" / f"{o}.results.jsonl"),
            what=f"{other} results",
        )
    await wait_for_log(proc, "retry scheduled", count=3)
    assert proc.returncode is None  # still running, still trying
    async with Emulator(port=port, time_scale=0, state_dir=tmp_path / "emu2") as late:
        run = await finish(proc)
        assert run.returncode == 0, run.stderr[-4000:]
        stats = (await journal(late.url))["providers"][provider]
        assert stats["batches_created"] == 1 and stats["duplicate_items"] == 0
    results = read_results(tmp_path / "outbox" / "down.results.jsonl")
    assert _by_status(results) == {"succeeded": 3}
    assert "connection failed" in log_of(proc)


async def _exists(path: Path) -> bool:
    return path.exists()


@pytest.mark.parametrize("time_scale", [0.0, 0.3])
async def test_anthropic_same_size_unknown_creates_are_told_apart(
    tmp_path: Path, time_scale: float
):
    """Anthropic batches carry no label: two creates of the same size whose answers are lost
    leave two indistinguishable candidates. batchd tells them apart by the item keys in their
    results (waiting while they still run, at time scale 0.3), and sends nothing twice."""
    async with Emulator(time_scale=time_scale, state_dir=tmp_path / "emu") as emu:
        _set_faults(
            emu,
            {"kind": "drop", "provider": "anthropic", "route": "batches.create", "times": 2},
        )
        lines = _lines("anthropic", {0: 3, 1: 3})
        results = await _drain(tmp_path, emu, lines)
        _assert_succeeded(results, lines)
        log = (tmp_path / "daemon.log").read_text()
        assert log.count("found at the provider") == 2, log
        if time_scale:
            assert "still running" in log  # it waited rather than guessed
        stats = (await journal(emu.url))["providers"]["anthropic"]
        assert stats["batches_created"] == 2 and stats["duplicate_items"] == 0
