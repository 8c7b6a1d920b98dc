"""Resonate's official Python SDK against a partitioned cluster: three real ``dawait serve
--etcd`` node processes on real etcd, SDK worker and client processes each connected to one
node over 127.0.0.1. Whatever node an SDK talks to, each request is answered by the owner
of its partition and pushes reach the node holding the worker's poll stream; a node
SIGKILLed under a running workflow loses nothing.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dawait.core._partitions import FREE, partition_index
from tests.etcd import EtcdCluster
from tests.integration.clustering import Cluster, live_nodes, serve_args, start_cluster
from tests.integration.resonate.test_python_sdk import Sdk
from tests.integration.resonate.test_typescript_sdk import TsSdk
from tests.integration.served import APP, Nodes, wait_until
from tests.polling import eventually


@pytest.fixture
async def cluster(nodes: Nodes, etcd: EtcdCluster) -> AsyncIterator[Cluster]:
    async with start_cluster(nodes, etcd, ["default"] * 3, app=APP) as running:
        await live_nodes(running.clients[0], 3)

        async def balanced() -> bool:
            return all([(await c.nodes()).balanced for c in running.clients])

        await eventually(balanced, "every partition owned", within=15, every=0.1)
        yield running


@pytest.fixture
def sdks(sdk: Path, cluster: Cluster, tmp_path: Path) -> Iterator[Sdk]:
    running = Sdk(sdk, cluster.members[2], tmp_path)  # clients talk to n2
    try:
        yield running
    finally:
        running.stop()


async def owner_of(cluster: Cluster, id: str) -> str | None:
    """The node owning the partition of an SDK's root ``id`` (the free family's)."""
    listing = await cluster.clients[0].nodes()
    assert listing.partitions is not None
    return listing.owners[FREE][partition_index(id, listing.partitions)]


async def id_owned_by(cluster: Cluster, prefix: str, node_id: str) -> str:
    for k in range(1000):
        if await owner_of(cluster, f"{prefix}{k}") == node_id:
            return f"{prefix}{k}"
    raise AssertionError(f"no id {prefix}N in a partition of {node_id}")


async def test_workflows_whichever_node_the_sdk_talks_to(sdks: Sdk, cluster: Cluster) -> None:
    n0, n1, _n2 = cluster.members
    sdks.worker("w", n0.url)
    sdks.worker("w", n1.url)
    sdks.worker("other", n1.url)
    ids = [f"cl-steps-{k}" for k in range(6)]
    for id in ids:
        assert await sdks.rpc("w", id, "steps", 3) == {"resolved": [0, 2, 4]}
    assert len({await owner_of(cluster, id) for id in ids}) >= 2  # owned by several nodes
    assert sorted(id for id, _ in sdks.ran("double")) == sorted(
        f"{id}:{k}" for id in ids for k in (1, 2, 3)
    )
    # The same id again: the recorded result, no step runs again.
    assert await sdks.rpc("w", ids[0], "steps", 3) == {"resolved": [0, 2, 4]}
    assert len(sdks.ran("double")) == 18
    assert await sdks.rpc("w", "cl-sleep", "sleeper", 300) == {"resolved": "slept"}
    assert await sdks.rpc("w", "cl-calls", "calls", "other", 5) == {"resolved": 15}
    # An external promise resolved by a client of another node.
    waiting = asyncio.ensure_future(sdks.rpc("w", "cl-approve", "approval", "ann"))
    await wait_until("the workflow to wait on its promise", lambda: bool(sdks.ran("waiting")))
    ((promise_id, _),) = sdks.ran("waiting")
    sdks.node = n0
    assert await sdks.call("resolve", promise_id, '"yes"') == {"state": "resolved"}
    assert await waiting == {"resolved": {"who": "ann", "decision": "yes"}}
    # dawait's API on any node sees the SDK's runs.
    view = await cluster.clients[1].invocation("cl-calls")
    assert (view.state, view.result) == ("resolved", 15)


async def test_dawait_and_the_sdk_call_each_other(sdks: Sdk, cluster: Cluster) -> None:
    n0, n1, _n2 = cluster.members
    sdks.worker("pyw", n1.url)
    http = cluster.clients[0]
    ids = [f"cl-dw-{k}" for k in range(4)]
    for id in ids:
        await http.start(id, "via_worker", ["pyw", 7], {})
    for id in ids:
        result = await http.result(id, wait=30)
        assert (result.state, result.result) == ("resolved", 21)
    assert sorted(id for id, _ in sdks.ran("triple")) == [f"{id}:1" for id in ids]
    # The other way: served_app's `add`, registered in the nodes' group "default".
    sdks.node = n0
    assert await sdks.rpc("default", "cl-add", "add", 2, 3) == {"resolved": 5}
    assert (await http.tree("cl-add")).children[0].function == "plus"  # dawait's own step


async def test_the_owner_sigkilled_mid_step_loses_nothing(sdks: Sdk, cluster: Cluster) -> None:
    n0, n1, _n2 = cluster.members
    sdks.worker("k", n0.url)
    id = await id_owned_by(cluster, "cl-owner-dies-", "n1")
    run = asyncio.ensure_future(sdks.rpc("k", id, "survives", 3000))
    await wait_until("the long step to start", lambda: bool(sdks.ran("slow")))
    n1.process.send_signal(signal.SIGKILL)
    n1.process.wait(timeout=10)
    assert await run == {"resolved": [2, 3000, 4]}
    # Completed steps are not run again; the step under way finished once.
    assert [i for i, _ in sdks.ran("double")] == [f"{id}:1", f"{id}:3"]
    assert [i for i, _ in sdks.ran("slow-done")] == [f"{id}:2"]
    assert await owner_of(cluster, id) in ("n0", "n2")
    view = await cluster.clients[2].invocation(id)
    assert view.state == "resolved"


async def test_the_node_the_worker_talks_to_sigkilled_and_restarted_loses_nothing(
    sdks: Sdk, cluster: Cluster, etcd: EtcdCluster
) -> None:
    n0, _n1, _n2 = cluster.members
    worker = sdks.worker("k", n0.url)
    id = await id_owned_by(cluster, "cl-own-node-dies-", "n0")  # its node and its owner
    run = asyncio.ensure_future(sdks.rpc("k", id, "survives", 3000))
    await wait_until("the long step to start", lambda: bool(sdks.ran("slow")))
    n0.process.send_signal(signal.SIGKILL)
    n0.process.wait(timeout=10)
    port = int(n0.url.rsplit(":", 1)[1])  # the same node id and address: the SDK reconnects
    args = serve_args(etcd, cluster.namespace, "n0", port, "default", app=APP)
    again = cluster.nodes.spawn("n0-again", *args)
    cluster.nodes.wait_listening(again)
    assert await run == {"resolved": [2, 3000, 4]}
    assert [i for i, _ in sdks.ran("double")] == [f"{id}:1", f"{id}:3"]
    assert sdks.ran("slow-done") == [(f"{id}:2", worker.pid)]  # its lease held throughout
    assert (await cluster.clients[1].invocation(id)).state == "resolved"


async def test_a_worker_sigkilled_finishes_on_a_worker_of_another_node(
    sdks: Sdk, cluster: Cluster
) -> None:
    n0, _n1, n2 = cluster.members
    first = sdks.worker("k", n0.url)
    run = asyncio.ensure_future(sdks.rpc("k", "cl-worker-dies", "survives", 1500))
    await wait_until("the long step to start", lambda: bool(sdks.ran("slow")))
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    second = sdks.worker("k", n2.url)  # its lease ends: pushed to the worker on n2
    assert await run == {"resolved": [2, 1500, 4]}
    assert sdks.ran("double") == [("cl-worker-dies:1", first.pid), ("cl-worker-dies:3", second.pid)]
    assert sdks.ran("slow-done") == [("cl-worker-dies:2", second.pid)]


async def test_200_concurrent_runs(sdks: Sdk, cluster: Cluster) -> None:
    n0, n1, _n2 = cluster.members
    sdks.worker("w", n0.url)
    sdks.worker("w", n1.url)
    assert await sdks.call("many", "w", "cl-many-", "200") == {"right": 200}
    runs = sdks.ran("double")
    assert len(runs) == 400
    assert len(set(runs)) == 400
    assert {pid for _, pid in runs} == {p.pid for p in sdks.workers}


async def test_a_schedule_fires_on_the_cluster(sdks: Sdk, cluster: Cluster) -> None:
    n0, _n1, _n2 = cluster.members
    sdks.worker("w", n0.url)
    created = await sdks.call("schedule", "w", "cl-every", "* * * * * *", "tick")
    assert created == {"created": "cl-every"}
    await wait_until("three firings", lambda: len(sdks.ran("tick")) >= 3)
    ids = [id for id, _ in sdks.ran("tick")]
    assert len(set(ids)) == len(ids)  # one promise per slot, whichever node owns it
    assert (await cluster.clients[1].invocation(ids[0])).state == "resolved"
    assert await sdks.call("schedule-delete", "cl-every") == {"deleted": "cl-every"}
    assert "404" in (await sdks.call("schedule-get", "cl-every"))["error"]


async def test_typescript_and_python_workers_on_different_nodes(
    sdks: Sdk, cluster: Cluster, node_js: str
) -> None:
    n0, n1, n2 = cluster.members
    sdks.worker("pyw", n0.url)
    ts = TsSdk(node_js, n1, sdks.effects)
    try:
        ts.worker("tsw")
        ts.node = n2  # its clients talk to another node
        assert await ts.rpc("tsw", "cl-ts-steps", "steps", 3) == {"resolved": [0, 2, 4]}
        assert await ts.rpc("tsw", "cl-ts-calls", "calls", "pyw", 4) == {"resolved": 12}
        assert await sdks.rpc("pyw", "cl-py-calls", "calls", "tsw", 5) == {"resolved": 15}
        assert {id: pid for id, pid in sdks.ran("triple")} == {
            "cl-ts-calls:0": sdks.workers[0].pid,
            "cl-py-calls:1": ts.workers[0].pid,
        }
    finally:
        ts.stop()
