"""systemd's notification protocol (``sd_notify``): one datagram per message to ``NOTIFY_SOCKET``.

Under a ``Type=notify`` unit systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``, the
process meant). A message is newline-separated ``KEY=value`` assignments: ``READY=1``,
``STATUS=…``, ``WATCHDOG=1``, ``EXTEND_TIMEOUT_USEC=…``, ``STOPPING=1``. Outside systemd
(no ``NOTIFY_SOCKET``) every send is a no-op.

Written here rather than taken from a library: the protocol is one ``sendto`` (systemd's own
documentation describes it as stable); the pure-Python ``sdnotify`` package is unmaintained
since 2017, and ``systemd-python`` / ``cysystemd`` are compiled bindings to libsystemd, a
build dependency on every machine for thirty lines of code.

The variables are removed from the environment once read, so no child process (the
in-process emulator starts none, but a future one might) talks to systemd in batchd's name.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, MutableMapping

from loguru import logger

SEND_TIMEOUT_S = 1.0  # systemd reads at once; a wedged manager must not hold the loop long
VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def socket_address(value: str) -> str | None:
    """The address to send to: an absolute path, or ``@name`` as the abstract ``\\0name``;
    None for anything else (unset, or a kind of socket this module does not speak)."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval_s(env: Mapping[str, str], pid: int) -> float | None:
    """How often to send ``WATCHDOG=1``: half of ``WATCHDOG_USEC``, when the watchdog is
    meant for this process (``WATCHDOG_PID`` unset or ours); None when there is none."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    meant_for = env.get("WATCHDOG_PID", "")
    if meant_for and (not meant_for.isdigit() or int(meant_for) != pid):
        return None
    return int(usec) / 1_000_000 / 2


class Notifier:
    """The daemon's line to systemd. ``send`` never raises: a message that cannot be sent is
    logged (once per kind of failure) and dropped; batchd runs the same without systemd."""

    def __init__(self, env: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self.address = socket_address(raw)
        self.watchdog_s = watchdog_interval_s(env, os.getpid()) if self.address else None
        for name in VARIABLES:
            env.pop(name, None)
        if raw and self.address is None:
            logger.warning("NOTIFY_SOCKET={!r} is not a path or @name; systemd is not told", raw)
        self._sock: socket.socket | None = None
        self._failed: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments as one message; True when it went out."""
        if self.address is None:
            return False
        message = "\n".join(a.replace("\n", " ") for a in assignments).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(SEND_TIMEOUT_S)
            self._sock.sendto(message, self.address)
        except OSError as exc:
            kind = type(exc).__name__
            if kind not in self._failed:
                self._failed.add(kind)
                logger.warning("could not notify systemd ({}); going on without it", exc)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


__all__ = ["Notifier", "socket_address", "watchdog_interval_s"]
