"""Human approval: the workflow waits on a durable promise that a person settles.

``ctx.promise(timeout=...)`` creates a promise that nothing inside the workflow settles. The
workflow tells a manager its id (a step that posts to their inbox) and awaits it; the
manager's answer comes from outside, through ``app.promises.resolve(id, value)`` or
``app.promises.reject(id, error)``, from any process that opens the same store. While it
waits (hours, days) the invocation leaves memory and costs only its records. If nobody
answers in time, awaiting the promise raises ``PromiseTimeoutError``.

    python examples/approval.py
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from dawait import Context, Resonate
from dawait.errors import PromiseTimeoutError
from dawait.testing import FakeClock

APPROVAL_WINDOW = dt.timedelta(days=3)


class Expense(BaseModel):
    id: str
    employee: str
    description: str
    amount_cents: int = Field(gt=0)


class Rejected(Exception):
    """The manager said no; pass one to ``app.promises.reject``."""


@dataclass(frozen=True)
class Decision:
    expense_id: str
    approved: bool
    note: str


class Inbox:
    """A fake manager's inbox: approval requests, each naming the promise to settle."""

    def __init__(self) -> None:
        self.requests: dict[str, str] = {}
        self.payouts: list[str] = []
        self.notices: list[str] = []
        self._posted: dict[str, asyncio.Event] = {}

    def reset(self) -> None:
        self.requests.clear()
        self.payouts.clear()
        self.notices.clear()
        self._posted.clear()

    def post(self, expense_id: str, approval_id: str) -> None:
        self.requests[expense_id] = approval_id
        self._posted.setdefault(expense_id, asyncio.Event()).set()

    async def approval_id_for(self, expense_id: str) -> str:
        """The id of the promise approving ``expense_id``, once the request has arrived."""
        await self._posted.setdefault(expense_id, asyncio.Event()).wait()
        return self.requests[expense_id]


inbox = Inbox()


async def request_approval(expense: Expense, approval_id: str) -> None:
    print(
        f"  inbox: {expense.employee} asks ${expense.amount_cents / 100:.2f} for "
        f"{expense.description!r}; answer promise {approval_id}"
    )
    inbox.post(expense.id, approval_id)


async def pay_out(expense: Expense) -> None:
    inbox.payouts.append(expense.id)


async def notify_employee(expense: Expense, text: str) -> None:
    inbox.notices.append(f"{expense.id}: {text}")


async def approve_expense(ctx: Context, expense: Expense) -> Decision:
    approval = ctx.promise(timeout=APPROVAL_WINDOW)
    await ctx.run(request_approval, expense, approval.id)
    try:
        answer: dict[str, Any] = await approval
    except Rejected as exc:
        note = f"rejected: {exc}"
    except PromiseTimeoutError:
        note = f"no answer within {APPROVAL_WINDOW.days} days"
    else:
        if answer.get("approved"):
            await ctx.run(pay_out, expense)
            return Decision(
                expense_id=expense.id, approved=True, note=f"approved by {answer.get('by')}"
            )
        note = "not approved"
    await ctx.run(notify_employee, expense, note)
    return Decision(expense_id=expense.id, approved=False, note=note)


def create_app(store: str | None, clock: FakeClock | None = None) -> Resonate:
    app = Resonate(store=store, clock=clock)
    app.register(approve_expense)
    return app


async def main(store: str | None = None, prefix: str = "expense") -> list[Decision]:
    inbox.reset()
    laptop = Expense(id=f"{prefix}-1", employee="ada", description="laptop", amount_cents=180000)
    yacht = Expense(
        id=f"{prefix}-2", employee="bob", description="team yacht", amount_cents=9_900_000
    )
    async with create_app(store) as app:
        handles = [await app.start(e.id, approve_expense, e) for e in (laptop, yacht)]
        # The manager, somewhere else, answers the requests in their inbox.
        await app.promises.resolve(
            await inbox.approval_id_for(laptop.id), {"approved": True, "by": "grace"}
        )
        await app.promises.reject(
            await inbox.approval_id_for(yacht.id), Rejected("over the travel budget")
        )
        decisions: list[Decision] = [await h.result() for h in handles]
    for decision in decisions:
        print(f"{decision.expense_id}: {decision.note}")
    print(f"paid out: {', '.join(inbox.payouts) or 'nothing'}")
    return decisions


if __name__ == "__main__":
    # New expenses each run; the store keeps the earlier ones.
    asyncio.run(main("sqlite:///.dawait/approval.db", prefix=f"expense-{uuid.uuid4().hex[:6]}"))
