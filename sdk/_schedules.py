"""``app.schedules``: cron schedules that start invocations of a registered function."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, overload

from dawait._promises import utc
from dawait.core._ids import check_id_pattern, check_schedule_id
from dawait.core._schedule import Cron, ScheduleRecord
from dawait.runtime._context import Context

if TYPE_CHECKING:
    from dawait._backend import AppBackend

__all__ = ["ScheduleInfo", "Schedules"]

P = ParamSpec("P")
T = TypeVar("T")


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
        call = json.loads(record.args)  # an SDK's schedule: the whole param its SDK sent
        call = call if isinstance(call, dict) else {}
        args, kwargs = call.get("args"), call.get("kwargs")
        return cls(
            id=record.id,
            cron=record.cron,
            function=record.func,
            args=args if isinstance(args, list) else [],
            kwargs=kwargs if isinstance(kwargs, dict) else {},
            next_run_at=utc(record.next_run_at),
            last_run_at=utc(record.last_run_at),
            created_at=utc(record.created_at) or dt.datetime.fromtimestamp(0, dt.UTC),
        )


class Schedules:
    """Cron schedules: each slot of the expression starts one invocation of a function,
    with the id ``{schedule id}.{slot as epoch ms}``."""

    def __init__(self, backend: AppBackend) -> None:
        self._backend = backend

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
        return await self._backend.create_schedule(id, parsed.expression, fn, args, kwargs)

    async def get(self, id: str) -> ScheduleInfo:
        """The schedule with this id (``ScheduleNotFoundError`` if there is none)."""
        return await self._backend.get_schedule(id)

    async def delete(self, id: str) -> bool:
        """Stop the schedule: no slot fires after this returns; invocations it started go
        on. False, doing nothing, when there is no schedule with this id."""
        return await self._backend.delete_schedule(id)

    async def search(self, pattern: str = "*", *, limit: int = 100) -> list[ScheduleInfo]:
        """Schedules whose id matches ``pattern`` (``*`` matches any run), by id."""
        if limit < 1:
            raise ValueError(f"search: limit must be >= 1, got {limit}")
        pattern = check_id_pattern(pattern)
        return await self._backend.search_schedules(pattern, limit)
