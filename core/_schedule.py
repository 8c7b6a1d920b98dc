"""Cron schedules: the record, and when a schedule fires (pure: no IO, ``now`` is an argument).

A schedule starts an invocation at every slot of a standard 5-field cron expression
(minute, hour, day of month, month, day of week), evaluated in UTC. The invocation of the
slot at ``t`` (epoch ms) has the id ``{schedule id}.{t}``, so firing a slot twice starts
one invocation. A schedule keeps the time of its next slot; when that time has passed,
``due_firing`` says which slot to start and where the schedule moves next. After downtime
only the latest missed slot fires, not every one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cronsim import CronSim, CronSimError

__all__ = [
    "Cron",
    "ScheduleFiring",
    "SchedulePromise",
    "ScheduleRecord",
    "due_firing",
    "slot_invocation_id",
]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_SECOND = dt.timedelta(seconds=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleRecord:
    """A stored schedule: what it starts, on which cron, and when it fires next."""

    id: str
    cron: str
    func: str
    """The registered name of the function each firing runs."""
    version: int
    """The function's version when the schedule was created (used if it is not registered
    when a slot fires; otherwise the newest registered version runs, as ``start`` would)."""
    args: str
    """The arguments, encoded: ``{"args": [...], "kwargs": {...}}``."""
    next_run_at: int | None
    """The next slot (epoch ms); None when the expression has no further slot."""
    last_run_at: int | None = None
    """The slot that fired last, if any."""
    created_at: int
    promise: str | None = None
    """A schedule of Resonate's protocol (``schedule.create`` from an SDK): each firing's
    promise as JSON ``{"id": template, "timeout": ms, "tags": {...}}`` (``args`` is then its
    whole param); None for dawait's own."""


@dataclass(frozen=True, slots=True)
class SchedulePromise:
    """What each firing of a schedule of Resonate's protocol creates: the promise's id (a
    template: ``{{.id}}`` is the schedule's id, ``{{.timestamp}}`` the slot's epoch ms), its
    timeout (ms from the firing; 0: none) and tags (its target among them)."""

    id: str
    timeout: int
    tags: dict[str, str]

    def encode(self) -> str:
        return json.dumps(
            {"id": self.id, "timeout": self.timeout, "tags": self.tags}, separators=(",", ":")
        )

    @classmethod
    def decode(cls, raw: str) -> SchedulePromise:
        d = json.loads(raw)
        return cls(id=d["id"], timeout=d.get("timeout", 0), tags=d.get("tags") or {})

    def promise_id(self, schedule_id: str, slot: int) -> str:
        """The id of the promise the slot at ``slot`` (epoch ms) creates."""
        return self.id.replace("{{.id}}", schedule_id).replace("{{.timestamp}}", str(slot))


SCHEDULE_FIELDS = tuple(field.name for field in dataclasses.fields(ScheduleRecord))
"""A schedule's fields in row order (a store's columns, or a JSON array)."""


def schedule_row(record: ScheduleRecord) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in SCHEDULE_FIELDS)


def schedule_from_row(row: Sequence[Any]) -> ScheduleRecord:
    """The record of ``row``; a row written before a field was added lacks it (default)."""
    if len(row) > len(SCHEDULE_FIELDS):
        raise ValueError(f"a schedule row has {len(row)} fields, more than {SCHEDULE_FIELDS}")
    return ScheduleRecord(**dict(zip(SCHEDULE_FIELDS, row, strict=False)))


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleFiring:
    """The decision to start one slot of a schedule and move it on."""

    slot: int
    """The slot's time (epoch ms): the one invocation this firing starts."""
    invocation_id: str
    next_run_at: int | None
    """Where the schedule moves once the invocation is started: the first slot after ``slot``."""


@dataclass(frozen=True, slots=True)
class Cron:
    """A checked cron expression, evaluated in UTC: the standard 5 fields (minute
    resolution), or 6 with a leading seconds field (``*/5 * * * * *``: every 5 seconds).

    Raises ``ValueError`` naming the expression when it is not one.
    """

    expression: str

    def __post_init__(self) -> None:
        fields = self.expression.split() if isinstance(self.expression, str) else None
        if fields is None or len(fields) not in (5, 6):
            raise ValueError(
                f"cron expression {self.expression!r} must have 5 fields (minute hour "
                "day-of-month month day-of-week), or 6 with a leading seconds field"
            )
        try:
            CronSim(self.expression, _EPOCH)
        except (CronSimError, ValueError) as exc:
            raise ValueError(f"cron expression {self.expression!r}: {exc}") from None

    def next_after(self, at: int) -> int | None:
        """The first slot strictly after ``at`` (epoch ms); None if there is none."""
        # Slots fall on whole seconds, so counting from the second ``at`` falls in is
        # exact: cronsim steps at least one second before it looks for a match.
        return self._step(_to_datetime(at // 1000), reverse=False)

    def latest_at_or_before(self, at: int) -> int | None:
        """The last slot at or before ``at`` (epoch ms); None if there is none."""
        # Reverse iteration also steps one second first, so start one second later.
        return self._step(_to_datetime(at // 1000) + _SECOND, reverse=True)

    def _step(self, start: dt.datetime, *, reverse: bool) -> int | None:
        try:
            found = next(CronSim(self.expression, start, reverse=reverse))
        except StopIteration:  # cronsim looks 50 years ahead (or back) at most
            return None
        return (found - _EPOCH) // dt.timedelta(milliseconds=1)


def _to_datetime(seconds: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(seconds=seconds)


def slot_invocation_id(schedule_id: str, slot: int) -> str:
    """The id of the invocation a schedule starts for the slot at ``slot`` (epoch ms)."""
    return f"{schedule_id}.{slot}"


def due_firing(record: ScheduleRecord, now: int) -> ScheduleFiring | None:
    """The slot to fire now, or None when the schedule's next slot has not come yet.

    When several slots passed since ``next_run_at`` (the process was down), only the
    latest of them fires; the schedule then moves to the first slot after it, which is
    after ``now``.
    """
    if record.next_run_at is None or record.next_run_at > now:
        return None
    cron = Cron(record.cron)
    latest = cron.latest_at_or_before(now)
    slot = record.next_run_at if latest is None else max(latest, record.next_run_at)
    return ScheduleFiring(
        slot=slot,
        invocation_id=slot_invocation_id(record.id, slot),
        next_run_at=cron.next_after(now),
    )
