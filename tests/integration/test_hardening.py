"""One request must not take a node down (issue 11): real ``dawait serve`` processes, on
the memory store, on SQLite and in a cluster on real etcd."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import aiohttp
import pytest

from dawait import Resonate
from dawait.cluster._router import SCAN_LIMIT
from dawait.errors import NotSettleableError, PromiseNotFoundError
from dawait.node._client import ApiError, HttpClient
from tests.etcd import EtcdCluster
from tests.integration.clustering import TTL, start_cluster
from tests.integration.served import APP, TOKEN, Nodes

T = TypeVar("T")

BACKTRACKING = "*a" * 12 + "*b"
"""Froze a node whose matcher backtracked (``re``, ``fnmatch``): exponential in the stars."""


@pytest.fixture(params=["memory", "sqlite", "cluster"])
async def api(
    request: pytest.FixtureRequest, nodes: Nodes, etcd: EtcdCluster
) -> AsyncIterator[HttpClient]:
    """The API of a node on each store."""
    if request.param == "cluster":
        async with start_cluster(nodes, etcd, ["default"], TTL, "--app", APP) as cluster:
            yield cluster.clients[0]
        return
    store = "memory://" if request.param == "memory" else f"sqlite:///{nodes.dir / 'a.db'}"
    node = nodes.start("n", "--app", APP, "--port", "0", "--store", store, "--token", TOKEN)
    async with HttpClient(node.url, token=TOKEN, timeout=30) as client:
        yield client


async def test_a_backtracking_id_pattern_is_answered_at_once_and_the_node_stays_up(
    api: HttpClient,
) -> None:
    for k in range(20):
        await api.create_promise("a" * 400 + str(k), timeout=3_600_000)

    searches = [api.promises(BACKTRACKING) for _ in range(4)]
    pages = await asyncio.wait_for(asyncio.gather(*searches), timeout=20)

    assert all(page.items == [] for page in pages)
    matched = await api.promises("*a*a*a*1*")
    assert sorted(view.id for view in matched.items) == sorted(
        "a" * 400 + str(k) for k in range(20) if "1" in str(k)
    )
    async with aiohttp.ClientSession() as session, session.get(f"{api.url}/healthz") as health:
        assert health.status == 200


async def test_an_id_pattern_too_long_is_refused_naming_the_field(api: HttpClient) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    params = {"id": "*" * 1025}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.get(f"{api.url}/promises", params=params) as response,
    ):
        assert response.status == 422
        body = await response.json()
    assert body["error"] == "invalid"
    assert body["field"] == "id"
    assert body["message"] == "id pattern '****************************************'... is " + (
        "longer than 1024 characters"
    )


async def test_a_cluster_search_reads_a_bounded_number_of_records_per_request(
    nodes: Nodes, etcd: EtcdCluster
) -> None:
    """Past ``SCAN_LIMIT`` records a page ends with a cursor (maybe with no match on it);
    paging on finds every match, and the SDK's search follows the cursors itself."""
    async with start_cluster(nodes, etcd, ["default"]) as cluster:
        api = cluster.clients[0]
        ids = [f"p{k:05d}" for k in range(SCAN_LIMIT + 500)]
        creating = asyncio.Semaphore(64)

        async def create(id: str) -> None:
            async with creating:
                await api.create_promise(id, timeout=3_600_000)

        await asyncio.gather(*(create(id) for id in ids))

        first = await api.promises("*9999", limit=100)
        assert [view.id for view in first.items] in ([], ["p09999"])
        assert first.cursor is not None  # stopped at the bound, not at the end
        found, cursor, pages = [v.id for v in first.items], first.cursor, 1
        while cursor is not None:
            page = await api.promises("*9999", limit=100, cursor=cursor)
            found += [view.id for view in page.items]
            cursor, pages = page.cursor, pages + 1
        assert found == ["p09999"]
        assert pages >= 2
        async with Resonate(url=cluster.members[0].url, token=TOKEN) as app:
            everything = await app.promises.search("p*", limit=SCAN_LIMIT + 500)
        assert sorted(info.id for info in everything) == ids


async def test_the_promise_api_settles_only_what_is_settled_from_outside(api: HttpClient) -> None:
    """An invocation's result, its step and its timer are the engine's: refused with 403
    naming the id, and nothing changes; a ``ctx.promise`` promise and an API promise are
    settled from outside."""
    done, _created = await api.start("adds", "add", [1, 2], {}, wait=20)
    assert done.state == "resolved"
    for id in ("adds", "adds:1"):
        with pytest.raises(NotSettleableError, match=f"promise '{id}' is "):
            await api.resolve(id, 99)
    assert (await api.invocation("adds")).result == 3

    await api.start("napper", "nap", [3600], {})
    timer = await _eventually(lambda: api.promise("napper:1"))
    assert timer.state == "pending"
    with pytest.raises(NotSettleableError, match="'napper:1' is a timer"):
        await api.resolve("napper:1", None)
    with pytest.raises(NotSettleableError):
        await api.cancel_promise("napper")
    assert (await api.promise("napper:1")).state == "pending"
    assert (await api.invocation("napper")).state == "pending"

    await api.start("asks", "approve", ["bob"], {})
    await _eventually(lambda: api.promise("approval-bob"))
    await api.resolve("approval-bob", "yes")
    assert (await api.result("asks", wait=20)).result == "bob: yes"
    await api.create_promise("free")
    assert (await api.resolve("free", 1)).state == "resolved"


async def test_promise_ids_inside_an_invocation_or_not_in_a_path_are_refused(
    api: HttpClient,
) -> None:
    for id, why in (("adds:1", "may not contain ':'"), (".", "a URL path cannot hold it")):
        with pytest.raises(ApiError, match=why) as refused:
            await api.create_promise(id)
        assert refused.value.status == 422
    page = await api.promises("*")
    assert page.items == []


async def _eventually(read: Callable[[], Awaitable[T]], within: float = 20.0) -> T:
    """``read()`` once it no longer raises ``PromiseNotFoundError``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            return await read()
        except PromiseNotFoundError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_a_client_hanging_up_mid_body_is_not_a_server_error(nodes: Nodes) -> None:
    node = nodes.start("n", "--app", APP, "--port", "0", "--store", "memory://")
    host, port = node.url.removeprefix("http://").split(":")
    for _ in range(3):
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"id": "half'
        )
        await writer.drain()
        writer.transport.abort()  # a reset, not a clean close
    async with HttpClient(node.url, timeout=10) as api:
        assert (await api.health()).status == "ok"
    await asyncio.sleep(0.5)
    logged = node.err.read_text()
    assert "Traceback" not in logged
    assert "failed" not in logged


async def test_bearer_is_case_insensitive_bytes_are_a_401_and_a_token_in_argv_is_warned_of(
    nodes: Nodes,
) -> None:
    node = nodes.start("n", "--app", APP, "--port", "0", "--store", "memory://", "--token", TOKEN)
    async with aiohttp.ClientSession() as session:
        for scheme in ("bearer", "BEARER", "Bearer"):
            headers = {"Authorization": f"{scheme} {TOKEN}"}
            async with session.get(f"{node.url}/promises", headers=headers) as response:
                assert response.status == 200, scheme
        async with session.get(f"{node.url}/promises", headers={"Authorization": TOKEN}) as bare:
            assert bare.status == 401
    host, port = node.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /promises HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n")
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status_line.split()[1] == b"401"
    assert "--token on the command line is visible to every user" in node.err.read_text()
