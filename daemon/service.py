"""What systemd is told about the running daemon (``Type=notify``): ready, status, watchdog, stop.

* ``READY=1`` once start-up work is done: the state folder is locked and its database checked
  (before any loop starts), the inbox loop's start-up recovery has ended (crash-interrupted
  ingests resumed, work copies found again), and every provider's first reconcile pass has
  ended (each batch a previous run left in ``submitting`` was looked up once; one the provider
  could not answer for yet is looked up again in the background and does not hold readiness).
  Until then ``STATUS`` says so, and ``EXTEND_TIMEOUT_USEC`` keeps systemd's start timeout from
  firing while that work goes on (the event loop is alive to send it).
* ``STATUS=`` one line: files in progress, requests pending and in flight, the providers that
  cannot proceed and why; at readiness, then every :data:`STATUS_EVERY_S`.
* ``WATCHDOG=1`` every half ``WATCHDOG_USEC``, sent by a coroutine on the event loop: when the
  loop is blocked (a call that hangs without awaiting) the pings stop and systemd restarts
  batchd (``WatchdogSec=`` in the unit). systemd enforces the watchdog only while the service
  runs, not during start-up or stop.
* ``STOPPING=1`` as soon as a stop begins (a signal, ``--once`` done, the state lost).

Outside systemd (no ``NOTIFY_SOCKET``) nothing is sent; readiness is still noted for the
metrics (``batchd_ready``). Nothing here can end the daemon: a
message that cannot be sent is dropped (``daemon/notify.py``), a status that cannot be read says so.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path

from loguru import logger

from . import metrics
from .notify import Notifier
from .store.snapshot import ServiceCounts, Snapshot

STATUS_EVERY_S = 10.0
EXTEND_EVERY_S = 10.0  # while starting: ask systemd for this much more time, and again
EXTEND_BY_S = 30.0

Blocked = Callable[[], dict[str, str]]  # provider -> why it cannot proceed


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Until ``event`` is set or ``timeout`` has passed."""
    with suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


def _short(reason: str) -> str:
    """A pause reason's kind (``no API key``, ``API key refused``), without the details."""
    return reason.split(":", 1)[0].strip() or "paused"


class Service:
    def __init__(self, stop: asyncio.Event, db: Path, notifier: Notifier | None = None) -> None:
        self.stop = stop
        self.db = db
        self.notifier = Notifier() if notifier is None else notifier
        self._recovered = asyncio.Event()
        self._reconciles: list[asyncio.Task[None]] = []
        self.ready = False

    # -- what the app tells it ---------------------------------------------------------------
    def recovered(self) -> None:
        """The inbox loop's start-up recovery has ended."""
        self._recovered.set()

    def reconciling(self, tasks: Iterable[asyncio.Task[None]]) -> None:
        """The providers' first reconcile passes: ready once every one has ended."""
        self._reconciles.extend(tasks)

    # -- the coroutine -------------------------------------------------------------------------
    async def run(self, blocked: Blocked) -> None:
        """Runs beside the daemon's loops and returns once a stop has begun."""
        try:
            async with asyncio.TaskGroup() as group:
                if self.notifier.watchdog_s is not None:
                    group.create_task(self._watchdog(self.notifier.watchdog_s), name="watchdog")
                group.create_task(self._lifecycle(blocked), name="notify")
        finally:
            self.notifier.close()

    async def _watchdog(self, every_s: float) -> None:
        while not self.stop.is_set():
            self.notifier.send("WATCHDOG=1")
            await _wait(self.stop, every_s)

    async def _lifecycle(self, blocked: Blocked) -> None:
        if await self._start_up_done():
            self.ready = True
            metrics.note_ready()
            if not self.notifier.enabled:  # outside systemd: readiness for the metrics only
                return
            self.notifier.send("READY=1", f"STATUS={await self.summary(blocked)}")
            logger.debug("systemd told: ready")
            while not self.stop.is_set():
                await _wait(self.stop, STATUS_EVERY_S)
                if not self.stop.is_set():
                    self.notifier.send(f"STATUS={await self.summary(blocked)}")
        self.notifier.send("STOPPING=1", "STATUS=stopping: finishing the calls in flight")

    async def _start_up_done(self) -> bool:
        """Wait for the start-up work; False when a stop came first."""
        mine = [asyncio.ensure_future(self._recovered.wait())]
        stop = asyncio.ensure_future(self.stop.wait())
        try:
            while True:
                left = [f for f in (*mine, *self._reconciles) if not f.done()]
                if not left:
                    return True
                if self.stop.is_set():
                    return False
                what = "resuming interrupted work" if not mine[0].done() else "reconciling"
                self.notifier.send(
                    f"EXTEND_TIMEOUT_USEC={int(EXTEND_BY_S * 1_000_000)}",
                    f"STATUS=starting: {what}",
                )
                await asyncio.wait(
                    [*left, stop], timeout=EXTEND_EVERY_S, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            for future in (*mine, stop):  # never the reconcile tasks: the scheduler owns them
                future.cancel()

    async def summary(self, blocked: Blocked) -> str:
        """The one-line status: ``3 files in progress; 120 requests pending, 50 in flight;
        paused: anthropic (no API key)``."""
        try:
            counts = await asyncio.to_thread(self._counts)
        except (sqlite3.Error, OSError) as exc:
            text = f"state database unreadable ({exc})"
        else:
            text = (
                f"{counts.files_open} files in progress; {counts.pending} requests pending, "
                f"{counts.in_flight} in flight"
            )
        paused = blocked()
        if paused:
            shown = (f"{p} ({_short(r)})" for p, r in sorted(paused.items()))
            text += "; paused: " + ", ".join(shown)
        return text

    def _counts(self) -> ServiceCounts:
        with Snapshot(self.db) as snap:
            return snap.service_counts()


__all__ = ["Service"]
