"""The emulator server: one aiohttp application serving the three providers on loopback.

In-process use (tests, ``batchd run --emulate``)::

    async with Emulator(time_scale=0) as emu:
        client = openai.AsyncOpenAI(base_url=emu.url + "/v1", api_key="x")

As a process: ``batchd emulator --host 127.0.0.1 --port 8089 [--state-dir DIR]
[--time-scale X] [--faults FILE]``.

aiohttp is the server because it is the mature asyncio HTTP stack that lets a handler stream a
request body to disk and a response body from disk, cut a connection half-way through a reply
and run inside the caller's event loop with no extra process.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from aiohttp import web

from .anthropic_api import AnthropicProvider
from .core import ApiError, Context, json_response
from .faults import FaultConfigError, FaultSet
from .gemini_api import GeminiProvider
from .journal import Journal
from .openai_api import OpenAIProvider
from .store import EmulatorStore

MAX_BODY = 2 * 1024**3


class Emulator:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        state_dir: str | os.PathLike[str] | None = None,
        time_scale: float = 1.0,
        faults: FaultSet | dict[str, Any] | str | os.PathLike[str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.state_dir = state_dir
        self.time_scale = time_scale
        self._initial_faults = faults
        self._runner: web.AppRunner | None = None
        self.ctx: Context | None = None

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("the emulator is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _load_faults(self) -> FaultSet:
        f = self._initial_faults
        if f is None:
            return FaultSet()
        if isinstance(f, FaultSet):
            return f
        if isinstance(f, dict):
            return FaultSet.parse(f)
        return FaultSet.load(Path(f))

    def build_app(self) -> web.Application:
        store = EmulatorStore(self.state_dir)
        self.ctx = ctx = Context(
            store=store,
            journal=Journal(store),
            faults=self._load_faults(),
            time_scale=self.time_scale,
        )
        app = web.Application(client_max_size=MAX_BODY)
        for provider in (OpenAIProvider(ctx), AnthropicProvider(ctx), GeminiProvider(ctx)):
            provider.register(app)
        _register_control(app, ctx)
        app.on_cleanup.append(lambda _app: _close(store))
        return app

    async def start(self) -> str:
        app = self.build_app()
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        # The bound socket tells us the port when 0 was asked.
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _close(store: EmulatorStore) -> None:
    store.close()


def _register_control(app: web.Application, ctx: Context) -> None:
    async def journal(request: web.Request) -> web.Response:
        limit = request.query.get("limit")
        return json_response(ctx.journal.snapshot(int(limit) if limit else None))

    async def reset(request: web.Request) -> web.Response:
        ctx.store.reset()
        ctx.journal.reset()
        ctx.faults = FaultSet()
        return json_response({"reset": True})

    async def get_faults(request: web.Request) -> web.Response:
        return json_response(ctx.faults.describe())

    async def set_faults(request: web.Request) -> web.Response:
        try:
            new = FaultSet.parse(await request.json())
        except (FaultConfigError, ValueError, TypeError) as exc:
            return json_response({"error": str(exc)}, status=400)
        if request.method == "PUT":
            ctx.faults = new
        else:
            ctx.faults.extend(new)
        return json_response(ctx.faults.describe())

    async def clear_faults(request: web.Request) -> web.Response:
        ctx.faults = FaultSet()
        return json_response(ctx.faults.describe())

    async def health(request: web.Request) -> web.Response:
        return json_response({"ok": True, "time_scale": ctx.time_scale})

    app.router.add_get("/_emulator/journal", journal)
    app.router.add_post("/_emulator/reset", reset)
    app.router.add_get("/_emulator/faults", get_faults)
    app.router.add_put("/_emulator/faults", set_faults)
    app.router.add_post("/_emulator/faults", set_faults)
    app.router.add_delete("/_emulator/faults", clear_faults)
    app.router.add_get("/_emulator/health", health)


async def serve(
    host: str,
    port: int,
    *,
    state_dir: str | None,
    time_scale: float,
    faults: str | None,
) -> None:
    """Run the emulator until SIGTERM or SIGINT (the ``batchd emulator`` command)."""
    emulator = Emulator(host, port, state_dir=state_dir, time_scale=time_scale, faults=faults)
    await emulator.start()
    print(f"batchd emulator listening on {emulator.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await emulator.stop()


__all__ = ["ApiError", "Emulator", "serve"]
