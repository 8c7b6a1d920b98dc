"""The limits a node keeps so that one payload, one client or one fd shortage cannot take
it down (issue 11): real ``dawait serve`` processes, on SQLite and on real etcd."""

from __future__ import annotations

import asyncio
import itertools
import signal
from typing import Any

import aiohttp
import pytest

from dawait.cluster._etcd_store import ETCD_MAX_PAYLOAD
from dawait.errors import PayloadTooLargeError
from dawait.node._client import HttpClient
from tests.etcd import EtcdCluster, free_port
from tests.integration.clustering import TTL, live_nodes, serve_args, start_cluster
from tests.integration.served import APP, TOKEN, Nodes
from tests.polling import eventually

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


async def _request(host: str, port: int, raw: bytes) -> tuple[asyncio.StreamReader, Any]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(raw)
    await writer.drain()
    return reader, writer


async def test_at_its_descriptor_limit_a_node_answers_at_once_and_recovers_by_itself(
    nodes: Nodes,
) -> None:
    """400 long-polls against a node limited to 256 descriptors: the node holds some, answers
    the rest at once (pending with Retry-After, or 503 and closed), keeps its store
    writing (a timer fires meanwhile), and once they go it serves as before."""
    store = f"sqlite:///{nodes.dir / 'a.db'}"
    node = nodes.start("n", "--app", APP, "--port", "0", "--store", store, fds=256)
    host, port = node.url.removeprefix("http://").split(":")
    async with HttpClient(node.url, timeout=30) as api:
        await api.start("asks", "approve", ["ann"], {})
        await api.start("napper", "nap", [2], {})
    poll = b"GET /invocations/asks/result?wait=60 HTTP/1.1\r\nHost: x\r\n\r\n"
    held = await asyncio.gather(*(_request(host, int(port), poll) for _ in range(400)))
    try:
        statuses = await asyncio.gather(
            *(_status_within(reader, 3.0) for reader, _ in held), return_exceptions=True
        )
        answered = [s for s in statuses if isinstance(s, int)]
        # 256 descriptors less the reserve: 192 connections, 96 of them long-polls.
        assert 150 <= len(answered) <= 400 - 80, statuses
        assert set(answered) <= {200, 503}, statuses
        assert answered.count(200) >= 90  # pending, at once, with Retry-After
        async with aiohttp.ClientSession() as session:
            start = asyncio.get_running_loop().time()
            async with session.get(f"{node.url}/healthz") as health:
                assert health.status in (200, 503)
            assert asyncio.get_running_loop().time() - start < 3.0
    finally:
        for _reader, writer in held:
            writer.transport.abort()

    async def serving() -> bool:
        async with aiohttp.ClientSession() as session, session.get(f"{node.url}/healthz") as r:
            return r.status == 200

    await eventually(serving, "the node to take connections again", within=5)
    async with HttpClient(node.url, timeout=30) as api:
        done = await api.result("napper", wait=20)
        assert done.state == "resolved"  # its timer's write went through meanwhile
        added, _ = await api.start("after", "add", [1, 2], {}, wait=20)
        assert added.result == 3
        async with aiohttp.ClientSession() as session, session.get(f"{node.url}/readyz") as ready:
            assert ready.status == 200
    logged = node.stderr()
    assert "Traceback" not in logged
    assert len(logged) < 50_000


async def _status_within(reader: asyncio.StreamReader, seconds: float) -> int:
    line = await asyncio.wait_for(reader.readline(), seconds)
    return int(line.split()[1])


async def test_slow_clients_are_closed_after_the_read_timeouts(nodes: Nodes) -> None:
    node = nodes.start(
        "n", "--app", APP, "--port", "0", "--store", "memory://",
        "--header-timeout", "1", "--body-timeout", "1",
    )  # fmt: skip
    host, port = node.url.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()

    async def trickle_headers() -> float:
        began = loop.time()
        reader, writer = await _request(host, int(port), b"G")
        try:
            for byte in b"ET /healthz HTTP/1.1\r\nHost: x\r\n":
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.2)
                if reader.at_eof():
                    break
        except ConnectionError:
            pass
        finally:
            writer.transport.abort()
        return loop.time() - began

    async def trickle_body() -> tuple[int, float]:
        began = loop.time()
        head = (
            b"POST /promises HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        reader, writer = await _request(host, int(port), head)
        try:
            status = await _status_within(reader, 10)
        finally:
            writer.transport.abort()
        return status, loop.time() - began

    headers = await asyncio.gather(*(trickle_headers() for _ in range(20)))
    bodies = await asyncio.gather(*(trickle_body() for _ in range(20)))

    assert all(took < 4.0 for took in headers), headers  # 33 bytes at 5/s: ~6.6 s if let be
    assert all(status == 408 and took < 4.0 for status, took in bodies), bodies
    async with HttpClient(node.url, timeout=10) as api:
        assert (await api.health()).status == "ok"


async def test_a_start_forwarded_to_a_frozen_owner_is_answered_within_the_wait_and_2_s(
    nodes: Nodes, etcd: EtcdCluster
) -> None:
    """The kernel accepts connections for a SIGSTOPped process, so the forward connects and
    no answer comes: the receiving node answers 503 (retry) after the wait and 2 s, where it
    once took 10.7 s (wait 0) and 18.4 s (wait 5)."""
    async with start_cluster(nodes, etcd, ["default"] * 2, 30, "--app", APP) as cluster:
        await live_nodes(cluster.clients[0], 2)
        listing = await cluster.clients[0].nodes()
        id = next(f"fz{i}" for i in itertools.count() if listing.owner(f"fz{i}", "add") == "n1")
        frozen = cluster.members[1]
        loop = asyncio.get_running_loop()
        frozen.process.send_signal(signal.SIGSTOP)
        try:
            async with aiohttp.ClientSession() as session:
                for wait in (0, 2):
                    began = loop.time()
                    async with session.post(
                        f"{cluster.members[0].url}/invocations?wait={wait}",
                        json={"id": id, "function": "add", "args": [1, 2]},
                        headers={"Authorization": f"Bearer {TOKEN}"},
                    ) as response:
                        took = loop.time() - began
                        body = await response.json()
                    assert response.status == 503, body
                    assert response.headers["Retry-After"] == "1"
                    assert "node n1, did not answer within" in body["message"]
                    assert took < wait + 3.0, took
        finally:
            frozen.process.send_signal(signal.SIGCONT)
        # The retry a client makes goes through (the start is idempotent by id).
        view, _created = await cluster.clients[0].start(id, "add", [1, 2], {}, wait=20)
        assert (view.state, view.result) == ("resolved", 3)
