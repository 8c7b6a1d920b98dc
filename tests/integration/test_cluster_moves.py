"""Partitions moving under load, on real ``dawait serve --etcd`` node processes and real
etcd: a node joining and one leaving while 2,000 workflows run, and a promise settled
through a node that owns neither it nor the invocation awaiting it, whose owner is then
SIGKILLed. Each is checked from what a user sees and from etcd's history."""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import signal
from pathlib import Path

from dawait.core._partitions import FREE, partition_index
from dawait.errors import DawaitError, PromiseNotFoundError
from dawait.node._client import HttpClient
from tests.etcd import EtcdCluster, etcdctl, free_ports
from tests.integration.cluster_app import mixed_result
from tests.integration.clustering import (
    TTL,
    audit,
    live_nodes,
    namespaces,
    outcome,
    serve_args,
    start_cluster,
)
from tests.integration.served import TOKEN, Nodes
from tests.polling import eventually

WORKFLOWS = 2000
CONCURRENCY = 32
"""Starts in flight at once."""


async def _start_all(clients: list[HttpClient], ids: range, started: list[int]) -> None:
    """Start workflow ``j{i}`` for each ``i`` of ``ids``, round-robin through ``clients``
    (a node may be refusing while it hands over: the next one is tried)."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def start(i: int) -> None:
        async with limit:
            attempts = itertools.count()

            async def taken() -> bool:
                client = clients[(i + next(attempts)) % len(clients)]
                try:
                    await client.start(f"j{i}", "mixed", [i * 7 + 1, 0.3], {})
                except DawaitError:
                    return False
                return True

            await eventually(taken, f"a node to take j{i}", every=0.05)
            started.append(i)

    await asyncio.gather(*(start(i) for i in ids))


async def test_a_node_joins_and_one_leaves_during_2000_workflows(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    """Two nodes run 2,000 workflows; a third joins a third of the way in and the first
    leaves (SIGTERM) two thirds of the way in. Every workflow finishes with its result,
    every step ran exactly once (a moving partition's invocations resume on the new owner
    from their last completed step), partitions did move, and etcd's history shows no
    partition written under an epoch other than its owner's of the time."""
    nodes = Nodes(tmp_path)
    namespace = f"moves{next(namespaces)}-{os.getpid()}"
    ports = free_ports(3)
    args = [
        serve_args(etcd, namespace, f"n{k}", port, "default,helpers")
        for k, port in enumerate(ports)
    ]
    members = [nodes.start(f"n{k}", *args[k]) for k in range(2)]
    clients = [HttpClient(node.url, token=TOKEN) for node in members]
    try:
        for client in clients:
            await client.open()
        await live_nodes(clients[0], 2)
        started: list[int] = []
        third = WORKFLOWS // 3
        await _start_all(clients, range(third), started)

        members.append(nodes.start("n2", *args[2]))  # joins: takes about a third
        joined = HttpClient(members[2].url, token=TOKEN)
        await joined.open()
        clients.append(joined)
        await _start_all(clients, range(third, 2 * third), started)

        await members[0].stop()  # SIGTERM: hands its partitions over, exits 0
        await clients[0].close()
        survivors = clients[1:]
        await _start_all(survivors, range(2 * third, WORKFLOWS), started)
        assert sorted(started) == list(range(WORKFLOWS))
        assert [n.node_id for n in (await survivors[0].nodes()).items] == ["n1", "n2"]

        for i in range(WORKFLOWS):
            assert await outcome(survivors[i % 2], f"j{i}", within=30) == mixed_result(i * 7 + 1)
    finally:
        for client in clients:
            await client.close()
        nodes.kill_all()

    runs = collections.Counter(key for _kind, key, _pid in nodes.effect_lines())
    expected = {f"j{i}/{s}" for i in range(WORKFLOWS) for s in (0, 1)}
    expected |= {f"j{i}/helper/9" for i in range(WORKFLOWS) if (i * 7 + 1) % 5 == 0}
    assert set(runs) == expected
    twice = sorted(key for key, count in runs.items() if count > 1)
    assert twice == [], f"{len(twice)} steps ran more than once: {twice[:10]}"
    ran_by = {pid for _kind, _key, pid in nodes.effect_lines()}
    assert ran_by == {node.pid for node in members}, "a node ran nothing"

    history = await audit(etcd, namespace)
    assert history.stale == [], history.stale[:10]
    assert history.unmarked == [], history.unmarked[:10]
    moved = [path for path, takes in history.takes.items() if len(takes) > 1]
    assert len(moved) >= 10, f"only {len(moved)} partitions moved"
    for path, takes in history.takes.items():
        assert [epoch for _revision, epoch in takes] == list(range(1, len(takes) + 1)), path


async def test_a_promise_settled_through_a_third_node_reaches_its_awaiter_after_a_sigkill(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    """Invocations on node A await promises of the free family owned by node X; the
    promises are resolved through node C, which owns neither. One is resolved just before
    A is SIGKILLed, one just after (its delivery to A's partition waits for the new owner).
    Both invocations finish on a survivor with the resolved values."""
    groups = ["default,helpers"] * 3
    async with start_cluster(Nodes(tmp_path), etcd, groups) as cluster:
        await live_nodes(cluster.clients[0], 3)
        listing = await cluster.clients[0].nodes()
        assert listing.partitions is not None
        names = [node.name for node in cluster.members]

        def free_owner(promise_id: str) -> str | None:
            return listing.owners[FREE][partition_index(promise_id, listing.partitions or 0)]

        # i % 7 == 0 makes ``mixed`` await promise ext-{i}; i % 5 != 0 keeps it off rpc.
        owner_a = "n0"
        picked: list[tuple[str, int, str]] = []  # (workflow id, i, the promise's owner)
        for i in (i for i in range(7, 7000, 7) if i % 5):
            x = free_owner(f"ext-{i}")
            if x == owner_a or x is None:
                continue
            id = next(
                f"aw{i}-{k}"
                for k in itertools.count()
                if listing.owner(f"aw{i}-{k}", "mixed") == owner_a
            )
            picked.append((id, i, x))
            if len(picked) == 2:
                break
        by_name = dict(zip(names, cluster.clients, strict=True))
        a = cluster.members[names.index(owner_a)]
        for id, i, _x in picked:
            await by_name[owner_a].start(id, "mixed", [i, 0.0], {})

        async def created(promise_id: str) -> bool:
            try:
                await cluster.clients[1].promise(promise_id)
            except PromiseNotFoundError:
                return False
            return True

        for _id, i, _x in picked:
            await eventually(lambda i=i: created(f"ext-{i}"), f"ext-{i} to be created")
        (before_id, before_i, x0), (after_id, after_i, x1) = picked

        def third(x: str) -> str:
            """The node that owns neither the awaiting invocation nor promise owner ``x``."""
            return next(n for n in names if n not in (owner_a, x))

        await by_name[third(x0)].resolve(f"ext-{before_i}", before_i)
        a.process.send_signal(signal.SIGKILL)
        a.process.wait(timeout=10)
        await by_name[third(x1)].resolve(f"ext-{after_i}", after_i)

        survivor = by_name[third(x0)]
        assert await outcome(survivor, before_id, within=20) == mixed_result(before_i)
        assert await outcome(survivor, after_id, within=20) == mixed_result(after_i)


async def test_the_leader_compacts_etcd_history_and_the_cluster_carries_on(
    tmp_path: Path,
) -> None:
    """With ``--etcd-compact-every 1`` (its own etcd: compaction is etcd-wide), the leader
    compacts the history its writes made (a fresh etcd keeps it all otherwise): the early
    revisions are gone from etcd, and workflows started afterwards, through either node,
    still finish."""
    groups = ["default,helpers"] * 2
    with EtcdCluster(tmp_path / "etcd", size=1) as etcd:
        async with start_cluster(
            Nodes(tmp_path), etcd, groups, TTL, "--etcd-compact-every", "1"
        ) as cluster:
            clients, namespace = cluster.clients, cluster.namespace
            await live_nodes(clients[0], 2)
            for i in range(20):
                await clients[i % 2].start(f"c{i}", "mixed", [i * 7 + 1, 0.0], {})
            for i in range(20):
                assert await outcome(clients[i % 2], f"c{i}", within=10) == mixed_result(i * 7 + 1)

            async def compacted() -> bool:
                ran = etcdctl(etcd.endpoints, "get", "--rev=2", f"/dawait/{namespace}/N/meta")
                return "compacted" in ran.stderr

            await eventually(compacted, "the leader to compact etcd", within=15, every=0.5)
            for i in range(20, 40):
                await clients[i % 2].start(f"c{i}", "mixed", [i * 7 + 1, 0.0], {})
            for i in range(40):
                assert await outcome(clients[i % 2], f"c{i}", within=10) == mixed_result(i * 7 + 1)
            assert any("compacted etcd to revision" in node.stderr() for node in cluster.members)
