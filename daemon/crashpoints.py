"""Named crash points and fault points, for crash-safety and supervision tests only.

``BATCHD_CRASH_AT=name`` (or ``name:N`` for the N-th time it is reached) makes the process exit
at once there, with ``os._exit`` - no cleanup, no flush, as a power cut would.
``BATCHD_FAULT_AT=name`` (or ``name:N``: the first N times it is reached) raises
:class:`InjectedFault` there instead: an unexpected error of the kind a bug would raise, so
tests can show what the daemon does with one. Unset, either costs one dictionary lookup.
"""

from __future__ import annotations

import os
import sys

EXIT_CODE = 137
AFTER_INGEST_COMMIT = "after_ingest_commit"
AFTER_CREATE = "after_create"
AFTER_RESULTS_STORED = "after_results_stored"
MID_OUTBOX_WRITE = "mid_outbox_write"
POINTS = (
    AFTER_INGEST_COMMIT,  # a file's requests are in SQLite, nothing submitted yet
    AFTER_CREATE,  # the provider created the batch; its id is not recorded yet
    AFTER_RESULTS_STORED,  # a batch's results are in SQLite, the outbox not written
    MID_OUTBOX_WRITE,  # half of a results file is written to its temp name
)
# Where BATCHD_FAULT_AT may raise.
FAULT_POINTS = (
    "plan",  # the planner's step, outside any unit of work
    "submit",  # a per-model submit task, before the create call
    "create",  # right after a create call that took effect (its outcome not recorded yet)
    "collect",  # a batch's collection, before its results are fetched
)
_hits: dict[str, int] = {}
_fault_hits: dict[str, int] = {}


class InjectedFault(RuntimeError):
    """Raised at a fault point named by ``BATCHD_FAULT_AT`` (tests only)."""


def crash_point(name: str) -> None:
    spec = os.environ.get("BATCHD_CRASH_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        sys.stderr.write(f"batchd: crash point {name} reached; exiting now\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)


def fault_point(name: str) -> None:
    spec = os.environ.get("BATCHD_FAULT_AT")
    if not spec:
        return
    point, _, times = spec.partition(":")
    if point != name:
        return
    _fault_hits[name] = _fault_hits.get(name, 0) + 1
    if _fault_hits[name] <= int(times or 1):
        raise InjectedFault(f"injected fault at {name} (BATCHD_FAULT_AT)")
