"""Resonate's Python SDK with a dawait node as its server, beside the same workload in the
SDK's own local mode (its in-process server model, no network), in one run.

    .venv/bin/python bench/resonate_sdk.py [--workflows 200] [--steps 5] [--workers 2]
        [--trials 3] [--cluster N] [--rounds R]

Each trial: a fresh ``dawait serve`` node (examples.app, a SQLite file in a temp dir, a free
127.0.0.1 port), ``--workers`` SDK worker processes, and one client process that starts
``--workflows`` workflows of ``--steps`` ``ctx.run`` steps each at once and waits for them
all; then the same workflows in one process on ``Resonate()`` (local mode). Prints
workflows/s and steps/s of both (median of the trials, and each trial), the ratio, the
node's CPU seconds per 1,000 steps (/proc/PID/stat) and its RSS after the run.

``--cluster N``: the server is a cluster of N ``dawait serve --etcd`` nodes on one throwaway
etcd member (bench/_etcd.py, ``--unsafe-no-fsync``), the workers connected to the nodes in
turn and the client to the last one; CPU is summed over the nodes, RSS is each node's.
``--rounds R``: each trial runs the workload R times against the same server, and RSS is
printed after each round (what history costs a node: it should stay flat).

The SDK runs in its own venv (Python >= 3.12): ``.tools/resonate-py``, made by
``./scripts/check.sh``. On this 2-core machine the client, workers and node share the
cores: compare the figures of one run only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: ``bench.`` imports from the repository root

from bench._etcd import Etcd  # noqa: E402
from bench._ports import free_ports  # noqa: E402

SDK_PYTHON = REPO / ".tools" / "resonate-py" / "bin" / "python"
WORKER = Path(__file__).with_name("resonate_sdk_worker.py")
DAWAIT = Path(sys.executable).with_name("dawait")
LISTENING = re.compile(r"dawait node listening on (http://127\.0\.0\.1:\d+)")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_node(dir: Path, name: str, *store: str) -> tuple[subprocess.Popen[bytes], str]:
    log = dir / f"{name}.out"
    node = subprocess.Popen(
        [str(DAWAIT), "serve", "--app", "examples.app:app", *store, "--grace-period", "1"],
        cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = LISTENING.search(log.read_text(errors="replace"))
        if found:
            return node, found.group(1)
        if node.poll() is not None:
            raise SystemExit(f"the node exited: {log.read_text()}")
        time.sleep(0.05)
    stop(node)
    raise SystemExit("the node did not start in 30 s")


def start_nodes(dir: Path, cluster: int, etcd: Etcd | None) -> list[tuple[Any, str]]:
    if etcd is None:
        return [start_node(dir, "node", "--port", "0", "--store", f"sqlite:///{dir / 'b.db'}")]
    namespace = f"sdk-bench-{dir.name}"
    common = ["--etcd", ",".join(etcd.endpoints), "--namespace", namespace]
    ports = free_ports(cluster)
    return [
        start_node(dir, f"n{k}", "--port", str(port), *common, "--node-id", f"n{k}")
        for k, port in enumerate(ports)
    ]


def balanced(urls: list[str]) -> None:
    """Wait until every node owns the partitions it should."""
    deadline = time.monotonic() + 30
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        views = [json.loads(opener.open(f"{url}/nodes", timeout=5).read()) for url in urls]
        if all(v["balanced"] and len(v["items"]) == len(urls) for v in views):
            return
        time.sleep(0.1)
    raise SystemExit("the cluster did not balance in 30 s")


def sdk(*args: str) -> dict[str, float]:
    done = subprocess.run(
        [str(SDK_PYTHON), str(WORKER), *args], capture_output=True, timeout=600, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"resonate_sdk_worker.py {' '.join(args)}:\n{done.stderr.decode()}")
    answer: dict[str, float] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return answer


def on_dawait(
    workflows: int, steps: int, workers: int, cluster: int, rounds: int = 1
) -> tuple[float, float, list[list[float]]]:
    """(seconds of a round, median; nodes' CPU seconds per round, median; each node's RSS
    MiB after each round) of one trial against a fresh node (or cluster)."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dawait-sdk-bench-")))
        etcd = stack.enter_context(Etcd(tmp / "etcd")) if cluster else None
        nodes = start_nodes(tmp, cluster, etcd)
        urls = [url for _, url in nodes]
        running: list[subprocess.Popen[bytes]] = []
        try:
            if cluster:
                balanced(urls)
            for k in range(workers):
                process = subprocess.Popen(
                    [str(SDK_PYTHON), str(WORKER), "worker", urls[k % len(urls)], "bench"],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                )  # fmt: skip
                running.append(process)
                assert process.stdout is not None
                if process.stdout.readline().strip() != b"ready":
                    raise SystemExit("an SDK worker did not start")
            seconds, used, rss = [], [], []
            for r in range(rounds):
                before = sum(cpu_seconds(node.pid) for node, _ in nodes)
                prefix = f"wf{r}-"
                answer = sdk("client", urls[-1], "bench", prefix, str(workflows), str(steps))
                used.append(sum(cpu_seconds(node.pid) for node, _ in nodes) - before)
                seconds.append(answer["seconds"])
                rss.append([rss_mib(node.pid) for node, _ in nodes])
            return statistics.median(seconds), statistics.median(used), rss
        finally:
            for process in running:
                stop(process)
            for node, _ in nodes:
                stop(node)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--cluster", type=int, default=0, help="nodes of an etcd cluster")
    parser.add_argument("--rounds", type=int, default=1, help="workloads per trial")
    args = parser.parse_args()
    if not SDK_PYTHON.exists():
        raise SystemExit(f"{SDK_PYTHON} is missing: run ./scripts/check.sh (it makes that venv)")
    n, s = args.workflows, args.steps
    dawait, local, cpu, rss = [], [], [], []
    for _ in range(args.trials):
        seconds, node_cpu, node_rss = on_dawait(n, s, args.workers, args.cluster, args.rounds)
        dawait.append(seconds)
        cpu.append(node_cpu)
        rss.append(node_rss)
        local.append(sdk("local", str(n), str(s))["seconds"])
    d, lo = statistics.median(dawait), statistics.median(local)
    server = f"a {args.cluster}-node etcd cluster" if args.cluster else "one SQLite node"
    print(f"{n} workflows x {s} steps, {args.workers} SDK workers, {server}, {args.trials} trials")
    for name, med, runs in (("dawait node", d, dawait), ("SDK local mode", lo, local)):
        trials = ", ".join(f"{n / t:.0f}" for t in runs)
        print(f"  {name:15} {n / med:8.0f} workflows/s {n * s / med:9.0f} steps/s"
              f"   (workflows/s per trial: {trials})")  # fmt: skip
    print(f"  ratio dawait / local: {lo / d:.2f} (workflows/s)")
    print(f"  node CPU (summed over nodes): {1000 * statistics.median(cpu) / (n * s):.3f} s "
          f"per 1,000 steps (median round)")  # fmt: skip
    for k, after in enumerate(rss[-1]):
        sizes = ", ".join(f"{r:.0f}" for r in after)
        print(f"  RSS MiB of each node after round {k + 1} ({(k + 1) * n} finished): {sizes}")
    if len(rss[-1]) > 1:
        first, last, later = rss[-1][0], rss[-1][-1], n * (len(rss[-1]) - 1)
        growth = [1000 * (b - a) / later for a, b in zip(first, last, strict=True)]
        print("  RSS growth per 1,000 finished invocations after round 1: "
              + ", ".join(f"{g:.2f}" for g in growth) + " MiB")  # fmt: skip


if __name__ == "__main__":
    main()
