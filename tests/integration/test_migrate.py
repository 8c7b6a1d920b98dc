"""A namespace written by today's single-node etcd store (layout 1: every record directly
under ``/dawait/{namespace}/``) is refused by a cluster node with a message naming the
migration command; ``dawait migrate`` (the real CLI) moves it into partitions in place, and
a node then finishes what was in flight without rerunning recorded steps."""

from __future__ import annotations

import asyncio
import os

import pytest

from dawait import Resonate
from dawait.cluster._etcd import Etcd
from dawait.cluster._node import LayoutError
from dawait.core._listing import InvocationQuery
from dawait.errors import PromiseNotFoundError
from tests.etcd import EtcdCluster
from tests.integration import migrate_app
from tests.integration.served import dawait
from tests.polling import eventually


async def test_a_layout_1_namespace_is_refused_then_migrated_in_place(etcd: EtcdCluster) -> None:
    namespace = f"migrate-{os.getpid()}"
    endpoint = etcd.endpoints[0].removeprefix("http://")
    migrate_app.RAN.clear()

    before = migrate_app.register(Resonate(store=f"etcd://{endpoint}?namespace={namespace}"))
    async with before:
        for x in range(5):
            await before.start(f"f{x}", "flow", x)
        for x in range(5):  # each waits on its external promise: steps and rpc recorded

            async def waiting(x: int = x) -> bool:
                try:
                    await before.promises.get(f"ext-{x}")
                except PromiseNotFoundError:
                    return False
                return True

            await eventually(waiting, f"f{x} to wait on ext-{x}")
        await before.promises.resolve("ext-0", 100)
        assert await (await before.start("f0", "flow", 0)).result() == 100
    ran_before = sorted(migrate_app.RAN)
    assert len(ran_before) == 10  # flow-x and double-x for each

    node = migrate_app.register(Resonate(etcd=etcd.endpoints, namespace=namespace, node_id="n1"))
    with pytest.raises(
        LayoutError, match=f"dawait migrate --etcd ENDPOINTS --namespace {namespace}"
    ):
        await node.open()

    ran = await dawait(
        "migrate", "--app", "tests.integration.migrate_app:app", "--etcd", endpoint,
        "--namespace", namespace, "--partitions", "8",
    )  # fmt: skip
    assert ran.code == 0, ran
    assert "moved" in ran.out
    client = Etcd(etcd.endpoints)
    await client.connect()
    try:
        _revision, left = await client.snapshot(f"/dawait/{namespace}/p/")
        assert left == []
    finally:
        await client.close()

    after = migrate_app.register(Resonate(etcd=etcd.endpoints, namespace=namespace, node_id="n1"))
    async with after:
        # The migrated invocations are listed (their partitions indexed when taken).
        async def listed() -> bool:
            query = InvocationQuery(function="flow")
            page = await after.local.engine.store.search_invocations(query, now=0)
            return sorted(r.id for r in page.promises) == [f"f{x}" for x in range(5)]

        await eventually(listed, "the migrated invocations to be listed")
        assert await (await after.start("f0", "flow", 0)).result() == 100
        for x in range(1, 5):
            await after.promises.resolve(f"ext-{x}", 100)
        handles = [await after.start(f"f{x}", "flow", x) for x in range(1, 5)]
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 20)
        assert results == [x + 2 * x + 100 for x in range(1, 5)]
    # Nothing recorded before ran again.
    assert sorted(migrate_app.RAN) == ran_before
