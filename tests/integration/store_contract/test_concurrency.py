"""Concurrent operations on one id: created once, settled once, never left suspended."""

from __future__ import annotations

import asyncio

import pytest

from dawait.core._promise import SettleOutcome, Value
from dawait.core._task import TaskRecord, TaskState
from dawait.runtime import Store
from tests.integration.store_contract.support import create, create_with, invocation, resolve


async def test_concurrent_creates_of_one_id_create_it_once(store: Store) -> None:
    results = await asyncio.gather(
        *(create_with(store, "p", param=Value(data=str(n)), now=n) for n in range(10))
    )

    assert [result.created for result in results].count(True) == 1
    stored = await store.get_promise("p")
    assert all(result.promise == stored for result in results)


async def test_concurrent_settles_of_one_promise_settle_it_once(store: Store) -> None:
    await create(store, "p")

    results = await asyncio.gather(
        *(resolve(store, "p", value=Value(data=str(n)), now=n) for n in range(10))
    )

    outcomes = [result.outcome for result in results]
    assert outcomes.count(SettleOutcome.SETTLED) == 1
    assert outcomes.count(SettleOutcome.ALREADY_OTHER) == 9
    stored = await store.get_promise("p")
    assert all(result.promise == stored for result in results)


@pytest.mark.parametrize("settle_first", [False, True])
async def test_a_task_is_never_left_suspended_on_a_settled_promise(
    store: Store, settle_first: bool
) -> None:
    await invocation(store, "wf")
    await create(store, "wf.1")
    suspend = store.suspend_task("wf", awaited=["wf.1"], now=1)
    settle = resolve(store, "wf.1", now=1)

    if settle_first:
        _, suspended = await asyncio.gather(settle, suspend)
    else:
        suspended, _ = await asyncio.gather(suspend, settle)

    task = await store.get_task("wf")
    assert task is not None
    if suspended:
        assert task == TaskRecord(id="wf", state=TaskState.PENDING, version=1)
    else:
        assert task.state is TaskState.ACQUIRED
