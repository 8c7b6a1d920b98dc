"""Timeouts: a step past its deadline, and deadlines capped by the parent's."""

from __future__ import annotations

import asyncio

import pytest

from dawait import Context, Resonate
from dawait.errors import PromiseTimeoutError
from dawait.testing import FakeClock
from tests.integration.semantics.support import WAIT


async def test_a_step_past_its_timeout_raises_promise_timeout(clock: FakeClock) -> None:
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    async def wf(ctx: Context) -> str:
        try:
            return await ctx.options(timeout=5).run(slow)
        except PromiseTimeoutError as exc:
            return f"timed out: {exc}"

    async with Resonate(clock=clock) as app:
        app.register(wf)
        handle = await app.start("wf", wf)
        await asyncio.wait_for(started.wait(), WAIT)
        clock.advance(6)
        result = await asyncio.wait_for(handle.result(), WAIT)
        assert result.startswith("timed out")
        assert "wf:1" in result
        assert (await app.promises.get("wf:1")).state == "rejected_timedout"


async def test_a_childs_deadline_is_capped_by_its_parents(clock: FakeClock) -> None:
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    async def child(ctx: Context) -> str:
        return await ctx.run(slow)

    async def wf(ctx: Context) -> str:
        return await ctx.options(timeout=3600).run(child)

    async with Resonate(clock=clock) as app:
        app.register(wf, timeout=10)
        handle = await app.start("wf", wf)
        await asyncio.wait_for(started.wait(), WAIT)
        root = await app.promises.get("wf")
        assert root.timeout_at is not None
        assert (await app.promises.get("wf:1")).timeout_at == root.timeout_at
        clock.advance(11)
        with pytest.raises(PromiseTimeoutError):
            await asyncio.wait_for(handle.result(), WAIT)
        assert (await app.promises.get("wf")).state == "rejected_timedout"
        assert (await app.promises.get("wf:1")).state == "rejected_timedout"


async def test_a_leaf_step_times_out_at_its_parents_deadline(clock: FakeClock) -> None:
    started = asyncio.Event()
    outcome: list[str] = []

    async def slow() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("step cancelled")
            raise
        return "never"

    async def child(ctx: Context) -> str:
        return await ctx.options(timeout=3600).run(slow)

    async def wf(ctx: Context) -> str:
        try:
            return await ctx.run(child)
        except PromiseTimeoutError:
            return "child timed out"

    async with Resonate(clock=clock) as app:
        app.register(wf)
        app.register(child, timeout=10)
        handle = await app.start("wf", wf)
        await asyncio.wait_for(started.wait(), WAIT)
        clock.advance(11)
        assert await asyncio.wait_for(handle.result(), WAIT) == "child timed out"
        assert outcome == ["step cancelled"]
        assert (await app.promises.get("wf:1")).state == "rejected_timedout"
