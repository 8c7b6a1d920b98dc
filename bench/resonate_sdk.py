"""Resonate's Python SDK with a dawait node as its server, beside the same workload in the
SDK's own local mode (its in-process server model, no network), in one run.

    .venv/bin/python bench/resonate_sdk.py [--workflows 200] [--steps 5] [--workers 2]
        [--trials 3]

Each trial: a fresh ``dawait serve`` node (examples.app, a SQLite file in a temp dir, a free
127.0.0.1 port), ``--workers`` SDK worker processes, and one client process that starts
``--workflows`` workflows of ``--steps`` ``ctx.run`` steps each at once and waits for them
all; then the same workflows in one process on ``Resonate()`` (local mode). Prints
workflows/s and steps/s of both (median of the trials, and each trial), the ratio, the
node's CPU seconds per 1,000 steps (/proc/PID/stat) and its RSS after the run.

The SDK runs in its own venv (Python >= 3.12): ``.tools/resonate-py``, made by
``./scripts/check.sh``. On this 2-core machine the client, workers and node share the
cores: compare the figures of one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
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


def start_node(dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    out = (dir / "node.out").open("wb")
    node = subprocess.Popen(
        [str(DAWAIT), "serve", "--app", "examples.app:app", "--port", "0",
         "--store", f"sqlite:///{dir / 'bench.db'}", "--grace-period", "1"],
        cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = LISTENING.search((dir / "node.out").read_text(errors="replace"))
        if found:
            return node, found.group(1)
        if node.poll() is not None:
            raise SystemExit(f"the node exited: {(dir / 'node.out').read_text()}")
        time.sleep(0.05)
    stop(node)
    raise SystemExit("the node did not start in 30 s")


def sdk(*args: str) -> dict[str, float]:
    done = subprocess.run(
        [str(SDK_PYTHON), str(WORKER), *args], capture_output=True, timeout=600, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"resonate_sdk_worker.py {' '.join(args)}:\n{done.stderr.decode()}")
    answer: dict[str, float] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return answer


def on_dawait(workflows: int, steps: int, workers: int) -> tuple[float, float, float]:
    """(seconds, node CPU seconds, node RSS MiB) of one trial against a fresh node."""
    with tempfile.TemporaryDirectory(prefix="dawait-sdk-bench-") as tmp:
        node, url = start_node(Path(tmp))
        running: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(workers):
                process = subprocess.Popen(
                    [str(SDK_PYTHON), str(WORKER), "worker", url, "bench"],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                )  # fmt: skip
                running.append(process)
                assert process.stdout is not None
                if process.stdout.readline().strip() != b"ready":
                    raise SystemExit("an SDK worker did not start")
            before = cpu_seconds(node.pid)
            seconds = sdk("client", url, "bench", "wf-", str(workflows), str(steps))["seconds"]
            return seconds, cpu_seconds(node.pid) - before, rss_mib(node.pid)
        finally:
            for process in running:
                stop(process)
            stop(node)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    if not SDK_PYTHON.exists():
        raise SystemExit(f"{SDK_PYTHON} is missing: run ./scripts/check.sh (it makes that venv)")
    n, s = args.workflows, args.steps
    dawait, local, cpu, rss = [], [], [], []
    for _ in range(args.trials):
        seconds, node_cpu, node_rss = on_dawait(n, s, args.workers)
        dawait.append(seconds)
        cpu.append(node_cpu)
        rss.append(node_rss)
        local.append(sdk("local", str(n), str(s))["seconds"])
    d, lo = statistics.median(dawait), statistics.median(local)
    print(f"{n} workflows x {s} steps, {args.workers} SDK workers, {args.trials} trials")
    for name, med, runs in (("dawait node", d, dawait), ("SDK local mode", lo, local)):
        trials = ", ".join(f"{n / t:.0f}" for t in runs)
        print(f"  {name:15} {n / med:8.0f} workflows/s {n * s / med:9.0f} steps/s"
              f"   (workflows/s per trial: {trials})")  # fmt: skip
    print(f"  ratio dawait / local: {lo / d:.2f} (workflows/s)")
    print(f"  node CPU: {1000 * statistics.median(cpu) / (n * s):.3f} s per 1,000 steps; "
          f"node RSS after the run: {statistics.median(rss):.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
