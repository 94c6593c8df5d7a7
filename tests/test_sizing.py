"""The adaptive sizing policy (``daemon/sizing.py``), pure: properties of ``decide`` over any
lanes, and the README's worked 1,000,000-request example, computed so it cannot drift."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.facts import PROVIDER_LIMITS
from daemon.budgets import Budgets, Room, limit_from_message
from daemon.config import Config
from daemon.packing import estimate_tokens
from daemon.polling import poll_interval_s
from daemon.sizing import (
    GROWTH,
    Lane,
    Settings,
    canary_verdict,
    decide,
    sizes_for,
    start_size,
)
from daemon.store import Store
from daemon.store.planning import (
    LANE_CANARY,
    LANE_FAILED,
    LANE_PASSED,
    ROLE_CANARY,
    ROLE_PROBE,
    LaneRow,
)

NOW = 1_000_000.0
ACCT = "openai|default|key:0123456789ab"


def _settings(**kw: object) -> Settings:
    base: dict[str, object] = dict(
        adaptive=True, base=50, max_size=50_000, max_wait_s=3600.0, on_failure="fail",
        linger_s=2.0,
    )  # fmt: skip
    return Settings(**(base | kw))  # type: ignore[arg-type]


rows = st.one_of(
    st.none(),
    st.builds(
        LaneRow,
        file_id=st.just(0),
        state=st.sampled_from([LANE_CANARY, LANE_PASSED, LANE_FAILED]),
        canary_batch=st.one_of(st.none(), st.integers(1, 9)),
        wait_until=st.floats(NOW - 5000, NOW + 5000),
        error=st.just({"type": "invalid_request_error", "message": "bad"}),
    ),
)
lanes = st.lists(
    st.tuples(st.integers(1, 200), st.floats(NOW - 100, NOW), rows),
    min_size=0,
    max_size=6,
).map(lambda xs: [Lane(i + 1, n, oldest, r) for i, (n, oldest, r) in enumerate(xs)])
any_settings = st.builds(
    _settings,
    adaptive=st.booleans(),
    base=st.integers(1, 1000),
    max_size=st.integers(1, 50_000),
    on_failure=st.sampled_from(["fail", "hold", "send"]),
)


@settings(max_examples=150, deadline=None)
@given(lanes, st.integers(0, 100_000), st.one_of(st.none(), st.floats(NOW - 9000, NOW + 9000)),
       any_settings)  # fmt: skip
def test_decide_stays_within_its_bounds(
    lanes: list[Lane], proven: int, probe_until: float | None, s: Settings
) -> None:
    plan = decide(lanes, proven, probe_until, s, NOW)
    waiting = {
        lane.file_id
        for lane in lanes
        if lane.row is not None
        and lane.row.state == LANE_CANARY
        and lane.row.canary_batch is not None
        and NOW < lane.row.wait_until
    }
    failed = {lane.file_id for lane in lanes if lane.row and lane.row.state == LANE_FAILED}
    if plan.claim is not None:
        claim = plan.claim
        if s.adaptive:
            assert 1 <= claim.size <= min(s.max_size, max(s.base, proven * GROWTH))
        if not s.adaptive:
            assert claim.size == s.base and claim.role is None and claim.files == ()
        else:
            # Never a request of a file whose canary is still out (and its wait not over),
            # never one of a failed lane unless the operator said "send".
            assert not set(claim.files) & waiting
            if s.on_failure != "send":
                assert not set(claim.files) & failed
            assert set(claim.files) <= {lane.file_id for lane in lanes}
            if claim.role == ROLE_CANARY:
                assert claim.size == start_size(proven, s)
                assert claim.wait_until == NOW + s.max_wait_s
            if claim.role == ROLE_PROBE:
                assert probe_until is None and claim.size > start_size(proven, s)
    # Failed lanes end only under "fail", and only they.
    ended = {file_id for file_id, _ in plan.fail}
    assert ended == (failed if s.adaptive and s.on_failure == "fail" else set())
    if plan.wake_at is not None:
        assert plan.wake_at > NOW - 200  # a real deadline, not a busy loop in the past


def test_a_new_file_sends_one_canary_and_the_rest_waits() -> None:
    s = _settings()
    plan = decide([Lane(1, 1000, NOW - 10)], 0, None, s, NOW)
    assert plan.claim is not None
    assert (plan.claim.files, plan.claim.size, plan.claim.role) == ((1,), 50, ROLE_CANARY)
    out = LaneRow(1, LANE_CANARY, 7, NOW + 3600, None)
    waiting = decide([Lane(1, 950, NOW - 10, out)], 0, None, s, NOW)
    assert waiting.claim is None and waiting.wake_at == NOW + 3600
    # After the wait, the rest goes out at the product's size until the canary ends.
    late = decide([Lane(1, 950, NOW - 10, out)], 0, None, s, NOW + 3601)
    assert late.claim is not None and late.claim.size == 50


def test_growth_after_good_batches_up_to_the_cap() -> None:
    s = _settings()
    passed = LaneRow(1, LANE_PASSED, None, 0.0, None)
    seen = []
    for proven in (50, 500, 5000, 50_000):
        plan = decide([Lane(1, 10**6, NOW - 10, passed)], proven, None, s, NOW)
        assert plan.claim is not None
        seen.append((plan.claim.size, plan.claim.role))
    assert seen == [(500, ROLE_PROBE), (5000, ROLE_PROBE), (50_000, ROLE_PROBE), (50_000, None)]
    # While a probe is out, nothing else goes; after the wait, the proven size does.
    held = decide([Lane(1, 10**6, NOW - 10, passed)], 500, NOW + 60, s, NOW)
    assert held.claim is None and held.wake_at == NOW + 60
    after = decide([Lane(1, 10**6, NOW - 10, passed)], 500, NOW - 1, s, NOW)
    assert after.claim is not None and (after.claim.size, after.claim.role) == (500, None)
    # A later file of a model that recently proved 5,000 starts its canary there.
    later = decide([Lane(2, 10**6, NOW - 10)], 5000, None, s, NOW)
    assert later.claim is not None and later.claim.size == 5000


def test_canary_verdicts() -> None:
    assert canary_verdict({"failed": 50}, 0.5) == "failed"
    assert canary_verdict({"failed": 25, "succeeded": 25}, 0.5) == "failed"
    assert canary_verdict({"failed": 1, "succeeded": 49}, 0.5) == "passed"
    assert canary_verdict({"expired": 50}, 0.5) == "again"
    assert canary_verdict({}, 0.5) == "again"


def test_worked_example_one_million_openai_requests() -> None:
    """The README's "Batch sizing" example: 1,000,000 gpt-4o-mini requests in one file, every
    batch ending well, each running 30 minutes, nothing else bounding them."""
    cfg = Config()
    openai = cfg.providers["openai"]
    hard = PROVIDER_LIMITS["openai"].max_items
    s = _settings(base=openai.batch_size, max_size=hard)
    sizes = sizes_for(1_000_000, s)
    assert sizes[:4] == [50, 500, 5000, 50_000]
    assert len(sizes) == 23 and sum(sizes) == 1_000_000 and sizes[-1] == 44_450
    creates = len(sizes)  # one create (and one upload) per batch
    assert creates < openai.creates_per_hour / 50  # 23 of the 2,000 an hour
    # Polls of one 30-minute batch at the default schedule (no progress seen).
    polls, t = 0, 0.0
    while t < 1800:
        t += poll_interval_s(
            t, initial_s=cfg.poll_initial_s, factor=cfg.poll_factor, max_s=cfg.poll_max_s
        )
        polls += 1
    assert polls == 15
    assert polls * creates == 345
    # The canary and three probes run one after another (4 x 30 min), then the last 19
    # batches together: about 2.5 hours in all, far inside the 24-hour window.
    assert (4 + 1) * 0.5 == 2.5
    # The product's fixed size would be 20,000 batches: ten hours of the creates quota.
    assert 1_000_000 // openai.batch_size == 20_000
    assert 20_000 / openai.creates_per_hour == 10
    assert 20_000 * polls == 300_000


def _req(line: int, file_size: int = 60) -> dict:
    return {
        "line": line,
        "custom_id": f"c{line}",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": str(line)}]},
        "size_bytes": file_size,
        "status": "pending",
    }


async def test_claims_record_their_tokens_and_keep_to_the_budget(tmp_path: Path) -> None:
    """A batch's estimated tokens are those of the requests it took (not of the one that did
    not fit); a claim cut to a token budget takes what fits; a strict one takes nothing when
    not even one request fits; a canary opens a lane per file it takes requests of."""
    store = await Store(tmp_path / "s.sqlite3").open()
    try:
        fid = await store.claim_file("a.jsonl", "/in/a", "/w/a", 10)
        await store.add_requests(fid, [_req(i) for i in range(1, 11)])
        claim = dict(max_bytes=10**6, now=1e12)
        take = store.claim_batch_items
        got = await take("openai", "gpt-4o-mini", "t1", ACCT, max_items=3,
                         files=[fid], role=ROLE_CANARY, **claim)  # fmt: skip
        assert got is not None and len(got[1]) == 3
        assert await store.tokens_in_flight(ACCT, "gpt-4o-mini") == (3 * estimate_tokens(60), 1)
        lanes = await store.lanes("openai", "gpt-4o-mini", [fid])
        assert lanes[fid].state == LANE_CANARY and lanes[fid].canary_batch == got[0]
        cut = await take("openai", "gpt-4o-mini", "t2", ACCT, max_items=100,
                         max_tokens=2 * estimate_tokens(60), **claim)  # fmt: skip
        assert cut is not None and len(cut[1]) == 2
        none = await take("openai", "gpt-4o-mini", "t3", ACCT, max_items=100,
                          max_tokens=1, tokens_strict=True, **claim)  # fmt: skip
        assert none is None
        # What `batchd status` shows: the budget and the tokens of the open batches.
        await store.set_budget(ACCT, "gpt-4o-mini", 90_000, "read from the provider's message")
        in_flight = 5 * estimate_tokens(60)
        assert await store.budget_use() == [("openai", "gpt-4o-mini", 90_000, in_flight)]
    finally:
        await store.close()


def test_the_limit_is_read_from_the_providers_message() -> None:
    text = (
        "token_limit_exceeded: Enqueued token limit reached for gpt-4o-mini in organization "
        "org-x. Limit: 2,000,000 enqueued tokens. Please try again once some in_progress "
        "batches have been completed."
    )
    assert limit_from_message(text) == 2_000_000
    assert limit_from_message("HTTP 429: You exceeded your current quota") is None
    assert limit_from_message(None) is None


def test_a_budget_holds_only_while_something_of_the_model_is_open() -> None:
    budgets = Budgets(sched=None)  # type: ignore[arg-type]  # the pure part needs no scheduler
    full = Room(limit=1000, in_flight=1200, batches=2)
    assert budgets.blocked("openai", "m", full)
    # Nothing open: one request always goes, whatever the budget says.
    assert not budgets.blocked("openai", "m", Room(limit=10, in_flight=0, batches=0))
    some = Room(limit=1000, in_flight=900, batches=1)
    assert not budgets.blocked("openai", "m", some)
    budgets._blocked[("openai", "m")] = 900  # nothing fitted the 100 left
    assert budgets.blocked("openai", "m", some)
    assert not budgets.blocked("openai", "m", Room(limit=1000, in_flight=400, batches=1))
