"""``create_invocation``: the promise and its task, pending or acquired, made once."""

from __future__ import annotations

from dawait.core._promise import PromiseState
from dawait.core._task import TaskRecord, TaskState
from dawait.runtime import Store
from dawait.runtime._store import CreatePromise
from tests.integration.store_contract.support import ONE, TWO, create


async def test_create_invocation_without_a_pid_leaves_its_task_pending(store: Store) -> None:
    created = await store.create_invocation(
        CreatePromise(id="wf", param=ONE), pid=None, ttl=30, now=5
    )

    assert created.created
    assert created.promise.state is PromiseState.PENDING
    assert created.task == TaskRecord(id="wf", state=TaskState.PENDING, version=0)
    assert await store.get_task("wf") == created.task
    assert await store.get_promise("wf") == created.promise
    assert await store.runnable_tasks() == [created.task]


async def test_create_invocation_with_a_pid_acquires_its_task(store: Store) -> None:
    created = await store.create_invocation(CreatePromise(id="wf"), pid="w1", ttl=30, now=5)

    expected = TaskRecord(id="wf", state=TaskState.ACQUIRED, version=0, pid="w1", expires_at=35)
    assert created.task == expected
    assert await store.get_task("wf") == expected


async def test_create_invocation_again_returns_the_existing_one(store: Store) -> None:
    first = await store.create_invocation(CreatePromise(id="wf"), pid="w1", ttl=30, now=5)

    again = await store.create_invocation(
        CreatePromise(id="wf", param=TWO), pid="w2", ttl=30, now=6
    )

    assert not again.created
    assert again.task is None
    assert again.promise == first.promise
    assert await store.get_task("wf") == first.task


async def test_create_invocation_for_an_existing_promise_makes_no_task(store: Store) -> None:
    await create(store, "wf")

    again = await store.create_invocation(CreatePromise(id="wf"), pid="w1", ttl=30, now=6)

    assert not again.created
    assert await store.get_task("wf") is None


async def test_create_invocation_already_settled_makes_no_task(store: Store) -> None:
    created = await store.create_invocation(
        CreatePromise(id="wf", state=PromiseState.RESOLVED, value=ONE), pid="w1", ttl=30, now=6
    )

    assert created.created
    assert created.task is None
    assert await store.get_task("wf") is None
