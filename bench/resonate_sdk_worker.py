"""The Resonate Python SDK's side of bench/resonate_sdk.py: run with the SDK's own venv
(.tools/resonate-py/bin/python, Python >= 3.12), never with dawait's.

    python resonate_sdk_worker.py local N S            # N workflows of S steps, in-process
    python resonate_sdk_worker.py worker URL GROUP      # serve the workflow until killed
    python resonate_sdk_worker.py client URL GROUP PREFIX N S   # N at once on GROUP's workers

``local`` and ``client`` print one JSON line: {"seconds": wall time of the N runs}.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from resonate.context import Context
from resonate.resonate import Resonate


async def step(ctx: Context, i: int) -> int:
    return i + 1


async def flow(ctx: Context, steps: int) -> int:
    total = 0
    for i in range(steps):
        total += await ctx.run(step, i)
    return total


def expected(steps: int) -> int:
    return steps * (steps + 1) // 2


async def timed(handles: list) -> float:  # type: ignore[type-arg]
    start = time.perf_counter()
    values = await asyncio.gather(*(h.result() for h in handles))
    return time.perf_counter() - start, values  # type: ignore[return-value]


async def local(count: int, steps: int) -> None:
    r = Resonate()
    r.register(flow)
    r.register(step)
    try:
        start = time.perf_counter()
        handles = [r.run(f"local-{i}", flow, steps) for i in range(count)]
        values = await asyncio.gather(*(h.result() for h in handles))
        seconds = time.perf_counter() - start
    finally:
        await r.stop()
    assert all(v == expected(steps) for v in values)
    print(json.dumps({"seconds": seconds}), flush=True)


async def worker(url: str, group: str) -> None:
    r = Resonate(url=url, group=group, token=os.environ.get("RESONATE_TOKEN"))
    r.register(flow)
    r.register(step)
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await r.stop()


async def client(url: str, group: str, prefix: str, count: int, steps: int) -> None:
    r = Resonate(url=url, group=f"{group}-client", token=os.environ.get("RESONATE_TOKEN"))
    try:
        target = r.options(target=group)
        start = time.perf_counter()
        handles = [target.rpc(f"{prefix}{i}", "flow", steps) for i in range(count)]
        values = await asyncio.gather(*(h.result() for h in handles))
        seconds = time.perf_counter() - start
    finally:
        await r.stop()
    assert all(v == expected(steps) for v in values), values[:3]
    print(json.dumps({"seconds": seconds}), flush=True)


def main() -> None:
    mode = sys.argv[1]
    if mode == "local":
        asyncio.run(local(int(sys.argv[2]), int(sys.argv[3])))
    elif mode == "worker":
        asyncio.run(worker(sys.argv[2], sys.argv[3]))
    elif mode == "client":
        url, group, prefix, count, steps = sys.argv[2:7]
        asyncio.run(client(url, group, prefix, int(count), int(steps)))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
