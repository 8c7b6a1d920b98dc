"""``app.schedules``: cron schedules that start invocations of a registered function."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, overload

from dawait.core._errors import ScheduleConflictError, ScheduleNotFoundError
from dawait.core._ids import check_schedule_id
from dawait.core._schedule import Cron, ScheduleRecord
from dawait.runtime._context import Context

if TYPE_CHECKING:
    from dawait._resonate import Resonate

__all__ = ["ScheduleInfo", "Schedules"]

P = ParamSpec("P")
T = TypeVar("T")


def _time(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleInfo:
    """A schedule as the outside sees it. Its arguments are shown as JSON."""

    id: str
    cron: str
    """The cron expression (5 fields, or 6 with leading seconds), evaluated in UTC."""
    function: str
    """The registered name of the function each firing runs."""
    args: list[Any]
    kwargs: Mapping[str, Any]
    next_run_at: dt.datetime | None
    """When the next slot fires; None if the expression has no further slot."""
    last_run_at: dt.datetime | None
    """The slot that fired last (the time it was for, not when it ran), if any."""
    created_at: dt.datetime

    @classmethod
    def of(cls, record: ScheduleRecord) -> ScheduleInfo:
        call = json.loads(record.args)
        return cls(
            id=record.id,
            cron=record.cron,
            function=record.func,
            args=call["args"],
            kwargs=call["kwargs"],
            next_run_at=_time(record.next_run_at),
            last_run_at=_time(record.last_run_at),
            created_at=_time(record.created_at) or dt.datetime.fromtimestamp(0, dt.UTC),
        )


class Schedules:
    """Cron schedules: each slot of the expression starts one invocation of a function,
    with the id ``{schedule id}.{slot as epoch ms}``."""

    def __init__(self, app: Resonate) -> None:
        self._app = app

    @overload
    async def create(
        self,
        id: str,
        cron: str,
        fn: Callable[Concatenate[Context, P], Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> ScheduleInfo: ...

    @overload
    async def create(
        self,
        id: str,
        cron: str,
        fn: Callable[P, Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> ScheduleInfo: ...

    @overload
    async def create(
        self, id: str, cron: str, fn: str, /, *args: Any, **kwargs: Any
    ) -> ScheduleInfo: ...

    async def create(
        self, id: str, cron: str, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any
    ) -> ScheduleInfo:
        """Start an invocation of ``fn(*args, **kwargs)`` at every slot of ``cron`` (5 fields,
        UTC), from the first slot after now.

        Idempotent by id: creating it again with the same cron, function and arguments
        returns the existing schedule; with others raises ``ScheduleConflictError``.
        """
        check_schedule_id(id)
        try:
            parsed = Cron(" ".join(cron.split()) if isinstance(cron, str) else cron)
        except ValueError as exc:
            raise ValueError(f"schedule {id!r}: {exc}") from None
        registered = self._app._registry.resolve(fn)
        encoded = registered.signature.encode_args(args, kwargs)
        now = self._app.clock.now()
        next_run_at = parsed.next_after(now)
        if next_run_at is None:
            raise ValueError(
                f"schedule {id!r}: cron expression {parsed.expression!r} has no upcoming slot"
            )
        created = await self._app._engine.create_schedule(
            ScheduleRecord(
                id=id,
                cron=parsed.expression,
                func=registered.name,
                version=registered.version,
                args=encoded,
                next_run_at=next_run_at,
                created_at=now,
            )
        )
        existing = created.schedule
        if not created.created:
            if existing.cron != parsed.expression:
                raise ScheduleConflictError(
                    f"schedule {id!r} exists with cron {existing.cron!r}, not {parsed.expression!r}"
                )
            if existing.func != registered.name:
                raise ScheduleConflictError(
                    f"schedule {id!r} exists for function {existing.func!r}, "
                    f"not {registered.name!r}"
                )
            if json.loads(existing.args) != json.loads(encoded):
                raise ScheduleConflictError(
                    f"schedule {id!r} of {registered.name!r} exists with other arguments"
                )
        return ScheduleInfo.of(existing)

    async def get(self, id: str) -> ScheduleInfo:
        """The schedule with this id (``ScheduleNotFoundError`` if there is none)."""
        record = await self._app._engine.get_schedule(id)
        if record is None:
            raise ScheduleNotFoundError(f"no schedule with id {id!r}")
        return ScheduleInfo.of(record)

    async def delete(self, id: str) -> bool:
        """Stop the schedule: no slot fires after this returns; invocations it started go
        on. False, doing nothing, when there is no schedule with this id."""
        return await self._app._engine.delete_schedule(id)

    async def search(self, pattern: str = "*", *, limit: int = 100) -> list[ScheduleInfo]:
        """Schedules whose id matches ``pattern`` (``*`` matches any run), by id."""
        if limit < 1:
            raise ValueError(f"search: limit must be >= 1, got {limit}")
        page = await self._app._engine.search_schedules(pattern, limit=limit)
        return [ScheduleInfo.of(record) for record in page.schedules]
