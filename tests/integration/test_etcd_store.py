"""EtcdStore beyond the shared contract: several nodes' stores on one namespace, batching,
and what a node sees of another's writes. Real etcd processes (tests/etcd.py)."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from dawait import Context, Resonate
from dawait._resonate import open_store
from dawait.cluster._etcd import Compare, Etcd, EtcdError, Write, cancel_task
from dawait.cluster._etcd_store import EtcdStore
from dawait.core._promise import Settle, SettleOutcome, Value
from dawait.core._task import TaskState
from dawait.errors import NotSettleableError, StoreError
from dawait.runtime._store import CreatePromise
from tests.etcd import EtcdCluster
from tests.polling import eventually

_namespaces = itertools.count()


@pytest.fixture
def endpoints(request: pytest.FixtureRequest) -> str | list[str]:
    configured = os.environ.get("DAWAIT_TEST_ETCD")
    if configured:
        return configured
    endpoints: list[str] = request.getfixturevalue("etcd").endpoints
    return endpoints


@pytest.fixture
async def nodes(endpoints: str | list[str]) -> AsyncIterator[list[EtcdStore]]:
    namespace = f"nodes{next(_namespaces)}-{os.getpid()}"
    # Three nodes sharing one namespace with nothing but compare-and-swap between them.
    stores = [EtcdStore(endpoints, namespace=namespace, exclusive=False) for _ in range(3)]
    for store in stores:
        await store.open()
    try:
        yield stores
    finally:
        for store in stores:
            await store.close()


async def test_concurrent_operations_share_transactions(nodes: list[EtcdStore]) -> None:
    store = nodes[0]
    before = store.transactions

    created = await asyncio.gather(
        *(store.create_promise(CreatePromise(id=f"p{n:03}"), now=0) for n in range(200))
    )

    assert all(result.created for result in created)
    assert store.transactions - before < 50


async def test_one_invocation_id_created_through_three_nodes_at_once_is_created_once(
    nodes: list[EtcdStore],
) -> None:
    request = CreatePromise(id="inv", param=Value(data='{"func":"f","args":[],"kwargs":{}}'))
    results = await asyncio.gather(
        *(
            store.create_invocation(request, pid=f"node{n}", ttl=None, now=0)
            for n, store in enumerate(nodes)
        )
    )

    assert sum(result.created for result in results) == 1
    assert sum(result.task is not None for result in results) == 1
    for store in nodes:
        task = await store.get_task("inv")
        assert task is not None
        assert task.pid == next(r.task.pid for r in results if r.task is not None)


async def test_racing_settles_from_several_nodes_settle_once(nodes: list[EtcdStore]) -> None:
    await nodes[0].create_promise(CreatePromise(id="race"), now=0)
    for store in nodes:

        async def replicated(store: EtcdStore = store) -> bool:
            return store.replica.get_promise("race") is not None

        await eventually(replicated, "the promise on every node")

    results = await asyncio.gather(
        *(
            store.settle_promise("race", event=Settle.RESOLVE, value=Value(data=str(n)), now=1)
            for n, store in enumerate(nodes)
        )
    )

    outcomes = sorted(result.outcome.value for result in results)
    assert outcomes.count(SettleOutcome.SETTLED.value) == 1
    winner = next(r.promise.value.data for r in results if r.outcome is SettleOutcome.SETTLED)
    for store in nodes:
        record = await store.get_promise("race")
        assert record is not None
        assert record.value.data == winner


async def test_a_settle_from_a_node_that_has_not_seen_a_suspend_still_resumes_its_task(
    nodes: list[EtcdStore],
) -> None:
    """Node A parks a task on a promise; node B, whose replica has not seen that yet (its
    watch lags), settles the promise. B's settle must not commit on its stale replica: it
    would find no callback and leave the task suspended for good."""
    a, b = nodes[0], nodes[1]
    await a.create_invocation(CreatePromise(id="wf"), pid="a1", ttl=None, now=0)
    await a.create_promise(CreatePromise(id="wf:1"), now=0)

    async def replicated() -> bool:
        return b.replica.get_promise("wf:1") is not None and "wf" in b.replica.tasks

    await eventually(replicated, "the invocation and its promise on node B")
    assert b._watcher is not None
    await cancel_task(b._watcher)  # B's watch lags: it sees nothing from here on
    assert await a.suspend_task("wf", awaited=["wf:1"], now=1)
    settled = await b.settle_promise("wf:1", event=Settle.RESOLVE, value=Value(data="1"), now=2)
    assert settled.outcome is SettleOutcome.SETTLED
    assert [task.id for task in settled.resumed] == ["wf"]

    async def resumed() -> bool:
        task = await a.get_task("wf")
        return task is not None and task.state is TaskState.PENDING

    await eventually(resumed, "the suspended task resumed by the settle, on node A")


async def test_a_node_sees_another_nodes_writes_through_its_watch(
    nodes: list[EtcdStore],
) -> None:
    writer, reader = nodes[0], nodes[1]
    await asyncio.gather(
        *(writer.create_promise(CreatePromise(id=f"w{n}"), now=0) for n in range(20))
    )

    async def seen() -> bool:
        page = await reader.search_promises("w*", state=None, limit=100, now=0)
        return len(page.promises) == 20

    await eventually(seen, "the writer's 20 promises in the reader's search")


async def test_the_replica_survives_a_reopen(endpoints: str | list[str]) -> None:
    namespace = f"reopen{next(_namespaces)}-{os.getpid()}"
    first = EtcdStore(endpoints, namespace=namespace)
    await first.open()
    await first.create_promise(CreatePromise(id="kept"), now=0)
    await first.close()

    second = EtcdStore(endpoints, namespace=namespace)
    await second.open()
    try:
        assert await second.get_promise("kept") is not None
        assert (await second.create_promise(CreatePromise(id="kept"), now=0)).created is False
    finally:
        await second.close()


async def test_a_second_node_is_refused_the_namespace_until_the_first_closes(
    endpoints: str | list[str],
) -> None:
    namespace = f"lock{next(_namespaces)}-{os.getpid()}"
    first = EtcdStore(endpoints, namespace=namespace, owner="node-a")
    await first.open()
    second = EtcdStore(endpoints, namespace=namespace, owner="node-b")
    with pytest.raises(StoreError, match="in use by node-a"):
        await second.open()
    await first.close()  # revokes its lease: the namespace is free at once

    await second.open()
    await second.close()


async def test_a_node_that_lost_its_lease_writes_nothing(endpoints: str | list[str]) -> None:
    namespace = f"fence{next(_namespaces)}-{os.getpid()}"
    store = EtcdStore(endpoints, namespace=namespace, owner="node-a")
    await store.open()
    await store.create_promise(CreatePromise(id="before"), now=0)
    # As if the node had stalled past its TTL: etcd ends its lease, and another node
    # takes the namespace.
    admin = Etcd(endpoints)
    await admin.connect()
    await admin.revoke(store._lease)
    taker = EtcdStore(endpoints, namespace=namespace, owner="node-b")
    await taker.open()
    try:
        with pytest.raises(StoreError, match="lost the namespace"):
            await store.create_promise(CreatePromise(id="stale"), now=0)
        with pytest.raises(StoreError, match="lost the namespace"):
            await store.get_promise("before")
        assert await taker.get_promise("stale") is None
        assert await taker.get_promise("before") is not None
    finally:
        await store.close()
        await taker.close()
        await admin.close()


async def test_an_etcd_store_url_opens_an_etcd_store(endpoints: str | list[str]) -> None:
    hosts = endpoints if isinstance(endpoints, str) else ",".join(endpoints)
    hosts = hosts.replace("http://", "")
    store = open_store(f"etcd://{hosts}?namespace=url{next(_namespaces)}-{os.getpid()}")
    assert isinstance(store, EtcdStore)
    with pytest.raises(ValueError, match="namespace"):
        open_store(f"etcd://{hosts}?namespace=a/b")
    with pytest.raises(ValueError, match="unknown option"):
        open_store(f"etcd://{hosts}?fsync=false")


async def test_an_app_runs_workflows_on_etcd_and_remembers_them(
    endpoints: str | list[str],
) -> None:
    hosts = (endpoints if isinstance(endpoints, str) else ",".join(endpoints)).replace(
        "http://", ""
    )
    url = f"etcd://{hosts}?namespace=app{next(_namespaces)}-{os.getpid()}"
    runs: list[int] = []

    async def double(x: int) -> int:
        runs.append(x)
        return 2 * x

    def make() -> Resonate:
        app = Resonate(store=url)

        @app.register(name="twice")
        async def twice(ctx: Context, x: int) -> int:
            y = await ctx.run(double, x)
            await ctx.sleep(0.01)
            return await ctx.run(double, y)

        return app

    async with make() as app:
        results = await asyncio.gather(*(app.run(f"w{n}", "twice", n) for n in range(20)))
    assert results == [4 * n for n in range(20)]
    assert len(runs) == 40

    async with make() as again:  # a new process would do the same: nothing runs again
        assert await again.run("w7", "twice", 7) == 28
    assert len(runs) == 40


async def test_operations_wait_out_an_etcd_outage(tmp_path: Path) -> None:
    """etcd stalls (SIGSTOP) under a batch: the store's transaction times out, it reloads
    until etcd answers, and each operation is answered once, with its write there. (etcd
    may or may not apply the timed-out transaction once it resumes; the marker tells.)"""
    with EtcdCluster(tmp_path, size=1) as cluster:
        store = EtcdStore(Etcd(cluster.endpoints, timeout=0.5), namespace="outage")
        await store.open()
        try:
            await store.create_promise(CreatePromise(id="before"), now=0)
            cluster.pause(0)
            creates = asyncio.gather(
                *(store.create_promise(CreatePromise(id=f"p{n}"), now=0) for n in range(10))
            )

            async def timed_out() -> bool:
                return store.lost_replies >= 1

            await eventually(timed_out, "the store's transaction to time out")
            cluster.resume(0)

            created = await creates
            assert [result.created for result in created] == [True] * 10
            page = await store.search_promises("*", state=None, limit=100, now=0)
            assert sorted(r.id for r in page.promises) == ["before"] + [f"p{n}" for n in range(10)]
        finally:
            cluster.resume(0)
            await store.close()


class _LosingEtcd(Etcd):
    """A real etcd whose first ``lose`` writing transactions' replies are lost after etcd
    applied them (as when the connection drops on the way back)."""

    def __init__(self, endpoints: str | list[str], lose: int) -> None:
        super().__init__(endpoints)
        self.lose = lose

    async def commit(
        self, compares: Sequence[Compare], writes: Sequence[Write]
    ) -> tuple[bool, int]:
        result = await super().commit(compares, writes)
        if writes and self.lose > 0:
            self.lose -= 1
            raise EtcdError(f"{self!r}: reply lost (test)")
        return result


async def test_a_transaction_whose_reply_is_lost_is_answered_from_what_etcd_applied(
    endpoints: str | list[str],
) -> None:
    """etcd applied the batch but its reply never came: the store must not run the batch
    again on the state its own writes made (which would answer "already exists" to the
    creates that did create, and settle twice)."""
    store = EtcdStore(_LosingEtcd(endpoints, lose=0), namespace=f"lost-{os.getpid()}")
    await store.open()
    try:
        await store.create_promise(CreatePromise(id="settle-me"), now=0)
        assert isinstance(store.etcd, _LosingEtcd)
        store.etcd.lose = 2  # the first reply and the first retry's (if any) are lost
        created, settled = await asyncio.gather(
            store.create_promise(CreatePromise(id="new"), now=0),
            store.settle_promise("settle-me", event=Settle.RESOLVE, value=Value(data="1"), now=1),
        )

        assert store.lost_replies >= 1
        assert created.created
        assert settled.outcome is SettleOutcome.SETTLED
        again = await store.settle_promise(
            "settle-me", event=Settle.RESOLVE, value=Value(data="1"), now=2
        )
        assert again.outcome is SettleOutcome.ALREADY_SAME
    finally:
        await store.close()


async def test_two_apps_joined_in_process_share_the_work(endpoints: str | list[str]) -> None:
    """``Resonate(etcd=...)``: two apps in one process are two nodes; invocations started
    through one run on both, and only the leader fires the durable sleeps' timers."""
    namespace = f"joined-{os.getpid()}"
    ran: dict[str, int] = {"a": 0, "b": 0}

    def make(node: str) -> Resonate:
        app = Resonate(etcd=endpoints, namespace=namespace, node_id=node)

        @app.register(name="bump")
        def bump(x: int) -> int:
            ran[node] += 1
            return x + 1

        @app.register(name="flow")
        async def flow(ctx: Context, x: int) -> int:
            y = await ctx.run(bump, x)
            await ctx.sleep(0.05)
            return await ctx.run(bump, y)

        return app

    a, b = make("a"), make("b")
    async with a, b:
        cluster, other = a.cluster, b.cluster
        assert cluster is not None
        assert other is not None

        async def both_members() -> bool:
            members = [m.node_id for m in cluster.members] == ["a", "b"]
            balanced = cluster.balanced and other.balanced
            return members and cluster.leader is not None and balanced

        # Steps run once each: no partition moves (which reruns a step in flight) once
        # both nodes own their share.
        await eventually(both_members, "a to see both nodes and a leader, each its share")
        handles = [await a.start(f"j{i}", "flow", i) for i in range(20)]
        assert [await h.result() for h in handles] == [i + 2 for i in range(20)]
    assert ran["a"] > 0
    assert ran["b"] > 0
    assert sum(ran.values()) == 40
    fired = {
        "a": a._engine.metrics.events["timeouts_fired"],
        "b": b._engine.metrics.events["timeouts_fired"],
    }
    # Each sleep fired once, on the node owning its invocation's partition (both own some).
    assert min(fired.values()) > 0, fired
    assert sum(fired.values()) == 20


async def test_an_invocation_places_only_on_nodes_with_its_version(
    endpoints: str | list[str],
) -> None:
    """A rolling upgrade midway: node a has ``flow`` versions 1 and 2, node b only 1. Starts
    through a run version 2, so each must run on a, whichever node its id hashes to."""
    namespace = f"versions-{os.getpid()}"
    ran: list[str] = []

    a = Resonate(etcd=endpoints, namespace=namespace, node_id="a")
    b = Resonate(etcd=endpoints, namespace=namespace, node_id="b")
    for app, node, versions in ((a, "a", (1, 2)), (b, "b", (1,))):
        for version in versions:

            async def flow(ctx: Context, x: int, node: str = node, version: int = version) -> str:
                ran.append(f"{node}:v{version}")
                return f"{node}:v{version}:{x}"

            app.register(flow, name="flow", version=version)

    async with a, b:
        assert a.cluster is not None
        cluster = a.cluster

        async def both() -> bool:
            return [m.node_id for m in cluster.members] == ["a", "b"]

        await eventually(both, "a to see both nodes")
        handles = [await a.start(f"v{i}", "flow", i) for i in range(12)]
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 20)
    assert results == [f"a:v2:{i}" for i in range(12)]
    assert set(ran) == {"a:v2"}


async def test_a_node_keeps_in_memory_only_what_is_in_flight(
    endpoints: str | list[str],
) -> None:
    """Finished invocations leave the owner's memory; reading, re-starting or settling them
    again reads them back from etcd and gives what was recorded, running nothing again."""
    namespace = f"memory-{os.getpid()}"
    ran: list[int] = []
    app = Resonate(etcd=endpoints, namespace=namespace, node_id="m")

    @app.register(name="step")
    def step(x: int) -> int:
        ran.append(x)
        return x * 2

    @app.register(name="flow")
    async def flow(ctx: Context, x: int) -> int:
        return await ctx.run(step, x) + await ctx.run(step, x + 1)

    async with app:
        cluster = app.cluster
        assert cluster is not None
        handles = [await app.start(f"f{i}", "flow", i) for i in range(50)]
        assert [await h.result() for h in handles] == [4 * i + 2 for i in range(50)]

        def held() -> int:
            return sum(
                len(s.replica.promises) + len(s.replica.tasks) for s in cluster.owned.values()
            )

        await eventually(lambda: _async(held() == 0), "finished trees to leave memory")
        # Each tree: the invocation (its promise and task) and its two steps.
        assert sum(s.evicted for s in cluster.owned.values()) == 50 * 3
        # Back from etcd, as recorded; the same id starts nothing new.
        again = await app.start("f7", "flow", 7)
        assert await again.result() == 30
        assert (await app.promises.get("f7:1")).state == "resolved"
        assert sorted(ran) == sorted([*range(50), *range(1, 51)])
        # Read back to be refused: a step is its engine's to settle, not the API's.
        with pytest.raises(NotSettleableError, match="'f7:1' is a call of 'f7'"):
            await app.promises.reject("f7:1", ValueError("late"))


async def _async(value: bool) -> bool:
    return value
