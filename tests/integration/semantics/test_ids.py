"""Promise ids: assigned when a call is made, numbered per durable function, run once."""

from __future__ import annotations

import asyncio

from dawait import Context, Resonate
from tests.integration.semantics.payloads import Order


async def test_ids_are_assigned_when_the_call_is_made_not_when_it_finishes(
    app: Resonate,
) -> None:
    b_done = asyncio.Event()
    order: list[str] = []

    async def a() -> str:
        await b_done.wait()  # a finishes after b
        order.append("a")
        return "A"

    async def b() -> str:
        order.append("b")
        b_done.set()
        return "B"

    async def wf(ctx: Context) -> list[str]:
        first, second = ctx.run(a), ctx.run(b)
        assert (first.id, second.id) == ("wf:1", "wf:2")
        return list(await asyncio.gather(first, second))

    app.register(wf)
    assert await app.run("wf", wf) == ["A", "B"]
    assert order == ["b", "a"]
    found = {p.id: (p.param["func"], p.value) for p in await app.promises.search("wf:*")}
    assert found == {"wf:1": (a.__qualname__, "A"), "wf:2": (b.__qualname__, "B")}


async def test_durable_children_number_their_own_calls(app: Resonate) -> None:
    seen: dict[str, list[str]] = {}

    def step(n: int) -> int:
        return n

    async def grandchild(ctx: Context) -> int:
        call = ctx.run(step, 1)
        seen[ctx.id] = [call.id]
        return await call

    async def child(ctx: Context, n: int) -> int:
        calls = [ctx.run(step, n), ctx.run(grandchild), ctx.run(step, n + 1)]
        seen[ctx.id] = [c.id for c in calls]
        return sum(await asyncio.gather(*calls))

    async def wf(ctx: Context) -> int:
        one = ctx.run(child, 10)
        two = ctx.run(step, 5)
        seen[ctx.id] = [one.id, two.id]
        return await one + await two

    app.register(wf)
    assert await app.run("wf", wf) == 10 + 1 + 11 + 5
    assert seen == {
        "wf": ["wf:1", "wf:2"],
        "wf:1": ["wf:1.1", "wf:1.2", "wf:1.3"],
        "wf:1.2": ["wf:1.2.1"],
    }
    ids = [p.id for p in await app.promises.search("wf:*")]
    assert ids == ["wf:1", "wf:1.1", "wf:1.2", "wf:1.2.1", "wf:1.3", "wf:2"]


async def test_awaiting_a_call_twice_runs_it_once(app: Resonate) -> None:
    calls = 0

    def step() -> int:
        nonlocal calls
        calls += 1
        return calls

    async def wf(ctx: Context) -> list[int]:
        call = ctx.run(step)
        return [await call, await call]

    app.register(wf)
    assert await app.run("wf", wf) == [1, 1]
    assert calls == 1


async def test_a_new_invocation_gets_its_arguments_as_their_annotated_types(
    app: Resonate,
) -> None:
    seen: list[tuple[type, type]] = []

    async def place(ctx: Context, order: Order, quantity: int) -> str:
        seen.append((type(order), type(quantity)))
        return order.id

    async def parent(ctx: Context) -> str:
        plain_order = {"id": "o-2", "amount": 1, "placed_at": "2024-05-01T12:30:00Z"}
        return await ctx.rpc("place", plain_order, "3")

    app.register(place, name="place")
    app.register(parent)
    plain = {"id": "o-1", "amount": 1, "placed_at": "2024-05-01T12:30:00Z"}
    assert await app.run("direct", place, plain, "2") == "o-1"
    assert await app.run("parent", parent) == "o-2"
    assert seen == [(Order, int), (Order, int)]
