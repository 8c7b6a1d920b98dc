"""Results and handles: ``run``, ``start``, ``get``; the same id returns the stored result."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import pytest

from dawait import Context, Resonate
from dawait.errors import PromiseNotFoundError
from tests.integration.semantics.support import WAIT, sqlite_url


async def test_run_returns_the_result_and_the_same_id_returns_it_without_running(
    store_url: str,
) -> None:
    calls = collections.Counter[str]()

    def add(a: int, b: int) -> int:
        calls["add"] += 1
        return a + b

    async def wf(ctx: Context, n: int) -> int:
        calls["wf"] += 1
        return await ctx.run(add, n, 1) * 10

    async with Resonate(store_url) as app:
        app.register(wf)
        assert await app.run("job", wf, 4) == 50
        assert await app.run("job", wf, 4) == 50
        assert calls == {"wf": 1, "add": 1}


async def test_same_id_again_after_a_restart_returns_the_stored_result(tmp_path: Path) -> None:
    calls = collections.Counter[str]()

    def add(a: int, b: int) -> int:
        calls["add"] += 1
        return a + b

    async def wf(ctx: Context, n: int) -> int:
        calls["wf"] += 1
        return await ctx.run(add, n, 1)

    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        assert await app.run("job", wf, 1) == 2
    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        assert await app.run("job", wf, 1) == 2
    assert calls == {"wf": 1, "add": 1}


async def test_start_gives_a_handle_with_result_done_and_cancel(app: Resonate) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def hold() -> None:
        started.set()
        await release.wait()

    async def wf(ctx: Context) -> str:
        await ctx.run(hold)
        return "done"

    app.register(wf)
    handle = await app.start("job", wf)
    assert handle.id == "job"
    await asyncio.wait_for(started.wait(), WAIT)
    assert await handle.done() is False
    release.set()
    assert await asyncio.wait_for(handle.result(), WAIT) == "done"
    assert await handle.done() is True
    await handle.cancel()  # canceling a finished invocation does nothing
    assert await handle.result() == "done"
    assert (await app.promises.get("job")).state == "resolved"


async def test_start_twice_attaches_to_the_running_invocation(app: Resonate) -> None:
    release = asyncio.Event()
    calls = collections.Counter[str]()

    async def slow() -> int:
        calls["slow"] += 1
        await release.wait()
        return 7

    async def wf(ctx: Context) -> int:
        calls["wf"] += 1
        return await ctx.run(slow)

    app.register(wf)
    first = await app.start("job", wf)
    second = await app.start("job", wf)
    release.set()
    assert await asyncio.wait_for(asyncio.gather(first.result(), second.result()), WAIT) == [7, 7]
    assert calls == {"wf": 1, "slow": 1}


async def test_get_returns_a_handle_of_an_existing_invocation(app: Resonate) -> None:
    async def wf(ctx: Context) -> int:
        return 3

    app.register(wf)
    await app.run("job", wf)
    handle = await app.get("job")
    assert handle.id == "job"
    assert await handle.result() == 3
    assert await handle.done() is True


async def test_get_of_an_unknown_id_raises_promise_not_found(app: Resonate) -> None:
    with pytest.raises(PromiseNotFoundError, match="nope"):
        await app.get("nope")
