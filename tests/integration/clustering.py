"""What the cluster tests share: a cluster of real ``dawait serve --etcd`` node processes
on 127.0.0.1 against real etcd (tests/etcd.py), ways to wait on it, and an audit of what
the nodes wrote to etcd, read from its history."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass

from dawait.cluster._etcd import Etcd, Write
from dawait.node._client import HttpClient
from tests.etcd import EtcdCluster, free_ports
from tests.integration.served import TOKEN, Node, Nodes
from tests.polling import eventually

APP = "tests.integration.cluster_app:app"
TTL = 2
"""The nodes' lease TTL (seconds): how long a dead node's invocations wait for takeover."""

namespaces = itertools.count()


@dataclass
class Cluster:
    nodes: Nodes
    members: list[Node]
    clients: list[HttpClient]
    namespace: str


def serve_args(
    etcd: EtcdCluster,
    namespace: str,
    node_id: str,
    port: int,
    groups: str,
    ttl: int = TTL,
    app: str = APP,
) -> list[str]:
    return [
        "--app", app, "--etcd", ",".join(etcd.endpoints), "--namespace", namespace,
        "--node-id", node_id, "--port", str(port), "--lease-ttl", str(ttl),
        "--groups", groups, "--token", TOKEN, "--grace-period", "3",
    ]  # fmt: skip


@contextlib.asynccontextmanager
async def start_cluster(
    nodes: Nodes, etcd: EtcdCluster, groups: list[str], ttl: int = TTL, *extra: str, app: str = APP
) -> AsyncIterator[Cluster]:
    """One node per entry of ``groups`` (serving those groups) of ``app``, each given
    ``extra`` options too; their clients open."""
    namespace = f"cluster{next(namespaces)}-{os.getpid()}"
    ports = free_ports(len(groups))
    members = [
        nodes.spawn(f"n{k}", *serve_args(etcd, namespace, f"n{k}", port, group, ttl, app), *extra)
        for k, (port, group) in enumerate(zip(ports, groups, strict=True))
    ]
    for node in members:
        nodes.wait_listening(node)
    clients = [HttpClient(node.url, token=TOKEN) for node in members]
    for client in clients:
        await client.open()
    try:
        yield Cluster(nodes, members, clients, namespace)
    finally:
        for client in clients:
            await client.close()
        nodes.kill_all()


async def live_nodes(client: HttpClient, count: int) -> list[str]:
    listing = None
    leaders: list[str] = []

    async def converged() -> bool:
        nonlocal listing, leaders
        listing = await client.nodes()
        leaders = [n.node_id for n in listing.items if n.leader]
        return len(listing.items) == count and len(leaders) == 1

    await eventually(
        converged,
        f"{count} live nodes and one leader",
        within=10,
        every=0.05,
        failure=lambda message: AssertionError(f"{message}: {listing}"),
    )
    return leaders


async def outcome(client: HttpClient, id: str, within: float) -> object:
    result = None

    async def settled() -> bool:
        nonlocal result
        result = await client.result(id, wait=1)  # a long poll: no pause between two
        return result.state != "pending"

    await eventually(settled, f"{id} to settle", within=within, every=0)
    assert result is not None
    assert result.state == "resolved", f"{id}: {result}"
    return result.result


@dataclass
class Audit:
    """What etcd's history says of a namespace's partitions (``audit``)."""

    takes: dict[str, list[tuple[int, int]]]
    """Partition path -> (revision, epoch) of each take, in order."""
    writes: int
    """Revisions that changed a partition's promises or tasks."""
    stale: list[str]
    """Writes whose marker's epoch was not the partition's epoch at that revision."""
    unmarked: list[str]
    """Writes of promises or tasks with no marker of the partition's owner in the same
    transaction."""


async def audit(etcd: EtcdCluster, namespace: str) -> Audit:
    """Read every change ever made under the namespace's partitions from etcd's history (the
    test etcd is never compacted) and check each write against the owner of its partition
    at its revision: every transaction that changes a partition's promises or tasks writes
    the owner's marker, and the marker's epoch is the one the latest take recorded."""
    prefix = f"/dawait/{namespace}/P/"
    client = Etcd(etcd.endpoints)
    await client.connect()
    try:
        end = prefix + "~audit/0/end"  # written last: the history is read up to it
        await client.commit([], [Write(end, b"")])
        changes: dict[tuple[str, int], list[tuple[str, bytes | None]]] = defaultdict(list)
        async for kv in client.watch(prefix, 1):
            if kv.key == end:
                break
            # A partition's path is two segments: family (may be empty) and index.
            family, index, rest = kv.key[len(prefix) :].split("/", 2)
            changes[(f"{family}/{index}", kv.mod_revision)].append((rest, kv.value))
    finally:
        await client.close()
    takes: dict[str, list[tuple[int, int]]] = defaultdict(list)
    epoch: dict[str, int] = {}
    writes = 0
    stale: list[str] = []
    unmarked: list[str] = []
    for (path, revision), changed in sorted(changes.items(), key=lambda item: item[0][1]):
        for rest, value in changed:
            if rest == "epoch" and value is not None:
                epoch[path] = json.loads(value)["epoch"]
                takes[path].append((revision, epoch[path]))
        records = [rest for rest, value in changed if rest[:2] in ("p/", "t/")]
        if not records:
            continue
        writes += 1
        markers = [json.loads(v)["epoch"] for rest, v in changed if rest[:2] == "x/" and v]
        if not markers:
            unmarked.append(f"{path}@{revision}: {records[:3]}")
        elif markers != [epoch.get(path)]:
            stale.append(f"{path}@{revision}: marker epochs {markers}, epoch {epoch.get(path)}")
    return Audit(dict(takes), writes, stale, unmarked)
