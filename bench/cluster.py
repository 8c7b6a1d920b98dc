"""Cluster benchmarks against one local etcd member (``--unsafe-no-fsync``, bench/_etcd.py),
nodes being ``dawait serve --etcd`` processes on 127.0.0.1:

* throughput: 1 node vs 3 nodes, ``--workflows`` workflows of 3 steps (bench/http_app.py)
  started through the HTTP API round-robin over the nodes and awaited: aggregate steps/s;
  the peer, measured in the same run: DBOS (bench/peers/dbos_http.py, the same workflow
  behind the same endpoint on aiohttp), 1 and 3 processes sharing one local PostgreSQL
  (``fsync=off``, as etcd here; Debian's package, installed if missing: bench/peers/postgres.py),
  each process running the workflows started through it;
* the control, in the same run: 3 single nodes in separate namespaces (no cluster) sharing
  the same load; what three node processes cost on this machine whatever the cluster does;
* failover: 2 nodes (lease TTL ``--ttl``); a workflow of steps runs on one, which is
  SIGKILLed; the time from the kill to the first step of that workflow run by the other
  node (p50 and max over ``--trials``); and the time from SIGKILL of the leader to another
  node leading.

    .venv/bin/python bench/cluster.py [--workflows 6000] [--concurrency 64] [--trials 20]
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
from dataclasses import dataclass
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


@dataclass
class Measured:
    """One timed run of the cluster: throughput, and what it cost."""

    steps_per_s: float
    cpu_ms_per_1000_steps: float
    """Node processes' CPU (user + system), summed over the nodes."""
    rss_mb_per_1000: float
    """The largest growth of one node's RSS per 1,000 invocations it finished (after a
    warm-up of the same size, so that what stays is what grows with history)."""
    txns_per_step: float
    """etcd write transactions (raft proposals) per step."""


def _cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _balanced(clients: list[HttpClient], nodes: int) -> None:
    """Until every node sees all and owns exactly its share (no partition moving)."""
    while True:
        listings = [await client.nodes() for client in clients]
        if all(len(x.items) == nodes and x.balanced for x in listings):
            return
        await asyncio.sleep(0.05)


async def run(
    nodes: int, workflows: int, concurrency: int, etcd: Etcd, dir: Path, route: bool
) -> Measured:
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
        await _balanced(clients, nodes)
        offset = 0

        async def one(i: int) -> None:
            i += offset
            client = clients[i % nodes]
            view, _ = await client.start(f"w{i}", "three_steps", [i], {}, wait=30)
            state = view.state
            while state == "pending":
                state = (await client.result(f"w{i}", wait=30)).state
            if state != "resolved":
                raise RuntimeError(f"w{i} ended {state}")

        await steps_per_s(workflows, concurrency, one)  # warm-up
        pids = [node.process.pid for node in members]
        cpu, rss, proposals = (
            [_cpu_ms(p) for p in pids],
            [_rss_mb(p) for p in pids],
            etcd.committed(),
        )
        offset = workflows
        figure = await steps_per_s(workflows, concurrency, one)
        cpu_used = sum(_cpu_ms(p) - c for p, c in zip(pids, cpu, strict=True))
        growth = max(_rss_mb(p) - r for p, r in zip(pids, rss, strict=True))
        steps = workflows * STEPS
        for client in clients:
            await client.close()
        return Measured(
            steps_per_s=figure,
            cpu_ms_per_1000_steps=cpu_used * 1000 / steps,
            rss_mb_per_1000=growth * 1000 / (workflows / nodes),
            txns_per_step=(etcd.committed() - proposals) / steps,
        )
    finally:
        for node in members:
            node.process.terminate()
        for node in members:
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.process.kill()


SEPARATE = "control: 3 separate 1-node namespaces"
"""Three single nodes, each its own namespace (no cluster: nothing shared but etcd and the
machine), sharing the same load: what three node processes cost on this machine whatever
the cluster does, the floor for the 3-node figures."""


async def run_separate(nodes: int, args: argparse.Namespace, etcd: Etcd, dir: Path) -> Measured:
    measured = await asyncio.gather(
        *(
            run(1, args.workflows // nodes, args.concurrency // nodes, etcd, dir / f"s{k}", False)
            for k in range(nodes)
        )
    )
    return Measured(
        steps_per_s=sum(m.steps_per_s for m in measured),
        cpu_ms_per_1000_steps=statistics.mean(m.cpu_ms_per_1000_steps for m in measured),
        rss_mb_per_1000=max(m.rss_mb_per_1000 for m in measured),
        # Each run counted every proposal etcd made meanwhile, the others' too.
        txns_per_step=statistics.mean(m.txns_per_step for m in measured) / nodes,
    )


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
        SEPARATE: ("separate", 3, False),
    }
    if not args.no_peer:
        setups |= {"dbos, 1 process": ("dbos", 1, False), "dbos, 3 processes": ("dbos", 3, False)}
    runs: dict[str, list[float]] = {name: [] for name in setups}
    costs: dict[str, list[Measured]] = {name: [] for name in setups}
    with contextlib.ExitStack() as stack:
        pg = None if args.no_peer else stack.enter_context(Postgres())
        for r in range(args.repeat):  # alternated, so drift in the machine hits all alike
            for name, (server, size, route) in setups.items():
                where = dir / f"{server}-{size}-{route}-{r}"
                if pg is not None and server == "dbos":
                    figure = await run_dbos(size, args.workflows, args.concurrency, pg, where)
                elif server == "separate":
                    measured = await run_separate(size, args, etcd, where)
                    costs[name].append(measured)
                    figure = measured.steps_per_s
                else:
                    measured = await run(size, args.workflows, args.concurrency, etcd, where, route)
                    costs[name].append(measured)
                    figure = measured.steps_per_s
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
    print()
    cost = {name: _median_cost(m) for name, m in costs.items() if m}
    base = cost["dawait, 1 node"]
    floor = cost[SEPARATE]
    print(f"{'':42} {'CPU ms/1,000 steps':>18} {'x one node':>10} {'x control':>9} "
          f"{'RSS MB/1,000 inv.':>17} {'etcd txns/step':>14}")  # fmt: skip
    for name, c in cost.items():
        versus = c.cpu_ms_per_1000_steps / floor.cpu_ms_per_1000_steps
        print(
            f"{name:42} {c.cpu_ms_per_1000_steps:18.0f} "
            f"{c.cpu_ms_per_1000_steps / base.cpu_ms_per_1000_steps:10.2f} "
            f"{versus if setups[name][1] == 3 else float('nan'):9.2f} "
            f"{c.rss_mb_per_1000:17.2f} {c.txns_per_step:14.3f}"
        )
    capacity = await etcd_capacity(etcd)
    routed = cost["dawait, 3 nodes, placement-aware client"]
    per_node = 1_000_000 / routed.cpu_ms_per_1000_steps  # steps/s one core can drive
    print(
        f"\netcd here: {capacity:,.0f} write transactions/s (one member, no fsync, 64 "
        "clients)\nprojection, not a measurement: N nodes on N machines (one core each, "
        "placement-aware client), from the 3-node CPU per step and etcd's rate above:"
    )
    for n in (1, 3, 10, 30):
        limit = capacity / routed.txns_per_step if routed.txns_per_step else float("inf")
        print(f"  {n:3} nodes: {min(n * per_node, limit):9,.0f} steps/s"
              f"{'  (etcd-bound)' if n * per_node > limit else ''}")  # fmt: skip


def _median_cost(measured: list[Measured]) -> Measured:
    return Measured(
        steps_per_s=statistics.median(m.steps_per_s for m in measured),
        cpu_ms_per_1000_steps=statistics.median(m.cpu_ms_per_1000_steps for m in measured),
        rss_mb_per_1000=statistics.median(m.rss_mb_per_1000 for m in measured),
        txns_per_step=statistics.median(m.txns_per_step for m in measured),
    )


async def etcd_capacity(etcd: Etcd, seconds: float = 3.0, clients: int = 64) -> float:
    """Write transactions per second etcd commits here: ``clients`` writers of one small
    key each, for ``seconds``."""
    from dawait.cluster._etcd import Etcd as EtcdClient
    from dawait.cluster._etcd import Write

    client = EtcdClient(etcd.endpoints)
    await client.connect()
    stop = time.perf_counter() + seconds
    done = 0

    async def writer(k: int) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await client.commit([], [Write(f"/bench/capacity/{k}", b"x" * 64)])
            done += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(writer(k) for k in range(clients)))
    finally:
        await client.close()
    return done / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=6000)
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
