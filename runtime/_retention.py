"""The engine's retention: roots get their retention when they are created, and a loop
under the supervisor deletes them with their trees once it has ended after they settled.

The store finds what is due without scanning history (core/_retention.py, and each
store's index of ``PromiseRecord.delete_at``); the loop sleeps until the earliest deadline,
woken early when a root settles here with an earlier one (every settle goes through the
engine of the process that owns the root) or when records come here from elsewhere (a
cluster node took partitions: ``wake``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

from dawait.core._errors import UnknownFunctionError
from dawait.core._param import call_target, is_root
from dawait.core._promise import TAG_BRANCH, TAG_RETENTION, PromiseRecord
from dawait.core._retention import AppRetention
from dawait.runtime._store import CreatePromise

if TYPE_CHECKING:
    from dawait.runtime._engine import Engine
    from dawait.runtime._registry import Registered

__all__ = ["SWEEP_LIMIT", "Retention"]

SWEEP_LIMIT = 100
"""Roots one sweep deletes at most (each in transactions of its own)."""
_PAUSE = 1_000
GATHER = 250
"""Milliseconds a pass that deleted something waits at least before the next: what falls
due meanwhile goes together (at most this late)."""
"""Milliseconds between sweeps while what is due cannot be deleted yet."""


class Retention:
    """Retention for the engine ``engine``: ``tag`` what it creates, ``settled`` what it
    settles, ``sweep`` what is due."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._wakeup = asyncio.Event()
        self._next: int | None = None

    def tag(self, request: CreatePromise, registered: Registered | None = None) -> CreatePromise:
        """``request`` with its retention, if it creates a root (of ``registered``'s function,
        or the function its param names) that has one and names none itself."""
        tags = request.tags
        if TAG_RETENTION in tags or not is_root(
            request.id, request.param.data, tags.get(TAG_BRANCH)
        ):
            return request
        seconds = self.retention_of(registered, request.param.data)
        if seconds is None:
            return request
        return dataclasses.replace(
            request, tags={**tags, TAG_RETENTION: str(max(1, round(seconds * 1000)))}
        )

    def retention_of(self, registered: Registered | None, param: str | None) -> float | None:
        """Seconds a root of ``registered`` (else of the function ``param`` names) is kept."""
        if registered is None:
            name, version = call_target(param)
            if name is not None:
                try:
                    registered = self.engine.registry.get(name, version)
                except UnknownFunctionError:
                    registered = None  # served elsewhere: the app's retention
        if registered is None or isinstance(registered.retention, AppRetention):
            return self.engine.config.retention
        return registered.retention

    def wake(self) -> None:
        """Records came here from elsewhere: look for the earliest deadline again."""
        self._next = None
        self._wakeup.set()

    def settled(self, record: PromiseRecord) -> None:
        """A promise settled here: sweep at its deadline if it is the earliest."""
        at = record.delete_at
        if at is not None and (self._next is None or at < self._next):
            self._next = at
            self._wakeup.set()

    async def sweep(self) -> None:
        """Delete what is due, then sleep until the next is due (one pass of the engine's
        retention loop, ``Engine.keep_running``)."""
        engine = self.engine
        await engine.ownership.timers.wait()
        self._wakeup.clear()
        swept = await engine.store.delete_expired(now=engine.clock.now(), limit=SWEEP_LIMIT)
        if swept.roots:
            engine.metrics.event("retention_deleted", swept.roots)
            engine.metrics.event("retention_records_deleted", swept.records)
        if swept.more:
            await asyncio.sleep(0)
            return
        self._next = None
        at = await engine.store.next_deletion()
        now = engine.clock.now()
        if at is not None and at <= now:  # due, yet none of it could go: not at once
            at = now + _PAUSE
        elif at is not None and swept.roots:  # under steady load: a pass per GATHER, not
            at = max(at, now + GATHER)  # one per root (deadlines a millisecond apart)
        if self._next is None or (at is not None and at < self._next):
            self._next = at
        await engine.sleep_until(self._next, self._wakeup)
