"""Values and shorthands of the store contract tests: create, settle, page through
searches, and a schedule to create and fire."""

from __future__ import annotations

from typing import Any

from dawait.core._promise import TAG_TIMER, PromiseRecord, Settle, Value
from dawait.core._schedule import ScheduleRecord
from dawait.runtime import Store
from dawait.runtime._store import CreatePromise, InvocationCreated, PromiseCreated, PromiseSettled

ONE = Value(data="1")
TWO = Value(data="2")
TIMER = {TAG_TIMER: "true"}


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
