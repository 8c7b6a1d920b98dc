"""The app ``test_http_args.py`` runs in a ``dawait serve`` subprocess
(``--app tests.integration.args_app:app``): functions whose parameters are an int, a bool,
a datetime and a pydantic model with nested models, to send arguments of over HTTP."""

from __future__ import annotations

import datetime as dt

import pydantic

from dawait import Context, Resonate

app = Resonate()


class Line(pydantic.BaseModel):
    sku: str
    qty: int


class Order(pydantic.BaseModel):
    id: str
    lines: list[Line]
    due: dt.datetime | None = None


@app.register
async def add(ctx: Context, n: int, by: int = 1) -> int:
    return n + by


@app.register
async def negate(ctx: Context, on: bool) -> bool:
    return not on


@app.register
async def weekday(ctx: Context, when: dt.datetime) -> str:
    """The day and the offset, which only a real ``datetime`` has."""
    return f"{when.strftime('%A')} {when.utcoffset()}"


@app.register(name="shop.ship")
async def ship(ctx: Context, order: Order) -> str:
    """Reads the model's attributes, which a plain dict would not have."""
    due = "-" if order.due is None else order.due.date().isoformat()
    return f"{order.id}: {sum(line.qty for line in order.lines)} due {due}"


@app.register(name="shop.refund")
async def refund(ctx: Context, order: Order) -> str:
    return f"refunded {order.id}"
