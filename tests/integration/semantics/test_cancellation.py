"""Cancellation: the promise settles canceled and the code gets ``CancelledError``."""

from __future__ import annotations

import asyncio
import collections

import pytest

from dawait import Context, Resonate
from dawait.errors import CanceledError
from dawait.testing import FakeClock
from tests.integration.semantics.support import WAIT, holds, promise_exists
from tests.polling import eventually


@pytest.mark.parametrize("awaiting", ["sleep", "promise"])
async def test_cancel_settles_canceled_and_the_code_gets_cancelled_error(
    app: Resonate, awaiting: str
) -> None:
    waiting = asyncio.Event()
    cleaned_up = asyncio.Event()
    seen: list[str] = []
    after: list[str] = []

    def later() -> None:
        after.append("ran")

    async def wf(ctx: Context) -> str:
        call = ctx.sleep(3600) if awaiting == "sleep" else ctx.promise()
        waiting.set()
        try:
            await call
        except asyncio.CancelledError:
            seen.append("CancelledError")
            raise
        finally:
            cleaned_up.set()
        await ctx.run(later)
        return "finished"

    app.register(wf)
    handle = await app.start("wf", wf)
    await asyncio.wait_for(waiting.wait(), WAIT)
    await handle.cancel()
    with pytest.raises(CanceledError):
        await asyncio.wait_for(handle.result(), WAIT)
    await asyncio.wait_for(cleaned_up.wait(), WAIT)
    assert seen == ["CancelledError"]
    assert (await app.promises.get("wf")).state == "rejected_canceled"
    assert await handle.done() is True
    assert after == []


async def test_cancel_of_an_evicted_invocation_keeps_it_from_resuming(clock: FakeClock) -> None:
    calls = collections.Counter[str]()

    def step(name: str) -> None:
        calls[name] += 1

    async def wf(ctx: Context) -> str:
        await ctx.run(step, "before")
        await ctx.sleep(60)
        await ctx.run(step, "after")
        return "finished"

    async with Resonate(clock=clock, evict_after=0) as app:
        app.register(wf)
        handle = await app.start("wf", wf)

        async def evicted() -> bool:
            return await promise_exists(app, "wf:2") and app._engine.active == 0

        await eventually(evicted, "the sleeping invocation to leave memory")
        await handle.cancel()
        assert (await app.promises.get("wf:2")).state == "rejected_canceled"  # with it
        clock.advance(61)
        await eventually(lambda: holds(app._engine.active == 0), "the engine to be idle")
        with pytest.raises(CanceledError):
            await handle.result()
        assert calls == {"before": 1}


async def _pending_ids(app: Resonate) -> list[str]:
    return sorted(p.id for p in await app.promises.search("*", state="pending"))


async def test_cancel_cascades_to_what_it_awaits_but_not_to_detached_calls(
    store_url: str,
) -> None:
    """The canceled invocation's timers, its ``ctx.promise`` promises (an id of their own
    too), its durable child's and its ``ctx.rpc`` invocation's (with their own calls) are
    canceled with it: nothing of it stays pending. A ``detached`` call goes on."""
    ready = asyncio.Event()

    async def child(ctx: Context) -> str:
        await ctx.promise(id="child-approval")
        return "child"

    async def helper(ctx: Context) -> str:
        await ctx.sleep(3600)
        return "helper"

    async def loner(ctx: Context) -> str:
        return str(await ctx.promise(id="loner-ok"))

    async def parent(ctx: Context) -> list[str]:
        timer = ctx.sleep(3600)
        approval = ctx.promise(id="approval-7")
        auto = ctx.promise()
        rpc = ctx.rpc("helper")  # registered by that name below
        detached = ctx.detached(loner)
        ready.set()
        first = await ctx.run(child)  # a durable child: it runs when awaited
        return [first, await timer, await approval, await auto, await rpc, await detached]

    async with Resonate(store=store_url) as app:
        for fn in (child, helper, loner, parent):
            app.register(name=fn.__name__)(fn)
        handle = await app.start("p1", parent)
        await asyncio.wait_for(ready.wait(), WAIT)

        async def all_waiting() -> bool:
            return {"approval-7", "child-approval", "loner-ok"} <= set(await _pending_ids(app))

        await eventually(all_waiting, "every call to be recorded")
        pending = await _pending_ids(app)
        await handle.cancel()
        with pytest.raises(CanceledError):
            await asyncio.wait_for(handle.result(), WAIT)

        detached = [p.id for p in await app.promises.search("p1:*") if p.id in pending]
        detached = [id for id in detached if (await app.promises.get(id)).state == "pending"]
        assert len(detached) == 1, detached
        assert await _pending_ids(app) == sorted([detached[0], "loner-ok"])
        for id in set(pending) - {detached[0], "loner-ok"}:  # timers, promises, calls
            assert (await app.promises.get(id)).state == "rejected_canceled", id
        assert len(pending) >= 8  # p1, its timer, 2 promises, rpc + its timer, child + promise
        await app.promises.resolve("loner-ok", "fine")

        async def detached_finished() -> bool:
            return (await app.promises.get(detached[0])).state == "resolved"

        await eventually(detached_finished, "the detached call to finish")
