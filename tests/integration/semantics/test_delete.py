"""``app.delete``: a settled invocation goes with its steps, timers and durable children;
its detached invocations stay; pending ones are refused; the id runs again afterwards."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dawait import Context, Resonate
from dawait.errors import NotDeletableError, PromiseNotFoundError
from tests.integration.semantics.support import child, runs, step


async def test_delete_a_finished_invocation_and_run_its_id_again(store_url: str) -> None:
    runs.clear()
    app = Resonate(store=store_url)

    @app.register
    async def loner(ctx: Context, x: int) -> int:
        return await ctx.run(step, x)

    @app.register
    async def flow(ctx: Context, x: int) -> int:
        a = await ctx.run(step, x)
        await ctx.sleep(timedelta(milliseconds=1))
        b = await ctx.run(child, a)
        return b + await ctx.detached(loner, 7)

    async with app:
        assert await app.run("f1", flow, 1) == 21 + 8
        with pytest.raises(NotDeletableError, match="'f1:1' is a call of 'f1'"):
            await app.delete("f1:1")
        await app.delete("f1")
        with pytest.raises(PromiseNotFoundError):
            await app.get("f1")
        detached = await app.get("f1:4")  # an invocation of its own: kept
        assert await detached.result() == 8
        runs.clear()
        assert await app.run("f1", flow, 2) == 31 + 8  # runs again, new arguments
        assert runs == ["step 2", "step 30"]  # the detached call is found at its position

        pending = await app.promises.create("waiting")
        with pytest.raises(NotDeletableError, match="'waiting' is pending"):
            await app.delete("waiting")
        await app.promises.resolve(pending.id, 1)
        await app.delete("waiting")
        with pytest.raises(PromiseNotFoundError):
            await app.promises.get("waiting")
