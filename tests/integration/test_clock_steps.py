"""Sleeps across steps of the wall clock (issue 17): a real ``dawait serve`` under
libfaketime (Debian ``faketime``, installed by the test command), its wall clock stepped by
rewriting the offset file while the monotonic clock runs on untouched."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest

from dawait.errors import PromiseNotFoundError
from dawait.node._client import HttpClient
from tests.etcd import EtcdCluster, free_ports
from tests.integration.clustering import live_nodes, outcome, serve_args
from tests.integration.served import APP, TOKEN, Node, Nodes
from tests.polling import eventually

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")

pytestmark = pytest.mark.skipif(
    not LIBFAKETIME.exists(), reason="libfaketime is missing: apt-get install faketime"
)


def step(offset_file: Path, offset: str) -> None:
    """Set the node's wall clock to real time ``offset`` (``+1h``, ``-1h``), atomically."""
    new = offset_file.with_name(offset_file.name + ".new")
    new.write_text(offset + "\n")
    os.replace(new, offset_file)


def faketime_env(offset_file: Path, offset: str = "+0") -> dict[str, str]:
    """The environment of a process whose wall clock is real time plus what
    ``offset_file`` says (``step`` changes it), its monotonic clock untouched."""
    offset_file.write_text(offset + "\n")
    return {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def faked(nodes: Nodes, offset_file: Path) -> Node:
    store = f"sqlite:///{nodes.dir / 'app.db'}"
    env = faketime_env(offset_file)
    return nodes.start("n", "--app", APP, "--port", "0", "--store", store, env=env)


async def _armed(api: HttpClient, timer: str) -> None:
    """Once the sleep's timer is recorded (so the step comes while it runs)."""

    async def recorded() -> bool:
        try:
            return (await api.promise(timer)).state == "pending"
        except PromiseNotFoundError:
            return False

    await eventually(recorded, f"timer {timer} to be recorded", within=10)


async def test_a_sleep_is_not_delayed_by_the_wall_clock_stepping_back(nodes: Nodes) -> None:
    """It waited about an hour after a step back of one hour (NTP, a VM resume)."""
    offset = nodes.dir / "offset"
    node = faked(nodes, offset)
    async with HttpClient(node.url, timeout=30) as api:
        await api.start("back", "nap", [3.0], {})
        await _armed(api, "back:1")
        step(offset, "-1h")
        loop = asyncio.get_running_loop()
        began = loop.time()
        done = await api.result("back", wait=15)
        assert done.state == "resolved"
        assert loop.time() - began < 5.0


async def test_a_step_forward_fires_no_sleep_early(nodes: Nodes) -> None:
    """A sleep armed before a step of one hour forward still takes its time, a sleep armed
    after it takes its own, and neither fires the other."""
    offset = nodes.dir / "offset"
    node = faked(nodes, offset)
    loop = asyncio.get_running_loop()
    async with HttpClient(node.url, timeout=30) as api:
        began = loop.time()
        await api.start("before", "nap", [4.0], {})
        await _armed(api, "before:1")
        step(offset, "+1h")
        await api.start("after", "nap", [1.0], {})  # wakes the timer loop after the step
        after = await api.result("after", wait=10)
        assert after.state == "resolved"
        assert (await api.invocation("before")).state == "pending"
        assert loop.time() - began < 3.5
        before = await api.result("before", wait=10)
        assert before.state == "resolved"
        assert loop.time() - began >= 3.9


@pytest.mark.parametrize("skewed_at", [0, 2], ids=["leader", "joiner"])
async def test_a_cluster_node_whose_clock_is_an_hour_ahead_stands_aside(
    nodes: Nodes, etcd: EtcdCluster, skewed_at: int
) -> None:
    """Three nodes, one an hour ahead: started first (the leader), or joining the other
    two. It once fired 9 of 12 sleeps of 30 s started through the two correct nodes within
    15 s; now it stands aside, unready with its offset, and no sleep fires early; a joiner
    takes no partition first; back in time, it rejoins."""
    offset = nodes.dir / "offset"
    env = faketime_env(offset, "+1h")
    namespace = f"skew{skewed_at}-{os.getpid()}"
    ports = free_ports(3)
    members = []
    for k, port in enumerate(ports):
        args = serve_args(etcd, namespace, f"n{k}", port, "default")
        skew = env if k == skewed_at else None
        members.append(nodes.spawn(f"n{k}", *args, "--app", APP, env=skew))
        nodes.wait_listening(members[-1])
    skewed = members[skewed_at]
    good = [node for node in members if node is not skewed]
    clients_of_good = [k for k in range(3) if k != skewed_at]
    clients = [HttpClient(node.url, token=TOKEN, timeout=30) for node in members]
    for client in clients:
        await client.open()
    try:

        async def aside() -> bool:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{skewed.url}/readyz") as ready,
            ):
                return ready.status == 503 and "off the majority" in await ready.text()

        await eventually(aside, "the skewed node to stand aside", within=30)
        listing = await clients[skewed_at].nodes()
        assert listing.clock_offset_ms is not None
        assert abs(listing.clock_offset_ms - 3_600_000) < 1_000
        first, second = (clients[k] for k in clients_of_good)
        await live_nodes(first, 2)
        assert abs((await first.nodes()).clock_offset_ms or 0) < 500
        if skewed_at == 2:  # it stood aside before taking anything
            assert "owns" not in skewed.stderr()

        async def balanced() -> bool:
            return all([(await c.nodes()).balanced for c in (first, second)])

        await eventually(balanced, "the two to own every partition", within=20)

        loop = asyncio.get_running_loop()
        began = loop.time()
        for i in range(12):
            await (first, second)[i % 2].start(f"nap{i}", "nap", [3.0], {})
        took = []
        for i in range(12):
            assert await outcome((first, second)[i % 2], f"nap{i}", within=20) == "rested"
            took.append(loop.time() - began)
        assert min(took) >= 2.9, took  # none early
        assert max(took) < 10, took

        step(offset, "+0")
        await live_nodes(first, 3)  # it rejoined

        async def ready() -> bool:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{skewed.url}/readyz") as response,
            ):
                return response.status == 200

        await eventually(ready, "the node to be ready again", within=30)
    finally:
        for client in clients:
            await client.close()
        nodes.kill_all()
    assert all("off the majority" not in node.stderr() for node in good)
