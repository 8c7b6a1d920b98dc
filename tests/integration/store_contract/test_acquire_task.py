"""``acquire_task``: who may acquire a task, and at which version."""

from __future__ import annotations

from dawait.core._task import TaskRecord, TaskState
from dawait.runtime import Store
from tests.integration.store_contract.support import invocation


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
