"""The task state machine: who runs an invocation, and the version that fences its writes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dawait.core._task import (
    TaskRecord,
    TaskState,
    acquire_task,
    fulfill_task,
    new_task,
    resume_task,
    suspend_task,
)

# A task in every state, as the store would hold it, at version 3.
TASKS = {
    TaskState.PENDING: TaskRecord(id="wf", state=TaskState.PENDING, version=3),
    TaskState.ACQUIRED: TaskRecord(
        id="wf", state=TaskState.ACQUIRED, version=3, pid="old", expires_at=100
    ),
    TaskState.SUSPENDED: TaskRecord(id="wf", state=TaskState.SUSPENDED, version=3),
    TaskState.FULFILLED: TaskRecord(id="wf", state=TaskState.FULFILLED, version=3),
}


def test_every_state_is_covered() -> None:
    assert set(TASKS) == set(TaskState)


# -- new_task -------------------------------------------------------------------------------


def test_a_new_task_without_a_pid_is_pending() -> None:
    assert new_task("wf", pid=None, now=10, ttl=30) == TaskRecord(
        id="wf", state=TaskState.PENDING, version=0
    )


def test_a_new_task_with_a_pid_is_acquired_at_version_0() -> None:
    assert new_task("wf", pid="w1", now=10, ttl=30) == TaskRecord(
        id="wf", state=TaskState.ACQUIRED, version=0, pid="w1", expires_at=40
    )


def test_a_new_task_without_a_ttl_holds_its_lease_forever() -> None:
    assert new_task("wf", pid="w1", now=10, ttl=None).expires_at is None


# -- acquire_task ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "now", "force", "taken"),
    [
        (TaskState.PENDING, 50, False, True),
        (TaskState.PENDING, 50, True, True),
        (TaskState.ACQUIRED, 99, False, False),
        (TaskState.ACQUIRED, 100, False, True),
        (TaskState.ACQUIRED, 101, False, True),
        (TaskState.ACQUIRED, 50, True, True),
        (TaskState.SUSPENDED, 50, False, False),
        (TaskState.SUSPENDED, 50, True, False),
        (TaskState.FULFILLED, 50, False, False),
        (TaskState.FULFILLED, 500, True, False),
    ],
)
def test_acquire(state: TaskState, now: int, force: bool, taken: bool) -> None:
    acquired = acquire_task(TASKS[state], pid="w2", now=now, ttl=30, force=force)

    if taken:
        assert acquired == TaskRecord(
            id="wf", state=TaskState.ACQUIRED, version=4, pid="w2", expires_at=now + 30
        )
    else:
        assert acquired is None


def test_acquire_without_a_ttl_never_lapses() -> None:
    held = acquire_task(TASKS[TaskState.PENDING], pid="w1", now=0, ttl=None)
    assert held is not None
    assert held.expires_at is None

    assert acquire_task(held, pid="w2", now=10**15, ttl=None) is None
    assert acquire_task(held, pid="w2", now=10**15, ttl=None, force=True) is not None


def test_the_same_holder_acquiring_again_waits_for_its_own_lease() -> None:
    # A lease is not re-entrant: a holder that lost track of its task cannot fence itself out.
    assert acquire_task(TASKS[TaskState.ACQUIRED], pid="old", now=50, ttl=30) is None


def test_every_acquire_raises_the_version() -> None:
    task = new_task("wf", pid="w1", now=0, ttl=10)
    versions = []
    for now in (10, 20, 30):
        acquired = acquire_task(task, pid=f"w{now}", now=now, ttl=10)
        assert acquired is not None
        versions.append(acquired.version)
        task = acquired

    assert versions == [1, 2, 3]


# -- suspend, resume, fulfill ---------------------------------------------------------------


@pytest.mark.parametrize("state", list(TaskState))
def test_suspend(state: TaskState) -> None:
    suspended = suspend_task(TASKS[state])

    if state is TaskState.ACQUIRED:
        # The lease goes with the holder; the version stays: suspending is not a new holder.
        assert suspended == TaskRecord(id="wf", state=TaskState.SUSPENDED, version=3)
    else:
        assert suspended is None


@pytest.mark.parametrize("state", list(TaskState))
def test_resume(state: TaskState) -> None:
    resumed = resume_task(TASKS[state])

    if state is TaskState.SUSPENDED:
        assert resumed == TaskRecord(id="wf", state=TaskState.PENDING, version=4)
    else:
        assert resumed is None


@pytest.mark.parametrize("state", list(TaskState))
def test_fulfill(state: TaskState) -> None:
    fulfilled = fulfill_task(TASKS[state])

    if state is TaskState.FULFILLED:
        assert fulfilled is None
    else:
        assert fulfilled == TaskRecord(id="wf", state=TaskState.FULFILLED, version=3)


def test_a_workflow_that_sleeps_and_wakes() -> None:
    task = new_task("wf", pid="w1", now=0, ttl=30)
    suspended = suspend_task(task)
    assert suspended is not None
    resumed = resume_task(suspended)
    assert resumed is not None
    acquired = acquire_task(resumed, pid="w2", now=5, ttl=30)
    assert acquired is not None
    fulfilled = fulfill_task(acquired)

    assert fulfilled == TaskRecord(id="wf", state=TaskState.FULFILLED, version=2)


# -- properties -----------------------------------------------------------------------------

events = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.integers(0, 200), st.booleans()),
        st.tuples(st.just("suspend")),
        st.tuples(st.just("resume")),
        st.tuples(st.just("fulfill")),
    ),
    max_size=30,
)


@given(pid=st.none() | st.just("w0"), history=events)
def test_any_history_keeps_the_invariants(
    pid: str | None, history: list[tuple[object, ...]]
) -> None:
    task = new_task("wf", pid=pid, now=0, ttl=50)

    for event in history:
        match event:
            case ("acquire", int(now), bool(force)):
                after = acquire_task(task, pid="w", now=now, ttl=50, force=force)
            case ("suspend",):
                after = suspend_task(task)
            case ("resume",):
                after = resume_task(task)
            case _:
                after = fulfill_task(task)
        if after is None:
            continue

        grows = event[0] in ("acquire", "resume")
        assert after.version == task.version + (1 if grows else 0)
        assert after.id == "wf"
        assert (after.pid is not None) == (after.state is TaskState.ACQUIRED)
        if after.state is not TaskState.ACQUIRED:
            assert after.expires_at is None
        assert task.state is not TaskState.FULFILLED, "a fulfilled task is final"
        task = after
