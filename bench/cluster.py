"""Cluster throughput: 1 node vs 3 nodes (``dawait serve --etcd``) against one local etcd
member, ``--workflows`` workflows of 3 steps (bench/http_app.py) started through the HTTP
API, spread over the nodes, then awaited. Prints aggregate steps/s for each and the ratio.

    .venv/bin/python bench/cluster.py [--workflows 2000] [--concurrency 64]

etcd runs with ``--unsafe-no-fsync`` (tests/etcd.py), so the figures are the cluster's own
cost, not the disk's. Failover timing is not measured here yet.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Not bench/ first on the path: bench/http.py would shadow the standard library's http.
sys.path[0] = str(REPO)

from dawait.cluster._client import HttpClient  # noqa: E402
from tests.etcd import EtcdCluster, free_ports  # noqa: E402
from tests.integration.served import Nodes  # noqa: E402

STEPS = 3


async def run(nodes: int, workflows: int, concurrency: int, etcd: EtcdCluster, dir: Path) -> float:
    namespace = f"bench{nodes}-{os.getpid()}"
    os.makedirs(dir, exist_ok=True)
    spawner = Nodes(dir)
    args = ["--app", "bench.http_app:app", "--etcd", ",".join(etcd.endpoints)]
    members = [
        spawner.spawn(
            f"n{k}", *args, "--namespace", namespace, "--node-id", f"n{k}", "--port", str(port)
        )
        for k, port in enumerate(free_ports(nodes))
    ]
    try:
        for node in members:
            spawner.wait_listening(node)
        clients = [HttpClient(node.url) for node in members]
        for client in clients:
            await client.open()
        while len((await clients[0].nodes()).items) < nodes:
            await asyncio.sleep(0.05)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(workflows):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                client = clients[i % nodes]
                view, _ = await client.start(f"w{i}", "three_steps", [i], {}, wait=30)
                state = view.state
                while state == "pending":
                    state = (await client.result(f"w{i}", wait=30)).state
                if state != "resolved":
                    raise RuntimeError(f"w{i} ended {state}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        for client in clients:
            await client.close()
        return workflows * STEPS / elapsed
    finally:
        for node in members:
            node.terminate()
        for node in members:
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.process.kill()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dir = Path(tmp)
        with EtcdCluster(dir / "etcd", size=1) as etcd:
            one = await run(1, args.workflows, args.concurrency, etcd, dir / "one")
            print(f"1 node : {one:8.0f} steps/s")
            three = await run(3, args.workflows, args.concurrency, etcd, dir / "three")
            print(f"3 nodes: {three:8.0f} steps/s  ({three / one:.2f}x one node)")


if __name__ == "__main__":
    asyncio.run(main())
