"""``RemoteBackend``: the app API over a node's HTTP API, executing nothing locally
(``Resonate(url=...)``).

For services that only start and await workflows. Functions registered on such an app are
never run; registering them only types their results (decoded through their return
annotations).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dawait._promises import PromiseInfo
from dawait._schedules import ScheduleInfo
from dawait.core._errors import (
    CanceledError,
    NotStartedError,
    PromiseTimeoutError,
    ScheduleNotFoundError,
    UnknownFunctionError,
)
from dawait.node import _api_models as m
from dawait.node._client import HttpClient
from dawait.runtime._codec import ANY, decode_error

if TYPE_CHECKING:
    from dawait._backend import Function
    from dawait.runtime._registry import Registry

__all__ = ["RemoteBackend"]

_LONG_POLL_SECONDS = 60.0


class RemoteBackend:
    """The app API of a node reached over HTTP."""

    def __init__(
        self, url: str, registry: Registry, *, token: str | None = None, route: bool = False
    ) -> None:
        self.client = HttpClient(url, token=token, route=route)
        self._registry = registry

    async def open(self) -> None:
        await self.client.open()

    async def close(self) -> None:
        await self.client.close()

    async def quiesce(self, grace: float) -> None:
        raise NotStartedError("a client app runs nothing locally")

    def _name(self, fn: Function) -> str:
        return fn if isinstance(fn, str) else self._registry.resolve(fn).name

    def _result_adapter(self, function: str | None) -> Any:
        if function is None:
            return ANY
        try:
            return self._registry.get(function).signature.result
        except UnknownFunctionError:
            return ANY

    # -- invocations -----------------------------------------------------------------------

    async def start(
        self, id: str, fn: Function, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> str:
        name = self._name(fn)
        await self.client.start(id, name, list(args), dict(kwargs))
        return name

    async def run(
        self, id: str, fn: Function, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        name = self._name(fn)
        # One round trip when it finishes within the first long-poll.
        view, _created = await self.client.start(
            id, name, list(args), dict(kwargs), wait=_LONG_POLL_SECONDS
        )
        if view.state == "pending":
            return await self.result(view.id, name)
        result = m.ResultView(id=view.id, state=view.state, result=view.result, error=view.error)
        return _outcome(result, self._result_adapter(name), f"invocation {view.id}")

    async def function_of(self, id: str) -> str | None:
        return (await self.client.invocation(id)).function

    async def result(self, id: str, function: str | None) -> Any:
        result = await self.client.result(id, wait=_LONG_POLL_SECONDS)
        while result.state == "pending":
            result = await self.client.result(id, wait=_LONG_POLL_SECONDS)
        return _outcome(result, self._result_adapter(function), f"invocation {id}")

    async def done(self, id: str) -> bool:
        return (await self.client.invocation(id)).state != "pending"

    async def cancel(self, id: str) -> None:
        await self.client.cancel(id)

    async def delete(self, id: str) -> None:
        await self.client.delete_promise(id)  # any promise, an invocation's too

    # -- promises --------------------------------------------------------------------------

    async def create_promise(self, id: str, timeout: float | None, data: Any) -> PromiseInfo:
        return _info(await self.client.create_promise(id, timeout=timeout, data=data))

    async def get_promise(self, id: str) -> PromiseInfo:
        return _info(await self.client.promise(id))

    async def resolve_promise(self, id: str, value: Any) -> PromiseInfo:
        return _info(await self.client.resolve(id, value))

    async def reject_promise(self, id: str, error: BaseException | str) -> PromiseInfo:
        info = (
            error
            if isinstance(error, str)
            else m.ErrorInfo(
                type=f"{type(error).__module__}.{type(error).__qualname__}", message=str(error)
            )
        )
        return _info(await self.client.reject(id, info))

    async def cancel_promise(self, id: str) -> PromiseInfo:
        return _info(await self.client.cancel_promise(id))

    async def search_promises(
        self, pattern: str, state: str | None, limit: int
    ) -> list[PromiseInfo]:
        found: list[PromiseInfo] = []
        cursor = None
        while True:  # a page may end short where the node bounds its scan: follow its cursor
            page = await self.client.promises(
                pattern, state=state, limit=min(limit - len(found), m.MAX_PAGE), cursor=cursor
            )
            found += [_info(view) for view in page.items]
            cursor = page.cursor
            if cursor is None or len(found) >= limit:
                return found

    # -- schedules -------------------------------------------------------------------------

    async def create_schedule(
        self, id: str, cron: str, fn: Function, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> ScheduleInfo:
        view = await self.client.create_schedule(id, cron, self._name(fn), list(args), dict(kwargs))
        return _schedule(view)

    async def get_schedule(self, id: str) -> ScheduleInfo:
        return _schedule(await self.client.schedule(id))

    async def delete_schedule(self, id: str) -> bool:
        try:
            await self.client.delete_schedule(id)
        except ScheduleNotFoundError:
            return False
        return True

    async def search_schedules(self, pattern: str, limit: int) -> list[ScheduleInfo]:
        listing = await self.client.schedules(pattern, limit=limit)
        return [_schedule(view) for view in listing.items]


def _outcome(result: m.ResultView, adapter: Any, what: str) -> Any:
    """The value of a settled result, or the exception it records."""
    if result.state == "resolved":
        return adapter.validate_python(result.result)
    if result.state == "rejected_canceled":
        raise CanceledError(f"{what} was canceled")
    if result.state == "rejected_timedout":
        raise PromiseTimeoutError(f"{what} timed out")
    error = result.error or m.ErrorInfo(type="Exception", message="")
    raise decode_error(error.model_dump_json(), what=what)


def _info(view: m.PromiseView) -> PromiseInfo:
    error: BaseException | None = None
    if view.error is not None:
        error = decode_error(view.error.model_dump_json(), what=f"promise {view.id}")
    return PromiseInfo(
        id=view.id,
        state=view.state,
        value=view.value,
        error=error,
        param=view.param,
        timeout_at=view.timeout_at,
        created_at=view.created_at,
        settled_at=view.settled_at,
        tags=view.tags,
        delete_at=view.delete_at,
    )


def _schedule(view: m.ScheduleView) -> ScheduleInfo:
    return ScheduleInfo(
        id=view.id,
        cron=view.cron,
        function=view.function,
        args=view.args,
        kwargs=view.kwargs,
        next_run_at=view.next_run_at,
        last_run_at=view.last_run_at,
        created_at=view.created_at,
    )
