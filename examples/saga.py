"""A saga: when a later step fails for good, undo the earlier ones.

``place_order`` charges the card, then reserves stock. ``OutOfStock`` is a business outcome,
not a glitch, so the reservation step is told not to retry it (``ctx.options(non_retryable=
...)``; leaf steps retry everything else). The workflow catches it, refunds the charge as a
step of its own, and re-raises: the invocation fails with ``OutOfStock``. That failure is
recorded like a result, so asking for the same order again raises the same error without
charging or refunding a second time.

    python examples/saga.py
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from dawait import Context, Resonate


class OutOfStock(Exception):
    """The warehouse cannot fill the order."""

    def __init__(self, sku: str) -> None:
        super().__init__(sku)
        self.sku = sku

    def __str__(self) -> str:
        return f"{self.sku} is out of stock"


class Order(BaseModel):
    id: str
    sku: str
    quantity: int = Field(gt=0)
    amount_cents: int = Field(ge=0)


@dataclass(frozen=True)
class Payment:
    charge_id: str
    amount_cents: int


@dataclass(frozen=True)
class Confirmation:
    order_id: str
    charge_id: str
    reservation_id: str


# The outside world, faked: a payment ledger and a warehouse that count what they are asked.
ledger: list[str] = []
stock: dict[str, int] = {}
reserve_attempts: Counter[str] = Counter()


async def charge_card(order: Order) -> Payment:
    ledger.append(f"charge {order.id} {order.amount_cents}")
    return Payment(charge_id=f"ch_{order.id}", amount_cents=order.amount_cents)


async def refund(payment: Payment) -> None:
    ledger.append(f"refund {payment.charge_id} {payment.amount_cents}")


async def reserve_stock(order: Order) -> str:
    reserve_attempts[order.id] += 1
    if stock.get(order.sku, 0) < order.quantity:
        raise OutOfStock(order.sku)
    stock[order.sku] -= order.quantity
    return f"res_{order.id}"


async def place_order(ctx: Context, order: Order) -> Confirmation:
    payment: Payment = await ctx.run(charge_card, order)
    try:
        reservation_id: str = await ctx.options(non_retryable=(OutOfStock,)).run(
            reserve_stock, order
        )
    except OutOfStock:
        await ctx.run(refund, payment)  # compensation: a durable step like any other
        raise
    return Confirmation(
        order_id=order.id, charge_id=payment.charge_id, reservation_id=reservation_id
    )


@dataclass
class SagaOutcome:
    confirmed: Confirmation
    failure: OutOfStock | None
    failure_again: OutOfStock | None
    ledger: list[str] = field(default_factory=list)
    reserve_attempts: dict[str, int] = field(default_factory=dict)


async def main(store: str | None = None) -> SagaOutcome:
    ledger.clear()
    reserve_attempts.clear()
    stock.clear()
    stock.update({"lamp": 5, "chair": 0})
    app = Resonate(store=store)
    app.register(place_order)
    lamp = Order(id="order-1", sku="lamp", quantity=1, amount_cents=3999)
    chair = Order(id="order-2", sku="chair", quantity=4, amount_cents=19600)
    failure: OutOfStock | None = None
    failure_again: OutOfStock | None = None
    async with app:
        confirmed: Confirmation = await app.run(lamp.id, place_order, lamp)
        print(f"{lamp.id}: confirmed, reservation {confirmed.reservation_id}")
        try:
            await app.run(chair.id, place_order, chair)
        except OutOfStock as exc:
            failure = exc
            print(f"{chair.id}: failed: {exc} (the charge was refunded)")
        try:
            await app.run(chair.id, place_order, chair)
        except OutOfStock as exc:
            failure_again = exc
            print(f"{chair.id} again: the same recorded failure: {exc}")
    print("ledger of this process:", "; ".join(ledger) or "empty (every outcome was stored)")
    return SagaOutcome(
        confirmed=confirmed,
        failure=failure,
        failure_again=failure_again,
        ledger=list(ledger),
        reserve_attempts=dict(reserve_attempts),
    )


if __name__ == "__main__":
    asyncio.run(main("sqlite:///.dawait/saga.db"))
