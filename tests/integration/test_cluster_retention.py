"""Retention in a cluster of real nodes on real etcd: each node deletes the expired trees
of the partitions it owns, under their fences; one SIGKILLed while deleting leaves no call
without its caller, and the node that takes its partitions finishes the deletions."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from dawait.cluster._etcd import Etcd, KeyValue
from dawait.cluster._etcd_records import decode_promise
from dawait.errors import NotDeletableError, PromiseNotFoundError
from dawait.node._client import HttpClient
from tests.etcd import EtcdCluster
from tests.integration.cluster_app import mixed_result
from tests.integration.clustering import TTL, audit, live_nodes, outcome, start_cluster
from tests.integration.served import TOKEN, Node, Nodes
from tests.polling import eventually

TREES = 80
STEPS = 60
"""Steps per tree: 60 calls take two deletion transactions (of 40), then the root."""


async def _partition_keys(etcd: EtcdCluster, namespace: str) -> list[KeyValue]:
    """Every key of the namespace's partitions, as etcd has them now."""
    client = Etcd(etcd.endpoints)
    await client.connect()
    try:
        _revision, items = await client.snapshot(f"/dawait/{namespace}/P/")
    finally:
        await client.close()
    return items


def _kind(item: KeyValue) -> str:
    """``p``, ``t``, ``c``, ``r``, ... of ``/dawait/NS/P/family/index/kind/...``."""
    return item.key.split("/")[6]


async def _deleted(node: Node) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{node.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as response,
    ):
        for line in (await response.text()).splitlines():
            if line.startswith("dawait_retention_deleted_total "):
                return int(float(line.split()[1]))
    return 0


async def test_a_node_killed_while_deleting_leaves_no_orphan_and_the_deletion_finishes(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    nodes = Nodes(tmp_path)
    groups = ["default,helpers"] * 2
    async with start_cluster(nodes, etcd, groups, TTL, "--retention", "1s") as cluster:
        await live_nodes(cluster.clients[0], 2)
        results = await asyncio.gather(
            *(
                cluster.clients[k % 2].start(f"c{k}", "chain", [STEPS], {}, wait=30)
                for k in range(TREES)
            )
        )
        assert all(view.state == "resolved" for view, _created in results)
        victim, survivor = cluster.members[1], cluster.members[0]

        async def deleting() -> bool:
            return await _deleted(victim) > 0

        await eventually(deleting, "the second node to delete expired trees", every=0.002)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(timeout=10)

        promises = [
            decode_promise(item.value)
            for item in await _partition_keys(etcd, cluster.namespace)
            if item.value is not None and _kind(item) == "p"
        ]
        ids = {p.id for p in promises}
        orphans = [p.id for p in promises if p.branch not in (None, p.id) and p.branch not in ids]
        assert orphans == []
        assert promises, "everything was deleted before the kill: nothing left to take over"

        async def all_gone() -> bool:
            kinds = {_kind(item) for item in await _partition_keys(etcd, cluster.namespace)}
            return not kinds & {"p", "t", "c", "r"}

        await eventually(all_gone, "the survivor to delete what the killed node left", within=30)
        assert await _deleted(survivor) > 0
    history = await audit(etcd, cluster.namespace)
    assert history.stale == []
    assert history.unmarked == []


async def test_an_rpc_invocation_of_another_group_is_kept_while_its_caller_waits(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    """``mixed(35)`` calls ``helper`` (group ``helpers``: another partition) with ``ctx.rpc``,
    then waits for the promise ``ext-35``: the helper's invocation is refused deletion until
    its caller has settled, though the caller's partition is not the helper's."""
    nodes = Nodes(tmp_path)
    async with start_cluster(nodes, etcd, ["default,helpers"], TTL) as cluster:
        client = cluster.clients[0]
        await client.start("m35", "mixed", [35, 0], {})
        await eventually(lambda: _exists(client, "ext-35"), "the caller to wait for ext-35")
        tree = await client.tree("m35")
        [call] = [node.id for node in tree.children if node.kind == "call"]

        with pytest.raises(NotDeletableError, match="which is still pending"):
            await client.delete(call)
        await client.resolve("ext-35", 35)
        assert await outcome(client, "m35", within=10) == mixed_result(35)
        await client.delete(call)
        with pytest.raises(PromiseNotFoundError):
            await client.invocation(call)


async def _exists(client: HttpClient, id: str) -> bool:
    try:
        await client.promise(id)
    except PromiseNotFoundError:
        return False
    return True
