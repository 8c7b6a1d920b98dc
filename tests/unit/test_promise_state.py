"""The durable promise state machine: every state x every event, lazy timeouts, invariants."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dawait.core._promise import (
    EMPTY,
    TAG_TIMER,
    PromiseRecord,
    PromiseState,
    Settle,
    SettleOutcome,
    Transition,
    Value,
    create_promise,
    expire_promise,
    settle_promise,
)

# What each event settles a pending promise to, written out independently of the code.
TARGET = {
    Settle.RESOLVE: PromiseState.RESOLVED,
    Settle.REJECT: PromiseState.REJECTED,
    Settle.CANCEL: PromiseState.REJECTED_CANCELED,
    Settle.TIMEOUT: PromiseState.REJECTED_TIMEDOUT,
}
SETTLED_STATES = [state for state in PromiseState if state is not PromiseState.PENDING]
TIMER = {TAG_TIMER: "true"}
ONE = Value(data="1")
TWO = Value(data="2")


def pending(*, timeout_at: int | None = None, tags: dict[str, str] | None = None) -> PromiseRecord:
    return create_promise(None, id="p", now=0, timeout_at=timeout_at, tags=tags or {}).record


def in_state(state: PromiseState, *, value: Value = ONE) -> PromiseRecord:
    """A promise in ``state``, settled at 5 with ``value`` unless pending."""
    if state is PromiseState.PENDING:
        return pending()
    return PromiseRecord(id="p", state=state, value=value, created_at=0, settled_at=5)


def test_every_state_and_event_is_covered() -> None:
    assert set(TARGET) == set(Settle)
    assert set(TARGET.values()) == set(SETTLED_STATES)
    assert [state.settled for state in PromiseState] == [False, True, True, True, True]


# -- settle ---------------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(PromiseState))
@pytest.mark.parametrize("event", list(Settle))
def test_settle_with_the_same_value(state: PromiseState, event: Settle) -> None:
    record = in_state(state)

    transition = settle_promise(record, event=event, value=ONE, now=10)

    if state is PromiseState.PENDING:
        assert transition.outcome is SettleOutcome.SETTLED
        assert transition.changed
        assert transition.record == PromiseRecord(
            id="p", state=TARGET[event], value=ONE, created_at=0, settled_at=10
        )
    else:
        expected = (
            SettleOutcome.ALREADY_SAME if TARGET[event] is state else SettleOutcome.ALREADY_OTHER
        )
        assert transition.outcome is expected
        assert not transition.changed
        assert transition.record == record


@pytest.mark.parametrize("state", SETTLED_STATES)
@pytest.mark.parametrize("event", list(Settle))
def test_settle_a_settled_promise_with_another_value_changes_nothing(
    state: PromiseState, event: Settle
) -> None:
    record = in_state(state, value=ONE)

    transition = settle_promise(record, event=event, value=TWO, now=10)

    assert transition.outcome is SettleOutcome.ALREADY_OTHER
    assert not transition.changed
    assert transition.record == record


def test_values_compare_by_headers_too() -> None:
    record = in_state(PromiseState.RESOLVED, value=Value(data="1", headers={"h": "a"}))

    same = settle_promise(
        record, event=Settle.RESOLVE, value=Value(data="1", headers={"h": "a"}), now=10
    )
    other = settle_promise(
        record, event=Settle.RESOLVE, value=Value(data="1", headers={"h": "b"}), now=10
    )

    assert same.outcome is SettleOutcome.ALREADY_SAME
    assert other.outcome is SettleOutcome.ALREADY_OTHER


def test_settle_keeps_param_tags_and_deadline() -> None:
    record = create_promise(None, id="p", now=0, param=ONE, timeout_at=100, tags={"k": "v"}).record

    settled = settle_promise(record, event=Settle.REJECT, value=TWO, now=99).record

    assert settled == PromiseRecord(
        id="p",
        state=PromiseState.REJECTED,
        param=ONE,
        value=TWO,
        timeout_at=100,
        tags={"k": "v"},
        created_at=0,
        settled_at=99,
    )


# -- create ---------------------------------------------------------------------------------


def test_create_a_pending_promise() -> None:
    transition = create_promise(
        None, id="p", now=7, param=ONE, timeout_at=100, tags={"k": "v"}, value=TWO
    )

    assert transition.changed
    assert transition.outcome is SettleOutcome.SETTLED
    # A pending promise has no value yet, whatever the request carried.
    assert transition.record == PromiseRecord(
        id="p",
        state=PromiseState.PENDING,
        param=ONE,
        timeout_at=100,
        tags={"k": "v"},
        created_at=7,
    )


@pytest.mark.parametrize("state", SETTLED_STATES)
def test_create_an_already_settled_promise(state: PromiseState) -> None:
    transition = create_promise(None, id="p", now=7, state=state, value=ONE, timeout_at=3)

    assert transition.changed
    # Created settled: the deadline does not apply, its state and value are as asked.
    assert transition.record == PromiseRecord(
        id="p", state=state, value=ONE, timeout_at=3, created_at=7, settled_at=7
    )


@pytest.mark.parametrize("state", list(PromiseState))
def test_create_returns_the_existing_promise_unchanged(state: PromiseState) -> None:
    existing = in_state(state)

    transition = create_promise(
        existing, id="p", now=10, param=TWO, timeout_at=50, tags={"other": "tag"}
    )

    assert not transition.changed
    assert transition.record == existing


def test_create_with_a_deadline_already_passed_is_timed_out() -> None:
    record = create_promise(None, id="p", now=100, timeout_at=60).record

    assert record.state is PromiseState.REJECTED_TIMEDOUT
    assert record.settled_at == 60
    assert record.value == EMPTY


def test_create_a_timer_whose_deadline_passed_is_resolved() -> None:
    record = create_promise(None, id="p", now=100, timeout_at=60, tags=TIMER).record

    assert record.state is PromiseState.RESOLVED
    assert record.settled_at == 60


def test_create_at_exactly_the_deadline_is_timed_out() -> None:
    record = create_promise(None, id="p", now=60, timeout_at=60).record

    assert record.state is PromiseState.REJECTED_TIMEDOUT


# -- timeouts -------------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(PromiseState))
@pytest.mark.parametrize("now", [99, 100, 101])
@pytest.mark.parametrize("timer", [False, True], ids=["plain", "timer"])
def test_expire(state: PromiseState, now: int, timer: bool) -> None:
    if state is PromiseState.PENDING:
        record = pending(timeout_at=100, tags=TIMER if timer else None)
    else:
        record = PromiseRecord(
            id="p", state=state, timeout_at=100, created_at=0, settled_at=5, tags=TIMER
        )

    transition = expire_promise(record, now)

    if state is PromiseState.PENDING and now >= 100:
        expected = PromiseState.RESOLVED if timer else PromiseState.REJECTED_TIMEDOUT
        assert transition.changed
        assert transition.record.state is expected
        assert transition.record.settled_at == 100
        assert transition.record.value == EMPTY
    else:
        assert not transition.changed
        assert transition.record == record


def test_expire_without_a_deadline_never_times_out() -> None:
    record = pending()

    assert expire_promise(record, 10**15).record == record


@pytest.mark.parametrize("value", ["true", "false", "yes", ""])
def test_only_the_timer_tag_true_makes_a_timer(value: str) -> None:
    record = expire_promise(pending(timeout_at=10, tags={TAG_TIMER: value}), 10).record

    resolves = value == "true"
    assert record.state is (PromiseState.RESOLVED if resolves else PromiseState.REJECTED_TIMEDOUT)


# Every transition first applies the deadline, so each of them sees the same timed-out record.
TRANSITIONS = {
    "create": lambda record, now: create_promise(record, id="p", now=now),
    "expire": expire_promise,
    **{
        f"settle-{event}": (
            lambda record, now, event=event: settle_promise(record, event=event, value=ONE, now=now)
        )
        for event in Settle
    },
}


@pytest.mark.parametrize("name", list(TRANSITIONS))
@pytest.mark.parametrize("timer", [False, True], ids=["plain", "timer"])
def test_every_transition_times_out_an_overdue_promise(name: str, timer: bool) -> None:
    record = pending(timeout_at=100, tags=TIMER if timer else None)

    transition = TRANSITIONS[name](record, 150)

    expected = PromiseState.RESOLVED if timer else PromiseState.REJECTED_TIMEDOUT
    assert transition.changed
    assert transition.record == expire_promise(record, 100).record
    assert transition.record.state is expected
    assert transition.record.settled_at == 100
    assert transition.record.value == EMPTY


@pytest.mark.parametrize("name", ["create", "expire"])
def test_a_promise_before_its_deadline_stays_pending(name: str) -> None:
    record = pending(timeout_at=100)

    transition = TRANSITIONS[name](record, 99)

    assert not transition.changed
    assert transition.record == record


@pytest.mark.parametrize(
    ("timer", "event", "value", "outcome"),
    [
        (False, Settle.RESOLVE, EMPTY, SettleOutcome.ALREADY_OTHER),
        (False, Settle.TIMEOUT, EMPTY, SettleOutcome.ALREADY_SAME),
        (False, Settle.TIMEOUT, ONE, SettleOutcome.ALREADY_OTHER),
        (True, Settle.RESOLVE, EMPTY, SettleOutcome.ALREADY_SAME),
        (True, Settle.RESOLVE, ONE, SettleOutcome.ALREADY_OTHER),
        (True, Settle.TIMEOUT, EMPTY, SettleOutcome.ALREADY_OTHER),
    ],
)
def test_settle_after_the_deadline_reports_how_it_compares_with_the_timeout(
    timer: bool, event: Settle, value: Value, outcome: SettleOutcome
) -> None:
    record = pending(timeout_at=100, tags=TIMER if timer else None)

    transition = settle_promise(record, event=event, value=value, now=100)

    assert transition.outcome is outcome
    # The timeout itself is new and must be written, even though the settle was refused.
    assert transition.changed
    assert transition.record.settled_at == 100


@pytest.mark.parametrize("event", list(Settle))
def test_settle_just_before_the_deadline_wins(event: Settle) -> None:
    record = pending(timeout_at=100)

    transition = settle_promise(record, event=event, value=ONE, now=99)

    assert transition.outcome is SettleOutcome.SETTLED
    assert transition.record.state is TARGET[event]
    assert transition.record.value == ONE
    assert transition.record.settled_at == 99


# -- properties -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SettleStep:
    event: Settle
    value: Value


@dataclass(frozen=True)
class Advance:
    by: int


@dataclass(frozen=True)
class Touch:
    """A create of the same id, or the timer wheel looking at it."""

    how: str


steps = st.one_of(
    st.builds(SettleStep, st.sampled_from(Settle), st.sampled_from([EMPTY, ONE, TWO])),
    st.builds(Advance, st.integers(min_value=0, max_value=40)),
    st.builds(Touch, st.sampled_from(["create", "expire"])),
)


def apply(record: PromiseRecord, step: SettleStep | Touch, now: int) -> Transition:
    if isinstance(step, SettleStep):
        return settle_promise(record, event=step.event, value=step.value, now=now)
    if step.how == "create":
        return create_promise(record, id=record.id, now=now)
    return expire_promise(record, now)


@given(
    timeout_at=st.none() | st.integers(min_value=0, max_value=150),
    timer=st.booleans(),
    history=st.lists(steps, max_size=30),
)
def test_any_history_keeps_the_invariants(
    timeout_at: int | None, timer: bool, history: list[SettleStep | Advance | Touch]
) -> None:
    now = 0
    record = create_promise(
        None, id="p", now=now, timeout_at=timeout_at, tags=TIMER if timer else {}
    ).record
    # A model of the outcome: the first settle before the deadline wins, else the deadline.
    expected: tuple[PromiseState, Value, int] | None = None
    if timeout_at is not None and timeout_at <= now:
        expected = (PromiseState.RESOLVED if timer else PromiseState.REJECTED_TIMEDOUT, EMPTY, 0)
    values_seen = [record.value]

    for step in history:
        if isinstance(step, Advance):
            now += step.by
            continue
        if expected is None and timeout_at is not None and now >= timeout_at:
            timed_out = PromiseState.RESOLVED if timer else PromiseState.REJECTED_TIMEDOUT
            expected = (timed_out, EMPTY, timeout_at)
        if expected is None and isinstance(step, SettleStep):
            expected = (TARGET[step.event], step.value, now)

        before = record
        transition = apply(record, step, now)
        record = transition.record

        assert transition.changed == (record != before)
        assert record.settled_at is not None if record.state.settled else record.settled_at is None
        if before.state.settled:
            assert record == before, "a settled promise is final"
        if not record.state.settled:
            assert record.value == EMPTY
        if timeout_at is not None and record.settled_at is not None:
            assert record.settled_at <= timeout_at, "nothing settles after its deadline"
        if record.value != values_seen[-1]:
            values_seen.append(record.value)
        assert (record.state, record.value, record.settled_at) == (
            expected or (PromiseState.PENDING, EMPTY, None)
        )

    assert len(values_seen) <= 2, "the value changes at most once"
    assert (record.id, record.created_at, record.timeout_at) == ("p", 0, timeout_at)
