"""The example app that ``dawait serve`` runs (``./scripts/run.sh``):

    dawait serve --app examples.app:app

It serves the examples' workflows over HTTP, by name. Try, from another terminal:

    dawait invoke order-1 process_order '[{"id": "order-1", "customer": "ada@example.com",
        "address": "12 Analytical Row", "items": [{"sku": "lamp", "quantity": 1,
        "unit_price_cents": 3999}]}]' --wait
    dawait invoke hello-1 greet '["Ada"]' --wait
    dawait tree order-1
    dawait schedules create heartbeat '*/10 * * * * *' greet '["cron"]'
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from dawait import Context, Resonate
from examples.approval import approve_expense
from examples.idempotent_charge import charge
from examples.leased_queue import process_job
from examples.order_processing import process_order
from examples.saga import place_order

app = Resonate()
for workflow in (process_order, place_order, process_job, charge, approve_expense):
    app.register(workflow)


async def shout(text: str) -> str:
    await asyncio.sleep(0)
    return text.upper()


@app.register
async def greet(ctx: Context, name: str) -> str:
    """Two steps around a short durable sleep."""
    loud = await ctx.run(shout, name)
    await ctx.sleep(timedelta(milliseconds=100))
    return f"hello, {loud}"
