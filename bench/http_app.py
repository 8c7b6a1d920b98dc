"""The app bench/http_api.py serves (``dawait serve --app bench.http_app:app``, from the
repository root): one workflow of three trivial async steps, as in bench/embedded.py."""

from __future__ import annotations

import asyncio
import os
import time

from dawait import Context, Resonate

app = Resonate()


async def step(x: int) -> int:
    return x + 1


@app.register
async def three_steps(ctx: Context, x: int) -> int:
    a = await ctx.run(step, x)
    b = await ctx.run(step, a)
    return await ctx.run(step, b)


async def tick(path: str, k: int) -> int:
    """Append ``pid time k`` to ``path``: bench/cluster.py reads when steps ran, and where."""
    await asyncio.sleep(0.02)
    with open(path, "a") as out:  # noqa: ASYNC230 (a benchmark's log line)
        out.write(f"{os.getpid()} {time.time():.6f} {k}\n")
    return k


@app.register
async def ticker(ctx: Context, path: str, n: int) -> int:
    """``n`` steps in a row (bench/cluster.py's failover runs)."""
    for k in range(n):
        await ctx.run(tick, path, k)
    return n
