"""One partition's store (cluster/_partition_store.py) on real etcd: taken by one node at a
time under its lease, an epoch per owner, and no write of an owner that lost it."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from dawait.cluster._etcd import Etcd
from dawait.cluster._etcd_records import namespace_prefix, partition_prefix
from dawait.cluster._etcd_store import EtcdStore
from dawait.cluster._partition_store import PartitionStore
from dawait.core._partitions import Partition
from dawait.core._promise import TAG_BRANCH, TAG_RETENTION, PromiseState, Settle, Value
from dawait.errors import OwnershipLostError
from dawait.runtime._deletion import DELETE_BATCH
from dawait.runtime._store import CreatePromise
from tests.etcd import EtcdCluster
from tests.integration.store_contract.support import create, resolve
from tests.integration.store_contract.test_delete_tree import INVOCATION

_namespaces = itertools.count()
PARTITION = Partition("default", 7)

Nodes = Callable[[str], Awaitable["EtcdStore"]]


@pytest.fixture
async def cluster(etcd: EtcdCluster) -> AsyncIterator[tuple[str, Etcd, Nodes]]:
    """A fresh namespace, a client of it, and a way to join nodes to it (closed after)."""
    namespace = f"parts{next(_namespaces)}-{os.getpid()}"
    client = Etcd(etcd.endpoints)
    await client.connect()
    joined: list[EtcdStore] = []

    async def node(node_id: str) -> EtcdStore:
        """Node ``node_id`` joined (its membership record under its lease)."""
        store = EtcdStore(
            etcd.endpoints,
            namespace=namespace,
            prefix=namespace_prefix(namespace),
            node_id=node_id,
            lease_ttl=2,
        )
        joined.append(store)
        await store.open()
        return store

    try:
        yield namespace, client, node
    finally:
        for store in joined:
            await store.close()
        await client.close()


def _partition(namespace: str, node: EtcdStore) -> PartitionStore:
    return PartitionStore(node.etcd, namespace=namespace, partition=PARTITION, node=node)


async def test_records_outlive_their_owner_and_the_epoch_grows(
    cluster: tuple[str, Etcd, Nodes],
) -> None:
    namespace, _client, node = cluster
    a, b = await node("a"), await node("b")
    first = _partition(namespace, a)
    assert await first.take()
    assert first.epoch == 1
    await first.create_promise(CreatePromise(id="x"), now=1)
    await first.settle_promise("x", event=Settle.RESOLVE, value=Value(data="42"), now=2)
    await first.close()  # hands over: the owner record goes at once

    second = _partition(namespace, b)
    assert await second.take()
    assert second.epoch == 2
    record = await second.get_promise("x")
    assert record is not None
    assert record.state is PromiseState.RESOLVED
    assert record.value.data == "42"
    holder = await second.holder()
    assert holder is not None
    assert (holder.node_id, holder.epoch) == ("b", 2)
    await second.close()


async def test_a_held_partition_cannot_be_taken(cluster: tuple[str, Etcd, Nodes]) -> None:
    namespace, _client, node = cluster
    a, b = await node("a"), await node("b")
    owner = _partition(namespace, a)
    assert await owner.take()
    other = _partition(namespace, b)
    assert not await other.take()
    with pytest.raises(OwnershipLostError, match=r"held by PartitionOwner\('a', epoch=1\)"):
        await other.open()
    await owner.close()


async def test_an_owner_whose_lease_ended_writes_nothing_more(
    cluster: tuple[str, Etcd, Nodes],
) -> None:
    namespace, client, node = cluster
    a, b = await node("a"), await node("b")
    stale = _partition(namespace, a)
    assert await stale.take()
    await stale.create_promise(CreatePromise(id="before"), now=1)
    # a's lease ends (as after a SIGSTOP past its TTL): its owner record goes with it, and b
    # takes the partition. a's store has not noticed yet.
    await client.revoke(a.membership.lease)
    fresh = _partition(namespace, b)
    assert await fresh.take()
    assert fresh.epoch == 2

    with pytest.raises(OwnershipLostError, match="no longer owns the partition"):
        await stale.create_promise(CreatePromise(id="after"), now=2)
    with pytest.raises(OwnershipLostError):
        await stale.settle_promise("before", event=Settle.RESOLVE, value=Value(), now=3)

    assert await fresh.get_promise("after") is None
    kept = await fresh.get_promise("before")
    assert kept is not None
    assert kept.state is PromiseState.PENDING
    # The new owner's transactions carry its epoch (the old owner's marker ended with its
    # lease).
    await fresh.settle_promise("before", event=Settle.RESOLVE, value=Value(), now=4)
    _revision, items = await client.snapshot(fresh.keys.prefix + "x/")
    assert [json.loads(item.value or b"{}")["epoch"] for item in items] == [2]
    await fresh.close()


KEPT = {TAG_RETENTION: "1000"}
"""A root kept one second once settled."""


async def _big_tree(first: PartitionStore) -> None:
    """Invocation big, kept one second once settled at 5, with 1,200 calls."""
    await first.create_invocation(CreatePromise(id="big", tags=KEPT), pid=None, ttl=None, now=0)
    for k in range(1, 1201):
        await first.create_promise(
            CreatePromise(id=f"big:{k}", tags={TAG_BRANCH: "big"}, state=PromiseState.RESOLVED),
            now=1,
        )
    await first.settle_promise("big", event=Settle.RESOLVE, value=Value(data="1"), now=5)
    assert first.deletions.next == 1005


async def _kinds_left(client: Etcd, namespace: str) -> list[str]:
    """The kinds of key left in the partition (two letters of each)."""
    prefix = partition_prefix(namespace, PARTITION)
    _revision, left = await client.snapshot(prefix)
    return sorted({item.key[len(prefix) :][:2] for item in left})


NOTHING_LEFT = ["ep", "ow", "x/"]
"""The epoch, the owner and the transaction marker: no record, index key or callback."""


async def test_a_large_expired_tree_goes_unread_after_a_takeover_and_nothing_is_left(
    cluster: tuple[str, Etcd, Nodes],
) -> None:
    """The retention index (``r/`` keys) is found by the next owner, which deletes the
    tree's 1,201 records without reading them back (its entry says how), in one
    transaction."""
    namespace, client, node = cluster
    a, b = await node("a"), await node("b")
    first = _partition(namespace, a)
    assert await first.take()
    await _big_tree(first)
    await first.close()

    second = _partition(namespace, b)
    assert await second.take()
    assert second.deletions.next == 1005  # from the index, read at the take
    assert not second.deletions.due_by(1004)
    assert await second.deletions.due(1005, 10) == ["big"]
    sent, evicted = second.batches.transactions, second.evicted  # the take loaded it all
    assert await second.deletions.delete_tree("big", swept=True) == 1201
    assert second.batches.transactions == sent + 1
    assert second.evicted == evicted  # nothing of it was read into memory
    assert await _kinds_left(client, namespace) == NOTHING_LEFT
    assert await second.get_promise("big") is None
    await second.close()


async def test_a_tree_deleted_by_id_is_read_back_in_pages_and_deleted_in_bounded_batches(
    cluster: tuple[str, Etcd, Nodes],
) -> None:
    namespace, client, node = cluster
    a, b = await node("a"), await node("b")
    first = _partition(namespace, a)
    assert await first.take()
    await _big_tree(first)
    await first.close()

    second = _partition(namespace, b)
    assert await second.take()
    sent, evicted = second.batches.transactions, second.evicted
    assert await second.delete_tree("big") == 1201
    assert second.batches.transactions - sent >= 1201 // DELETE_BATCH
    assert second.evicted - evicted == 1201  # read back, then dropped as it went
    assert await _kinds_left(client, namespace) == NOTHING_LEFT
    await second.close()


async def test_a_tree_with_an_invocation_of_its_own_below_keeps_it_when_swept(
    cluster: tuple[str, Etcd, Nodes],
) -> None:
    """Its entry holds only the id: the tree is read back, and its rpc child, pending,
    stays."""
    namespace, _client, node = cluster
    store = _partition(namespace, await node("a"))
    assert await store.take()
    await store.create_invocation(CreatePromise(id="wf", tags=KEPT), pid=None, ttl=None, now=0)
    await create(store, "wf:1", tags={TAG_BRANCH: "wf"})
    await create(store, "wf:2", tags={TAG_BRANCH: "wf"})
    await create(store, "wf:2.1", tags={TAG_BRANCH: "wf:2"})
    child = CreatePromise(id="wf:3", param=INVOCATION, tags={TAG_BRANCH: "wf", **KEPT})
    await store.create_invocation(child, pid=None, ttl=None, now=0)
    for id in ("wf:1", "wf:2.1", "wf:2", "wf"):
        await resolve(store, id, now=5)

    assert await store.deletions.due(1005, 10) == ["wf"]
    assert await store.deletions.delete_tree("wf", swept=True) == 4
    for id in ("wf", "wf:1", "wf:2", "wf:2.1"):
        assert await store.get_promise(id) is None
    kept = await store.get_promise("wf:3")
    assert kept is not None
    assert kept.state is PromiseState.PENDING
    await store.close()


async def test_operations_on_a_tree_deleted_unread_wait_and_find_it_gone(
    cluster: tuple[str, Etcd, Nodes],
) -> None:
    """A read and a start of the same id, sent while the tree is deleted: the read finds
    nothing or the new invocation, the start makes a new invocation, and no stale record
    stays in memory."""
    namespace, client, node = cluster
    store = _partition(namespace, await node("a"))
    assert await store.take()
    await store.create_invocation(CreatePromise(id="wf", tags=KEPT), pid=None, ttl=None, now=0)
    await create(store, "wf:1", tags={TAG_BRANCH: "wf"})
    await resolve(store, "wf:1", now=2)
    await resolve(store, "wf", now=5)
    assert await store.deletions.due(1005, 10) == ["wf"]

    deleted, found, started = await asyncio.gather(
        store.deletions.delete_tree("wf", swept=True),
        store.get_promise("wf"),
        store.create_invocation(CreatePromise(id="wf"), pid=None, ttl=None, now=1006),
    )

    assert deleted == 2
    # Concurrent with the start: the new invocation or nothing, never the deleted one.
    assert found is None or (found.state is PromiseState.PENDING and found.created_at == 1006)
    assert started.created
    record = await store.get_promise("wf")
    assert record is not None
    assert record.state is PromiseState.PENDING
    assert await store.get_promise("wf:1") is None
    _revision, calls = await client.snapshot(store.keys.promise("wf:"))
    assert calls == []
    await store.close()


async def test_a_root_made_anew_after_the_index_was_read_is_not_swept(
    cluster: tuple[str, Etcd, Nodes],
) -> None:
    """Deleted by id and started again (and settled) after the sweep read the index: the
    sweep leaves the new one to its own deadline."""
    namespace, _client, node = cluster
    store = _partition(namespace, await node("a"))
    assert await store.take()
    await create(store, "p", tags=KEPT)
    await resolve(store, "p", now=5)
    assert await store.deletions.due(1005, 10) == ["p"]
    assert await store.delete_tree("p") == 1
    await create(store, "p", tags=KEPT, now=1000)
    await resolve(store, "p", now=1001)

    assert await store.deletions.delete_tree("p", swept=True) == 0

    assert await store.get_promise("p") is not None
    assert await store.deletions.due(2000, 10) == []
    assert await store.deletions.due(2001, 10) == ["p"]
    assert await store.deletions.delete_tree("p", swept=True) == 1
    await store.close()
