"""The app ``test_cluster.py`` runs in ``dawait serve --etcd`` node processes.

Steps append ``kind id pid`` lines to the effects file (see ``served_app.effect``), so the
test can count how often each step ran and in which node process.
"""

from __future__ import annotations

from datetime import timedelta

from dawait import Context, Resonate
from tests.integration.served_app import effect

app = Resonate()


async def work(id: str, step: int, acc: int) -> int:
    effect("step", f"{id}/{step}")
    return acc * 3 + step


@app.register(group="helpers")
async def helper(ctx: Context, id: str, x: int) -> int:
    """Runs only on nodes serving the ``helpers`` group (reached by ``ctx.rpc``)."""
    return await ctx.run(work, f"{id}/helper", 9, x)


@app.register
async def mixed(ctx: Context, i: int, sleep: float) -> int:
    """Steps, a durable sleep, and for some ``i`` a remote call or an external promise."""
    id = ctx.invocation_id
    acc = await ctx.run(work, id, 0, i)
    await ctx.sleep(timedelta(seconds=sleep))
    if i % 5 == 0:
        acc += await ctx.rpc("helper", id, acc)
    if i % 7 == 0:
        acc += await ctx.promise(id=f"ext-{i}")
    return await ctx.run(work, id, 1, acc)


def mixed_result(i: int) -> int:
    """What ``mixed(i, ...)`` returns when every external promise ``ext-{i}`` resolves to i."""
    acc = i * 3
    if i % 5 == 0:
        acc += acc * 3 + 9
    if i % 7 == 0:
        acc += i
    return acc * 3 + 1


async def count(k: int) -> int:
    return k


@app.register
async def chain(ctx: Context, n: int) -> int:
    """``n`` steps (a tree that takes several deletion transactions)."""
    total = 0
    for k in range(n):
        total += await ctx.run(count, k)
    return total


@app.register(group="helpers")
async def helper_waits(ctx: Context, id: str) -> str:
    """In the ``helpers`` group (another partition than its caller's): a timer and a
    promise of its own that a cancel of its caller must reach."""
    approval = ctx.promise(id=f"{id}-helper-ok")
    await ctx.sleep(timedelta(hours=1))
    return str(await approval)


@app.register
async def stays(ctx: Context, id: str) -> str:
    return str(await ctx.promise(id=f"{id}-stays-ok"))


@app.register
async def cancelable(ctx: Context) -> list[str]:
    """Awaits a timer, a promise of its own, an rpc to the ``helpers`` group and a detached
    call: a cancel reaches all but the detached one."""
    id = ctx.invocation_id
    timer = ctx.sleep(timedelta(hours=1))
    approval = ctx.promise(id=f"{id}-ok")
    remote = ctx.rpc("helper_waits", id)
    detached = ctx.detached("stays", id)
    await timer
    return [await approval, await remote, await detached]
