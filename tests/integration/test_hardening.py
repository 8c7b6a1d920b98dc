"""One request must not take a node down (issue 11): real ``dawait serve`` processes, on
the memory store, on SQLite and in a cluster on real etcd."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from dawait import Resonate
from dawait.cluster._router import SCAN_LIMIT
from dawait.node._client import HttpClient
from tests.etcd import EtcdCluster
from tests.integration.clustering import start_cluster
from tests.integration.served import APP, TOKEN, Nodes

BACKTRACKING = "*a" * 12 + "*b"
"""Froze a node whose matcher backtracked (``re``, ``fnmatch``): exponential in the stars."""


@pytest.fixture(params=["memory", "sqlite", "cluster"])
async def api(
    request: pytest.FixtureRequest, nodes: Nodes, etcd: EtcdCluster
) -> AsyncIterator[HttpClient]:
    """The API of a node on each store."""
    if request.param == "cluster":
        async with start_cluster(nodes, etcd, ["default"]) as cluster:
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
