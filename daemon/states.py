"""The statuses of the three kinds of rows (files, batches, requests), as ``StrEnum``s.

One home for every status word the store keeps: code and SQL parameters use these members
(a ``StrEnum`` member *is* its string, so rows written by older versions read back the same).
Named sets say which statuses are final or still open.
"""

from __future__ import annotations

from enum import StrEnum


class FileStatus(StrEnum):
    """A dropped file (a job): claimed → ingesting → active → writing → done."""

    CLAIMED = "claimed"  # intent row written; the file may still be in the inbox
    INGESTING = "ingesting"  # its lines are being streamed into the store
    ACTIVE = "active"  # every line stored; its requests are being batched and run
    WRITING = "writing"  # every request final; outbox names reserved, files being written
    DONE = "done"  # results and summary written, input archived


class BatchRowStatus(StrEnum):
    """A local batch row: submitting → submitted → collected, or aborted."""

    SUBMITTING = "submitting"  # intent row: the create call may or may not have happened
    SUBMITTED = "submitted"  # the provider has it (its id is recorded); being polled
    COLLECTED = "collected"  # ended at the provider, results stored
    ABORTED = "aborted"  # never ran (create refused, lost, failed whole); requests released


class RequestStatus(StrEnum):
    """One input line: invalid, or pending → batched → a final status (or pending again)."""

    INVALID = "invalid"
    PENDING = "pending"
    BATCHED = "batched"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELED = "canceled"


FILE_OPEN: frozenset[FileStatus] = frozenset(
    {FileStatus.CLAIMED, FileStatus.INGESTING, FileStatus.ACTIVE, FileStatus.WRITING}
)
BATCH_ENDED: frozenset[BatchRowStatus] = frozenset(
    {BatchRowStatus.COLLECTED, BatchRowStatus.ABORTED}
)
BATCH_OPEN: frozenset[BatchRowStatus] = frozenset(set(BatchRowStatus) - BATCH_ENDED)
REQUEST_OPEN: frozenset[RequestStatus] = frozenset({RequestStatus.PENDING, RequestStatus.BATCHED})
REQUEST_FINAL: frozenset[RequestStatus] = frozenset(set(RequestStatus) - REQUEST_OPEN)
