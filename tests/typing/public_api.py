"""Checked by mypy --strict (scripts/typecheck.sh), never run: the public API's types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, assert_type

from dawait import Call, Context, Handle, Resonate

app = Resonate()


@dataclass
class Order:
    id: str


async def charge(order: Order, amount: int) -> str:
    return f"{order.id}:{amount}"


def ship(order: Order) -> int:
    return 1


async def child(ctx: Context, order: Order) -> float:
    return 1.0


@app.register
async def workflow(ctx: Context, order: Order) -> list[str]:
    assert_type(ctx.run(charge, order, 3), Call[str])
    assert_type(await ctx.run(charge, order, amount=3), str)
    assert_type(await ctx.run(ship, order), int)
    assert_type(await ctx.run(child, order), float)
    assert_type(await ctx.rpc("other", 1), Any)
    return []


async def caller() -> None:
    assert_type(await app.run("id", workflow, Order("1")), list[str])
    assert_type(await app.start("id", workflow, Order("1")), Handle[list[str]])
    assert_type(await app.run("id", "workflow", 1), Any)
    handle = await app.start("id", workflow, Order("1"))
    assert_type(await handle.result(), list[str])
