"""etcd's database size under steady load, with the leader's history compaction off and
on (``--etcd-compact-every``): one ``dawait serve --etcd`` node on a throwaway local etcd
(bench/_etcd.py) per setting, 3-step workflows started through the API 200 at a time for
``--seconds``, etcd's DB size (``etcdctl endpoint status``) every 4,000 invocations. No
retention yet (issue 14): what is left after compaction is the records themselves.

    .venv/bin/python bench/etcd_space.py [--seconds 60] [--compact-every 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: ``bench.`` imports from the repository root

from bench._etcd import Etcd  # noqa: E402
from bench._ports import free_ports  # noqa: E402
from bench.http_api import Node as Server  # noqa: E402
from dawait.node._client import HttpClient  # noqa: E402

ETCDCTL = "etcdctl"
BATCH = 200
EVERY = 4000


def db_size_mb(etcd: Etcd) -> float:
    ran = subprocess.run(
        [ETCDCTL, f"--endpoints={etcd.endpoint}", "endpoint", "status", "-w", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, "ETCDCTL_API": "3"},
        check=True,
    )
    return float(json.loads(ran.stdout)[0]["Status"]["dbSize"]) / 1e6


async def run(compact_every: int, seconds: float) -> list[tuple[float, int, float]]:
    """(seconds, invocations finished, DB size MB) along one run."""
    with tempfile.TemporaryDirectory() as tmp, Etcd(Path(tmp) / "etcd") as etcd:
        [port] = free_ports(1)
        node = Server.serve(
            Path(tmp) / "n0", "--app", "bench.http_app:app", "--etcd", etcd.endpoint,
            "--namespace", "space", "--node-id", "n0", "--port", str(port),
            "--etcd-compact-every", str(compact_every),
        )  # fmt: skip
        try:
            node.wait_listening()
            rows = []
            async with HttpClient(node.url) as client:
                done = 0
                started = time.monotonic()
                while time.monotonic() - started < seconds:
                    await asyncio.gather(
                        *(
                            client.start(f"w{done + k}", "three_steps", [k], {}, wait=30)
                            for k in range(BATCH)
                        )
                    )
                    done += BATCH
                    if done % EVERY == 0:
                        rows.append((time.monotonic() - started, done, db_size_mb(etcd)))
            return rows
        finally:
            node.process.terminate()
            node.process.wait(timeout=20)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--compact-every", type=int, default=10)
    args = parser.parse_args()
    for every in (0, args.compact_every):
        rows = await run(every, args.seconds)
        label = "no compaction" if every == 0 else f"--etcd-compact-every {every}"
        (_t0, n0, s0), (t1, n1, s1) = rows[0], rows[-1]
        growth = (s1 - s0) * 1000 / (n1 - n0)
        print(f"{label}: {growth:.2f} MB per 1,000 invocations ({n1:,} in {t1:.0f} s, "
              f"{s1:.1f} MB at the end)")  # fmt: skip
        for t, n, size in rows:
            print(f"    {t:5.0f} s {n:7,} invocations {size:7.1f} MB")


if __name__ == "__main__":
    asyncio.run(main())
