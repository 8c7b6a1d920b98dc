"""dawait side of bench/embedded.py, run in a subprocess of its own; prints one JSON object.

python bench/dawait_workload.py steps --store sqlite --mode concurrent --workflows 2000
python bench/dawait_workload.py sleepers --store sqlite --invocations 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from datetime import timedelta
from typing import Any

from dawait import Context, Resonate
from dawait.testing import FakeClock


def rss_mb() -> float:
    """Resident memory now, in MB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def store_url(kind: str, folder: str) -> str | None:
    """``memory``, ``sqlite`` (a file in ``folder``) or any store URL (``etcd://...``)."""
    if kind == "memory":
        return None
    return f"sqlite:///{folder}/bench.db" if kind == "sqlite" else kind


async def step(x: int) -> int:
    return x + 1


async def steps(store: str | None, mode: str, n: int) -> dict[str, Any]:
    app = Resonate(store=store)

    @app.register
    async def workflow(ctx: Context, x: int) -> int:
        a = await ctx.run(step, x)
        b = await ctx.run(step, a)
        return await ctx.run(step, b)

    async with app:
        assert await app.run("warm-up", workflow, 0) == 3
        cpu0, t0 = time.process_time(), time.perf_counter()
        if mode == "concurrent":
            handles = await asyncio.gather(*(app.start(f"w{i}", workflow, i) for i in range(n)))
            results = await asyncio.gather(*(h.result() for h in handles))
        else:
            results = [await app.run(f"w{i}", workflow, i) for i in range(n)]
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert results == [i + 3 for i in range(n)]
    return {
        "workflows": n,
        "steps": 3 * n,
        "seconds": round(seconds, 4),
        "workflows_per_s": round(n / seconds, 1),
        "steps_per_s": round(3 * n / seconds, 1),
        "cpu_seconds": round(cpu, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


async def sleepers(store: str | None, n: int, chunk: int = 1000) -> dict[str, Any]:
    """n invocations each sleeping an hour: memory while they sleep, then all complete."""
    clock = FakeClock()
    app = Resonate(store=store, clock=clock, evict_after=0)

    @app.register
    async def nap(ctx: Context, x: int) -> int:
        await ctx.sleep(timedelta(hours=1))
        return x

    async with app:
        before = rss_mb()
        t0 = time.perf_counter()
        for start in range(0, n, chunk):
            await asyncio.gather(
                *(app.start(f"s{i}", nap, i) for i in range(start, min(start + chunk, n)))
            )
        while app._engine.active:  # everyone started is asleep and out of memory
            await asyncio.sleep(0.01)
        started_s = time.perf_counter() - t0
        asleep = rss_mb()
        pending = len(await app.promises.search("s*:1", state="pending", limit=n + 1))
        t1 = time.perf_counter()
        clock.advance(3601)
        done = 0
        for start in range(0, n, chunk):
            handles = [await app.get(f"s{i}") for i in range(start, min(start + chunk, n))]
            results = await asyncio.gather(*(h.result() for h in handles))
            done += sum(
                1 for i, r in zip(range(start, start + chunk), results, strict=False) if r == i
            )
        woken_s = time.perf_counter() - t1
    return {
        "invocations": n,
        "rss_before_mb": round(before, 1),
        "rss_asleep_mb": round(asleep, 1),
        "rss_growth_mb": round(asleep - before, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "sleeps_pending_while_asleep": pending,
        "completed_after_clock_jump": done,
        "start_seconds": round(started_s, 2),
        "wake_and_finish_seconds": round(woken_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=("steps", "sleepers"))
    parser.add_argument("--store", default="sqlite", help="memory, sqlite or a store URL")
    parser.add_argument("--mode", choices=("concurrent", "sequential"), default="concurrent")
    parser.add_argument("--workflows", type=int, default=2000)
    parser.add_argument("--invocations", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dawait-bench-") as folder:
        store = store_url(args.store, folder)
        if args.workload == "steps":
            report = asyncio.run(steps(store, args.mode, args.workflows))
            report["mode"] = args.mode
        else:
            report = asyncio.run(sleepers(store, args.invocations))
    report.update(peer="dawait", store=args.store, python=sys.version.split()[0])
    print(json.dumps(report))


if __name__ == "__main__":
    main()
