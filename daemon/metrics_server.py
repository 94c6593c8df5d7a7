"""The metrics endpoint: the client library's WSGI server on a thread of its own, at
``metrics_listen``, serving the ``batchd_*`` metrics of ``daemon/metrics.py`` (and the process's
own: memory, CPU, open files) from a registry of its own.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from .metrics import StoreCollector

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from .config import Config


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as (host, port); the value was checked at load."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class MetricsServer:
    """The endpoint, on a thread of its own (the client library's WSGI server)."""

    def __init__(self, cfg: Config, db: Path) -> None:
        self.cfg = cfg
        self.db = db
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, listen: str) -> str:
        """Bind and serve; the URL it serves at. Raises OSError when the address is taken."""
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.process_collector import ProcessCollector

        registry = CollectorRegistry(auto_describe=False)
        registry.register(StoreCollector(self.cfg, self.db))
        ProcessCollector(namespace="batchd", registry=registry)
        host, port = split_listen(listen)
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        bound = self._server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{bound}/metrics"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def serve(cfg: Config, db: Path) -> MetricsServer:
    """Start the endpoint at ``cfg.metrics_listen``; an address that cannot be bound is a
    start-up error (exit 2), as a wrong configuration is."""
    from .startup import StartupError

    assert cfg.metrics_listen is not None
    server = MetricsServer(cfg, db)
    try:
        url = server.start(cfg.metrics_listen)
    except OSError as exc:
        raise StartupError(
            f"cannot serve metrics at metrics_listen = {cfg.metrics_listen!r}: {exc}"
        ) from exc
    logger.info("metrics at {}", url)
    return server


__all__ = ["MetricsServer", "serve", "split_listen"]
