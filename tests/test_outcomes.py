"""What a result, or a missing one, does to a request: the pure rules of daemon/outcomes.py."""

from __future__ import annotations

from adapters.base import BatchStatus, ItemError, ItemOutcome, ItemResult, Usage
from daemon.outcomes import (
    CREATE_UNKNOWN,
    INTERNAL_ERROR,
    OutcomePolicy,
    create_error,
    describe,
    item_update,
    missing_update,
    noted_create_error,
)
from daemon.states import RequestStatus

REQUEUE = OutcomePolicy(max_attempts=3, keep_cancelled=False)
KEEP_CANCELLED = OutcomePolicy(max_attempts=3, keep_cancelled=True)


def retry_at(attempt: int) -> float:
    return 1000.0 + attempt


def _item(outcome: ItemOutcome, error: ItemError | None = None) -> ItemResult:
    return ItemResult("r7", outcome, text="t", usage=Usage(3, 4), error=error)


def test_an_answer_is_final_with_its_result_and_one_attempt_counted() -> None:
    update = item_update(7, 0, _item("succeeded"), REQUEUE, retry_at)
    assert update["status"] == RequestStatus.SUCCEEDED and update["attempts_inc"] == 1
    assert update["result"] is not None and update["result"]["usage"]["output_tokens"] == 4
    assert update["error"] is None and "next_attempt_at" not in update
    failed = item_update(7, 0, _item("failed", ItemError("invalid", "no", 400)), REQUEUE, retry_at)
    assert failed["status"] == RequestStatus.FAILED
    assert failed["error"] == {"type": "invalid", "message": "no", "code": 400}


def test_a_retryable_item_goes_back_to_pending_until_its_last_attempt() -> None:
    err = ItemError("rate_limit_error", "slow down")
    again = item_update(7, 1, _item("retry", err), REQUEUE, retry_at)
    assert again["status"] == RequestStatus.PENDING and again["next_attempt_at"] == 1002.0
    assert again["result"] is None and again["error"] is not None
    last = item_update(7, 2, _item("retry", err), REQUEUE, retry_at)
    assert last["status"] == RequestStatus.FAILED and last["result"] is not None
    expired = item_update(7, 2, _item("expired"), REQUEUE, retry_at)
    assert expired["status"] == RequestStatus.EXPIRED


def test_a_cancelled_item_ends_or_is_requeued_as_configured() -> None:
    assert item_update(7, 0, _item("canceled"), KEEP_CANCELLED, retry_at)["status"] == "canceled"
    assert item_update(7, 0, _item("canceled"), REQUEUE, retry_at)["status"] == "pending"
    assert item_update(7, 2, _item("canceled"), REQUEUE, retry_at)["status"] == "canceled"


def test_a_request_the_ended_batch_did_not_report() -> None:
    expired = BatchStatus("b", "ended", "expired", expired=True)
    cancelled = BatchStatus("b", "ended", "canceled", cancelled=True)
    ended = BatchStatus("b", "ended", "ended")
    update = missing_update(7, 0, expired, REQUEUE, retry_at)
    assert update["status"] == RequestStatus.PENDING and update["error"] is not None
    assert update["error"]["type"] == "batch_expired"
    assert missing_update(7, 2, expired, REQUEUE, retry_at)["status"] == "expired"
    kept = missing_update(7, 0, cancelled, KEEP_CANCELLED, retry_at)
    assert kept["status"] == "canceled" and kept["error"] == {
        "type": "batch_cancelled",
        "message": "the batch was cancelled",
        "code": None,
    }
    lost = missing_update(7, 2, ended, REQUEUE, retry_at)
    assert lost["status"] == "failed" and lost["error"] is not None
    assert lost["error"]["message"] == "no result for this request (result_missing)"


def test_a_create_error_noted_on_a_batch_becomes_the_requests_error() -> None:
    noted = noted_create_error(CREATE_UNKNOWN, "openai batches.create: timed out: x")
    assert create_error(noted) == {
        "type": "create_outcome_unknown",
        "message": "openai batches.create: timed out: x",
        "code": None,
    }
    assert create_error(noted_create_error(INTERNAL_ERROR, "KeyError: 'a'"))["type"] == (
        "internal_error"
    )
    # a note of another shape is still an error with its whole text
    assert create_error("boom") == {"type": "internal_error", "message": "boom", "code": None}
    assert describe(KeyError("a")) == "KeyError: 'a'" and describe(RuntimeError()) == "RuntimeError"
