"""``create_promise``: new, again (unchanged), settled at once, past its deadline."""

from __future__ import annotations

from dawait.core._promise import PromiseRecord, PromiseState
from dawait.core._task import TaskRecord, TaskState
from dawait.runtime import Store
from dawait.runtime._store import CreatePromise
from tests.integration.store_contract.support import ONE, TIMER, TWO, create, invocation, resolve


async def test_create_promise(store: Store) -> None:
    created = await store.create_promise(
        CreatePromise(id="p", param=ONE, timeout_at=100, tags={"k": "v"}), now=7
    )

    assert created.created
    assert created.promise == PromiseRecord(
        id="p",
        state=PromiseState.PENDING,
        param=ONE,
        timeout_at=100,
        tags={"k": "v"},
        created_at=7,
    )
    assert await store.get_promise("p") == created.promise


async def test_create_promise_again_returns_the_existing_one_unchanged(store: Store) -> None:
    first = await create(store, "p", now=7, param=ONE, timeout_at=100, tags={"k": "v"})

    again = await store.create_promise(
        CreatePromise(id="p", param=TWO, timeout_at=500, tags={"other": "x"}), now=8
    )

    assert not again.created
    assert again.promise == first
    assert await store.get_promise("p") == first


async def test_create_promise_again_returns_a_settled_one_as_settled(store: Store) -> None:
    await create(store, "p")
    await resolve(store, "p", now=3)

    again = await store.create_promise(CreatePromise(id="p"), now=9)

    assert not again.created
    assert (again.promise.state, again.promise.value, again.promise.settled_at) == (
        PromiseState.RESOLVED,
        ONE,
        3,
    )


async def test_create_an_already_settled_promise_in_one_write(store: Store) -> None:
    created = await store.create_promise(
        CreatePromise(id="wf.1", state=PromiseState.RESOLVED, value=ONE), now=7
    )

    assert created.promise.state is PromiseState.RESOLVED
    assert created.promise.value == ONE
    assert created.promise.settled_at == 7
    assert await store.get_promise("wf.1") == created.promise


async def test_create_an_overdue_existing_promise_settles_it_for_good(store: Store) -> None:
    await invocation(store, "p")
    await create(store, "p.1", timeout_at=100)
    await store.suspend_task("p", awaited=["p.1"], now=10)

    again = await store.create_promise(CreatePromise(id="p.1", timeout_at=100), now=150)

    assert again.promise.state is PromiseState.REJECTED_TIMEDOUT
    assert again.promise.settled_at == 100
    stored = await store.get_promise("p.1")
    assert stored is not None
    assert stored.state is PromiseState.REJECTED_TIMEDOUT
    assert await store.next_timeout() is None
    assert await store.get_task("p") == TaskRecord(id="p", state=TaskState.PENDING, version=1)


async def test_create_with_a_deadline_already_passed(store: Store) -> None:
    plain = await create(store, "plain", now=100, timeout_at=60)
    timer = await create(store, "timer", now=100, timeout_at=60, tags=TIMER)

    assert (plain.state, plain.settled_at) == (PromiseState.REJECTED_TIMEDOUT, 60)
    assert (timer.state, timer.settled_at) == (PromiseState.RESOLVED, 60)
    assert await store.get_promise("plain") == plain
    assert await store.next_timeout() is None
