"""A cluster of real ``dawait serve --etcd`` node processes on 127.0.0.1, against real etcd
(tests/etcd.py): placement across nodes, takeover after SIGKILL, the leader, groups."""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dawait.cluster._etcd import Etcd
from dawait.core._partitions import partition_index
from dawait.errors import (
    DawaitError,
    InvocationConflictError,
    NotStartedError,
    PromiseNotFoundError,
)
from dawait.node._client import HttpClient
from tests.etcd import EtcdCluster, free_ports
from tests.integration.cluster_app import mixed_result
from tests.integration.clustering import (
    APP,
    TTL,
    Cluster,
    audit,
    live_nodes,
    namespaces,
    outcome,
    serve_args,
    start_cluster,
)
from tests.integration.served import TOKEN, Node, Nodes, dawait
from tests.polling import eventually


@pytest.fixture
async def cluster(tmp_path: Path, etcd: EtcdCluster) -> AsyncIterator[Cluster]:
    """Three nodes; n0 and n1 serve the ``helpers`` group too, n2 only ``default``."""
    groups = ["default,helpers", "default,helpers", "default"]
    async with start_cluster(Nodes(tmp_path), etcd, groups) as started:
        yield started


async def _mid_run(nodes: Nodes, node: Node, first_steps: int = 5) -> None:
    """Wait until ``node`` has run the first step of ``first_steps`` workflows: it holds
    work in flight (their sleeps and later steps are still to come)."""

    async def running() -> bool:
        ran = [key for _kind, key, pid in nodes.effect_lines() if pid == node.pid]
        return sum(key.endswith("/0") for key in ran) >= first_steps

    await eventually(running, f"{node.name} to run {first_steps} first steps")


async def _resolve_once_created(client: HttpClient, id: str, value: int) -> None:
    """Resolve external promise ``id`` as soon as its workflow has created it."""

    async def resolved() -> bool:
        try:
            await client.resolve(id, value)
        except PromiseNotFoundError:
            return False
        return True

    await eventually(resolved, f"promise {id} to be created", within=30, every=0.05)


async def _start_once_accepted(client: HttpClient, id: str, args: list[Any]) -> None:
    """Start ``id`` through ``client``, again while the node refuses (503: its etcd client
    fails over), for up to 15 s."""

    async def accepted() -> bool:
        try:
            await client.start(id, "mixed", args, {})
        except NotStartedError:
            return False
        return True

    await eventually(accepted, f"{id} to be accepted", within=15, every=0.2)


async def _until_readyz(
    nodes: list[Node], status: int, what: str, *, within: float
) -> list[tuple[int, str]]:
    """Poll each node's /readyz until it answers ``status``; each node's last answer."""
    last: dict[str, tuple[int, str]] = {}

    async def answered() -> bool:
        for node in nodes:
            if node.name not in last or last[node.name][0] != status:
                last[node.name] = await _ready(node.url)
        return all(answer[0] == status for answer in last.values())

    await eventually(
        answered,
        what,
        within=within,
        every=0.2,
        failure=lambda message: AssertionError(f"{message}: {last}"),
    )
    return [last[node.name] for node in nodes]


async def test_nodes_lists_three_live_nodes_with_one_leader(cluster: Cluster) -> None:
    for client in cluster.clients:
        await live_nodes(client, 3)  # each node's view of the others converges
        listing = await client.nodes()
        assert listing.cluster
        assert [n.node_id for n in listing.items] == ["n0", "n1", "n2"]
    await live_nodes(cluster.clients[0], 3)
    listing = await cluster.clients[0].nodes()
    by_id = {n.node_id: n for n in listing.items}
    assert by_id["n2"].groups == ["default"]
    assert "helper" not in by_id["n2"].functions
    assert by_id["n0"].address == cluster.members[0].url


async def test_300_workflows_survive_a_sigkilled_node(cluster: Cluster) -> None:
    """300 workflows (steps, sleeps, ctx.rpc to another group, external promises) started
    through all three nodes; one node is SIGKILLed mid-run. Every workflow finishes with the
    right result, every step ran, and a step ran twice only if the killed node ran it."""
    await live_nodes(cluster.clients[0], 3)
    count = 300
    ids = [f"wf{i}" for i in range(count)]
    for i, id in enumerate(ids):
        client = cluster.clients[i % 3]
        _view, created = await client.start(id, "mixed", [i, 0.5], {})
        assert created

    victim = cluster.members[1]
    await _mid_run(cluster.nodes, victim, first_steps=20)
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(timeout=10)
    survivors = [c for node, c in zip(cluster.members, cluster.clients, strict=True)
                 if node is not victim]  # fmt: skip

    for i in range(0, count, 7):  # external promises, settled through a surviving node
        await _resolve_once_created(survivors[i % 2], f"ext-{i}", i)

    for i, id in enumerate(ids):
        assert await outcome(survivors[i % 2], id, within=30) == mixed_result(i)

    runs = collections.defaultdict(list)
    for kind, key, pid in cluster.nodes.effect_lines():
        assert kind == "step"
        runs[key].append(pid)
    pids = {node.pid: node.name for node in cluster.members}
    expected = {f"wf{i}/{s}" for i in range(count) for s in (0, 1)}
    expected |= {f"wf{i}/helper/9" for i in range(0, count, 5)}
    assert set(runs) == expected
    twice = {key: [pids[p] for p in ran] for key, ran in runs.items() if len(ran) > 1}
    assert all("n1" in names for names in twice.values()), twice
    assert {pids[p] for ran in runs.values() for p in ran} == {"n0", "n1", "n2"}
    taken_over = [
        i for i in range(count)
        if pids[runs[f"wf{i}/0"][0]] == "n1" and "n1" not in {pids[p] for p in runs[f"wf{i}/1"]}
    ]  # fmt: skip
    assert taken_over, "no workflow that started on the killed node finished elsewhere"
    helpers = {pids[p] for key, ran in runs.items() if "/helper/" in key for p in ran}
    assert "n2" not in helpers, "a helper ran on a node that does not serve its group"


async def test_timers_fire_after_the_leader_is_sigkilled(cluster: Cluster) -> None:
    leader = (await live_nodes(cluster.clients[0], 3))[0]
    node = next(n for n in cluster.members if n.name == leader)
    others = [c for n, c in zip(cluster.members, cluster.clients, strict=True) if n is not node]
    for i in range(10):
        await others[i % 2].start(f"late{i}", "mixed", [i * 7 + 1, 1.5], {})
    node.process.send_signal(signal.SIGKILL)
    node.process.wait(timeout=10)
    killed_at = time.monotonic()
    new_leader = await live_nodes(others[0], 2)
    assert new_leader != [leader]
    for i in range(10):
        assert await outcome(others[i % 2], f"late{i}", within=20) == mixed_result(i * 7 + 1)
    # The sleeps ended 1.5 s after they started; a TTL plus a second is the most they may
    # be late by.
    assert time.monotonic() - killed_at < 1.5 + TTL + 1 + 2, "timers fired too late"


async def test_a_node_stopped_with_sigterm_hands_over_at_once(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    """SIGTERM: the node exits 0 and its lease (record and claims) ends with it, so the
    others take its invocations over at once: with a 60 s TTL, waiting for the lease to run
    out would leave them pending far past the 15 s this test waits."""
    async with start_cluster(Nodes(tmp_path), etcd, ["default,helpers"] * 2, ttl=60) as cluster:
        await live_nodes(cluster.clients[0], 2)
        for i in range(40):
            await cluster.clients[i % 2].start(f"t{i}", "mixed", [i * 7 + 1, 1.0], {})
        await _mid_run(cluster.nodes, cluster.members[1])
        await cluster.members[1].stop()  # SIGTERM; exits 0 within its grace period
        survivor = cluster.clients[0]
        assert [n.node_id for n in (await survivor.nodes()).items] == ["n0"]
        for i in range(40):
            assert await outcome(survivor, f"t{i}", within=15) == mixed_result(i * 7 + 1)
        ran = collections.Counter(key for _kind, key, _pid in cluster.nodes.effect_lines())
        expected = {f"t{i}/{s}" for i in range(40) for s in (0, 1)}
        expected |= {f"t{i}/helper/9" for i in range(40) if (i * 7 + 1) % 5 == 0}
        assert set(ran) == expected


async def test_a_node_stopped_past_its_ttl_writes_nothing_stale_and_rejoins(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    """SIGSTOP a node past its lease TTL: the other takes its invocations over and finishes
    them. After SIGCONT the stalled node finds its lease gone, drops what it ran (its writes
    are refused: the claims are the other node's), rejoins, and every result is right."""
    async with start_cluster(Nodes(tmp_path), etcd, ["default,helpers"] * 2) as cluster:
        await live_nodes(cluster.clients[0], 2)
        for i in range(30):
            await cluster.clients[i % 2].start(f"s{i}", "mixed", [i * 7 + 1, 1.0], {})
        stalled = cluster.members[1]
        stalled.process.send_signal(signal.SIGSTOP)
        try:
            survivor = cluster.clients[0]
            for i in range(30):
                assert await outcome(survivor, f"s{i}", within=20) == mixed_result(i * 7 + 1)
        finally:
            stalled.process.send_signal(signal.SIGCONT)
        await live_nodes(survivor, 2)  # it rejoined, under a new lease
        await _until_readyz([stalled], 200, "ready again after rejoining", within=10)
        for i in range(30):  # and nothing it held on to changed an outcome
            assert await outcome(cluster.clients[1], f"s{i}", within=5) == mixed_result(i * 7 + 1)
        assert stalled.process.poll() is None, stalled.report("exited after SIGCONT")
        assert "rejoined" in stalled.stderr()
    # From etcd's history: every write of a partition was made under its epoch of the time,
    # so nothing the stalled node sent after SIGCONT under its old epochs went through.
    history = await audit(etcd, cluster.namespace)
    assert history.writes > 0
    assert history.stale == [], history.stale
    assert history.unmarked == [], history.unmarked
    assert any(len(takes) > 1 for takes in history.takes.values()), "no partition moved"


async def test_a_start_sent_to_a_non_owner_is_forwarded_to_the_owner(cluster: Cluster) -> None:
    await live_nodes(cluster.clients[0], 3)
    listing = await cluster.clients[0].nodes()
    id = next(f"fw{i}" for i in itertools.count() if listing.owner(f"fw{i}", "mixed") == "n2")
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            cluster.members[0].url + "/invocations?wait=10",
            json={"id": id, "function": "mixed", "args": [3, 0.0]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status == 201, await response.text()
        assert response.headers["X-Dawait-Node"] == "n2"
        assert (await response.json())["state"] == "resolved"
    pids = {node.pid: node.name for node in cluster.members}
    ran = [pids[pid] for _kind, key, pid in cluster.nodes.effect_lines() if key.startswith(id)]
    assert ran == ["n2", "n2"]


async def test_one_id_started_through_every_node_at_once_runs_once(cluster: Cluster) -> None:
    await live_nodes(cluster.clients[0], 3)
    starts = await asyncio.gather(
        *(
            client.start("same", "mixed", [4, 0.0], {})
            for client in cluster.clients
            for _ in range(3)
        )
    )
    assert sum(created for _view, created in starts) == 1
    for client in cluster.clients:
        assert await outcome(client, "same", within=10) == mixed_result(4)
    ran = collections.Counter(key for _kind, key, _pid in cluster.nodes.effect_lines())
    assert ran == {"same/0": 1, "same/1": 1}


async def _ready(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url + "/readyz") as response:
        return response.status, await response.text()


async def test_etcd_member_loss_and_quorum_loss_under_load(
    tmp_path: Path, etcd3: EtcdCluster
) -> None:
    """A 3-member etcd: one member killed under load loses nothing; with two down (no
    quorum) the nodes report not ready and refuse new work with 503; once the members are
    back the cluster recovers by itself and every workflow finishes right."""
    # The default TTL (5 s): an etcd leader election and the client's failover to another
    # member take a second or two, which a 2 s TTL does not always outlast.
    groups = ["default,helpers"] * 2
    async with start_cluster(Nodes(tmp_path), etcd3, groups, ttl=5) as cluster:
        await live_nodes(cluster.clients[0], 2)
        for i in range(40):
            await cluster.clients[i % 2].start(f"q{i}", "mixed", [i * 7 + 1, 0.5], {})
        etcd3.kill(2)
        for i in range(40, 60):
            # A node may refuse (503) while its etcd client fails over: a client retries.
            await _start_once_accepted(cluster.clients[i % 2], f"q{i}", [i * 7 + 1, 0.5])
        for i in range(60):
            assert await outcome(cluster.clients[0], f"q{i}", within=20) == mixed_result(i * 7 + 1)

        etcd3.kill(1)  # quorum lost
        [status] = await _until_readyz(
            cluster.members[:1], 503, "not ready without an etcd quorum", within=20
        )
        assert "etcd" in status[1]
        with pytest.raises(NotStartedError, match="etcd"):
            await cluster.clients[0].start("refused", "mixed", [1, 0.0], {})

        etcd3.start(1, wait=False)
        etcd3.start(2, wait=False)
        await _until_readyz(cluster.members, 200, "every node ready again", within=30)
        await live_nodes(cluster.clients[0], 2)
        for i in range(60, 70):
            await cluster.clients[i % 2].start(f"q{i}", "mixed", [i * 7 + 1, 0.2], {})
        for i in range(70):
            assert await outcome(cluster.clients[1], f"q{i}", within=20) == mixed_result(i * 7 + 1)


async def test_rolling_restart_under_load_loses_nothing(tmp_path: Path, etcd: EtcdCluster) -> None:
    """SIGTERM each of three nodes in turn and start it again (same id and port) while
    workflows keep being started: every workflow finishes with the right result."""
    namespace = f"rolling{next(namespaces)}-{os.getpid()}"
    nodes = Nodes(tmp_path)
    ports = free_ports(3)
    args = [
        serve_args(etcd, namespace, f"n{k}", port, "default,helpers")
        for k, port in enumerate(ports)
    ]
    up = [nodes.start(f"n{k}", *args[k]) for k in range(3)]
    urls = [node.url for node in up]
    started: list[int] = []
    stop = asyncio.Event()

    async def start_through_any(clients: list[HttpClient], i: int) -> None:
        attempts = itertools.count()

        async def taken() -> bool:
            try:  # a node may be stopping: try the next one
                await clients[(i + next(attempts)) % 3].start(
                    f"r{i}", "mixed", [i * 7 + 1, 0.3], {}
                )
            except DawaitError:
                return False
            return True

        await eventually(taken, f"a node to take r{i}", every=0.05)

    async def load() -> None:
        clients = [HttpClient(url, token=TOKEN) for url in urls]
        for client in clients:
            await client.open()
        try:
            for i in itertools.count():
                if stop.is_set():
                    return
                await start_through_any(clients, i)
                started.append(i)
                await asyncio.sleep(0.02)
        finally:
            for client in clients:
                await client.close()

    async def more_started(count: int) -> None:
        target = len(started) + count

        async def enough() -> bool:
            return len(started) >= target

        await eventually(enough, f"{count} more workflows to start")

    try:
        async with asyncio.TaskGroup() as group:  # a failure below stops the load too
            group.create_task(load())
            for k in range(3):
                await more_started(15)
                await up[k].stop()  # SIGTERM: exits 0 within its grace period
                up[k] = nodes.start(f"n{k}-again", *args[k])
            await more_started(15)
            stop.set()
        assert len(started) >= 60
        async with HttpClient(urls[0], token=TOKEN) as client:
            for i in started:
                assert await outcome(client, f"r{i}", within=20) == mixed_result(i * 7 + 1)
    finally:
        nodes.kill_all()


async def test_dawait_nodes_lists_the_cluster(cluster: Cluster) -> None:
    await live_nodes(cluster.clients[0], 3)
    ran = await dawait("nodes", "--url", cluster.members[2].url, "--token", TOKEN)
    assert ran.code == 0, ran
    header, *rows = ran.lines
    assert header.split() == ["NODE", "ADDRESS", "GROUPS", "LEADER"]
    assert [row.split()[0] for row in rows] == ["n0", "n1", "n2"]
    assert sum(row.split()[-1] == "yes" for row in rows) == 1
    assert rows[2].split()[1:3] == [cluster.members[2].url, "default"]


async def test_invocations_are_listed_newest_first_across_partitions(cluster: Cluster) -> None:
    ids = [f"ls-{k}" for k in range(24)]
    for k, id in enumerate(ids):  # i coprime to 5 and 7: no rpc, no external promise
        await cluster.clients[k % 3].start(id, "mixed", [1, 0], {})
    for id in ids:
        assert (await cluster.clients[0].result(id, wait=20)).state == "resolved"

    everything = (await cluster.clients[1].invocations(limit=1000, count=True)).items
    listed = [v for v in everything if v.id.startswith("ls-")]
    assert sorted(v.id for v in listed) == sorted(ids)
    newest_first = sorted(everything, key=lambda v: (-v.created_at.timestamp(), v.id))
    assert [v.id for v in everything] == [v.id for v in newest_first]
    paged, cursor = [], None
    while True:
        page = await cluster.clients[2].invocations(limit=5, cursor=cursor)
        paged += [v.id for v in page.items]
        if (cursor := page.cursor) is None:
            break
    assert paged == [v.id for v in everything]
    counted = await cluster.clients[0].invocations(state="resolved", function="mix", count=True)
    assert counted.counts is not None
    assert counted.counts.exact
    assert counted.counts.by_state["resolved"] >= len(ids)
    assert (await cluster.clients[0].invocations(function="helper")).items == []


async def test_a_cancel_reaches_what_it_awaits_across_partitions_but_not_detached_calls(
    cluster: Cluster,
) -> None:
    api = cluster.clients[2]  # serves only default: the helper runs on another node
    await api.start("cx", "cancelable", [], {})
    expected = {"cx-ok", "cx-helper-ok", "cx-stays-ok"}

    async def recorded() -> bool:
        pending = {p.id for p in (await api.promises("cx*", state="pending")).items}
        return expected <= pending

    await eventually(recorded, "every call of cx to be recorded", within=20)
    before = {p.id for p in (await api.promises("cx*", state="pending")).items}
    canceled = await cluster.clients[0].cancel("cx")
    assert (canceled.state, canceled.canceled) == ("rejected_canceled", True)

    async def settled() -> bool:
        left = {p.id for p in (await api.promises("cx*", state="pending")).items}
        return len(left) == 2

    await eventually(settled, "what cx awaited to be canceled", within=20)
    left = {p.id for p in (await api.promises("cx*", state="pending")).items}
    assert "cx-stays-ok" in left  # the detached call's, with the detached call itself
    (detached,) = left - {"cx-stays-ok"}
    assert (await api.invocation(detached)).function == "stays"
    for id in before - left:  # the timers, both promises, the rpc
        assert (await api.promise(id)).state == "rejected_canceled", id
    assert len(before - left) >= 5
    again = await cluster.clients[1].cancel("cx")
    assert (again.state, again.canceled) == ("rejected_canceled", False)


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--port", "0"], 2, "needs --port (not 0) or --advertise"),
        (["--node-id", "a/b"], 2, "node_id"),
        (["--lease-ttl", "0"], 2, "lease_ttl"),
    ],
)
async def test_serve_refuses_bad_cluster_settings(
    extra: list[str], code: int, message: str
) -> None:
    ran = await dawait("serve", "--app", APP, "--etcd", "127.0.0.1:2379", *extra)
    assert ran.code == code, ran
    assert message in ran.err
    assert "Traceback" not in ran.err


async def test_serve_says_so_when_etcd_cannot_be_reached() -> None:
    [closed] = free_ports(1)
    ran = await dawait(
        "serve", "--app", APP, "--etcd", f"127.0.0.1:{closed}", "--port", str(free_ports(1)[0])
    )
    assert ran.code == 1, ran
    assert f"127.0.0.1:{closed}" in ran.err
    assert "UNAVAILABLE" in ran.err
    assert "Traceback" not in ran.err


async def test_a_placement_aware_client_sends_each_start_to_its_owner(cluster: Cluster) -> None:
    """``HttpClient(route=True)`` computes each invocation's owner as the nodes do: for
    every id, the node it sends to is the node that answers a start through any node."""
    await live_nodes(cluster.clients[0], 3)
    by_url = {node.url: node.name for node in cluster.members}
    async with (
        HttpClient(cluster.members[0].url, token=TOKEN, route=True) as routed,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session,
    ):
        for i in range(20):
            id = f"routed{i}"
            owner = await routed._owner(id, "mixed")
            assert owner is not None
            async with session.post(
                cluster.members[i % 3].url + "/invocations",
                json={"id": f"{id}-probe", "function": "mixed", "args": [1, 0.0]},
            ) as probe:
                assert probe.status == 201
            expected = await routed._owner(f"{id}-probe", "mixed")
            assert expected is not None
            assert probe.headers["X-Dawait-Node"] == by_url[expected]
            _view, created = await routed.start(id, "mixed", [i * 7 + 1, 0.0], {}, wait=10)
            assert created
            assert await outcome(routed, id, within=10) == mixed_result(i * 7 + 1)


async def test_an_id_names_one_invocation_or_promise_across_groups(cluster: Cluster) -> None:
    """``mixed`` (group default) and ``helper`` (group helpers) live in different
    partitions, and API promises in the free family: an id in use in one is refused in the
    others, naming what holds it, and what holds it is unchanged."""
    await live_nodes(cluster.clients[0], 3)
    first, second, third = cluster.clients
    _view, created = await first.start("taken", "mixed", [3, 0.0], {})
    assert created
    with pytest.raises(
        InvocationConflictError, match=r"'taken' is in use by an invocation of 'mixed'"
    ):
        await second.start("taken", "helper", ["x", 1], {})
    with pytest.raises(InvocationConflictError, match="'taken' is in use"):
        await third.create_promise("taken")
    await first.create_promise("api-promise")
    with pytest.raises(InvocationConflictError, match=r"'api-promise' is in use by a promise"):
        await third.start("api-promise", "mixed", [3, 0.0], {})
    assert await outcome(second, "taken", within=10) == mixed_result(3)
    assert (await third.promise("api-promise")).state == "pending"


async def test_delete_through_a_node_that_owns_neither_removes_the_tree_from_etcd(
    cluster: Cluster, etcd: EtcdCluster
) -> None:
    """A finished invocation (no longer in its owner's memory) deleted through another
    node: its records leave etcd, every node answers 404, and the id runs again."""
    await live_nodes(cluster.clients[0], 3)
    listing = await cluster.clients[0].nodes()
    names = [node.name for node in cluster.members]
    id = next(f"gone{i}" for i in itertools.count() if listing.owner(f"gone{i}", "mixed") == "n0")
    partition = f"{partition_index(id, listing.partitions or 0):04}"
    _view, created = await cluster.clients[0].start(id, "mixed", [5, 0.0], {})
    assert created
    assert await outcome(cluster.clients[0], id, within=10) == mixed_result(5)

    client = Etcd(etcd.endpoints)
    await client.connect()
    try:
        prefix = f"/dawait/{cluster.namespace}/P/"

        async def records_of_tree() -> list[str]:
            """Promise and task keys of ``id`` and its calls, in any family."""
            _revision, items = await client.snapshot(prefix)
            found = []
            for item in items:
                rest = item.key[len(prefix) :]
                parts = rest.split("/", 3)  # family, index, kind, id (or owner, epoch)
                kind, record = (parts[2], parts[3]) if len(parts) == 4 else ("", "")
                if kind in ("p", "t") and (record == id or record.startswith(id + ":")):
                    found.append(rest)
            return found

        before = await records_of_tree()
        assert f"default/{partition}/p/{id}" in before, before
        assert any(key.startswith(f"default/{partition}/p/{id}:") for key in before), before
        assert any(key.startswith("helpers/") for key in before), before  # its rpc
        await cluster.clients[names.index("n2")].delete(id)
        after = await records_of_tree()
        # Only its rpc invocation (an invocation of its own, group helpers) stays.
        assert after, "the rpc invocation went too"
        assert all(key.startswith("helpers/") for key in after), after
    finally:
        await client.close()
    for c in cluster.clients:
        with pytest.raises(PromiseNotFoundError):
            await c.invocation(id)
    _view, created = await cluster.clients[1].start(id, "mixed", [5, 0.0], {})
    assert created
    assert await outcome(cluster.clients[2], id, within=10) == mixed_result(5)


async def test_a_long_poll_on_a_node_that_does_not_own_the_invocation_answers_when_it_settles(
    cluster: Cluster,
) -> None:
    """The node asks the owner to tell it (it used to answer only when the wait ran out)."""
    await live_nodes(cluster.clients[0], 3)
    listing = await cluster.clients[0].nodes()
    id = next(f"lp{i}" for i in itertools.count() if listing.owner(f"lp{i}", "mixed") == "n2")
    loop = asyncio.get_running_loop()
    began = loop.time()
    await cluster.clients[0].start(id, "mixed", [3, 1.0], {})
    result = await cluster.clients[0].result(id, wait=20)
    assert (result.state, result.result) == ("resolved", mixed_result(3))
    assert loop.time() - began < 8.0  # notified by the owner, not at the wait's end (20 s)
