"""Schedules: create, delete, due, fire (once per slot) and search."""

from __future__ import annotations

import asyncio

from dawait.core._promise import PromiseState
from dawait.core._task import TaskRecord, TaskState
from dawait.runtime import Store
from dawait.runtime._store import ScheduleCreated
from tests.integration.store_contract.support import a_schedule, fire, invocation, resolve


async def test_create_schedule_and_get_it(store: Store) -> None:
    record = a_schedule(last_run_at=None)

    created = await store.create_schedule(record)

    assert created == ScheduleCreated(schedule=record, created=True)
    assert await store.get_schedule("s") == record
    assert await store.get_schedule("other") is None


async def test_a_schedule_of_resonates_protocol_keeps_its_promise(store: Store) -> None:
    record = a_schedule(
        "sdk", args='{"func":"f","args":[],"kwargs":{},"version":1}',
        promise='{"id":"{{.id}}-{{.timestamp}}","timeout":60000,"tags":{"resonate:target":"poll://any@w"}}',
    )  # fmt: skip

    await store.create_schedule(record)

    assert await store.get_schedule("sdk") == record
    (found,) = (await store.search_schedules("sdk*")).schedules
    assert found.promise == record.promise


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
