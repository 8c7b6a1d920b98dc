"""``delete_tree``: a settled invocation (or promise) goes with every call it made, and
only those; pending ones and calls alone are refused, and nothing changes then."""

from __future__ import annotations

import pytest

from dawait.core._promise import TAG_BRANCH
from dawait.errors import NotDeletableError, PromiseNotFoundError
from dawait.runtime import Store
from dawait.runtime._store import CreatePromise
from dawait.runtime._store_ops import DELETE_BATCH
from tests.integration.store_contract.support import TIMER, create, invocation, resolve

CALL = {TAG_BRANCH: "wf"}


async def _tree(store: Store) -> None:
    """Invocation wf: two steps, a timer, a durable child with a step of its own, and a
    detached invocation wf:5 (an invocation of its own) with its own step."""
    await invocation(store, "wf")
    await create(store, "wf:1", tags=CALL)
    await create(store, "wf:2", tags=CALL)
    await create(store, "wf:3", tags={**CALL, **TIMER}, timeout_at=10_000)
    await create(store, "wf:4", tags=CALL)
    await create(store, "wf:4.1", tags={TAG_BRANCH: "wf:4"})
    detached = CreatePromise(id="wf:5", tags=CALL)
    await store.create_invocation(detached, pid=None, ttl=None, now=0)
    await create(store, "wf:5.1", tags={TAG_BRANCH: "wf:5"})
    for id in ("wf:1", "wf:2", "wf:4.1", "wf:4", "wf"):
        await resolve(store, id)


async def test_a_settled_tree_goes_with_its_calls_but_not_its_own_invocations(
    store: Store,
) -> None:
    await _tree(store)

    assert await store.delete_tree("wf") == 6

    for id in ("wf", "wf:1", "wf:2", "wf:3", "wf:4", "wf:4.1"):
        assert await store.get_promise(id) is None, id
    assert await store.get_task("wf") is None
    # wf:5 still names wf as its caller: a new run of wf finds it at the same position.
    assert [p.id for p in await store.branch_promises("wf")] == ["wf:5"]
    kept = await store.get_promise("wf:5")
    assert kept is not None
    assert await store.get_task("wf:5") is not None
    assert [p.id for p in await store.branch_promises("wf:5")] == ["wf:5.1"]
    # The detached invocation goes by its own id, once settled.
    await resolve(store, "wf:5")
    assert await store.delete_tree("wf:5") == 2
    assert await store.get_promise("wf:5.1") is None
    # The id is free again: a start makes a new invocation.
    created = await store.create_invocation(CreatePromise(id="wf"), pid=None, ttl=None, now=5)
    assert created.created
    assert await store.get_promise("wf:1") is None


async def test_pending_calls_and_unknown_ids_are_refused_and_nothing_changes(
    store: Store,
) -> None:
    await invocation(store, "running")
    await create(store, "running:1", tags={TAG_BRANCH: "running"})
    await resolve(store, "running:1")
    with pytest.raises(NotDeletableError, match="'running' is pending: cancel it"):
        await store.delete_tree("running")
    await resolve(store, "running")
    with pytest.raises(NotDeletableError, match="'running:1' is a call of 'running'"):
        await store.delete_tree("running:1")
    detached = CreatePromise(id="running:2", tags={TAG_BRANCH: "running"})
    await store.create_invocation(detached, pid=None, ttl=None, now=0)
    await resolve(store, "running:2")
    await create(store, "caller")  # still pending: deleting what it called is refused
    child = CreatePromise(id="caller:1", tags={TAG_BRANCH: "caller"})
    await store.create_invocation(child, pid=None, ttl=None, now=0)
    await resolve(store, "caller:1")
    with pytest.raises(NotDeletableError, match="'caller', still pending, called"):
        await store.delete_tree("caller:1")
    assert await store.delete_tree("running:2") == 1  # its caller has settled
    with pytest.raises(PromiseNotFoundError, match="'nobody'"):
        await store.delete_tree("nobody")
    assert await store.get_promise("running:1") is not None
    assert await store.get_task("running") is not None


async def test_an_api_promise_is_a_tree_of_one(store: Store) -> None:
    await create(store, "approval")
    with pytest.raises(NotDeletableError, match="pending"):
        await store.delete_tree("approval")
    await resolve(store, "approval")
    assert await store.delete_tree("approval") == 1
    assert await store.get_promise("approval") is None


async def test_a_large_tree_goes_in_bounded_transactions(store: Store) -> None:
    """More calls than one deletion transaction takes (etcd's --max-txn-ops bounds it)."""
    await invocation(store, "big")
    count = DELETE_BATCH * 2 + 7
    for k in range(1, count + 1):
        await create(store, f"big:{k}", tags={TAG_BRANCH: "big"})
    await resolve(store, "big")
    assert await store.delete_tree("big") == count + 1
    assert await store.branch_promises("big") == []
    assert await store.get_promise("big") is None
