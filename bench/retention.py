"""Retention under steady load: store size over time and throughput, with and without a
short retention, on SQLite and on etcd, in one run.

    .venv/bin/python bench/retention.py [--seconds 90] [--retention 5s] [--trials 2]
        [--stores sqlite,etcd]

Each setting is one ``dawait serve`` node (bench/http_app.py) on a fresh store: a SQLite
file, or a throwaway local etcd (bench/_etcd.py; the leader compacts every 10 s). 3-step
workflows are started through the API, 200 in flight, for ``--seconds``; every 5 s the
store's size is sampled (the SQLite file with its WAL; etcd's ``dbSize`` and
``dbSizeInUse`` from ``etcdctl endpoint status``). Throughput is over the second half of
the run, once deletion keeps pace with what settles. Settings alternate, ``--trials``
times each; prints the size over time of the last pair, whether it plateaued (growth over
the last third of the run), and the best throughput with retention as a ratio to the best
without it (the issue's bound: at most 10 % less), with every trial's figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: ``bench.`` imports from the repository root

from bench._etcd import Etcd  # noqa: E402
from bench._ports import free_ports  # noqa: E402
from bench.http_api import Node as Server  # noqa: E402
from dawait.node._client import HttpClient  # noqa: E402

CONCURRENCY = 200
SAMPLE_EVERY = 5.0


@dataclass
class Run:
    store: str
    retention: str
    samples: list[tuple[float, int, float, float]] = field(default_factory=list)
    """(seconds, invocations finished, store size MB, in use MB)."""

    def rate(self, since: float) -> float:
        """Invocations per second after ``since`` seconds."""
        later = [s for s in self.samples if s[0] >= since]
        (t0, n0, *_), (t1, n1, *_) = later[0], later[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def growth(self, since: float) -> float:
        """MB per 1,000 invocations after ``since`` seconds."""
        later = [s for s in self.samples if s[0] >= since]
        (_t0, n0, s0, _u0), (_t1, n1, s1, _u1) = later[0], later[-1]
        return (s1 - s0) * 1000 / (n1 - n0) if n1 > n0 else 0.0


def etcd_sizes(etcd: Etcd) -> tuple[float, float]:
    ran = subprocess.run(
        ["etcdctl", f"--endpoints={etcd.endpoint}", "endpoint", "status", "-w", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, "ETCDCTL_API": "3"},
        check=True,
    )
    status = json.loads(ran.stdout)[0]["Status"]
    return status["dbSize"] / 1e6, status.get("dbSizeInUse", status["dbSize"]) / 1e6


def sqlite_size(db: Path) -> tuple[float, float]:
    total = sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())
    return total / 1e6, total / 1e6


async def load(
    run: Run, node: Server, seconds: float, measure: Callable[[], tuple[float, float]]
) -> None:
    """Keep ``CONCURRENCY`` workflows in flight for ``seconds`` (each client starts the next
    as soon as its last has finished), sampling the store's size (``measure``: MB, MB in
    use) every ``SAMPLE_EVERY``."""
    done = 0
    started = time.monotonic()
    async with HttpClient(node.url, timeout=60) as client:

        async def worker(k: int) -> None:
            nonlocal done
            n = 0
            while time.monotonic() - started < seconds:
                await client.start(f"w{k}-{n}", "three_steps", [n], {}, wait=30)
                n += 1
                done += 1

        async def sampler() -> None:
            while True:
                run.samples.append((time.monotonic() - started, done, *measure()))
                await asyncio.sleep(SAMPLE_EVERY)

        sampling = asyncio.create_task(sampler())
        await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
        sampling.cancel()
    run.samples.append((time.monotonic() - started, done, *measure()))


async def run_once(store: str, retention: str, seconds: float) -> Run:
    """One node on a fresh ``store`` (``sqlite`` or ``etcd``) with ``--retention``."""
    run = Run(store, retention)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        app = ("--app", "bench.http_app:app", "--retention", retention)
        measure: Callable[[], tuple[float, float]]
        if store == "sqlite":
            db = Path(tmp) / "bench.db"
            where = ("--port", "0", "--store", f"sqlite:///{db}")
            measure = functools.partial(sqlite_size, db)
        else:
            etcd = stack.enter_context(Etcd(Path(tmp) / "etcd"))
            [port] = free_ports(1)
            where = (
                "--etcd", etcd.endpoint, "--namespace", "retention", "--node-id", "n0",
                "--port", str(port), "--etcd-compact-every", "10",
            )  # fmt: skip
            measure = functools.partial(etcd_sizes, etcd)
        node = Server.serve(Path(tmp) / "n0", *app, *where)
        try:
            node.wait_listening()
            await load(run, node, seconds, measure)
        finally:
            node.process.terminate()
            node.process.wait(timeout=30)
    return run


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--retention", default="5s")
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--stores", default="sqlite,etcd")
    args = parser.parse_args()
    half, last_third = args.seconds / 2, args.seconds * 2 / 3
    for store in args.stores.split(","):
        kept_runs, swept_runs = [], []
        for _trial in range(args.trials):
            kept_runs.append(await run_once(store, "forever", args.seconds))
            swept_runs.append(await run_once(store, args.retention, args.seconds))
        kept = max(kept_runs, key=lambda r: r.rate(half))
        swept = max(swept_runs, key=lambda r: r.rate(half))
        ratio = swept.rate(half) / kept.rate(half)
        print(
            f"{store}: {swept.rate(half):,.0f} invocations/s with --retention "
            f"{args.retention}, {kept.rate(half):,.0f} without: {ratio:.2f}x "
            f"({(1 - ratio) * 100:+.1f} % cost; trials with "
            f"{', '.join(f'{r.rate(half):,.0f}' for r in swept_runs)}, without "
            f"{', '.join(f'{r.rate(half):,.0f}' for r in kept_runs)}); growth over the last "
            f"third {swept.growth(last_third):.3f} MB/1,000 with, "
            f"{kept.growth(last_third):.3f} without"
        )
        last_kept, last_swept = kept_runs[-1], swept_runs[-1]
        print(f"    {'s':>5} {'with: n':>9} {'MB':>7} {'in use':>7}   {'without: n':>10} {'MB':>7}")
        for (t, n, mb, used), (_t, n2, mb2, _u2) in zip(
            last_swept.samples, last_kept.samples, strict=False
        ):
            print(f"    {t:5.0f} {n:9,} {mb:7.1f} {used:7.1f}   {n2:10,} {mb2:7.1f}")


if __name__ == "__main__":
    asyncio.run(main())
