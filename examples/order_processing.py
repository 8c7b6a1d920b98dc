"""Order processing: three durable steps (charge, reserve, ship) with typed payloads.

Arguments and results are pydantic models and dataclasses. dawait stores them as JSON and
hands them back as the same types, so a replay (after a crash or a restart) sees exactly what
the first run saw. The order id is the invocation id: asking again for ``order-42`` returns
the stored receipt and runs no step again, even from a new process on the same SQLite file.

    python examples/order_processing.py    # run it twice: the second run charges nobody
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

from pydantic import BaseModel, Field

from dawait import Context, Resonate


class LineItem(BaseModel):
    sku: str
    quantity: int = Field(gt=0)
    unit_price_cents: int = Field(ge=0)


class Order(BaseModel):
    id: str
    customer: str
    address: str
    items: list[LineItem]

    @property
    def total_cents(self) -> int:
        return sum(item.quantity * item.unit_price_cents for item in self.items)


@dataclass(frozen=True)
class Payment:
    charge_id: str
    amount_cents: int


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    skus: tuple[str, ...]


@dataclass(frozen=True)
class Shipment:
    carrier: str
    tracking_number: str


class Receipt(BaseModel):
    order_id: str
    payment: Payment
    reservation: Reservation
    shipment: Shipment


# The outside world (payment provider, warehouse, carrier), faked: it counts every call, so
# you can see which steps ran in this process and which came back from the store.
calls: Counter[str] = Counter()


async def charge_card(order: Order) -> Payment:
    calls["charge_card"] += 1
    return Payment(charge_id=f"ch_{order.id}", amount_cents=order.total_cents)


async def reserve_items(order: Order) -> Reservation:
    calls["reserve_items"] += 1
    return Reservation(
        reservation_id=f"res_{order.id}", skus=tuple(item.sku for item in order.items)
    )


def ship_order(order: Order, reservation: Reservation) -> Shipment:
    """A plain function (say, a blocking HTTP client) works as a step too: it runs in a
    worker thread."""
    calls["ship_order"] += 1
    return Shipment(carrier="UPS", tracking_number=f"1Z{reservation.reservation_id.upper()}")


async def process_order(ctx: Context, order: Order) -> Receipt:
    """The workflow: each ``ctx.run`` is a checkpoint; a replay skips the finished ones."""
    payment: Payment = await ctx.run(charge_card, order)
    reservation: Reservation = await ctx.run(reserve_items, order)
    shipment: Shipment = await ctx.run(ship_order, order, reservation)
    return Receipt(order_id=order.id, payment=payment, reservation=reservation, shipment=shipment)


EXAMPLE_ORDER = Order(
    id="order-42",
    customer="ada@example.com",
    address="12 Analytical Row, London",
    items=[
        LineItem(sku="lamp", quantity=1, unit_price_cents=3999),
        LineItem(sku="bulb", quantity=2, unit_price_cents=899),
    ],
)


async def main(store: str | None = None, order: Order = EXAMPLE_ORDER) -> Receipt:
    calls.clear()
    app = Resonate(store=store)
    app.register(process_order)
    async with app:
        receipt: Receipt = await app.run(order.id, process_order, order)
        again: Receipt = await app.run(order.id, process_order, order)
    print(
        f"{receipt.order_id}: charged {receipt.payment.charge_id} "
        f"(${receipt.payment.amount_cents / 100:.2f}), "
        f"reserved {', '.join(receipt.reservation.skus)} as {receipt.reservation.reservation_id}, "
        f"shipped with {receipt.shipment.carrier} {receipt.shipment.tracking_number}"
    )
    ran = ", ".join(f"{name} x{count}" for name, count in sorted(calls.items()))
    print(f"steps run by this process: {ran or 'none (the receipt came from the store)'}")
    print(f"asked again with id {order.id}: same receipt: {again == receipt}")
    return receipt


if __name__ == "__main__":
    asyncio.run(main("sqlite:///.dawait/order_processing.db"))
