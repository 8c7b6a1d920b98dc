"""The engine's schedules: a loop under the supervisor that starts each schedule's
invocation as its slot comes, then moves the schedule to its next slot (while this process
leads, in a cluster)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from dawait.core._errors import UnknownFunctionError
from dawait.core._param import invocation_param
from dawait.core._promise import Value
from dawait.core._schedule import ScheduleFiring, SchedulePromise, ScheduleRecord, due_firing
from dawait.runtime._store import CreatePromise
from dawait.runtime._task_ops import run_or_dispatch

if TYPE_CHECKING:
    from dawait.runtime._engine import Engine

__all__ = ["ScheduleLoop"]

log = logging.getLogger("dawait.engine")

_SCHEDULE_BATCH = 100


class ScheduleLoop:
    """The schedules of ``engine``: ``wakeup`` when one is made or changed elsewhere."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.wakeup = asyncio.Event()

    async def fire_due(self) -> None:
        """Start each due schedule's invocation and move it to its next slot, then sleep
        until the next slot (one pass of the engine's schedules loop)."""
        engine = self.engine
        await engine.ownership.leading.wait()
        self.wakeup.clear()
        now = engine.clock.now()
        due = await engine.store.due_schedules(now=now, limit=_SCHEDULE_BATCH)
        for record in due:
            firing = due_firing(record, now)
            if firing is not None:
                await self._fire(record, firing)
        if len(due) == _SCHEDULE_BATCH:
            await asyncio.sleep(0)
            return
        await engine.sleep_until(await engine.store.next_schedule_at(), self.wakeup)

    async def _fire(self, record: ScheduleRecord, firing: ScheduleFiring) -> None:
        """Start the slot's invocation and move the schedule on, in one store operation.

        Nothing fires twice: the invocation's id is the slot's and creating it is
        idempotent, and the schedule moves only if no one moved (or deleted) it since it was
        read. A crash before the operation commits fires the same slot again on restart.
        """
        engine = self.engine
        now = engine.clock.now()
        if record.promise is None:
            request, here = self._invocation(record, firing, now)
        else:
            request, here = _sdk_promise(record, firing, now), False
        created = await engine.store.fire_schedule(
            record.id,
            expected=record.next_run_at,
            invocation=engine.retention.tag(request),
            next_run_at=firing.next_run_at,
            last_run_at=firing.slot,
            pid=engine.pid if here else None,  # else pending: the node it places on runs it
            ttl=None,
            now=now,
        )
        if created is None:
            return
        engine.metrics.event("schedules_fired")
        if here:
            engine.started(created)
        elif record.promise is not None:  # made past the engine: time it out, hand it on
            engine.arm_timeout(created.promise)
            run_or_dispatch(engine, created.promise, created.task)

    def _invocation(
        self, record: ScheduleRecord, firing: ScheduleFiring, now: int
    ) -> tuple[CreatePromise, bool]:
        """A dawait schedule's slot: the invocation of its function's newest version, and
        whether it runs here."""
        engine = self.engine
        version, timeout = record.version, None
        try:
            registered = engine.registry.get(record.func)
        except UnknownFunctionError as exc:
            # Start it anyway with the version it was created with: it stays pending for a
            # process that has the function, like any invocation of an unknown function.
            log.error(
                "schedule %s starts %s, whose function is not registered here: %s",
                record.id,
                firing.invocation_id,
                exc,
            )
        else:
            version, timeout = registered.version, registered.timeout
        request = CreatePromise(
            id=firing.invocation_id,
            param=Value(data=invocation_param(record.func, version, record.args)),
            timeout_at=None if timeout is None else now + round(timeout * 1000),
        )
        return request, engine.ownership.runs_here(firing.invocation_id, record.func, version)


def _sdk_promise(record: ScheduleRecord, firing: ScheduleFiring, now: int) -> CreatePromise:
    """A schedule of Resonate's protocol's slot: the promise its SDK asked for (a target:
    dispatched to a worker of it)."""
    assert record.promise is not None
    spec = SchedulePromise.decode(record.promise)
    return CreatePromise(
        id=spec.promise_id(record.id, firing.slot),
        param=Value(data=record.args),
        timeout_at=now + spec.timeout if spec.timeout > 0 else None,
        tags=spec.tags,
    )
