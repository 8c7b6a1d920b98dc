"""Replay after a restart: a stopped workflow resumes without rerunning its steps; versions."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import pytest

from dawait import Context, Resonate
from dawait.errors import NonDeterminismError
from tests.integration.semantics.payloads import PAYMENT, PLACED, Order, Receipt
from tests.integration.semantics.support import WAIT, Gate, promise_exists, sqlite_url
from tests.polling import eventually


async def test_a_workflow_stopped_midway_resumes_on_reopen_without_rerunning_steps(
    tmp_path: Path,
) -> None:
    gate = Gate()
    calls = collections.Counter[str]()

    def charge(amount: int) -> str:
        calls["charge"] += 1
        return f"pay-{amount}"

    def ship(payment: str) -> str:
        calls["ship"] += 1
        return f"shipped {payment}"

    async def wf(ctx: Context, amount: int) -> str:
        calls["wf"] += 1
        payment = await ctx.run(charge, amount)
        await ctx.run(gate.step)
        return await ctx.run(ship, payment)

    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        handle = await app.start("order", wf, 5)
        await gate.wait_reached()
        assert await handle.done() is False

    gate.open = True
    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        handle = await app.get("order")
        assert await asyncio.wait_for(handle.result(), WAIT) == "shipped pay-5"
    assert calls == {"wf": 2, "charge": 1, "ship": 1}
    assert gate.passed == 1


async def test_a_durable_child_stopped_midway_resumes_on_reopen(tmp_path: Path) -> None:
    gate = Gate()
    calls = collections.Counter[str]()

    def step(n: int) -> int:
        calls[f"step {n}"] += 1
        return n

    async def child(ctx: Context) -> int:
        first = await ctx.run(step, 1)
        await ctx.run(gate.step)
        return first + await ctx.run(step, 2)

    async def wf(ctx: Context) -> int:
        total = await ctx.run(child)
        return total + await ctx.run(step, 3)

    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        await app.start("wf", wf)
        await gate.wait_reached()
        assert (await app.promises.get("wf:1")).state == "pending"

    gate.open = True
    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        assert await asyncio.wait_for((await app.get("wf")).result(), WAIT) == 6
        states = {p.id: p.state for p in await app.promises.search("wf*")}
    assert calls == {"step 1": 1, "step 2": 1, "step 3": 1}
    assert states == dict.fromkeys(["wf", "wf:1", "wf:1.1", "wf:1.2", "wf:1.3", "wf:2"], "resolved")


async def test_a_pending_ctx_promise_survives_a_restart(tmp_path: Path) -> None:
    runs = 0

    async def wf(ctx: Context) -> str:
        nonlocal runs
        runs += 1
        return f"approved by {await ctx.promise()}"

    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        await app.start("wf", wf)
        await eventually(lambda: promise_exists(app, "wf:1"), "the promise record")

    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        await app.promises.resolve("wf:1", "ops")
        assert await asyncio.wait_for((await app.get("wf")).result(), WAIT) == "approved by ops"
    assert runs == 2


async def test_changed_call_order_on_replay_raises_non_determinism(tmp_path: Path) -> None:
    gate = Gate()

    def step_a() -> str:
        return "a"

    def step_b() -> str:
        return "b"

    async def v1(ctx: Context) -> str:
        await ctx.run(step_a)
        await ctx.run(step_b)
        await ctx.run(gate.step)
        return "v1"

    async def v2(ctx: Context) -> str:
        await ctx.run(step_b)
        await ctx.run(step_a)
        await ctx.run(gate.step)
        return "v2"

    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(v1, name="wf")
        await app.start("job", "wf")
        await gate.wait_reached()

    gate.open = True
    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(v2, name="wf")
        handle = await app.get("job")
        with pytest.raises(NonDeterminismError, match=r"job:1"):
            await asyncio.wait_for(handle.result(), WAIT)
    assert gate.passed == 0


async def test_an_invocation_keeps_the_version_it_started_with(tmp_path: Path) -> None:
    gate = Gate()

    def step_a() -> str:
        return "a"

    def step_b() -> str:
        return "b"

    async def v1(ctx: Context) -> str:
        first = await ctx.run(step_a)
        await ctx.run(gate.step)
        return f"v1 {first}{await ctx.run(step_b)}"

    async def v2(ctx: Context) -> str:
        first = await ctx.run(step_b)
        await ctx.run(gate.step)
        return f"v2 {first}{await ctx.run(step_a)}"

    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(v1, name="wf", version=1)
        await app.start("old", "wf")
        await gate.wait_reached()

    gate.open = True
    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(v1, name="wf", version=1)
        app.register(v2, name="wf", version=2)
        assert await asyncio.wait_for((await app.get("old")).result(), WAIT) == "v1 ab"
        assert await app.run("new", "wf") == "v2 ba"
        assert await app.run("pinned", v1) == "v1 ab"
        assert (await app.promises.get("new")).param["version"] == 2
        assert (await app.promises.get("pinned")).param["version"] == 1


async def test_a_result_is_decoded_with_the_type_of_the_version_that_produced_it(
    app: Resonate,
) -> None:
    async def v1(ctx: Context) -> Order:
        return Order(id="o-1", amount=1, placed_at=PLACED)

    async def v2(ctx: Context) -> Receipt:
        return Receipt(order_id="o-1", payment_id=PAYMENT, charged_at=PLACED, items=[])

    app.register(v1, name="wf", version=1)
    assert await app.run("old", v1) == Order(id="o-1", amount=1, placed_at=PLACED)
    app.register(v2, name="wf", version=2)
    result = await (await app.get("old")).result()
    assert type(result) is Order
