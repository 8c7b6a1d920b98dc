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
        clock.advance(61)

        async def timer_fired() -> bool:
            return (await app.promises.get("wf:2")).state == "resolved"

        await eventually(timer_fired, "the timer to fire")
        await eventually(lambda: holds(app._engine.active == 0), "the engine to be idle")
        with pytest.raises(CanceledError):
            await handle.result()
        assert calls == {"before": 1}
