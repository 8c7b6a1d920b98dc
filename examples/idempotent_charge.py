"""The invocation id as an idempotency key: ``charge-123`` charges the customer once.

``app.run("charge-123", charge, request)`` twice (or at the same time, or after a restart)
gives one invocation and one result. Inside, a step can still run more than once: steps are
at-least-once, results exactly-once. Here the payment API charges the card and then the
connection drops before the answer arrives; dawait retries the step. The step hands the
payment API ``ctx.id``, the workflow's durable id, as its idempotency key, so the retry
finds the charge made the first time instead of making a second one.

    python examples/idempotent_charge.py
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pydantic import BaseModel, Field

from dawait import Constant, Context, Resonate


class ChargeRequest(BaseModel):
    customer: str
    amount_cents: int = Field(gt=0)


@dataclass(frozen=True)
class Charge:
    id: str
    customer: str
    amount_cents: int


class PaymentAPI:
    """A fake payment provider that honours idempotency keys, like Stripe's."""

    def __init__(self) -> None:
        self.charges: dict[str, Charge] = {}
        self.requests = 0
        self.drop_responses = 0

    def reset(self, *, drop_responses: int = 0) -> None:
        self.charges.clear()
        self.requests = 0
        self.drop_responses = drop_responses

    async def create_charge(self, customer: str, amount_cents: int, idempotency_key: str) -> Charge:
        self.requests += 1
        charge = self.charges.get(idempotency_key)
        if charge is None:
            charge = Charge(
                id=f"ch_{len(self.charges) + 1}", customer=customer, amount_cents=amount_cents
            )
            self.charges[idempotency_key] = charge
        if self.drop_responses > 0:
            self.drop_responses -= 1
            raise ConnectionError("connection reset before the response arrived")
        return charge


payments = PaymentAPI()


async def charge_card(request: ChargeRequest, idempotency_key: str) -> Charge:
    return await payments.create_charge(request.customer, request.amount_cents, idempotency_key)


async def charge(ctx: Context, request: ChargeRequest) -> Charge:
    # Retry quickly for the demo; the default policy backs off exponentially from 1 second.
    step = ctx.options(retry_policy=Constant(delay=0.01, max_retries=5))
    result: Charge = await step.run(charge_card, request, ctx.id)
    return result


@dataclass
class ChargeReport:
    first: Charge
    second: Charge
    concurrent: list[Charge]
    charges_made: int
    api_requests: int


async def main(store: str | None = None) -> ChargeReport:
    payments.reset(drop_responses=1)
    app = Resonate(store=store)
    app.register(charge)
    request = ChargeRequest(customer="cus_ada", amount_cents=2500)
    async with app:
        first: Charge = await app.run("charge-123", charge, request)
        second: Charge = await app.run("charge-123", charge, request)
        concurrent: list[Charge] = await asyncio.gather(
            *(app.run("charge-123", charge, request) for _ in range(3))
        )
    print(f"charge-123 -> {first.id} for ${first.amount_cents / 100:.2f} to {first.customer}")
    same = all(c == first for c in [second, *concurrent])
    print(f"asked 5 times: the same charge each time: {same}")
    print(
        f"payment API: {payments.requests} request(s) from this process, "
        f"{len(payments.charges)} charge(s) made"
    )
    if payments.requests > len(payments.charges):
        print("(a response was lost; the step was retried with the same idempotency key)")
    return ChargeReport(
        first=first,
        second=second,
        concurrent=list(concurrent),
        charges_made=len(payments.charges),
        api_requests=payments.requests,
    )


if __name__ == "__main__":
    asyncio.run(main("sqlite:///.dawait/idempotent_charge.db"))
