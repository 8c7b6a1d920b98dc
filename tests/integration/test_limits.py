"""The limits a node keeps so that one payload, one client or one fd shortage cannot take
it down (issue 11): real ``dawait serve`` processes, on SQLite and on real etcd."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from dawait.cluster._etcd_store import ETCD_MAX_PAYLOAD
from dawait.errors import PayloadTooLargeError
from dawait.node._client import HttpClient
from tests.etcd import EtcdCluster, free_port
from tests.integration.clustering import TTL, serve_args, start_cluster
from tests.integration.served import APP, TOKEN, Nodes

LIMIT = 64 * 1024


async def test_a_payload_over_the_limit_fails_naming_it_and_the_node_carries_on(
    nodes: Nodes,
) -> None:
    store = f"sqlite:///{nodes.dir / 'a.db'}"
    node = nodes.start(
        "n", "--app", APP, "--port", "0", "--store", store, "--token", TOKEN,
        "--max-payload", "64KiB",
    )  # fmt: skip
    async with HttpClient(node.url, token=TOKEN, timeout=30) as api:
        # A step whose result is over the limit fails, once, with an error naming it; the
        # invocation (which does not catch it) is rejected with it.
        done, _ = await api.start("big", "blob", [LIMIT + 1], {}, wait=20)
        assert done.state == "rejected"
        assert done.error is not None
        assert done.error.type == "dawait.errors.PayloadTooLargeError"
        assert done.error.message == (
            f"the result of step make_text (big:1): {LIMIT + 3:,} bytes, over the store's "
            f"payload limit of {LIMIT:,} bytes (max_payload); keep large data in a blob store "
            "and pass its key"
        )
        step = await api.promise("big:1")
        assert step.state == "rejected"
        # Just under the limit is stored (the JSON string's two quotes count).
        fits, _ = await api.start("fits", "blob", [LIMIT - 2], {}, wait=20)
        assert (fits.state, fits.result) == ("resolved", LIMIT - 2)

        # An invocation's own result (bytes counted, not characters: "é" is two), and
        # an argument list.
        own, _ = await api.start("own", "repeat", ["é", LIMIT // 2], {}, wait=20)
        assert own.state == "rejected"
        assert own.error is not None
        assert own.error.message.startswith(f"the result of repeat (own): {LIMIT + 2:,} bytes")
        with pytest.raises(PayloadTooLargeError, match=r"the arguments of repeat \(args\): "):
            await api.start("args", "repeat", ["y" * LIMIT, 1], {})
        with pytest.raises(PayloadTooLargeError, match="the data of promise p1: 65,538 bytes"):
            await api.create_promise("p1", data="z" * LIMIT)
        await api.create_promise("p2")
        with pytest.raises(PayloadTooLargeError, match="the value of promise p2: 65,538 bytes"):
            await api.resolve("p2", "z" * LIMIT)
        assert (await api.promise("p2")).state == "pending"
        # An error as large as any message is recorded cut short, so it always fits.
        failed, _ = await api.start("loud", "shout", ["!", 2 * LIMIT], {}, wait=20)
        assert failed.state == "rejected"
        assert failed.error is not None
        assert failed.error.message.endswith("more characters cut)")

        added, _ = await api.start("after", "add", [1, 2], {}, wait=20)
        assert (added.state, added.result) == ("resolved", 3)
        async with aiohttp.ClientSession() as session, session.get(f"{node.url}/readyz") as ready:
            assert ready.status == 200
    assert "Traceback" not in node.stderr()


async def test_a_cluster_node_fails_an_oversize_step_and_packs_large_ones_under_etcds_limit(
    nodes: Nodes, etcd: EtcdCluster
) -> None:
    """A step result over etcd's request limit once left its invocation pending forever and
    its node retrying "request is too large"; results just under the payload limit, made of
    quotes (escaped twice over in the records), many at once, all fit."""
    async with start_cluster(nodes, etcd, ["default"], TTL, "--app", APP) as cluster:
        api = cluster.clients[0]
        done, _ = await api.start("huge", "blob", [2_000_000], {}, wait=30)
        assert done.state == "rejected"
        assert done.error is not None
        assert f"over the store's payload limit of {ETCD_MAX_PAYLOAD:,} bytes" in (
            done.error.message
        )
        # Each result's JSON is 2n + 2 bytes: just under the limit.
        n = (ETCD_MAX_PAYLOAD - 2) // 2
        starts = [api.start(f"quotes{k}", "blob", [n, '"'], {}, wait=60) for k in range(12)]
        for view, _ in await asyncio.gather(*starts):
            assert (view.state, view.result) == ("resolved", n), view
        added, _ = await api.start("after", "add", [1, 2], {}, wait=20)
        assert added.result == 3
        logged = cluster.members[0].stderr()
    assert "too large" not in logged
    assert "Traceback" not in logged


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("12parsecs", "'12parsecs' is not a size"),
        ("1MiB", "over what PartitionedStore"),
    ],
)
async def test_a_payload_limit_that_cannot_work_is_a_usage_error(
    nodes: Nodes, etcd: EtcdCluster, value: str, why: str
) -> None:
    args = serve_args(etcd, "limits", "n0", free_port(), "default")
    node = nodes.spawn("n", *args, "--max-payload", value)
    assert await node.exit_code(within=60) == 2
    assert why in node.stderr()
    assert "Traceback" not in node.stderr()
