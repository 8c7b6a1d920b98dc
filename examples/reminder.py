"""A deferred reminder: ``ctx.sleep(timedelta(days=1))`` that survives a restart.

The sleep is a durable timer: its wake-up time is recorded once, so closing the app (a
deploy, a crash) while the reminder sleeps loses nothing. The next app on the same SQLite
file resumes it, and it fires when the recorded time comes, not a day after the restart.

The demo passes ``dawait.testing.FakeClock`` as the app's clock so it can jump a day ahead
at once; in production leave ``clock=`` out. Messages go out through a fake outbox keyed by
an idempotency key (built from ``ctx.id``), because a step interrupted by a restart runs
again: steps are at-least-once, results exactly-once.

    python examples/reminder.py
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from dawait import Context, Resonate
from dawait.testing import FakeClock


class Reminder(BaseModel):
    id: str
    user: str
    text: str
    delay: dt.timedelta


@dataclass(frozen=True)
class Delivery:
    reminder_id: str
    user: str
    sent_at: dt.datetime


class Outbox:
    """A fake notification service: one message per idempotency key."""

    def __init__(self) -> None:
        self.messages: dict[str, str] = {}
        self.sends = 0
        self._arrived: dict[str, asyncio.Event] = {}

    def reset(self) -> None:
        self.messages.clear()
        self.sends = 0
        self._arrived.clear()

    async def send(self, key: str, user: str, text: str) -> None:
        self.sends += 1
        self.messages.setdefault(key, f"to {user}: {text}")
        self._arrived.setdefault(key, asyncio.Event()).set()

    async def wait_for(self, key: str) -> str:
        """The message sent with ``key``, once it has been sent."""
        await self._arrived.setdefault(key, asyncio.Event()).wait()
        return self.messages[key]


outbox = Outbox()


async def send_message(key: str, user: str, text: str) -> None:
    await outbox.send(key, user, text)


async def remind(ctx: Context, reminder: Reminder) -> Delivery:
    # The timer is recorded before the next step runs, so once the confirmation is out the
    # wake-up time is on disk.
    wake_up = ctx.sleep(reminder.delay)
    await ctx.run(
        send_message,
        f"{ctx.id}/scheduled",
        reminder.user,
        f"I will remind you in {reminder.delay.total_seconds() / 3600:g} hours: {reminder.text!r}",
    )
    await wake_up
    sent_at: dt.datetime = await ctx.now()
    await ctx.run(send_message, f"{ctx.id}/reminder", reminder.user, reminder.text)
    return Delivery(reminder_id=reminder.id, user=reminder.user, sent_at=sent_at)


def create_app(store: str, clock: FakeClock) -> Resonate:
    app = Resonate(store=store, clock=clock)
    app.register(remind)
    return app


@dataclass
class ReminderReport:
    delivery: Delivery
    done_before_due: bool
    messages: dict[str, str]
    sends: int


def _at(clock: FakeClock) -> str:
    return dt.datetime.fromtimestamp(clock.now() / 1000, dt.UTC).strftime("%a %H:%M")


async def main(
    store: str | None = None,
    clock: FakeClock | None = None,
    reminder_id: str = "reminder-7",
) -> ReminderReport:
    """Schedule a reminder, restart while it sleeps, jump a day ahead, see it fire."""
    if store is None:  # a restart needs a file: use a throwaway one
        with tempfile.TemporaryDirectory() as tmp:
            return await main(f"sqlite:///{Path(tmp) / 'reminder.db'}", clock, reminder_id)
    clock = clock or FakeClock()
    outbox.reset()
    reminder = Reminder(
        id=reminder_id, user="ada", text="water the plants", delay=dt.timedelta(days=1)
    )

    async with create_app(store, clock) as app:
        await app.start(reminder.id, remind, reminder)
        print(f"[{_at(clock)}] {await outbox.wait_for(f'{reminder.id}/scheduled')}")
    print(f"[{_at(clock)}] app closed while {reminder.id} sleeps")

    async with create_app(store, clock) as app:
        print(f"[{_at(clock)}] app reopened on the same store")
        handle = await app.get(reminder.id)
        clock.advance(reminder.delay.total_seconds() - 60)
        done_before_due = await handle.done()
        print(f"[{_at(clock)}] a minute before it is due: fired={done_before_due}")
        clock.advance(60)
        delivery: Delivery = await handle.result()
    print(f"[{_at(clock)}] {outbox.messages[f'{reminder.id}/reminder']}")
    return ReminderReport(
        delivery=delivery,
        done_before_due=done_before_due,
        messages=dict(outbox.messages),
        sends=outbox.sends,
    )


if __name__ == "__main__":
    # A new reminder each run; the store keeps the earlier ones.
    asyncio.run(
        main("sqlite:///.dawait/reminder.db", reminder_id=f"reminder-{uuid.uuid4().hex[:8]}")
    )
