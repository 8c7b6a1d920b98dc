"""``ctx.promise``: external promises settled from outside or by later calls."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from dawait import Context, Resonate
from dawait.errors import PromiseTimeoutError
from dawait.testing import FakeClock
from tests.integration.semantics.payloads import OutOfStockError
from tests.integration.semantics.support import WAIT, promise_exists
from tests.polling import eventually


async def test_ctx_promise_returns_at_once_and_is_resolved_from_outside(
    app: Resonate,
) -> None:
    ids: list[str] = []
    made = asyncio.Event()

    async def wf(ctx: Context) -> Any:
        approval = ctx.promise()
        ids.append(approval.id)
        made.set()
        return await approval

    app.register(wf)
    handle = await app.start("wf", wf)
    await asyncio.wait_for(made.wait(), WAIT)
    assert ids == ["wf:1"]
    await eventually(lambda: promise_exists(app, "wf:1"), "the promise record")
    assert (await app.promises.get("wf:1")).state == "pending"
    await app.promises.resolve("wf:1", {"approved": True})
    assert await asyncio.wait_for(handle.result(), WAIT) == {"approved": True}


async def test_a_later_step_can_settle_the_promise_it_is_given(store_url: str) -> None:
    async with Resonate(store_url) as app:

        async def approve(promise_id: str) -> None:
            await app.promises.resolve(promise_id, "yes")

        async def wf(ctx: Context) -> Any:
            approval = ctx.promise()
            await ctx.run(approve, approval.id)
            return await approval

        app.register(wf)
        assert await asyncio.wait_for(app.run("wf", wf), WAIT) == "yes"


async def test_a_later_durable_call_can_settle_the_promise_it_is_given(store_url: str) -> None:
    async with Resonate(store_url, evict_after=60) as app:

        async def approve(promise_id: str) -> None:
            await app.promises.reject(promise_id, OutOfStockError("denied"))

        async def notify(ctx: Context, promise_id: str) -> None:
            await ctx.run(approve, promise_id)

        async def wf(ctx: Context) -> str:
            approval = ctx.promise(id="approval-7")
            assert approval.id == "approval-7"
            await ctx.run(notify, approval.id)
            try:
                await approval
            except OutOfStockError as exc:
                return f"rejected: {exc}"
            return "resolved"

        app.register(wf)
        assert await asyncio.wait_for(app.run("wf", wf), WAIT) == "rejected: denied"
        assert (await app.promises.get("approval-7")).state == "rejected"


async def test_a_rejected_ctx_promise_raises_in_the_workflow(app: Resonate) -> None:
    made = asyncio.Event()

    async def wf(ctx: Context) -> str:
        approval = ctx.promise()
        made.set()
        try:
            await approval
        except ValueError as exc:
            return f"ValueError: {exc}"
        return "resolved"

    app.register(wf)
    handle = await app.start("wf", wf)
    await asyncio.wait_for(made.wait(), WAIT)
    await eventually(lambda: promise_exists(app, "wf:1"), "the promise record")
    await app.promises.reject("wf:1", ValueError("no budget"))
    assert await asyncio.wait_for(handle.result(), WAIT) == "ValueError: no budget"


async def test_a_ctx_promise_past_its_timeout_raises_promise_timeout(clock: FakeClock) -> None:
    async def wf(ctx: Context) -> str:
        try:
            await ctx.promise(timeout=dt.timedelta(days=3))
        except PromiseTimeoutError:
            return "timed out"
        return "settled"

    async with Resonate(clock=clock) as app:
        app.register(wf)
        handle = await app.start("wf", wf)
        await eventually(lambda: promise_exists(app, "wf:1"), "the promise record")
        clock.advance(dt.timedelta(days=3, seconds=1).total_seconds())
        assert await asyncio.wait_for(handle.result(), WAIT) == "timed out"
        assert (await app.promises.get("wf:1")).state == "rejected_timedout"
