"""``AppBackend``: what a ``Resonate`` app runs on. ``LocalBackend`` (``_local``) runs
invocations in this process on its own store; ``RemoteBackend`` (``dawait.node._remote``)
reaches a node's HTTP API and runs nothing itself. ``Resonate``, its handles, ``promises``
and ``schedules`` check their arguments and then call one of these methods."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from dawait._promises import PromiseInfo
    from dawait._schedules import ScheduleInfo

__all__ = ["AppBackend"]

Function = Callable[..., Any] | str
"""A registered function, or its registered name."""


class AppBackend(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def quiesce(self, grace: float) -> None: ...

    # -- invocations (ids already checked) -------------------------------------------------

    async def start(
        self, id: str, fn: Function, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> str:
        """Start invocation ``id`` (or attach to it): the name of its function."""
        ...

    async def run(
        self, id: str, fn: Function, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        """Start (or attach to) invocation ``id`` and return its decoded result."""
        ...

    async def function_of(self, id: str) -> str | None:
        """The function invocation ``id`` runs (``PromiseNotFoundError`` if none)."""
        ...

    async def result(self, id: str, function: str | None) -> Any:
        """Wait for invocation ``id``: its result, or the exception it failed with."""
        ...

    async def done(self, id: str) -> bool: ...

    async def cancel(self, id: str) -> None: ...

    async def delete(self, id: str) -> None:
        """Delete settled invocation or promise ``id`` with every call it made."""
        ...

    # -- promises --------------------------------------------------------------------------

    async def create_promise(self, id: str, timeout: float | None, data: Any) -> PromiseInfo: ...

    async def get_promise(self, id: str) -> PromiseInfo: ...

    async def resolve_promise(self, id: str, value: Any) -> PromiseInfo: ...

    async def reject_promise(self, id: str, error: BaseException | str) -> PromiseInfo: ...

    async def cancel_promise(self, id: str) -> PromiseInfo: ...

    async def search_promises(
        self, pattern: str, state: str | None, limit: int
    ) -> list[PromiseInfo]: ...

    # -- schedules -------------------------------------------------------------------------

    async def create_schedule(
        self, id: str, cron: str, fn: Function, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> ScheduleInfo: ...

    async def get_schedule(self, id: str) -> ScheduleInfo: ...

    async def delete_schedule(self, id: str) -> bool: ...

    async def search_schedules(self, pattern: str, limit: int) -> list[ScheduleInfo]: ...
