"""``settle_promise``: the outcomes, each final state, and the awaiters it resumes."""

from __future__ import annotations

import pytest

from dawait.core._promise import PromiseRecord, PromiseState, Settle, SettleOutcome, Value
from dawait.core._task import TaskRecord, TaskState
from dawait.errors import PromiseNotFoundError
from dawait.runtime import Store
from tests.integration.store_contract.support import ONE, TWO, create, invocation, resolve


async def test_settle_promise_outcomes(store: Store) -> None:
    await create(store, "p")

    first = await store.settle_promise("p", event=Settle.REJECT, value=ONE, now=3)
    same = await store.settle_promise("p", event=Settle.REJECT, value=ONE, now=4)
    other_value = await store.settle_promise("p", event=Settle.REJECT, value=TWO, now=5)
    other_state = await store.settle_promise("p", event=Settle.RESOLVE, value=ONE, now=6)

    assert first.outcome is SettleOutcome.SETTLED
    assert same.outcome is SettleOutcome.ALREADY_SAME
    assert other_value.outcome is SettleOutcome.ALREADY_OTHER
    assert other_state.outcome is SettleOutcome.ALREADY_OTHER
    settled = PromiseRecord(
        id="p", state=PromiseState.REJECTED, value=ONE, created_at=0, settled_at=3
    )
    for result in (first, same, other_value, other_state):
        assert result.promise == settled
    assert await store.get_promise("p") == settled


@pytest.mark.parametrize(
    ("event", "state"),
    [
        (Settle.RESOLVE, PromiseState.RESOLVED),
        (Settle.REJECT, PromiseState.REJECTED),
        (Settle.CANCEL, PromiseState.REJECTED_CANCELED),
        (Settle.TIMEOUT, PromiseState.REJECTED_TIMEDOUT),
    ],
)
async def test_settle_promise_to_each_state(
    store: Store, event: Settle, state: PromiseState
) -> None:
    await create(store, "p")

    settled = await store.settle_promise("p", event=event, value=ONE, now=3)

    assert settled.promise.state is state
    stored = await store.get_promise("p")
    assert stored is not None
    assert stored.state is state


async def test_a_settled_value_with_headers_reads_back(store: Store) -> None:
    value = Value(data='{"a": 1}', headers={"content-type": "application/json"})
    await create(store, "p", param=Value(data="[]", headers={"h": "1"}))

    await resolve(store, "p", value=value)

    stored = await store.get_promise("p")
    assert stored is not None
    assert stored.value == value
    assert stored.param == Value(data="[]", headers={"h": "1"})


async def test_settle_the_same_value_with_empty_headers_is_already_same(store: Store) -> None:
    value = Value(data="1", headers={})
    await create(store, "p")
    await resolve(store, "p", value=value)

    again = await resolve(store, "p", value=value)

    assert again.outcome is SettleOutcome.ALREADY_SAME


async def test_settle_an_unknown_promise_raises(store: Store) -> None:
    with pytest.raises(PromiseNotFoundError, match="'nope'"):
        await store.settle_promise("nope", event=Settle.RESOLVE, value=ONE, now=1)


async def test_settle_fulfils_the_invocation_task(store: Store) -> None:
    await invocation(store, "wf", pid="w1")

    await resolve(store, "wf")

    assert await store.get_task("wf") == TaskRecord(id="wf", state=TaskState.FULFILLED, version=0)
    assert await store.runnable_tasks() == []


async def test_settle_resumes_the_suspended_awaiter_at_the_next_version(store: Store) -> None:
    await invocation(store, "wf", pid="w1")
    await create(store, "wf.1")
    assert await store.suspend_task("wf", awaited=["wf.1"], now=1)
    assert await store.get_task("wf") == TaskRecord(id="wf", state=TaskState.SUSPENDED)
    assert await store.runnable_tasks() == []

    settled = await resolve(store, "wf.1", now=2)

    pending = TaskRecord(id="wf", state=TaskState.PENDING, version=1)
    assert settled.resumed == [pending]
    assert await store.get_task("wf") == pending
    assert await store.runnable_tasks() == [pending]


async def test_settle_resumes_every_awaiter(store: Store) -> None:
    for id in ("a", "b", "c"):
        await invocation(store, id)
    await create(store, "shared")
    for id in ("a", "b", "c"):
        assert await store.suspend_task(id, awaited=["shared"], now=1)

    settled = await resolve(store, "shared", now=2)

    resumed = sorted(settled.resumed, key=lambda task: task.id)
    assert resumed == [
        TaskRecord(id=id, state=TaskState.PENDING, version=1) for id in ("a", "b", "c")
    ]


async def test_settle_resumes_an_awaiter_exactly_once(store: Store) -> None:
    await invocation(store, "wf")
    await create(store, "wf.1")
    await create(store, "wf.2")
    assert await store.suspend_task("wf", awaited=["wf.1", "wf.2"], now=1)

    first = await resolve(store, "wf.1", now=2)
    second = await resolve(store, "wf.2", now=3)
    again = await resolve(store, "wf.1", now=4)

    assert [task.version for task in first.resumed] == [1]
    assert list(second.resumed) == []
    assert list(again.resumed) == []
    assert await store.get_task("wf") == TaskRecord(id="wf", state=TaskState.PENDING, version=1)


async def test_a_settle_after_the_deadline_times_out_and_still_wakes_awaiters(
    store: Store,
) -> None:
    await invocation(store, "wf")
    await create(store, "wf.1", timeout_at=100)
    assert await store.suspend_task("wf", awaited=["wf.1"], now=1)

    settled = await resolve(store, "wf.1", now=150)

    assert settled.outcome is SettleOutcome.ALREADY_OTHER
    assert settled.promise.state is PromiseState.REJECTED_TIMEDOUT
    assert settled.promise.settled_at == 100
    assert settled.resumed == [TaskRecord(id="wf", state=TaskState.PENDING, version=1)]
    stored = await store.get_promise("wf.1")
    assert stored is not None
    assert stored.state is PromiseState.REJECTED_TIMEDOUT


async def test_a_resumed_task_is_not_woken_by_what_it_awaited_before(store: Store) -> None:
    await invocation(store, "wf")
    for id in ("wf.1", "wf.2", "wf.3"):
        await create(store, id)
    assert await store.suspend_task("wf", awaited=["wf.1", "wf.2"], now=1)
    await resolve(store, "wf.1", now=2)
    assert await store.acquire_task("wf", pid="w2", ttl=None, now=3) is not None
    assert await store.suspend_task("wf", awaited=["wf.3"], now=4)

    unrelated = await resolve(store, "wf.2", now=5)

    assert list(unrelated.resumed) == []
    assert await store.get_task("wf") == TaskRecord(id="wf", state=TaskState.SUSPENDED, version=2)
