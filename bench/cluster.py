"""Cluster benchmarks against one local etcd member (``--unsafe-no-fsync``, bench/_etcd.py),
nodes being ``dawait serve --etcd`` processes on 127.0.0.1:

* throughput: 1 node vs 3 nodes, ``--workflows`` workflows of 3 steps (bench/http_app.py)
  started through the HTTP API round-robin over the nodes and awaited: aggregate steps/s;
  the peer, measured in the same run: DBOS (bench/peers/dbos_http.py, the same workflow
  behind the same endpoint on aiohttp), 1 and 3 processes sharing one local PostgreSQL
  (``fsync=off``, as etcd here; Debian's package, installed if missing: bench/peers/postgres.py),
  each process running the workflows started through it;
* failover: 2 nodes (lease TTL ``--ttl``); a workflow of steps runs on one, which is
  SIGKILLed; the time from the kill to the first step of that workflow run by the other
  node (p50 and max over ``--trials``); and the time from SIGKILL of the leader to another
  node leading.

    .venv/bin/python bench/cluster.py [--workflows 2000] [--concurrency 64] [--trials 20]
        [--repeat 3] [--no-peer]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: ``bench.`` imports from the repository root

from bench._etcd import Etcd  # noqa: E402
from bench._ports import free_ports  # noqa: E402
from bench.http_api import Node as Server  # noqa: E402
from bench.peers.postgres import Postgres  # noqa: E402
from dawait.node._client import HttpClient  # noqa: E402

STEPS = 3


async def steps_per_s(
    workflows: int, concurrency: int, one: Callable[[int], Awaitable[None]]
) -> float:
    """Run ``one(i)`` (start workflow ``w{i}`` and await it) for each of ``workflows``, by
    ``concurrency`` clients at a time; the steps per second that made."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(workflows):
        queue.put_nowait(i)

    async def client() -> None:
        while not queue.empty():
            await one(queue.get_nowait())

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(client())
    return workflows * STEPS / (time.perf_counter() - started)


def start(folder: Path, args: list[str]) -> Server:
    """A ``dawait serve ARGS`` node, once it listens."""
    node = Server.serve(folder, *args)
    node.wait_listening()
    return node


async def run(
    nodes: int, workflows: int, concurrency: int, etcd: Etcd, dir: Path, route: bool
) -> float:
    namespace = f"bench-{dir.name}-{os.getpid()}"  # fresh ids every run
    args = ["--app", "bench.http_app:app", "--etcd", ",".join(etcd.endpoints)]
    members = [
        Server.serve(
            dir / f"n{k}",
            *args,
            "--namespace",
            namespace,
            "--node-id",
            f"n{k}",
            "--port",
            str(port),
        )
        for k, port in enumerate(free_ports(nodes))
    ]
    try:
        for node in members:
            node.wait_listening()
        clients = [HttpClient(node.url, route=route) for node in members]
        for client in clients:
            await client.open()
        while len((await clients[0].nodes()).items) < nodes:
            await asyncio.sleep(0.05)

        async def one(i: int) -> None:
            client = clients[i % nodes]
            view, _ = await client.start(f"w{i}", "three_steps", [i], {}, wait=30)
            state = view.state
            while state == "pending":
                state = (await client.result(f"w{i}", wait=30)).state
            if state != "resolved":
                raise RuntimeError(f"w{i} ended {state}")

        figure = await steps_per_s(workflows, concurrency, one)
        for client in clients:
            await client.close()
        return figure
    finally:
        for node in members:
            node.process.terminate()
        for node in members:
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.process.kill()


async def run_dbos(
    processes: int, workflows: int, concurrency: int, pg: Postgres, dir: Path
) -> float:
    """The peer: ``processes`` DBOS servers on one fresh Postgres database, the same
    workflows started round-robin through them and awaited; aggregate steps/s."""
    url = pg.create(f"dbos_{dir.name.replace('-', '_')}")
    servers = []
    try:
        for k in range(processes):
            folder = dir / f"dbos{k}"
            folder.mkdir(parents=True)
            servers.append(Server.dbos(folder, "--database-url", url, "--executor-id", f"e{k}"))
            servers[-1].wait_listening()
        timeout = aiohttp.ClientTimeout(total=60)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

            async def one(i: int) -> None:
                body = {"id": f"w{i}", "function": "three_steps", "args": [i]}
                start = f"{servers[i % processes].url}/invocations"
                async with session.post(start, json=body, params={"wait": "30"}) as reply:
                    answer = await reply.json()
                if reply.status != 201 or answer.get("result") != i + STEPS:
                    raise RuntimeError(f"dbos w{i}: {reply.status} {answer}")

            return await steps_per_s(workflows, concurrency, one)
    finally:
        for server in servers:
            server.stop()


async def failover(etcd: Etcd, dir: Path, trials: int, ttl: int) -> None:
    namespace = f"failover-{os.getpid()}"
    ports = free_ports(2)
    args = [
        ["--app", "bench.http_app:app", "--etcd", ",".join(etcd.endpoints), "--namespace",
         namespace, "--node-id", f"n{k}", "--port", str(port), "--lease-ttl", str(ttl)]
        for k, port in enumerate(ports)
    ]  # fmt: skip
    up = [start(dir / f"n{k}", args[k]) for k in range(2)]
    client = HttpClient(up[0].url)
    await client.open()
    takeovers: list[float] = []
    leader_takeovers: list[float] = []
    try:
        for trial in range(trials):
            while len((await client.nodes()).items) < 2:
                await asyncio.sleep(0.05)
            listing = await client.nodes()
            leader = next(n.node_id for n in listing.items if n.leader)
            victim_k = 1 if trial % 2 == 0 else 0  # alternate; client talks to the other
            victim = up[victim_k]
            survivor = HttpClient(up[1 - victim_k].url)
            await survivor.open()
            path = dir / f"ticks-{trial}.log"
            id = next(
                f"ticker-{trial}-{i}"
                for i in itertools.count()
                if listing.owner(f"ticker-{trial}-{i}", "ticker") == f"n{victim_k}"
            )
            async with HttpClient(victim.url) as direct:
                await direct.start(id, "ticker", [str(path), 100_000], {})
            while _lines(path, victim.process.pid) < 3:
                await asyncio.sleep(0.02)
            killed_at = time.time()
            victim.process.kill()
            victim.process.wait()
            while not (later := [t for pid, t in _ticks(path) if pid != victim.process.pid]):
                await asyncio.sleep(0.02)
            takeovers.append(later[0] - killed_at)
            if leader == f"n{victim_k}":
                while not any(n.leader for n in (await survivor.nodes()).items):
                    await asyncio.sleep(0.02)
                leader_takeovers.append(time.time() - killed_at)
            await survivor.cancel(id)
            await survivor.close()
            up[victim_k] = start(dir / f"n{victim_k}-{trial}", args[victim_k])
            if victim_k == 0:
                await client.close()
                client = HttpClient(up[0].url)
                await client.open()
    finally:
        await client.close()
        for node in up:
            node.process.kill()
            node.process.wait()
    takeovers.sort()
    print(
        f"failover (TTL {ttl} s, {len(takeovers)} trials): SIGKILL -> first step elsewhere "
        f"p50 {statistics.median(takeovers):.2f} s, max {takeovers[-1]:.2f} s"
    )
    if leader_takeovers:
        print(
            f"leader failover ({len(leader_takeovers)} trials): SIGKILL -> new leader "
            f"p50 {statistics.median(leader_takeovers):.2f} s, max {max(leader_takeovers):.2f} s"
        )


def _figures(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)


def _ticks(path: Path) -> list[tuple[int, float]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    rows = [line.split() for line in text.splitlines()]
    return [(int(row[0]), float(row[1])) for row in rows if len(row) == 3]


def _lines(path: Path, pid: int) -> int:
    return sum(1 for p, _t in _ticks(path) if p == pid)


async def throughput(args: argparse.Namespace, etcd: Etcd, dir: Path) -> None:
    # dawait: (nodes, placement-aware client); the peer: DBOS processes on Postgres.
    setups: dict[str, tuple[str, int, bool]] = {
        "dawait, 1 node": ("dawait", 1, False),
        "dawait, 3 nodes, starts through any node": ("dawait", 3, False),
        "dawait, 3 nodes, placement-aware client": ("dawait", 3, True),
    }
    if not args.no_peer:
        setups |= {"dbos, 1 process": ("dbos", 1, False), "dbos, 3 processes": ("dbos", 3, False)}
    runs: dict[str, list[float]] = {name: [] for name in setups}
    with contextlib.ExitStack() as stack:
        pg = None if args.no_peer else stack.enter_context(Postgres())
        for r in range(args.repeat):  # alternated, so drift in the machine hits all alike
            for name, (server, size, route) in setups.items():
                where = dir / f"{server}-{size}-{route}-{r}"
                if pg is not None and server == "dbos":
                    figure = await run_dbos(size, args.workflows, args.concurrency, pg, where)
                else:
                    figure = await run(size, args.workflows, args.concurrency, etcd, where, route)
                runs[name].append(figure)
    print(
        f"{args.workflows} workflows of {STEPS} steps, {args.concurrency} concurrent clients, "
        f"median of {args.repeat} runs"
    )
    median = {name: statistics.median(figures) for name, figures in runs.items()}
    one = median["dawait, 1 node"]
    for name, figures in runs.items():
        peer = median.get("dbos, 1 process" if setups[name][1] == 1 else "dbos, 3 processes")
        versus = (
            f", {median[name] / peer:.1f}x DBOS" if peer and setups[name][0] == "dawait" else ""
        )
        print(
            f"{name:42} {median[name]:6.0f} steps/s  ({median[name] / one:.2f}x one node"
            f"{versus}; runs: {_figures(figures)})"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ttl", type=int, default=5)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--no-peer", action="store_true", help="do not measure DBOS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dir = Path(tmp)
        with Etcd(dir / "etcd") as etcd:
            if not args.skip_throughput:
                await throughput(args, etcd, dir)
            if args.trials:
                await failover(etcd, dir / "failover", args.trials, args.ttl)


if __name__ == "__main__":
    asyncio.run(main())
