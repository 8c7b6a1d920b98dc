"""``runnable_tasks``: pending and acquired tasks, page by page."""

from __future__ import annotations

from dawait.runtime import Store
from tests.integration.store_contract.support import create, invocation, resolve


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
