"""``Resonate(url=...)``: the app API over a node's HTTP API, executing nothing locally.

For services that only start and await workflows. Functions registered here are never run;
registering them only types their results (decoded through their return annotations).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from dawait import _resonate
from dawait._schedules import ScheduleInfo, Schedules
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

__all__ = ["RemoteHandle", "RemotePromises", "RemoteResonate"]

_LONG_POLL_SECONDS = 60.0


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


def _seconds(timeout: float | dt.timedelta | None) -> float | None:
    return timeout.total_seconds() if isinstance(timeout, dt.timedelta) else timeout


class RemoteHandle(_resonate.Handle[Any]):
    def __init__(self, app: RemoteResonate, id: str, function: str | None) -> None:
        super().__init__(app, id)
        self._remote = app
        self._function = function

    async def result(self) -> Any:
        client = self._remote.client
        result = await client.result(self.id, wait=_LONG_POLL_SECONDS)
        while result.state == "pending":
            result = await client.result(self.id, wait=_LONG_POLL_SECONDS)
        return _outcome(
            result, self._remote.result_adapter(self._function), f"invocation {self.id}"
        )

    async def done(self) -> bool:
        return (await self._remote.client.invocation(self.id)).state != "pending"

    async def cancel(self) -> None:
        await self._remote.client.cancel(self.id)


class RemotePromises(_resonate.Promises):
    def __init__(self, app: RemoteResonate) -> None:
        super().__init__(app)
        self._remote = app

    async def create(
        self, id: str, *, timeout: float | dt.timedelta | None = None, data: Any = None
    ) -> _resonate.PromiseInfo:
        view = await self._remote.client.create_promise(id, timeout=_seconds(timeout), data=data)
        return _info(view)

    async def get(self, id: str) -> _resonate.PromiseInfo:
        return _info(await self._remote.client.promise(id))

    async def resolve(self, id: str, value: Any = None) -> _resonate.PromiseInfo:
        return _info(await self._remote.client.resolve(id, value))

    async def reject(self, id: str, error: BaseException | str) -> _resonate.PromiseInfo:
        info = (
            error
            if isinstance(error, str)
            else m.ErrorInfo(
                type=f"{type(error).__module__}.{type(error).__qualname__}", message=str(error)
            )
        )
        return _info(await self._remote.client.reject(id, info))

    async def cancel(self, id: str) -> _resonate.PromiseInfo:
        return _info(await self._remote.client.cancel_promise(id))

    async def search(
        self, pattern: str = "*", *, state: str | None = None, limit: int = 100
    ) -> list[_resonate.PromiseInfo]:
        page = await self._remote.client.promises(pattern, state=state, limit=limit)
        return [_info(view) for view in page.items]


def _info(view: m.PromiseView) -> _resonate.PromiseInfo:
    error: BaseException | None = None
    if view.error is not None:
        error = decode_error(view.error.model_dump_json(), what=f"promise {view.id}")
    return _resonate.PromiseInfo(
        id=view.id,
        state=view.state,
        value=view.value,
        error=error,
        param=view.param,
        timeout_at=view.timeout_at,
        created_at=view.created_at,
        settled_at=view.settled_at,
        tags=view.tags,
    )


class RemoteSchedules(Schedules):
    def __init__(self, app: RemoteResonate) -> None:
        super().__init__(app)
        self._remote = app

    async def create(self, id: str, cron: str, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        name = fn if isinstance(fn, str) else self._remote._registry.resolve(fn).name
        view = await self._remote.client.create_schedule(id, cron, name, list(args), kwargs)
        return _schedule(view)

    async def get(self, id: str) -> ScheduleInfo:
        return _schedule(await self._remote.client.schedule(id))

    async def delete(self, id: str) -> bool:
        try:
            await self._remote.client.delete_schedule(id)
        except ScheduleNotFoundError:
            return False
        return True

    async def search(self, pattern: str = "*", *, limit: int = 100) -> list[ScheduleInfo]:
        listing = await self._remote.client.schedules(pattern, limit=limit)
        return [_schedule(view) for view in listing.items]


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


class RemoteResonate(_resonate.Resonate):
    """The app API of a node reached over HTTP."""

    def __init__(self, url: str, *, token: str | None = None, route: bool = False) -> None:
        super().__init__()
        self.url = url
        self.client = HttpClient(url, token=token, route=route)
        self.promises = RemotePromises(self)
        self.schedules = RemoteSchedules(self)

    def __repr__(self) -> str:
        return f"Resonate(url={self.url!r})"

    async def open(self) -> None:
        await self.client.open()

    async def close(self) -> None:
        await self.client.close()

    async def start(self, id: str, fn: Any, /, *args: Any, **kwargs: Any) -> RemoteHandle:
        name = fn if isinstance(fn, str) else self._registry.resolve(fn).name
        view, _created = await self.client.start(id, name, list(args), dict(kwargs))
        return RemoteHandle(self, view.id, name)

    async def run(self, id: str, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        name = fn if isinstance(fn, str) else self._registry.resolve(fn).name
        # One round trip when it finishes within the first long-poll.
        view, _created = await self.client.start(
            id, name, list(args), dict(kwargs), wait=_LONG_POLL_SECONDS
        )
        if view.state == "pending":
            return await RemoteHandle(self, view.id, name).result()
        result = m.ResultView(id=view.id, state=view.state, result=view.result, error=view.error)
        return _outcome(result, self.result_adapter(name), f"invocation {view.id}")

    async def get(self, id: str) -> RemoteHandle:
        view = await self.client.invocation(id)
        return RemoteHandle(self, view.id, view.function)

    def result_adapter(self, function: str | None) -> Any:
        if function is None:
            return ANY
        try:
            return self._registry.get(function).signature.result
        except UnknownFunctionError:
            return ANY

    async def quiesce(self, grace: float) -> None:
        raise NotStartedError("a client app runs nothing locally")
