"""Which providers can run, said where a user looks: the log, ``batchd status`` and ``--once``.

A deployment may use one or two providers. A provider with no API key in the environment is
held from the start: its adapter is a stand-in that never reaches the network, its requests
wait (pending, nothing failed), the other providers run, and an error line says so every
``auth_pause_s`` while requests wait for it. A provider whose key is refused (401) is paused by
the scheduler, ``auth_pause_s`` at a time: the same kind of pause, with its own reason.

The daemon publishes each provider's state (running / paused: reason / no key) in
``state/providers.json`` for ``batchd status``. With ``--once`` it stops when nothing more can
progress: exit 0 when every request is final, :data:`EXIT_STUCK` (3) when the requests left
all wait for a provider that cannot proceed, saying how many, for which provider and why.
"""

from __future__ import annotations

import gc
import json
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from contextlib import suppress
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from adapters.base import (
    BatchItem,
    BatchStatus,
    ItemResult,
    ProviderAdapter,
    ProviderName,
    Submitted,
)
from adapters.facts import PROVIDER_LIMITS, PROVIDERS

from .config import KEY_ENV, Config
from .states import FileStatus
from .text import plural

if TYPE_CHECKING:
    from .scheduler import Scheduler
    from .store import Store

EXIT_STUCK = 3  # --once: requests wait for a provider that cannot proceed
SNAPSHOT_NAME = "providers.json"
EMULATOR_KEY = "emulator-key"  # the emulator takes any key

RUNNING, PAUSED, NO_KEY = "running", "paused", "no key"
SDK_MODULES = {"openai": "openai", "anthropic": "anthropic", "gemini": "google.genai"}


def no_key_reason(provider: str) -> str:
    return f"no API key: set {' or '.join(KEY_ENV[provider])} and restart batchd"


def build_adapters(
    cfg: Config, env: dict[str, str] | None = None
) -> tuple[dict[str, ProviderAdapter], dict[str, str], dict[str, str]]:
    """Every provider's adapter and account, and the providers without a key (with the
    reason). Against the emulator (``--emulate``, ``--emulator-url``) any key will do. A
    configured provider's adapter is a :class:`LazyAdapter`: its SDK is imported at its first
    call, so a provider without work costs nothing at start-up."""
    from adapters.registry import keyless_adapter, make_adapter

    from .scheduler import account_of

    adapters: dict[str, ProviderAdapter] = {}
    accounts: dict[str, str] = {}
    missing: dict[str, str] = {}
    for name in PROVIDERS:
        pc = cfg.providers[name]
        key = cfg.api_key(name, env)
        if key is None and (cfg.emulate or cfg.emulator_url):
            key = EMULATOR_KEY
        # The in-process emulator listens on a new port each run; its batches (kept in the
        # state folder) belong to the same account from one run to the next.
        accounts[name] = account_of(name, "emulator" if cfg.emulate else pc.base_url, key)
        if key is None:
            missing[name] = no_key_reason(name)
            adapters[name] = keyless_adapter(name, missing[name])
            continue
        adapters[name] = LazyAdapter(
            name,
            partial(
                make_adapter,
                name,
                base_url=pc.base_url,
                api_key=key,
                timeout_s=cfg.request_timeout_s,
                spool_dir=cfg.state_dir / "spool",
                options=dict(pc.options),
            ),
        )
    return adapters, accounts, missing


def freeze_heap() -> None:
    """Put every object alive now out of the garbage collector's sight (``gc.freeze``): the
    modules just imported, an SDK's some 100,000 objects. A full collection, which the data
    path sets off every few thousand requests, walks every tracked object: with the SDKs
    that took 75 to 280 ms a collection, 7 to 28 us a request (docs/performance.md). What is
    garbage now is collected first; what is frozen lives as long as the process anyway."""
    gc.collect()
    gc.freeze()


class LazyAdapter:
    """A configured provider's adapter, built at its first call: its SDK (the largest part of
    start-up: some 0.3 to 1 s of CPU and tens of MB each) is imported only once the provider has
    work. Callers build it before their timed calls (``Scheduler.ready``)."""

    def __init__(self, name: str, build: Callable[[], ProviderAdapter]) -> None:
        self.name = cast(ProviderName, name)
        self.limits = PROVIDER_LIMITS[name]
        self._build = build
        self._real: ProviderAdapter | None = None

    async def load(self) -> None:
        """Build the adapter now (callers do so before a timed call: importing an SDK under
        load can take seconds, which must not count against the call's timeout)."""
        await self._adapter()

    async def _adapter(self) -> ProviderAdapter:
        if self._real is None:
            from loguru import logger  # at use: `batchd status` never logs

            logger.bind(provider=self.name).debug(
                "importing the {} SDK (the provider has work)", SDK_MODULES[self.name]
            )
            # On the event loop's thread, not a worker's: an SDK importing in another thread
            # shows its half-imported modules (httpx) to the SDKs already running here.
            self._real = self._build()
            freeze_heap()
        return self._real

    async def submit(self, tag: str, model: str, items: Iterable[BatchItem]) -> Submitted:
        return await (await self._adapter()).submit(tag, model, items)

    async def find(
        self,
        tag: str,
        model: str,
        n_items: int,
        since: float,
        exclude: Collection[str],
        keys: Collection[str] = (),
    ) -> str | None:
        return await (await self._adapter()).find(tag, model, n_items, since, exclude, keys)

    async def poll(self, provider_batch_id: str) -> BatchStatus:
        return await (await self._adapter()).poll(provider_batch_id)

    async def list_batches(self) -> AsyncIterator[list[BatchStatus]]:
        async for page in (await self._adapter()).list_batches():
            yield page

    async def results(self, provider_batch_id: str) -> AsyncIterator[ItemResult]:
        async for item in (await self._adapter()).results(provider_batch_id):
            yield item

    async def cancel(self, provider_batch_id: str) -> None:
        await (await self._adapter()).cancel(provider_batch_id)

    async def cleanup(self, provider_batch_id: str, input_file_id: str | None) -> None:
        await (await self._adapter()).cleanup(provider_batch_id, input_file_id)

    async def close(self) -> None:
        if self._real is not None:
            await self._real.close()


def point_at_emulator(cfg: Config, url: str) -> Config:
    """Every provider at the emulator's root (each adapter normalises the URL it is given)."""
    providers = {name: replace(pc, base_url=url) for name, pc in cfg.providers.items()}
    return replace(cfg, providers=providers)


class Availability:
    """The providers' states for the log, ``batchd status`` and ``--once``."""

    def __init__(self, cfg: Config, store: Store, sched: Scheduler, missing: dict[str, str]):
        self.cfg = cfg
        self.store = store
        self.sched = sched
        self.missing = dict(missing)
        self.path = cfg.state_dir / SNAPSHOT_NAME
        self._written: dict[str, Any] | None = None
        self._said_at: dict[str, float] = {}

    def start(self) -> None:
        """Hold the providers without a key (said once here, then while requests wait)."""
        from loguru import logger  # at use: `batchd status` never logs

        for name, reason in self.missing.items():
            self.sched.hold(name, reason)
            logger.bind(provider=name, event="provider.no_key", error_kind="no_key").warning(
                "provider {} is not configured: {}; its requests will wait", name, reason
            )
        running = [p for p in PROVIDERS if p not in self.missing]
        if not running:
            logger.bind(event="provider.no_key", error_kind="no_key").error(
                "no provider has an API key: every request will wait"
            )

    def states(self) -> dict[str, dict[str, Any]]:
        """Each provider: ``state`` (running / paused / no key), ``reason``, ``until``."""
        now = time.time()
        out: dict[str, dict[str, Any]] = {}
        for name, state in self.sched.providers.items():
            if name in self.missing:
                out[name] = {"state": NO_KEY, "reason": self.missing[name], "until": None}
            elif state.paused_until > now:
                until = None if math.isinf(state.paused_until) else state.paused_until
                out[name] = {"state": PAUSED, "reason": state.pause_reason, "until": until}
            else:
                out[name] = {"state": RUNNING, "reason": "", "until": None}
        return out

    def blocked(self) -> dict[str, str]:
        """The providers that cannot proceed now, with the reason."""
        return {
            name: view["reason"] or view["state"]
            for name, view in self.states().items()
            if view["state"] != RUNNING
        }

    async def step(self) -> None:
        """Publish the states (when they changed); say again which requests wait for a
        provider without a key, every ``auth_pause_s``."""
        from loguru import logger  # at use: `batchd status` never logs

        states = self.states()
        if states != self._written:
            self._publish(states)
        if not self.missing:
            return
        now = time.time()
        waiting = await self.store.waiting_by_provider()
        for name, reason in self.missing.items():
            n = waiting.get(name, 0)
            if n and now - self._said_at.get(name, -math.inf) >= self.cfg.auth_pause_s:
                self._said_at[name] = now
                logger.bind(provider=name, event="provider.no_key", error_kind="no_key").error(
                    "provider {} paused: {}; {} wait for it", name, reason, plural(n, "request")
                )

    def _publish(self, states: dict[str, dict[str, Any]]) -> None:
        from loguru import logger  # at use: `batchd status` never logs

        snapshot = {"pid": os.getpid(), "updated_at": time.time(), "providers": states}
        tmp = self.path.with_name(f".{SNAPSHOT_NAME}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(snapshot, f)
            os.replace(tmp, self.path)
        except OSError as exc:  # informational only: never a reason to stop
            logger.bind(event="daemon.snapshot_failed").warning(
                "could not write {}: {}", self.path, exc
            )
            return
        self._written = states

    async def stuck(self, inbox_quiet: bool) -> str | None:
        """For ``--once``: why nothing more can progress, or None. Stuck means every request
        that is not final waits for a provider that cannot proceed, no file is being taken,
        ingested or written, and the inbox is quiet (``inbox_quiet``)."""
        if not inbox_quiet:
            return None
        blocked = self.blocked()
        if not blocked:
            return None
        # The waiting requests first, the files after: a batch collected between the two
        # reads then shows as a file to write, never as "only blocked providers wait".
        waiting = await self.store.waiting_by_provider()
        if not waiting or any(p not in blocked for p in waiting):
            return None
        busy = (FileStatus.CLAIMED, FileStatus.INGESTING, FileStatus.WRITING)
        if await self.store.files_in(*busy) or await self.store.finished_files():
            return None
        parts = [f"{n} for {p} ({blocked[p]})" for p, n in sorted(waiting.items())]
        total = sum(waiting.values())
        return f"{total} requests wait for a provider that cannot proceed: {'; '.join(parts)}"


def read_snapshot(state_dir: Path) -> dict[str, Any] | None:
    """What the daemon last published (``batchd status``); None when there is nothing."""
    with suppress(OSError, ValueError):
        data = json.loads((state_dir / SNAPSHOT_NAME).read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("providers"), dict):
            return data
    return None


__all__ = [
    "EXIT_STUCK",
    "Availability",
    "LazyAdapter",
    "build_adapters",
    "no_key_reason",
    "point_at_emulator",
    "read_snapshot",
]
