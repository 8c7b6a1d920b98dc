"""One partition's store (cluster/_partition_store.py) on real etcd: taken by one node at a
time under its lease, an epoch per owner, and no write of an owner that lost it."""

from __future__ import annotations

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
from dawait.runtime._store import CreatePromise
from tests.etcd import EtcdCluster

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


async def test_a_large_expired_tree_goes_after_a_takeover_and_nothing_is_left(
    cluster: tuple[str, Etcd, Nodes],
) -> None:
    """1,200 calls (read back in pages, deleted in transactions of 40); the retention index
    (``r/`` keys) is found by the next owner, which deletes the tree; etcd keeps no record,
    no index key and no callback of it."""
    namespace, client, node = cluster
    a, b = await node("a"), await node("b")
    first = _partition(namespace, a)
    assert await first.take()
    await first.create_invocation(
        CreatePromise(id="big", tags={TAG_RETENTION: "1000"}), pid=None, ttl=None, now=0
    )
    for k in range(1, 1201):
        await first.create_promise(
            CreatePromise(id=f"big:{k}", tags={TAG_BRANCH: "big"}, state=PromiseState.RESOLVED),
            now=1,
        )
    await first.settle_promise("big", event=Settle.RESOLVE, value=Value(data="1"), now=5)
    assert first.deletions.next == 1005
    await first.close()

    second = _partition(namespace, b)
    assert await second.take()
    assert second.deletions.next == 1005  # from the index, read at the take
    assert not second.deletions.due_by(1004)
    assert await second.deletions.due(1005, 10) == ["big"]
    assert await second.deletions.delete_tree("big") == 1201
    _revision, left = await client.snapshot(partition_prefix(namespace, PARTITION))
    kinds = sorted({item.key[len(partition_prefix(namespace, PARTITION)) :][:2] for item in left})
    assert kinds == ["ep", "ow", "x/"]  # epoch, owner, the transaction marker
    await second.close()
