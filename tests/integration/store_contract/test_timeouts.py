"""Timeouts: ``expire_promises``, ``next_timeout`` and the timed-out view of reads."""

from __future__ import annotations

from dawait.core._promise import EMPTY, PromiseState, SettleOutcome
from dawait.core._task import TaskRecord, TaskState
from dawait.runtime import Store
from dawait.runtime._store import CreatePromise
from tests.integration.store_contract.support import TIMER, create, invocation, resolve


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
