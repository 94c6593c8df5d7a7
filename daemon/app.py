"""Supervision: one TaskGroup, one stop event, a grace period, then cancel.

Start-up takes the state folder first (``startup.py``: its lock, its modes, a sound
database). Loops: the inbox (scan, claim, ingest), the planner (start per-model submit tasks),
one poller per provider, the finisher (outbox + archive), and the guard (the state database
still the one opened; the providers' states for ``batchd status``, from ``availability.py``; a
SIGHUP reload, ``reload.py``; ``--once``'s exit 3 when only providers that cannot proceed are
left). Each waits for a nudge, its own deadline or stop. A signal handler only sets an event.
The tasks the scheduler starts (submits, lookups) are supervised by it, and its ``monitor``
runs in the same TaskGroup. An unexpected exception in any loop or task is logged once with
its traceback and ends the process non-zero, so systemd restarts it; nothing is swallowed.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, suppress
from typing import Any

from loguru import logger

from adapters.facts import PROVIDERS

from . import finish, fs_events, ingest, metrics, metrics_server
from .availability import (
    EXIT_STUCK,
    Availability,
    build_adapters,
    freeze_heap,
    point_at_emulator,
)
from .cancel import Canceller
from .config import Config
from .early_signals import take_sighup
from .gc import Retention
from .logs import log_stopped, setup_logging
from .reload import reload_config
from .retry import backoff_s
from .scheduler import Scheduler, TaskFailed
from .service import Service
from .startup import (
    LOCK_NAME,
    StateLock,
    StateWatch,
    clear_spool,
    db_path,
    open_store,
    prepare_folders,
    prepare_state_dir,
)
from .states import FILE_OPEN, FileStatus
from .store import Store
from .watcher import Inbox, watch

# A loop with nothing due sleeps this long at most: every loop is nudged when something happens
# (a file event, a submitted or collected batch) and returns its own deadline otherwise, so this
# is only a safety net; it is what an idle daemon costs.
IDLE_S = 300.0
# The guard's interval with --once (its progress check), or when the state folder cannot be
# watched for events; otherwise the state files' events wake it, and it looks every
# GUARD_IDLE_S (and when a provider's pause ends, and every auth_pause_s while one is held).
GUARD_INTERVAL_S = 1.0
GUARD_IDLE_S = 60.0
EXIT_FAILED = 1  # an unexpected error, or the state database lost: systemd restarts batchd


class Nudges:
    """One event per loop; ``all()`` wakes every loop (an event is only a hint)."""

    def __init__(self, names: list[str]) -> None:
        self.events = {n: asyncio.Event() for n in names}

    def all(self, but: frozenset[str] = frozenset()) -> None:
        for name, e in self.events.items():
            if name not in but:
                e.set()

    async def wait(self, name: str, stop: asyncio.Event, timeout: float | None) -> None:
        event = self.events[name]
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(
                waiters,
                timeout=None if timeout is None else max(0.0, timeout),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for w in waiters:
                w.cancel()
        event.clear()


class _WakeAll(asyncio.Event):
    """The scheduler's wake event: setting it nudges every loop but the inbox's (what the
    scheduler does never puts a file in the inbox; its scan would only list the folder again,
    twice for each batch)."""

    NOT_WOKEN = frozenset({"inbox"})

    def __init__(self, nudges: Nudges) -> None:
        super().__init__()
        self._nudges = nudges

    def set(self) -> None:
        self._nudges.all(but=self.NOT_WOKEN)


def _until(deadline: float | None, default: float = IDLE_S) -> float:
    if deadline is None:
        return default
    return min(default, max(0.0, deadline - time.time()))


def low_disk(cfg: Config) -> str | None:
    """Why no new file should be taken now: the state or outbox disk is below
    ``min_free_disk_mb`` (ingest copies each file into SQLite, and results need room too)."""
    if cfg.min_free_disk_mb <= 0:
        return None
    for folder in dict.fromkeys((cfg.state_dir, cfg.outbox)):
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            continue
        if free < cfg.min_free_disk_mb * 1024 * 1024:
            return (
                f"{free // (1024 * 1024)} MiB free on the disk of {folder}, "
                f"below min_free_disk_mb = {cfg.min_free_disk_mb}"
            )
    return None


class App:
    def __init__(self, cfg: Config, reload: Callable[[], Config] | None = None) -> None:
        self.cfg = cfg
        self.reload = reload  # loads the configuration again (SIGHUP)
        self.stop = asyncio.Event()
        self.nudges = Nudges(["inbox", "plan", "finish", "guard", *PROVIDERS])
        self.store = Store(db_path(cfg.state_dir))
        self.inbox = Inbox(cfg.inbox, cfg.settle_s)
        self.scheduler: Scheduler | None = None
        self.availability: Availability | None = None
        self.canceller: Canceller | None = None
        self.retention: Retention | None = None
        self.watch: StateWatch | None = None
        self.outcome = 0  # the exit status when no task failed (3: --once stuck, 1: state lost)
        self._hup = False
        self._emulator_url: str | None = None  # every provider points there (also on reload)
        self._settling = 0
        self._recovered = False  # crash-interrupted ingests resumed (first inbox step)
        self._low_disk: str | None = None
        self._finish_failures = 0
        self._rng = random.Random()
        self.service = Service(self.stop, self.store.path)  # systemd: ready, status, watchdog
        self._state_watched = False  # the state folder's events wake the guard

    # -- loops -----------------------------------------------------------------------------
    async def _loop(self, name: str, step: Callable[[], Awaitable[float | None]]) -> None:
        while not self.stop.is_set():
            deadline = await step()
            await self.nudges.wait(name, self.stop, _until(deadline))

    async def _inbox_step(self) -> float | None:
        if not self._recovered:
            await ingest.recover(self.cfg, self.store, self.stop)
            self._recovered = True
            self.service.recovered()
            self.nudges.all()  # resumed files have requests to plan, or are ready to finish
        ready, self._settling = self.inbox.scan()
        if ready and self._disk_low():
            return time.time() + self.cfg.scan_interval_s
        for path in ready:
            if self.stop.is_set():
                break
            self.inbox.taken(path)
            started = time.monotonic()
            await ingest.claim(self.cfg, self.store, path, self.stop)
            metrics.note_ingest(time.monotonic() - started)
            self.nudges.all()
        if self._settling:
            return time.time() + min(self.cfg.settle_s, 1.0) / 2
        return time.time() + self.cfg.scan_interval_s

    def _disk_low(self) -> bool:
        """Below the free-disk threshold new files wait in the inbox; the work in hand goes on.
        Said once when it starts and once when it ends."""
        reason = low_disk(self.cfg)
        if reason is not None and self._low_disk is None:
            logger.bind(event="daemon.disk_low", error_kind="disk_low").error(
                "low disk space: {}; new files wait in the inbox", reason
            )
        elif reason is None and self._low_disk is not None:
            logger.bind(event="daemon.disk_ok").info(
                "disk space is above min_free_disk_mb again; taking new files"
            )
        self._low_disk = reason
        return reason is not None

    async def _plan_step(self) -> float | None:
        assert self.scheduler is not None
        return await self.scheduler.plan()

    def _poll_step(self, provider: str) -> Callable[[], Awaitable[float | None]]:
        async def step() -> float | None:
            assert self.scheduler is not None
            return await self.scheduler.poll_due(provider)

        return step

    async def _finish_step(self) -> float | None:
        """Write the outbox files of every finished file (and of those a crash or a failed
        write left in ``writing``). A file that could not be written (outbox not writable, disk
        full) is tried again after a backoff; nothing else wakes this loop for it."""
        unfinished = 0
        rows = await self.store.files_in(FileStatus.WRITING) + await self.store.finished_files()
        if rows:
            _ensure_folders(self.cfg)
        for row in rows:
            if self.stop.is_set():
                break
            if await finish.finish_file(self.cfg, self.store, row):
                self.nudges.all()  # its work copy grew: new requests to plan
            now = await self.store.file(row["id"])
            unfinished += now is None or now["status"] != FileStatus.DONE
        if self.cfg.once and await self._drained():
            logger.bind(event="daemon.drained").info("all work done (--once); stopping")
            self.stop.set()
        if not unfinished:
            self._finish_failures = 0
            return None
        self._finish_failures += 1
        return time.time() + backoff_s(
            self._finish_failures,
            base_s=self.cfg.retry_base_s,
            cap_s=self.cfg.retry_max_s,
            rng=self._rng,
        )

    async def _drained(self) -> bool:
        open_files = await self.store.files_in(*FILE_OPEN)
        # Not before start-up recovery ran: it may find work the database does not list yet
        # (work copies it did not know).
        recovered = self._recovered
        return recovered and not open_files and self._settling == 0 and not self.inbox.scan()[0]

    async def _guard_step(self) -> float | None:
        """The state files still the ones opened, the providers' states published, a SIGHUP
        reload, and with ``--once``: stop (exit 3) when nothing more can progress."""
        assert self.watch is not None and self.availability is not None
        lost = self.watch.changed()
        if lost is not None:
            logger.bind(event="daemon.state_lost", error_kind="state_lost").critical(
                "state lost: {} while batchd runs; stopping (exit {}) so that a restart "
                "begins from what is on disk", lost, EXIT_FAILED,
            )  # fmt: skip
            self.outcome = EXIT_FAILED
            self.stop.set()
            return None
        if self._hup:
            self._hup = False
            await self._reload()
        await self.availability.step()
        if self.canceller is not None:  # ``batchd cancel``: applied within a guard interval
            await self.canceller.step()
        if self.retention is not None:  # retention daily, provider-expiry warnings hourly
            await self.retention.step()
        if self.cfg.once and not self.stop.is_set():
            quiet = self._recovered and self._settling == 0 and not self.inbox.scan()[0]
            why = await self.availability.stuck(quiet)
            if why is not None:
                logger.bind(event="daemon.stuck", error_kind="stuck").error(
                    "--once: nothing more can progress: {}. Stopping (exit {}); they are kept "
                    "and go out once the provider can run", why, EXIT_STUCK,
                )  # fmt: skip
                self.outcome = EXIT_STUCK
                self.stop.set()
        return time.time() + self._guard_interval()

    def _guard_interval(self) -> float:
        if self.cfg.once or not self._state_watched:
            return GUARD_INTERVAL_S
        assert self.scheduler is not None and self.availability is not None
        interval = GUARD_IDLE_S
        if self.availability.missing:  # said again every auth_pause_s while requests wait
            interval = min(interval, self.cfg.auth_pause_s)
        now = time.time()
        for state in self.scheduler.providers.values():
            if now < state.paused_until < now + interval:  # publish the pause's end
                interval = state.paused_until - now
        return interval

    async def _watch_state(self) -> None:
        """Wake the guard when the database or the lock file is deleted, replaced or moved
        (inotify, ``fs_events.py``); without events the guard looks every GUARD_INTERVAL_S."""
        names = {self.store.path.name, LOCK_NAME}
        guard = self.nudges.events["guard"]
        events = fs_events.FolderEvents(self.cfg.state_dir, guard.set, names=names, debounce_s=0)
        while not self.stop.is_set():
            try:
                self._state_watched = True
                if not await events.run(self.stop):
                    return
            except OSError as exc:
                logger.debug("state folder events unavailable ({}); the guard polls", exc)
            self._state_watched = False
            guard.set()
            with suppress(TimeoutError):  # the folder went: the guard says so and stops
                await asyncio.wait_for(self.stop.wait(), GUARD_IDLE_S)

    async def _reload(self) -> None:
        """SIGHUP: the configuration read and checked again; what may change live is applied
        (``daemon/reload.py``), everything else is said to need a restart."""
        if self.reload is None:
            logger.bind(event="config.reload").warning(
                "SIGHUP received: no configuration source to reload; ignored"
            )
            return
        logger.bind(event="config.reload").info("SIGHUP received: reloading the configuration")
        load, url = self.reload, self._emulator_url

        def loaded() -> Config:
            return load() if url is None else point_at_emulator(load(), url)

        new = await asyncio.to_thread(reload_config, self.cfg, loaded)
        if new is None:
            return
        old, self.cfg = self.cfg, new
        assert self.scheduler is not None and self.availability is not None
        self.scheduler.reconfigure(new)
        self.availability.cfg = new
        self.inbox.settle_s = new.settle_s
        if (old.log_level, old.log_json) != (new.log_level, new.log_json):
            setup_logging(json_lines=new.log_json, level=new.log_level)
        self.nudges.all()

    # -- run -------------------------------------------------------------------------------
    async def run(self) -> int:
        """Raises StartupError (exit 2) when the state folder cannot be used."""
        self._install_signals()
        cfg = self.cfg
        prepare_folders(cfg.inbox, cfg.outbox, cfg.processed)
        prepare_state_dir(cfg.state_dir)
        async with AsyncExitStack() as stack:
            # One daemon per state folder: nothing in it is read or changed before the lock.
            lock = StateLock(cfg.state_dir)
            lock.acquire()
            stack.callback(lock.release)
            if cfg.emulate:
                from adapters.emulator import Emulator

                emu = Emulator(state_dir=cfg.state_dir / "emulator", time_scale=0)
                await emu.start()
                stack.push_async_callback(emu.stop)
                logger.bind(event="daemon.emulator").info("emulator started at {}", emu.url)
                self._emulator_url = emu.url
            elif cfg.emulator_url:
                self._emulator_url = cfg.emulator_url
            if self._emulator_url is not None:
                cfg = self.cfg = point_at_emulator(cfg, self._emulator_url)
            self.store = await open_store(self.store.path)
            stack.push_async_callback(self.store.close)
            self.watch = StateWatch(self.store.path, lock.path)
            if cfg.metrics_listen:
                stack.callback(metrics_server.serve(cfg, self.store.path).stop)
            clear_spool(cfg.state_dir)
            adapters, accounts, missing = build_adapters(cfg)
            for adapter in adapters.values():
                stack.push_async_callback(adapter.close)
            self.scheduler = Scheduler(cfg, self.store, adapters, accounts, _WakeAll(self.nudges))
            self.availability = Availability(cfg, self.store, self.scheduler, missing)
            self.canceller = Canceller(self.scheduler, self.store)
            self.retention = Retention(self.scheduler, self.store)
            self.availability.start()
            freeze_heap()  # start-up's imports and objects, out of every later full collection
            self._start_up()
            return await self._supervise()

    def _start_up(self) -> None:
        """Recovery runs inside the supervised loops, so a SIGTERM during a long recovery is
        handled like any other (grace, then cancel): batches stuck in ``submitting`` are looked
        up in the background, crash-interrupted ingests resume in the first inbox step, and
        files left in ``writing`` are written again by the first finish step."""
        assert self.scheduler is not None
        self.service.reconciling(self.scheduler.reconcile_in_background())
        logger.bind(event="daemon.started").info(
            "batchd started: inbox {} outbox {}", self.cfg.inbox, self.cfg.outbox
        )

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        if take_sighup():
            self._on_hup()

    def _on_hup(self) -> None:
        """Only a flag: the reload itself runs in the guard loop (never inside a handler)."""
        self._hup = True
        self.nudges.events["guard"].set()

    def _on_signal(self, sig: signal.Signals) -> None:
        if not self.stop.is_set():
            logger.bind(event="shutdown.signal").info(
                "{} received: finishing the write in hand, then stopping (grace {:.0f}s)",
                sig.name,
                self.cfg.grace_s,
            )
        self.stop.set()

    async def _supervise(self) -> int:
        """Run every loop until stop; the exit status: 1 when a loop or a scheduler task died
        of an unexpected error (logged once, with its traceback), else ``self.outcome`` (0,
        3 for ``--once`` with requests no provider can take, 1 for a lost state database)."""
        assert self.scheduler is not None
        loops: list[tuple[str, Any]] = [
            ("inbox", self._loop("inbox", self._inbox_step)),
            ("plan", self._loop("plan", self._plan_step)),
            ("finish", self._loop("finish", self._finish_step)),
            ("guard", self._loop("guard", self._guard_step)),
            *((p, self._loop(p, self._poll_step(p))) for p in PROVIDERS),
        ]
        failed = False
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(coro, name=name) for name, coro in loops]
                tasks.append(
                    group.create_task(
                        watch(self.cfg.inbox, self.nudges.events["inbox"], self.stop),
                        name="watch",
                    )
                )
                if not self.cfg.once and fs_events.available():
                    group.create_task(self._watch_state(), name="watch-state")
                group.create_task(self.scheduler.monitor(), name="scheduler-tasks")
                assert self.availability is not None
                group.create_task(self.service.run(self.availability.blocked), name="service")
                group.create_task(self._grace(tasks), name="grace")
        except* TaskFailed:
            failed = True  # logged, with its traceback, where the task died
        except* Exception as errors:
            failed = True
            for exc in errors.exceptions:
                logger.bind(event="daemon.crashed", error_kind="internal_error").opt(
                    exception=exc
                ).critical("unexpected error; batchd stops")
        finally:
            # After a failure the loops were cancelled: the create calls in flight still get
            # their grace period (a no-op after a normal stop, which already waited for them).
            await self.scheduler.shutdown(self.cfg.grace_s)
            await log_stopped(self.store)
        return EXIT_FAILED if failed or self.scheduler.failure is not None else self.outcome

    async def _grace(self, tasks: list[asyncio.Task[Any]]) -> None:
        """After stop: one grace period in all (create calls in flight, then the loops'
        current steps), then whatever is still running is cancelled."""
        await self.stop.wait()
        assert self.scheduler is not None
        deadline = time.monotonic() + self.cfg.grace_s
        await self.scheduler.shutdown(self.cfg.grace_s)
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        for task in pending:
            task.cancel()


def _ensure_folders(cfg: Config) -> None:
    """Recreate an outbox or processed folder removed while batchd runs (a path that is not a
    folder is left alone: the write fails, is logged and retried)."""
    for folder in (cfg.outbox, cfg.processed):
        with suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)


def run(cfg: Config, reload: Callable[[], Config] | None = None) -> int:
    """Run the daemon; the exit status. ``reload`` loads the configuration again (SIGHUP).
    Raises StartupError when the state folder cannot be used."""
    with suppress(KeyboardInterrupt):
        return asyncio.run(App(cfg, reload).run())
    return 130


__all__ = ["App", "run"]
