"""Time, injected: the only module that reads the system clock or sleeps.

Times are integer epoch milliseconds, as in the promise records.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock", "deadline_scope"]

_SLACK = 50
"""Milliseconds a wake-up may come before its wall-clock deadline and still be slept off
(beyond that the wall clock went back meanwhile: the monotonic wait is what counts)."""


class Clock(Protocol):
    def now(self) -> int:
        """Wall-clock time in epoch milliseconds."""
        ...

    async def sleep_until(self, deadline: int) -> None:
        """Return once ``now() >= deadline``, or, on the system clock, once the time left
        when called has passed on the monotonic clock (the wall clock may step meanwhile)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going backwards (for durations)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep_until(self, deadline: int) -> None:
        """Sleep for what is left until ``deadline`` now, on the monotonic clock: a step of
        the wall clock meanwhile neither lengthens nor shortens the wait (a residue of up to
        ``_SLACK`` ms left by timer granularity is slept off)."""
        remaining = deadline - self.now()
        if remaining <= 0:
            return
        await asyncio.sleep(remaining / 1000)
        left = deadline - self.now()
        if 0 < left <= _SLACK:
            await asyncio.sleep(left / 1000)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that only moves when told to: ``advance`` and ``set`` wake due sleepers.

    ``sleep_until`` of a time already reached returns at once (after yielding once).
    """

    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self._now = start
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> int:
        return self._now

    def monotonic(self) -> float:
        return self._now / 1000

    async def sleep_until(self, deadline: int) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._order), future))
        await future

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake everything now due."""
        self.set(self._now + round(seconds * 1000))

    def set(self, now: int) -> None:
        if now < self._now:
            raise ValueError(f"FakeClock cannot go back from {self._now} to {now}")
        self._now = now
        while self._sleepers and self._sleepers[0][0] <= now:
            _deadline, _order, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    @property
    def next_deadline(self) -> int | None:
        """The earliest time something sleeps until, if anything does."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None


@contextlib.asynccontextmanager
async def deadline_scope(clock: Clock, deadline: int | None) -> AsyncIterator[None]:
    """Like ``asyncio.timeout_at``, on ``clock``: ``TimeoutError`` once ``deadline`` passes.

    ``None`` means no deadline. The body is cancelled at the deadline, so it must not
    swallow ``CancelledError``.
    """
    if deadline is None:
        yield
        return
    task = asyncio.current_task()
    assert task is not None
    fired = False

    async def fire() -> None:
        nonlocal fired
        await clock.sleep_until(deadline)
        fired = True
        task.cancel()

    timer = asyncio.get_running_loop().create_task(fire())
    try:
        yield
    except asyncio.CancelledError:
        if fired and task.uncancel() == 0:
            raise TimeoutError from None
        raise
    finally:
        timer.cancel()
