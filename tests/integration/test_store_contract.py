"""One contract for every ``Store``: the memory store and a real SQLite file behave the same.

The SQLite-only tests at the end cover what only a file can do: survive a restart, refuse a
second process, refuse a newer schema, and commit concurrent operations together.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dawait.cluster._etcd_store import EtcdStore
from dawait.core._promise import (
    EMPTY,
    TAG_BRANCH,
    TAG_TIMER,
    PromiseRecord,
    PromiseState,
    Settle,
    SettleOutcome,
    Value,
    create_promise,
)
from dawait.core._schedule import ScheduleRecord
from dawait.core._task import TaskRecord, TaskState
from dawait.errors import PromiseNotFoundError, StoreError
from dawait.runtime import MemoryStore, SQLiteStore, Store
from dawait.runtime._sqlite_store import SCHEMA_VERSION
from dawait.runtime._store import (
    CreatePromise,
    InvocationCreated,
    PromiseCreated,
    PromiseSettled,
    ScheduleCreated,
)
from dawait.runtime._store_ops import Tables

ONE = Value(data="1")
TWO = Value(data="2")
TIMER = {TAG_TIMER: "true"}


_namespaces = itertools.count()


@pytest.fixture(params=["memory", "sqlite", "etcd"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    store: Store
    if request.param == "memory":
        store = MemoryStore()
    elif request.param == "sqlite":
        store = SQLiteStore(tmp_path / "s.db")
    else:
        endpoints = os.environ.get("DAWAIT_TEST_ETCD") or request.getfixturevalue("etcd").endpoints
        store = EtcdStore(endpoints, namespace=f"contract{next(_namespaces)}-{os.getpid()}")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def invocation(store: Store, id: str, *, pid: str | None = "w1", now: int = 0) -> None:
    await store.create_invocation(CreatePromise(id=id), pid=pid, ttl=None, now=now)


async def create_with(store: Store, id: str, *, now: int = 0, **fields: Any) -> PromiseCreated:
    return await store.create_promise(CreatePromise(id=id, **fields), now=now)


async def create(store: Store, id: str, *, now: int = 0, **fields: Any) -> PromiseRecord:
    return (await create_with(store, id, now=now, **fields)).promise


async def resolve(store: Store, id: str, *, value: Value = ONE, now: int = 1) -> PromiseSettled:
    return await store.settle_promise(id, event=Settle.RESOLVE, value=value, now=now)


async def all_pages(store: Store, pattern: str, *, limit: int, **filters: Any) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = await store.search_promises(pattern, limit=limit, cursor=cursor, **filters)
        assert len(page.promises) <= limit
        ids += [promise.id for promise in page.promises]
        if page.cursor is None:
            return ids
        cursor = page.cursor


# -- create_promise -------------------------------------------------------------------------


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


# -- create_invocation ----------------------------------------------------------------------


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


# -- settle_promise -------------------------------------------------------------------------


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


# -- acquire_task ---------------------------------------------------------------------------


async def test_acquire_task(store: Store) -> None:
    await invocation(store, "wf", pid=None)
    await invocation(store, "held", pid="w1")

    acquired = await store.acquire_task("wf", pid="w2", ttl=30, now=10)
    refused = await store.acquire_task("held", pid="w2", ttl=30, now=10)
    forced = await store.acquire_task("held", pid="w2", ttl=30, now=10, force=True)

    assert acquired == TaskRecord(
        id="wf", state=TaskState.ACQUIRED, version=1, pid="w2", expires_at=40
    )
    assert refused is None
    assert forced == TaskRecord(
        id="held", state=TaskState.ACQUIRED, version=1, pid="w2", expires_at=40
    )
    assert await store.get_task("wf") == acquired
    assert await store.acquire_task("nope", pid="w2", ttl=30, now=10) is None


# -- concurrent operations ------------------------------------------------------------------


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


# -- suspend_task ---------------------------------------------------------------------------


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


# -- timeouts -------------------------------------------------------------------------------


async def test_expire_promises_times_out_and_fires_timers(store: Store) -> None:
    await create(store, "plain", timeout_at=100)
    await create(store, "timer", timeout_at=110, tags=TIMER)
    await create(store, "later", timeout_at=300)
    await create(store, "forever")

    expired = await store.expire_promises(now=200, limit=10)

    by_id = {settled.promise.id: settled for settled in expired}
    assert set(by_id) == {"plain", "timer"}
    assert all(settled.outcome is SettleOutcome.SETTLED for settled in expired)
    plain = await store.get_promise("plain")
    timer = await store.get_promise("timer")
    assert plain is not None
    assert timer is not None
    assert (plain.state, plain.value, plain.settled_at) == (
        PromiseState.REJECTED_TIMEDOUT,
        EMPTY,
        100,
    )
    assert (timer.state, timer.value, timer.settled_at) == (PromiseState.RESOLVED, EMPTY, 110)
    assert by_id["plain"].promise == plain
    assert by_id["timer"].promise == timer
    later = await store.get_promise("later")
    assert later is not None
    assert later.state is PromiseState.PENDING


async def test_expire_promises_is_due_at_exactly_the_deadline(store: Store) -> None:
    await create(store, "p", timeout_at=100)

    assert await store.expire_promises(now=99, limit=10) == []
    assert [s.promise.id for s in await store.expire_promises(now=100, limit=10)] == ["p"]
    assert await store.expire_promises(now=101, limit=10) == []


async def test_expire_promises_respects_its_limit(store: Store) -> None:
    for n in range(5):
        await create(store, f"p{n}", timeout_at=100 + n)

    batches = [await store.expire_promises(now=200, limit=2) for _ in range(4)]

    assert [len(batch) for batch in batches] == [2, 2, 1, 0]
    expired = [settled.promise.id for batch in batches for settled in batch]
    assert expired == ["p0", "p1", "p2", "p3", "p4"]  # the earliest deadlines first


async def test_expire_promises_skips_promises_settled_in_time(store: Store) -> None:
    await create(store, "p", timeout_at=100)
    await resolve(store, "p", now=50)

    assert await store.expire_promises(now=200, limit=10) == []
    stored = await store.get_promise("p")
    assert stored is not None
    assert stored.state is PromiseState.RESOLVED


async def test_a_fired_timer_wakes_the_sleeping_workflow(store: Store) -> None:
    await invocation(store, "wf")
    await create(store, "wf.1", timeout_at=100, tags=TIMER)
    assert await store.suspend_task("wf", awaited=["wf.1"], now=1)

    (fired,) = await store.expire_promises(now=100, limit=10)

    woken = TaskRecord(id="wf", state=TaskState.PENDING, version=1)
    assert fired.resumed == [woken]
    assert await store.get_task("wf") == woken


async def test_a_timed_out_invocation_fulfils_its_task(store: Store) -> None:
    await store.create_invocation(CreatePromise(id="wf", timeout_at=100), pid="w1", ttl=None, now=0)

    await store.expire_promises(now=100, limit=10)

    task = await store.get_task("wf")
    assert task is not None
    assert task.state is TaskState.FULFILLED


async def test_next_timeout(store: Store) -> None:
    assert await store.next_timeout() is None
    await create(store, "forever")
    assert await store.next_timeout() is None

    await create(store, "b", timeout_at=200)
    await create(store, "a", timeout_at=100)
    await create(store, "c", timeout_at=300)
    assert await store.next_timeout() == 100

    await resolve(store, "a", now=50)
    assert await store.next_timeout() == 200

    await store.expire_promises(now=250, limit=10)
    assert await store.next_timeout() == 300

    await store.expire_promises(now=300, limit=10)
    assert await store.next_timeout() is None


async def test_get_promise_with_now_shows_the_timed_out_view(store: Store) -> None:
    await create(store, "plain", timeout_at=100)
    await create(store, "timer", timeout_at=100, tags=TIMER)

    before = await store.get_promise("plain", now=99)
    plain = await store.get_promise("plain", now=100)
    timer = await store.get_promise("timer", now=150)

    assert before is not None
    assert before.state is PromiseState.PENDING
    assert plain is not None
    assert (plain.state, plain.settled_at) == (PromiseState.REJECTED_TIMEDOUT, 100)
    assert timer is not None
    assert (timer.state, timer.settled_at) == (PromiseState.RESOLVED, 100)
    assert await store.get_promise("nope", now=100) is None


# -- branch_promises ------------------------------------------------------------------------


async def test_branch_promises_lists_the_calls_of_one_invocation(store: Store) -> None:
    await create(store, "wf", tags={TAG_BRANCH: "wf"})
    await create(store, "wf.1", tags={TAG_BRANCH: "wf"})
    await create(store, "wf.2", tags={TAG_BRANCH: "wf", "k": "v"})
    await create(store, "wf.3")
    await create(store, "other.1", tags={TAG_BRANCH: "other"})
    await resolve(store, "wf.1", now=5)

    branch = await store.branch_promises("wf")

    assert sorted(promise.id for promise in branch) == ["wf.1", "wf.2"]
    by_id = {promise.id: promise for promise in branch}
    assert by_id["wf.1"].state is PromiseState.RESOLVED
    assert by_id["wf.2"].tags == {TAG_BRANCH: "wf", "k": "v"}
    assert await store.branch_promises("nobody") == []


# -- search_promises ------------------------------------------------------------------------


async def search(store: Store, pattern: str, **filters: Any) -> list[str]:
    return await all_pages(store, pattern, limit=100, **filters)


async def test_search_with_star(store: Store) -> None:
    for id in ("order-1", "order-22", "order-", "Order-1", "xorder-1", "order", "ord.er-1"):
        await create(store, id)

    assert await search(store, "order-*") == ["order-", "order-1", "order-22"]
    assert await search(store, "*order-1") == ["order-1", "xorder-1"]
    assert await search(store, "o*r-1") == ["ord.er-1", "order-1"]
    assert await search(store, "order-1") == ["order-1"]
    assert await search(store, "*") == sorted(
        ["order-1", "order-22", "order-", "Order-1", "xorder-1", "order", "ord.er-1"]
    )
    assert await search(store, "missing*") == []


async def test_search_is_case_sensitive(store: Store) -> None:
    await create(store, "Order-1")
    await create(store, "order-1")

    assert await search(store, "order*") == ["order-1"]
    assert await search(store, "ORDER*") == []


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("a[1]", ["a[1]"]),
        ("a[*", ["a[1]"]),
        ("a?", ["a?"]),
        ("a?*", ["a?"]),
        ("a%b", ["a%b"]),
        ("a%", []),
        ("a_b", ["a_b"]),
        ("a_", []),
        ("a.b", ["a.b"]),
        ("a\\b", ["a\\b"]),
        ("a]", ["a]"]),
        ("a^", ["a^"]),
        ("a+", []),
    ],
)
async def test_search_treats_everything_but_star_literally(
    store: Store, pattern: str, expected: list[str]
) -> None:
    for id in ("a[1]", "a1", "a?", "ab", "a%b", "a_b", "axb", "a.b", "a\\b", "a]", "a^", "aa"):
        await create(store, id)

    assert await search(store, pattern) == expected


async def test_search_by_state(store: Store) -> None:
    for id in ("p1", "p2", "p3", "p4"):
        await create(store, id)
    await resolve(store, "p2")
    await store.settle_promise("p3", event=Settle.CANCEL, value=EMPTY, now=1)

    assert await search(store, "p*", state=PromiseState.PENDING) == ["p1", "p4"]
    assert await search(store, "p*", state=PromiseState.RESOLVED) == ["p2"]
    assert await search(store, "p*", state=PromiseState.REJECTED_CANCELED) == ["p3"]
    assert await search(store, "p*", state=PromiseState.REJECTED) == []


async def test_search_with_now_shows_the_timed_out_view(store: Store) -> None:
    await create(store, "p", timeout_at=100)

    page = await store.search_promises("*", now=150)

    assert [(p.id, p.state) for p in page.promises] == [("p", PromiseState.REJECTED_TIMEDOUT)]


async def test_search_by_state_with_now_filters_the_timed_out_view(store: Store) -> None:
    await create(store, "p", timeout_at=100)

    pending = await store.search_promises("*", state=PromiseState.PENDING, now=150)
    timed_out = await store.search_promises("*", state=PromiseState.REJECTED_TIMEDOUT, now=150)

    assert pending.promises == []
    assert [p.id for p in timed_out.promises] == ["p"]


@pytest.mark.parametrize("limit", [1, 3, 5, 7, 15, 16, 100])
async def test_search_pages_return_every_match_exactly_once(store: Store, limit: int) -> None:
    ids = [f"job-{n:02}" for n in range(15)]
    for id in reversed(ids):
        await create(store, id)
    await create(store, "other-1")
    await create(store, "job")

    found = await all_pages(store, "job-*", limit=limit)

    assert found == ids


async def test_search_last_page_has_no_cursor(store: Store) -> None:
    for n in range(4):
        await create(store, f"p{n}")

    first = await store.search_promises("p*", limit=2)
    last = await store.search_promises("p*", limit=2, cursor=first.cursor)

    assert [p.id for p in first.promises] == ["p0", "p1"]
    assert first.cursor == "p1"
    assert [p.id for p in last.promises] == ["p2", "p3"]
    assert last.cursor is None


async def test_search_pages_by_state_skip_other_states(store: Store) -> None:
    for n in range(10):
        await create(store, f"p{n}")
        if n % 3 == 0:
            await resolve(store, f"p{n}")

    found = await all_pages(store, "p*", limit=2, state=PromiseState.PENDING)

    assert found == ["p1", "p2", "p4", "p5", "p7", "p8"]


TRICKY_IDS = [
    "a",
    "A",
    "ab",
    "aab",
    "aba",
    "a.b",
    "a*b",
    "a[b]",
    "a]",
    "a?",
    "a?b",
    "a%",
    "a%b",
    "a_b",
    "a\\b",
    "a\nb",
    "b",
    "ba",
    "[",
    "?",
    "%",
    "_",
    "*",
    "é",
    "aé",
    "",
]


def star_matches(pattern: str, id: str) -> bool:
    """The reference: ``*`` matches any run of characters, every other character itself."""
    head, *rest = pattern.split("*")
    if not rest:
        return id == pattern
    *middle, tail = rest
    if not id.startswith(head):
        return False
    position = len(head)
    for part in middle:
        found = id.find(part, position)
        if found < 0:
            return False
        position = found + len(part)
    return len(id) - position >= len(tail) and id.endswith(tail)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    pattern=st.text(alphabet="aAbé*[]?%_.\\\n", max_size=5) | st.sampled_from(TRICKY_IDS),
    limit=st.integers(min_value=1, max_value=6),
)
async def test_search_matches_the_reference_glob(store: Store, pattern: str, limit: int) -> None:
    await asyncio.gather(*(create(store, id) for id in TRICKY_IDS))

    found = await all_pages(store, pattern, limit=limit)

    assert found == sorted(id for id in TRICKY_IDS if star_matches(pattern, id))


# -- runnable_tasks -------------------------------------------------------------------------


async def test_runnable_tasks_pages_through_pending_and_acquired_tasks(store: Store) -> None:
    for n in range(12):
        id = f"wf{n:02}"
        await invocation(store, id, pid=None if n % 2 else "w1")
        await create(store, f"{id}.1")
        if n % 4 == 0:
            assert await store.suspend_task(id, awaited=[f"{id}.1"], now=1)
        if n % 6 == 5:
            await resolve(store, id)

    pages = []
    after = None
    while page := await store.runnable_tasks(after=after, limit=3):
        assert len(page) <= 3
        pages.append([task.id for task in page])
        after = page[-1].id

    assert pages == [
        ["wf01", "wf02", "wf03"],
        ["wf06", "wf07", "wf09"],
        ["wf10"],
    ]


async def test_runnable_tasks_lists_the_empty_id(store: Store) -> None:
    await invocation(store, "", pid=None)

    assert [task.id for task in await store.runnable_tasks()] == [""]


# -- schedules ------------------------------------------------------------------------------


def a_schedule(id: str = "s", *, next_run_at: int | None = 60_000, **fields: Any) -> ScheduleRecord:
    values: dict[str, Any] = {
        "cron": "* * * * *",
        "func": "report",
        "version": 1,
        "args": '{"args":[1],"kwargs":{}}',
        "created_at": 5,
    }
    values.update(fields)
    return ScheduleRecord(id=id, next_run_at=next_run_at, **values)


async def fire(
    store: Store, id: str, *, expected: int | None, slot: int, next_run_at: int | None
) -> InvocationCreated | None:
    return await store.fire_schedule(
        id,
        expected=expected,
        invocation=CreatePromise(id=f"{id}.{slot}", param=ONE),
        next_run_at=next_run_at,
        last_run_at=slot,
        pid="w1",
        ttl=None,
        now=slot,
    )


async def test_create_schedule_and_get_it(store: Store) -> None:
    record = a_schedule(last_run_at=None)

    created = await store.create_schedule(record)

    assert created == ScheduleCreated(schedule=record, created=True)
    assert await store.get_schedule("s") == record
    assert await store.get_schedule("other") is None


async def test_create_schedule_again_returns_the_existing_one_unchanged(store: Store) -> None:
    first = a_schedule()
    await store.create_schedule(first)

    again = await store.create_schedule(a_schedule(cron="0 * * * *", next_run_at=7, version=2))

    assert again == ScheduleCreated(schedule=first, created=False)
    assert await store.get_schedule("s") == first


async def test_delete_schedule(store: Store) -> None:
    await store.create_schedule(a_schedule())

    assert await store.delete_schedule("s")
    assert await store.get_schedule("s") is None
    assert not await store.delete_schedule("s")
    assert await store.due_schedules(now=10**15, limit=10) == []
    assert await store.next_schedule_at() is None


async def test_due_schedules_are_those_at_or_past_their_slot_earliest_first(store: Store) -> None:
    await store.create_schedule(a_schedule("late", next_run_at=300))
    await store.create_schedule(a_schedule("early", next_run_at=100))
    await store.create_schedule(a_schedule("same", next_run_at=100))
    await store.create_schedule(a_schedule("never", next_run_at=None))

    assert await store.next_schedule_at() == 100
    assert await store.due_schedules(now=99, limit=10) == []
    assert [r.id for r in await store.due_schedules(now=100, limit=10)] == ["early", "same"]
    assert [r.id for r in await store.due_schedules(now=10**15, limit=10)] == [
        "early",
        "same",
        "late",
    ]
    assert [r.id for r in await store.due_schedules(now=10**15, limit=1)] == ["early"]


async def test_fire_schedule_creates_the_invocation_and_moves_the_schedule(store: Store) -> None:
    await store.create_schedule(a_schedule(next_run_at=60_000))

    created = await fire(store, "s", expected=60_000, slot=60_000, next_run_at=120_000)

    assert created is not None
    assert created.created
    assert created.promise.id == "s.60000"
    assert created.task == TaskRecord(id="s.60000", state=TaskState.ACQUIRED, pid="w1")
    assert await store.get_promise("s.60000") == created.promise
    assert await store.get_schedule("s") == a_schedule(next_run_at=120_000, last_run_at=60_000)
    assert await store.next_schedule_at() == 120_000


async def test_fire_schedule_refuses_a_schedule_that_moved_on_or_is_gone(store: Store) -> None:
    await store.create_schedule(a_schedule(next_run_at=60_000))
    await fire(store, "s", expected=60_000, slot=60_000, next_run_at=120_000)

    # A second firer that read the schedule before it moved changes nothing.
    assert await fire(store, "s", expected=60_000, slot=60_000, next_run_at=120_000) is None
    assert await fire(store, "gone", expected=60_000, slot=60_000, next_run_at=120_000) is None
    assert await store.get_promise("gone.60000") is None
    assert (await store.get_schedule("s")) == a_schedule(next_run_at=120_000, last_run_at=60_000)


async def test_fire_schedule_of_a_slot_already_started_starts_nothing_new(store: Store) -> None:
    await invocation(store, "s.60000", now=1)
    await resolve(store, "s.60000", now=2)
    await store.create_schedule(a_schedule(next_run_at=60_000))

    created = await fire(store, "s", expected=60_000, slot=60_000, next_run_at=120_000)

    assert created is not None
    assert not created.created
    assert created.promise.state is PromiseState.RESOLVED
    assert (await store.get_schedule("s")) == a_schedule(next_run_at=120_000, last_run_at=60_000)


async def test_fire_schedule_to_no_further_slot(store: Store) -> None:
    await store.create_schedule(a_schedule(next_run_at=60_000))

    await fire(store, "s", expected=60_000, slot=60_000, next_run_at=None)

    assert (await store.get_schedule("s")) == a_schedule(next_run_at=None, last_run_at=60_000)
    assert await store.next_schedule_at() is None
    assert await store.due_schedules(now=10**15, limit=10) == []


async def test_concurrent_firings_of_one_slot_fire_it_once(store: Store) -> None:
    await store.create_schedule(a_schedule(next_run_at=60_000))

    results = await asyncio.gather(
        *(fire(store, "s", expected=60_000, slot=60_000, next_run_at=120_000) for _ in range(5))
    )

    assert sum(result is not None for result in results) == 1


async def test_search_schedules_pages_by_id(store: Store) -> None:
    ids = ["nightly", "report-1", "report-2", "report-10", "Report-3", "x"]
    for id in ids:
        await store.create_schedule(a_schedule(id))

    found: list[str] = []
    cursor = None
    while True:
        page = await store.search_schedules("report-*", limit=2, cursor=cursor)
        assert len(page.schedules) <= 2
        found += [record.id for record in page.schedules]
        if page.cursor is None:
            break
        cursor = page.cursor

    assert found == ["report-1", "report-10", "report-2"]
    everything = await store.search_schedules("*")
    assert [record.id for record in everything.schedules] == sorted(ids)
    assert everything.cursor is None
    assert (await store.search_schedules("a[*")).schedules == []


# -- SQLite only ----------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "s.db"


@pytest.fixture
async def sqlite_store(db: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(db)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


OPEN_IN_ANOTHER_PROCESS = """
import asyncio, sys
from dawait.errors import StoreError
from dawait.runtime import SQLiteStore

async def main():
    store = SQLiteStore(sys.argv[1])
    try:
        await store.open()
    except StoreError as exc:
        print(f"StoreError: {exc}")
        return
    await store.close()
    print("opened")

asyncio.run(main())
"""


async def open_in_another_process(db: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        OPEN_IN_ANOTHER_PROCESS,
        str(db),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    return stdout.decode().strip()


async def test_everything_survives_close_and_reopen(db: Path) -> None:
    first = SQLiteStore(db)
    await first.open()
    await first.create_invocation(
        CreatePromise(id="wf", param=ONE, tags={TAG_BRANCH: "wf"}), pid="w1", ttl=None, now=0
    )
    await first.create_promise(
        CreatePromise(id="wf.1", timeout_at=100, tags={TAG_BRANCH: "wf", TAG_TIMER: "true"}),
        now=1,
    )
    await first.create_promise(
        CreatePromise(id="wf.0", state=PromiseState.RESOLVED, value=TWO), now=1
    )
    assert await first.suspend_task("wf", awaited=["wf.1"], now=2)
    before = [await first.get_promise(id) for id in ("wf", "wf.0", "wf.1")]
    await first.close()

    second = SQLiteStore(db)
    await second.open()
    try:
        assert [await second.get_promise(id) for id in ("wf", "wf.0", "wf.1")] == before
        assert await second.get_task("wf") == TaskRecord(id="wf", state=TaskState.SUSPENDED)
        assert await second.next_timeout() == 100
        assert [p.id for p in await second.branch_promises("wf")] == ["wf.1"]
        # The callback survived too: the timer still wakes the workflow.
        (fired,) = await second.expire_promises(now=100, limit=10)
        assert fired.resumed == [TaskRecord(id="wf", state=TaskState.PENDING, version=1)]
    finally:
        await second.close()


async def test_a_second_process_is_refused_while_the_file_is_open(
    sqlite_store: SQLiteStore, db: Path
) -> None:
    await sqlite_store.create_promise(CreatePromise(id="p"), now=0)

    answer = await open_in_another_process(db)

    assert answer.startswith("StoreError:")
    assert str(db) in answer
    # The first process is not disturbed.
    assert await sqlite_store.get_promise("p") is not None


async def test_another_process_may_open_the_file_once_it_is_closed(db: Path) -> None:
    store = SQLiteStore(db)
    await store.open()
    await store.close()

    assert await open_in_another_process(db) == "opened"


READ_SCHEMA_VERSION_AT_ONCE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=0)
print(conn.execute("PRAGMA user_version").fetchone()[0])
"""


def write_schema_version(db: Path, version: int) -> None:
    conn = sqlite3.connect(db)
    try:
        conn.execute(f"PRAGMA user_version = {version}")
    finally:
        conn.close()


async def test_a_file_with_a_newer_schema_is_refused(db: Path) -> None:
    write_schema_version(db, SCHEMA_VERSION + 1)

    with pytest.raises(StoreError, match="schema version") as refused:
        await SQLiteStore(db).open()

    assert str(db) in str(refused.value)


async def test_a_refused_file_is_left_free_for_others(db: Path) -> None:
    write_schema_version(db, SCHEMA_VERSION + 1)
    with pytest.raises(StoreError) as refused:
        await SQLiteStore(db).open()

    # Another process (say, the newer dawait that owns the file) opens it at once.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        READ_SCHEMA_VERSION_AT_ONCE,
        str(db),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()

    assert refused.value is not None
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().strip() == str(SCHEMA_VERSION + 1)


async def test_a_closed_store_refuses_operations(db: Path) -> None:
    store = SQLiteStore(db)
    await store.open()
    await store.close()

    with pytest.raises(StoreError, match="not open"):
        await store.get_promise("p")


async def test_close_waits_for_operations_in_flight(db: Path) -> None:
    store = SQLiteStore(db)
    await store.open()

    *created, _ = await asyncio.gather(
        *(store.create_promise(CreatePromise(id=f"p{n}"), now=0) for n in range(20)),
        store.close(),
    )

    assert all(result.created for result in created)
    reopened = SQLiteStore(db)
    await reopened.open()
    try:
        assert len(await all_pages(reopened, "*", limit=100)) == 20
    finally:
        await reopened.close()


async def test_concurrent_operations_share_commits(sqlite_store: SQLiteStore) -> None:
    before = len(sqlite_store.batch_sizes)

    created = await asyncio.gather(
        *(sqlite_store.create_promise(CreatePromise(id=f"p{n:03}"), now=0) for n in range(200))
    )

    commits = sqlite_store.batch_sizes[before:]
    assert all(result.created for result in created)
    assert sum(commits) == 200
    assert len(commits) < 200
    assert await all_pages(sqlite_store, "p*", limit=1000) == [f"p{n:03}" for n in range(200)]


async def test_a_failing_operation_does_not_undo_its_neighbours(db: Path) -> None:
    store = SQLiteStore(db)
    await store.open()
    before = len(store.batch_sizes)
    calls: list[Awaitable[object]] = []
    for n in range(50):
        calls.append(store.create_promise(CreatePromise(id=f"ok{n:02}"), now=0))
        calls.append(store.settle_promise(f"missing{n}", event=Settle.RESOLVE, value=ONE, now=0))

    results = await asyncio.gather(*calls, return_exceptions=True)

    # Fewer commits than calls: some commit held a failing call next to a succeeding one.
    assert len(store.batch_sizes[before:]) < len(calls)
    failures = results[1::2]
    assert all(isinstance(failure, PromiseNotFoundError) for failure in failures)
    await store.close()

    reopened = SQLiteStore(db)
    await reopened.open()
    try:
        assert await all_pages(reopened, "*", limit=1000) == [f"ok{n:02}" for n in range(50)]
    finally:
        await reopened.close()


_real_fsync = os.fsync


class _HeldFsync:
    """``os.fsync`` as the store sees it: each call waits until ``release`` and records
    which file it synced."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.synced: list[str] = []
        self.error: OSError | None = None

    def __call__(self, fd: int) -> None:
        self.synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        self.entered.set()
        if not self.release.wait(timeout=30):
            raise AssertionError("fsync was never released")
        if self.error is not None:
            raise self.error
        _real_fsync(fd)


async def test_no_operation_is_answered_before_its_commit_is_fsynced(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(db)
    await store.open()
    fsync = _HeldFsync()
    monkeypatch.setattr("dawait.runtime._sqlite_store.os.fsync", fsync)
    try:
        writes = [
            asyncio.ensure_future(store.create_promise(CreatePromise(id=f"p{n}"), now=0))
            for n in range(10)
        ]
        assert await asyncio.to_thread(fsync.entered.wait, 30)
        # Committed to the WAL and visible to the store's own connection, but not durable:
        # neither these writes nor a read that may have seen them is answered. (A few
        # loop turns: the read's commit is over after the first.)
        read = asyncio.ensure_future(store.get_promise("p0"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not any(write.done() for write in writes)
        assert not read.done()
        assert fsync.synced
        assert all(path == f"{db}-wal" for path in fsync.synced)

        fsync.release.set()
        assert all(created.created for created in await asyncio.gather(*writes))
        assert (await read) is not None
    finally:
        fsync.release.set()
        await store.close()


async def test_a_failed_fsync_fails_what_it_covered_and_breaks_the_store(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(db)
    await store.open()
    await store.create_promise(CreatePromise(id="before"), now=0)
    fsync = _HeldFsync()
    fsync.error = OSError(5, "Input/output error")
    fsync.release.set()
    monkeypatch.setattr("dawait.runtime._sqlite_store.os.fsync", fsync)

    results = await asyncio.gather(
        *(store.create_promise(CreatePromise(id=f"p{n}"), now=0) for n in range(5)),
        return_exceptions=True,
    )

    assert all(isinstance(result, StoreError) for result in results)
    assert "fsync failed" in str(results[0])
    assert "Input/output error" in str(results[0])
    with pytest.raises(StoreError, match="fsync failed"):
        await store.get_promise("before")
    monkeypatch.undo()
    await store.close()
    reopened = SQLiteStore(db)
    await reopened.open()
    try:
        assert await reopened.get_promise("before") is not None
    finally:
        await reopened.close()


async def test_an_operation_failing_after_writing_leaves_nothing_and_spares_its_batch(
    db: Path,
) -> None:
    store = SQLiteStore(db)
    await store.open()

    def write_then_fail(tables: Tables, id: str) -> None:
        tables.insert_promise(create_promise(None, id=id, now=0).record)
        raise ValueError(f"{id} failed after writing")

    calls: list[Awaitable[object]] = []
    for n in range(20):
        calls.append(store.create_promise(CreatePromise(id=f"ok{n:02}"), now=0))
        calls.append(store._transact(write_then_fail, f"bad{n:02}"))
    results = await asyncio.gather(*calls, return_exceptions=True)

    assert all(isinstance(created, PromiseCreated) and created.created for created in results[::2])
    failures = results[1::2]
    assert all(isinstance(failure, StoreError) for failure in failures)
    assert "bad00 failed after writing" in str(failures[0])
    assert await all_pages(store, "*", limit=1000) == [f"ok{n:02}" for n in range(20)]
    await store.close()

    reopened = SQLiteStore(db)
    await reopened.open()
    try:
        assert await all_pages(reopened, "*", limit=1000) == [f"ok{n:02}" for n in range(20)]
    finally:
        await reopened.close()


async def test_schedules_survive_close_and_reopen(db: Path) -> None:
    first = SQLiteStore(db)
    await first.open()
    await first.create_schedule(a_schedule("s", next_run_at=60_000))
    await first.create_schedule(a_schedule("t", next_run_at=None, cron="0 0 29 2 *"))
    await fire(first, "s", expected=60_000, slot=60_000, next_run_at=120_000)
    before = [await first.get_schedule(id) for id in ("s", "t")]
    await first.close()

    second = SQLiteStore(db)
    await second.open()
    try:
        assert [await second.get_schedule(id) for id in ("s", "t")] == before
        assert await second.next_schedule_at() == 120_000
    finally:
        await second.close()


async def test_a_version_1_file_gains_schedules_in_place(db: Path) -> None:
    store = SQLiteStore(db)
    await store.open()
    await store.create_promise(CreatePromise(id="p", param=ONE), now=1)
    await store.close()
    # What dawait with schema version 1 left behind: no schedules table.
    conn = sqlite3.connect(db)
    try:
        conn.execute("DROP TABLE schedules")
        conn.execute("PRAGMA user_version = 1")
    finally:
        conn.close()

    upgraded = SQLiteStore(db)
    await upgraded.open()
    try:
        assert (await upgraded.get_promise("p")) is not None
        await upgraded.create_schedule(a_schedule())
        assert await upgraded.get_schedule("s") == a_schedule()
    finally:
        await upgraded.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    finally:
        conn.close()
