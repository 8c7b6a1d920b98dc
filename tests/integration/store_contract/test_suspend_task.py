"""``suspend_task``: parks an acquired task unless what it awaits is done already."""

from __future__ import annotations

import pytest

from dawait.core._task import TaskRecord, TaskState
from dawait.runtime import Store
from tests.integration.store_contract.support import create, invocation, resolve


async def test_suspend_task_parks_an_acquired_task(store: Store) -> None:
    await invocation(store, "wf")
    await create(store, "wf.1")

    assert await store.suspend_task("wf", awaited=["wf.1"], now=1)

    assert await store.get_task("wf") == TaskRecord(id="wf", state=TaskState.SUSPENDED)


@pytest.mark.parametrize("how", ["settled", "past its deadline", "unknown"])
async def test_suspend_task_refuses_when_an_awaited_promise_is_done(store: Store, how: str) -> None:
    await invocation(store, "wf")
    await create(store, "wf.1")
    if how == "settled":
        await create(store, "wf.2")
        await resolve(store, "wf.2")
    elif how == "past its deadline":
        await create(store, "wf.2", timeout_at=50)
    held = await store.get_task("wf")

    suspended = await store.suspend_task("wf", awaited=["wf.1", "wf.2"], now=50)

    assert not suspended
    assert await store.get_task("wf") == held
    # No callback was left behind either: settling the other one wakes nobody.
    assert list((await resolve(store, "wf.1", now=60)).resumed) == []
    assert await store.get_task("wf") == held


@pytest.mark.parametrize("state", ["pending", "suspended", "fulfilled", "unknown"])
async def test_suspend_task_refuses_a_task_that_is_not_acquired(store: Store, state: str) -> None:
    if state != "unknown":
        await invocation(store, "wf", pid=None if state == "pending" else "w1")
    await create(store, "wf.1")
    await create(store, "wf.2")
    if state == "suspended":
        assert await store.suspend_task("wf", awaited=["wf.2"], now=1)
    if state == "fulfilled":
        await resolve(store, "wf")
    before = await store.get_task("wf")

    assert not await store.suspend_task("wf", awaited=["wf.1"], now=2)
    assert await store.get_task("wf") == before
