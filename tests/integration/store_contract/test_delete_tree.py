"""``delete_tree``: a settled invocation (or promise) goes with every call it made, and
only those; pending ones and calls alone are refused, and nothing changes then."""

from __future__ import annotations

import asyncio

import pytest

from dawait.core._param import invocation_param
from dawait.core._promise import TAG_BRANCH, Value
from dawait.errors import NotDeletableError, PromiseNotFoundError
from dawait.runtime import Store
from dawait.runtime._deletion import DELETE_BATCH
from dawait.runtime._store import CreatePromise
from tests.integration.store_contract.support import TIMER, create, invocation, resolve

CALL = {TAG_BRANCH: "wf"}
INVOCATION = Value(data=invocation_param("f", None, '{"args":[],"kwargs":{}}'))
"""The param of an rpc or detached invocation: a root of its own, though called."""


def _called(id: str, caller: str) -> CreatePromise:
    """Invocation ``id`` that ``caller`` started with ``rpc`` or ``detached``."""
    return CreatePromise(id=id, param=INVOCATION, tags={TAG_BRANCH: caller})


async def _tree(store: Store) -> None:
    """Invocation wf: two steps, a timer, a durable child with a step of its own, a
    detached invocation wf:5 (an invocation of its own) with its own step, and a promise
    with an id of its own (``ctx.promise(id="approval-wf")``)."""
    await invocation(store, "wf")
    await create(store, "wf:1", tags=CALL)
    await create(store, "wf:2", tags=CALL)
    await create(store, "wf:3", tags={**CALL, **TIMER}, timeout_at=10_000)
    await create(store, "wf:4", tags=CALL)
    await create(store, "wf:4.1", tags={TAG_BRANCH: "wf:4"})
    await store.create_invocation(_called("wf:5", "wf"), pid=None, ttl=None, now=0)
    await create(store, "wf:5.1", tags={TAG_BRANCH: "wf:5"})
    await create(store, "approval-wf", tags=CALL)
    for id in ("wf:1", "wf:2", "wf:4.1", "wf:4", "approval-wf", "wf"):
        await resolve(store, id)


async def test_a_settled_tree_goes_with_its_calls_but_not_its_own_invocations(
    store: Store,
) -> None:
    await _tree(store)

    assert await store.delete_tree("wf") == 6

    for id in ("wf", "wf:1", "wf:2", "wf:3", "wf:4", "wf:4.1"):
        assert await store.get_promise(id) is None, id
    assert await store.get_task("wf") is None
    # wf:5 and approval-wf still name wf as their caller: a new run of wf finds them.
    assert sorted(p.id for p in await store.branch_promises("wf")) == ["approval-wf", "wf:5"]
    assert await store.delete_tree("approval-wf") == 1  # by its own id
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
    await store.create_invocation(_called("running:2", "running"), pid=None, ttl=None, now=0)
    await resolve(store, "running:2")
    await create(store, "caller")  # still pending: deleting what it called is refused
    await store.create_invocation(_called("caller:1", "caller"), pid=None, ttl=None, now=0)
    await resolve(store, "caller:1")
    with pytest.raises(NotDeletableError, match="called by 'caller', which is still pending"):
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


async def test_nested_calls_go_before_their_caller_across_transactions(store: Store) -> None:
    """A durable child with calls of its own, cut by the transaction bound: none of its
    calls is left without it, and the tree is gone at the end."""
    await invocation(store, "deep")
    for k in range(1, DELETE_BATCH + 5):
        await create(store, f"deep:{k}", tags={TAG_BRANCH: "deep"})
        await create(store, f"deep:{k}.1", tags={TAG_BRANCH: f"deep:{k}"})
    await resolve(store, "deep")
    assert await store.delete_tree("deep") == 2 * (DELETE_BATCH + 4) + 1
    assert await store.get_promise(f"deep:{DELETE_BATCH}.1") is None
    assert await store.branch_promises(f"deep:{DELETE_BATCH + 4}") == []


async def test_a_deletion_does_not_overfill_a_transaction_shared_with_others(
    store: Store,
) -> None:
    """Deletions and other operations at the same moment: each transaction stays within
    etcd's limit (on etcd the others would fail with the deletion otherwise)."""
    await invocation(store, "busy")
    for k in range(1, DELETE_BATCH + 1):
        await create(store, f"busy:{k}", tags={TAG_BRANCH: "busy"})
    await resolve(store, "busy")
    before = [create(store, f"other-{k}") for k in range(50)]  # they fill the batch first
    after = [create(store, f"other-{k}") for k in range(50, 100)]
    results = await asyncio.gather(*before, store.delete_tree("busy"), *after)
    assert results[50] == DELETE_BATCH + 1
    created = [r for r in results[:50] + results[51:] if not isinstance(r, int)]
    assert [record.id for record in created] == [f"other-{k}" for k in range(100)]
