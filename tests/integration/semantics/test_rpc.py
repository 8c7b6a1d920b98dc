"""``ctx.rpc`` and ``ctx.detached``: registered functions as invocations of their own."""

from __future__ import annotations

import asyncio
import dataclasses

from dawait import Context, Resonate
from dawait.testing import FakeClock
from tests.integration.semantics.payloads import PLACED, Order
from tests.integration.semantics.support import WAIT, promise_exists
from tests.polling import eventually


async def test_rpc_runs_a_registered_function_as_its_own_invocation(app: Resonate) -> None:
    async def price(ctx: Context, order: Order) -> Order:
        return dataclasses.replace(order, amount=order.amount * 2)

    async def wf(ctx: Context) -> Order:
        call = ctx.rpc("pricing", Order(id="o", amount=21, placed_at=PLACED))
        assert call.id == "wf:1"
        priced = await call
        assert type(priced) is Order
        return priced

    app.register(wf)
    app.register(price, name="pricing")
    result = await app.run("wf", wf)
    assert result == Order(id="o", amount=42, placed_at=PLACED)
    child = await app.promises.get("wf:1")
    assert child.param["func"] == "pricing"
    assert child.state == "resolved"
    assert await (await app.get("wf:1")).result() == result


async def test_an_rpc_child_that_sleeps_resumes_its_evicted_parent(clock: FakeClock) -> None:
    async def nap(ctx: Context, seconds: int) -> str:
        await ctx.sleep(seconds)
        return f"slept {seconds}"

    async def wf(ctx: Context) -> str:
        return await ctx.rpc("nap", 60)

    async with Resonate(clock=clock, evict_after=0) as app:
        app.register(wf)
        app.register(nap, name="nap")
        handle = await app.start("wf", wf)

        async def both_evicted() -> bool:
            return await promise_exists(app, "wf:1.1") and app._engine.active == 0

        await eventually(both_evicted, "parent and child to leave memory")
        clock.advance(60)
        assert await asyncio.wait_for(handle.result(), WAIT) == "slept 60"


async def test_a_detached_invocation_outlives_its_parent(app: Resonate) -> None:
    release = asyncio.Event()

    async def hold() -> str:
        await release.wait()
        return "released"

    async def background(ctx: Context, n: int) -> str:
        return f"{n}: {await ctx.run(hold)}"

    async def wf(ctx: Context) -> str:
        return ctx.detached(background, 5).id

    app.register(wf)
    app.register(background)
    child_id = await asyncio.wait_for(app.run("wf", wf), WAIT)
    assert child_id == "wf:1"
    child = await app.get(child_id)
    assert await child.done() is False
    release.set()
    assert await asyncio.wait_for(child.result(), WAIT) == "5: released"


async def test_awaiting_a_detached_call_gives_its_result(app: Resonate) -> None:
    async def background(ctx: Context, n: int) -> int:
        return n + 1

    async def wf(ctx: Context) -> int:
        return await ctx.detached("background", 41)

    app.register(wf)
    app.register(background, name="background")
    assert await asyncio.wait_for(app.run("wf", wf), WAIT) == 42
