"""The engine's timer loop: promises settled as their deadlines pass, steady across steps
of the wall clock.

A deadline is recorded in wall-clock milliseconds (``timeout_at``): that is what another
node or a restart goes by. But a timer armed in this process also keeps when it is due
on the monotonic clock (``armed``), counted from when it was armed, and fires by that: an
NTP step or a VM resume that moves the wall clock back does not delay it, and one that
moves it forward does not fire it early (nor, through it, any promise due before it on the
wall clock: expiry stops short of the earliest armed deadline not yet due). Deadlines this
process did not arm (read back at start, or a moved partition's) go by the wall clock.
"""

from __future__ import annotations

import asyncio
import heapq
from typing import TYPE_CHECKING

from dawait.core._errors import PromiseNotFoundError
from dawait.core._promise import EMPTY, PromiseRecord, Settle

if TYPE_CHECKING:
    from dawait.runtime._engine import Engine

__all__ = ["EXPIRE_BATCH", "MAX_ARMED", "TimerLoop"]

EXPIRE_BATCH = 1000
MAX_ARMED = 100_000
"""Timers whose monotonic deadline is kept at most; past it, the oldest go by the wall clock."""


class TimerLoop:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.armed: dict[str, tuple[int, float, bool]] = {}
        """Promise id -> (its wall deadline, its monotonic deadline, whether a timer)."""
        self._by_due: list[tuple[float, str]] = []
        self._by_wall: list[tuple[int, str]] = []
        """Both over ``armed``, lazily: an entry no longer in ``armed`` as pushed is skipped."""

    def arm(self, record: PromiseRecord) -> None:
        """``record`` was created here with a deadline: keep when it is due, monotonically."""
        if record.timeout_at is None or record.state.settled:
            return
        clock = self.engine.clock
        due = clock.monotonic() + (record.timeout_at - clock.now()) / 1000
        self.armed[record.id] = (record.timeout_at, due, record.is_timer)
        if self._by_due and due < self._by_due[0][0]:
            # Sooner than what the loop sleeps for, though maybe not on the wall clock (it
            # stepped forward): wake it.
            self.engine._timer_wakeup.set()
        heapq.heappush(self._by_due, (due, record.id))
        heapq.heappush(self._by_wall, (record.timeout_at, record.id))
        if len(self.armed) > MAX_ARMED:
            del self.armed[next(iter(self.armed))]
        if len(self._by_due) > 2 * len(self.armed) + 1000:  # mostly stale: rebuild
            self._by_due = [(due, id) for id, (_w, due, _t) in self.armed.items()]
            self._by_wall = [(wall, id) for id, (wall, _d, _t) in self.armed.items()]
            heapq.heapify(self._by_due)
            heapq.heapify(self._by_wall)

    def disarm(self, id: str) -> None:
        self.armed.pop(id, None)

    def _valid(self, id: str, wall: int | None = None, due: float | None = None) -> bool:
        entry = self.armed.get(id)
        return (
            entry is not None
            and (wall is None or entry[0] == wall)
            and (due is None or entry[1] == due)
        )

    def _due_now(self, steady: float) -> list[str]:
        """The armed ids due on the monotonic clock (taken off its heap)."""
        due = []
        heap = self._by_due
        while heap and heap[0][0] <= steady:
            at, id = heapq.heappop(heap)
            if self._valid(id, due=at):
                due.append(id)
        return due

    def _earliest_waiting(self, due: set[str]) -> int | None:
        """The earliest wall deadline among the armed not due yet (those in ``due`` are
        settled in this pass: taken off this heap too)."""
        heap = self._by_wall
        while heap and (heap[0][1] in due or not self._valid(heap[0][1], wall=heap[0][0])):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def expiry_now(self) -> int:
        """The time to read promises' lazy expiry at: the wall clock, but short of any
        deadline armed here that is not due yet on the monotonic clock (after a step of the
        wall clock forward, a read must not see such a timer fired)."""
        now = self.engine.clock.now()
        if not self.armed:
            return now
        steady = self.engine.clock.monotonic()
        heap = self._by_wall
        while heap and not self._valid(heap[0][1], wall=heap[0][0]):
            heapq.heappop(heap)
        if not heap or heap[0][0] > now:
            return now
        waiting = [wall for wall, due, _t in self.armed.values() if due > steady and wall <= now]
        return min(now, min(waiting) - 1) if waiting else now

    async def fire_due(self) -> None:
        """One pass: settle what is due, then sleep until the next deadline (or a wakeup)."""
        engine = self.engine
        await engine.ownership.timers.wait()
        engine._timer_wakeup.clear()
        clock = engine.clock
        now, steady = clock.now(), clock.monotonic()
        due = self._due_now(steady)
        earliest = self._earliest_waiting(set(due))
        # Not past an armed deadline that is not due yet (the wall clock may be ahead).
        upto = now if earliest is None else min(now, earliest - 1)
        expired = await engine.store.expire_promises(now=upto, limit=EXPIRE_BATCH)
        for settled in expired:
            self.disarm(settled.promise.id)
            engine.metrics.event("timeouts_fired")
            engine.on_settled(settled)
        # Due on the monotonic clock though not on the wall clock (it went back).
        for id in due:
            entry = self.armed.get(id)
            if entry is None or entry[0] <= upto:
                self.disarm(id)
                continue
            wall, _due, timer = entry
            event = Settle.RESOLVE if timer else Settle.TIMEOUT
            try:
                settled = await engine.store.settle_promise(id, event=event, value=EMPTY, now=wall)
            except PromiseNotFoundError:  # deleted meanwhile
                self.disarm(id)
                continue
            self.disarm(id)
            engine.metrics.event("timeouts_fired")
            engine.on_settled(settled)
        if len(expired) == EXPIRE_BATCH:
            await asyncio.sleep(0)
            return
        # Until the store answers, any new deadline must wake this loop: a timer created
        # meanwhile (here, or by another node and seen through the store's watch) may be
        # missing from the answer, and the deadline kept from before may have fired.
        engine._next_timeout = None
        engine._next_timeout = await engine.store.next_timeout()
        await self._sleep(engine._next_timeout)

    async def _sleep(self, deadline: int | None) -> None:
        """Until ``deadline`` on the wall clock, or the first armed monotonic deadline,
        whichever comes first, or a wakeup."""
        engine, clock = self.engine, self.engine.clock
        if deadline is not None and deadline <= clock.now():
            deadline = None  # held back (armed, not due on the monotonic clock): see below
        heap = self._by_due
        while heap and not self._valid(heap[0][1], due=heap[0][0]):
            heapq.heappop(heap)
        if heap:
            steady = clock.now() + max(0, round((heap[0][0] - clock.monotonic()) * 1000))
            deadline = steady if deadline is None else min(deadline, steady)
        await engine.sleep_until(deadline, engine._timer_wakeup)
