"""Retention through the app, on the fake clock: a finished invocation or promise is
deleted with its tree the millisecond its retention ends, not one before; functions may
keep theirs longer or forever; an invocation is kept while the one that called it waits."""

from __future__ import annotations

import asyncio
import datetime as dt
from datetime import timedelta
from pathlib import Path

import pytest

from dawait import Context, Resonate
from dawait.runtime._deletion import KEEP_WAITING
from dawait.testing import FakeClock
from tests.integration.semantics.support import (
    child,
    holds,
    promise_exists,
    runs,
    sqlite_url,
    step,
)
from tests.polling import eventually


async def flow(ctx: Context, x: int) -> int:
    return await ctx.run(child, await ctx.run(step, x))


async def _turns() -> None:
    """Let the engine's loops run a few times (on the fake clock, nothing else moves)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def _gone(app: Resonate, id: str) -> bool:
    return not await promise_exists(app, id)


async def test_an_invocation_goes_with_its_tree_the_millisecond_its_retention_ends(
    store_url: str, clock: FakeClock
) -> None:
    runs.clear()
    app = Resonate(store=store_url, clock=clock, retention=timedelta(seconds=5))
    app.register(flow)
    app.register(child)
    async with app:
        assert await app.run("f", flow, 1) == 21
        record = await app.promises.get("f")
        assert record.settled_at is not None
        assert record.delete_at == record.settled_at + timedelta(seconds=5)
        deadline = clock.now() + 5000
        await eventually(lambda: holds(clock.next_deadline == deadline), "a sweep at the deadline")

        clock.set(deadline - 1)
        await _turns()
        assert await promise_exists(app, "f")
        assert await promise_exists(app, "f:2.1")  # the child's step
        clock.set(deadline)
        await eventually(lambda: _gone(app, "f"), "the invocation's deletion")
        for id in ("f:1", "f:2", "f:2.1"):
            assert await _gone(app, id), id

        runs.clear()
        assert await app.run("f", flow, 2) == 31  # the id is free: it runs anew
        assert runs == ["step 2", "step 30"]


async def test_a_function_keeps_its_own_retention_or_forever(
    store_url: str, clock: FakeClock
) -> None:
    app = Resonate(store=store_url, clock=clock, retention=timedelta(seconds=5))

    @app.register(retention=1)
    async def brief(ctx: Context) -> int:
        return 1

    @app.register(retention=None)
    async def kept(ctx: Context) -> int:
        return 2

    @app.register
    async def usual(ctx: Context) -> int:
        return 3

    async with app:
        for id, fn in (("b", brief), ("k", kept), ("u", usual)):
            await app.run(id, fn)
        assert (await app.promises.get("k")).delete_at is None
        clock.advance(1)
        await eventually(lambda: _gone(app, "b"), "the brief invocation's deletion")
        assert await promise_exists(app, "u")
        clock.advance(4)
        await eventually(lambda: _gone(app, "u"), "the usual invocation's deletion")
        clock.advance(365 * 24 * 3600)
        await _turns()
        assert await promise_exists(app, "k")


async def test_a_promise_is_kept_while_pending_then_for_the_retention(clock: FakeClock) -> None:
    async with Resonate(clock=clock, retention=60) as app:
        promise = await app.promises.create("approval")
        clock.advance(3600)
        await _turns()
        assert await promise_exists(app, "approval")
        await app.promises.resolve(promise.id, True)
        clock.advance(59.999)
        await _turns()
        assert await promise_exists(app, "approval")
        clock.advance(0.001)
        await eventually(lambda: _gone(app, "approval"), "the promise's deletion")


async def test_an_invocation_is_kept_while_its_caller_waits(clock: FakeClock) -> None:
    app = Resonate(clock=clock, retention=timedelta(seconds=5))

    @app.register(name="callee", retention=1)
    async def callee(ctx: Context) -> int:
        return 7

    @app.register
    async def caller(ctx: Context) -> int:
        got = await ctx.rpc("callee")
        return got + await ctx.promise(id="go")

    async with app:
        handle = await app.start("c", caller)
        await eventually(lambda: promise_exists(app, "go"), "the caller to wait")
        clock.advance(2)  # the callee's retention has ended; its caller still waits
        retry = dt.datetime.fromtimestamp((clock.now() + KEEP_WAITING) / 1000, dt.UTC)

        async def kept_for_later() -> bool:
            return (await app.promises.get("c:1")).delete_at == retry

        await eventually(kept_for_later, "the callee to be kept for a later try")
        await app.promises.resolve("go", 1)
        assert await handle.result() == 8
        clock.advance(KEEP_WAITING / 1000)
        await eventually(lambda: _gone(app, "c:1"), "the callee's deletion")
        await eventually(lambda: _gone(app, "c"), "the caller's deletion")


async def test_deadlines_outlive_a_restart(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    clock = FakeClock()
    app = Resonate(store=url, clock=clock, retention=10)
    app.register(flow)
    app.register(child)
    async with app:
        await app.run("f", flow, 1)

    later = FakeClock(start=clock.now() + 10_000)
    reopened = Resonate(store=url, clock=later, retention=10)
    reopened.register(flow)
    reopened.register(child)
    async with reopened:
        await eventually(lambda: _gone(reopened, "f"), "the deletion after the restart")
        assert await _gone(reopened, "f:2.1")


@pytest.mark.parametrize(
    ("retention", "error", "message"),
    [
        (0, ValueError, "more than 0"),
        (-1, ValueError, "more than 0"),
        (timedelta(days=365 * 101), ValueError, "at most 100 years"),
        ("7d", TypeError, "expected seconds, a timedelta or None"),
        (True, TypeError, "expected seconds"),
    ],
)
def test_a_bad_retention_is_refused_naming_where(
    retention: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"Resonate retention: .*{message}"):
        Resonate(retention=retention)  # type: ignore[arg-type]
    app = Resonate()
    with pytest.raises(error, match=f"register step: .*{message}"):
        app.register(retention=retention)(step)  # type: ignore[call-overload]
