"""A SIGHUP that arrives before the daemon's event loop handles signals.

SIGHUP's default action ends a process without a word. ``batchd run`` installs
:func:`hold_sighup` first thing (this module imports nothing heavy), so one that comes while
Python is still importing or the state folder is being opened is remembered, and the daemon
reloads its configuration once it runs (:func:`take_sighup`).
"""

from __future__ import annotations

import signal
from types import FrameType

_received: list[int] = []


def _remember(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)


def hold_sighup() -> None:
    signal.signal(signal.SIGHUP, _remember)


def take_sighup() -> bool:
    """Whether a SIGHUP came before the daemon's own handler (and forget it)."""
    came = bool(_received)
    _received.clear()
    return came


__all__ = ["hold_sighup", "take_sighup"]
