"""``HttpClient``: the HTTP API from Python (used by ``Resonate(url=...)`` and the CLI)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import aiohttp
import pydantic

from dawait.core._errors import DawaitError, NotStartedError
from dawait.node import _api_models as m
from dawait.node._error_codes import error_class
from dawait.runtime._clock import Clock, SystemClock

__all__ = ["ApiError", "HttpClient"]

M = TypeVar("M", bound=pydantic.BaseModel)


class ApiError(DawaitError):
    """The node answered with an error this client has no closer type for."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


ROUTES_FOR = 5.0
"""Seconds a placement-aware client uses the node list it read before reading it again."""


class HttpClient:
    """One node's HTTP API. Use as ``async with HttpClient(url) as client:``.

    ``route=True`` (for a cluster): starts go straight to the owner of each invocation's
    partition, from the partition table ``GET /nodes`` gives (re-read every
    ``ROUTES_FOR`` seconds), instead of through ``url``'s node, which would forward them
    (one hop less). Anything else, and any start whose owner cannot be reached, goes to
    ``url``.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 330.0,
        route: bool = False,
        clock: Clock | None = None,
        connections: int = 100,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._connections = connections
        """Connections open at most (0: no limit); more requests at once wait for one."""
        self._session: aiohttp.ClientSession | None = None
        self.route = route
        self._clock = clock or SystemClock()
        self._nodes: list[m.NodeView] = []
        self._layout: m.NodeList | None = None
        """The last node list: partition count, owners, function groups."""
        self._nodes_read_at: float | None = None
        """When (``clock.monotonic()``) ``_nodes`` was read; None: to read at the next start."""

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._connections),
            )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        body: Any = None,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        base: str | None = None,
    ) -> tuple[M, int]:
        """Send a request (to ``base``, else ``url``); the parsed response and its status,
        or the error it maps to."""
        if self._session is None:
            raise NotStartedError("the client is not open: use `async with HttpClient(url)`")
        base = base or self.url
        try:
            async with self._session.request(
                method, base + path, json=body, params=params
            ) as response:
                payload = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror or str(exc.os_error)
            raise NotStartedError(f"cannot reach the node at {base}: {reason}") from exc
        except TimeoutError as exc:
            raise NotStartedError(
                f"no answer from the node at {base} within {self._timeout.total:g} s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise NotStartedError(f"cannot reach the node at {base}: {exc}") from exc
        if status >= 400:
            raise _error(status, payload)
        if retry_after is not None:
            # A long-poll answered at once (the node holds its most): whoever loops on it
            # polls again after the node's hint, not at once.
            await _pause(self._clock, retry_after)
        return model.model_validate_json(payload), status

    # -- the API ---------------------------------------------------------------------------

    async def start(
        self,
        id: str,
        function: str,
        args: list[Any],
        kwargs: dict[str, Any],
        *,
        wait: float | None = None,
        version: int | None = None,
    ) -> tuple[m.InvocationView, bool]:
        """Start an invocation (of ``version``, default the newest); with ``wait``, the view
        is its outcome if it settles by then."""
        body = m.CreateInvocation(
            id=id, function=function, args=args, kwargs=kwargs, version=version
        )
        params = None if wait is None else {"wait": str(wait)}
        owner = await self._owner(id, function) if self.route else None
        if owner is not None:
            try:
                view, status = await self.request(
                    "POST", "/invocations", m.InvocationView,
                    body=body.model_dump(mode="json"), params=params, base=owner,
                )  # fmt: skip
                return view, status == 201
            except NotStartedError:  # gone or not ready: ask again, and go through url
                self._nodes_read_at = None
        view, status = await self.request(
            "POST",
            "/invocations",
            m.InvocationView,
            body=body.model_dump(mode="json"),
            params=params,
        )
        return view, status == 201

    async def _owner(self, id: str, function: str) -> str | None:
        """The address of the node invocation ``id`` places on, as the node list says."""
        now = self._clock.monotonic()
        if self._nodes_read_at is None or now - self._nodes_read_at >= ROUTES_FOR:
            self._nodes_read_at = now
            try:
                listing = await self.nodes()
            except DawaitError:
                listing = m.NodeList(cluster=False, items=[])
            self._nodes = listing.items
            self._layout = listing
        owner = None if self._layout is None else self._layout.owner(id, function)
        by_id = {node.node_id: node for node in self._nodes}
        return None if owner is None or owner not in by_id else by_id[owner].address

    async def nodes(self) -> m.NodeList:
        return (await self.request("GET", "/nodes", m.NodeList))[0]

    async def invocation(self, id: str) -> m.InvocationView:
        return (await self.request("GET", f"/invocations/{_quote(id)}", m.InvocationView))[0]

    async def result(self, id: str, wait: float) -> m.ResultView:
        path = f"/invocations/{_quote(id)}/result"
        return (await self.request("GET", path, m.ResultView, params={"wait": str(wait)}))[0]

    async def cancel(self, id: str) -> m.CanceledView:
        path = f"/invocations/{_quote(id)}/cancel"
        return (await self.request("POST", path, m.CanceledView))[0]

    async def invocations(
        self,
        *,
        state: str | None = None,
        function: str | None = None,
        created_after: dt.datetime | None = None,
        created_before: dt.datetime | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
        count: bool = False,
    ) -> m.InvocationPage:
        """A page of invocations, newest first: ``state`` one or more comma-separated
        states (``failed`` for every failure), ``function`` a prefix of its name."""
        params = _params(
            state=state,
            function=function,
            created_after=None if created_after is None else created_after.isoformat(),
            created_before=None if created_before is None else created_before.isoformat(),
            limit=str(limit),
            cursor=cursor,
            count="true" if count else None,
        )
        pairs = [*params.items(), *(("tag", f"{k}={v}") for k, v in (tags or {}).items())]
        return (await self.request("GET", "/invocations", m.InvocationPage, params=pairs))[0]

    async def tree(self, id: str) -> m.TreeNode:
        return (await self.request("GET", f"/invocations/{_quote(id)}/tree", m.TreeNode))[0]

    async def create_promise(
        self, id: str, *, timeout: float | None = None, data: Any = None
    ) -> m.PromiseView:
        body = m.CreatePromise(id=id, timeout=timeout, data=data).model_dump(mode="json")
        return (await self.request("POST", "/promises", m.PromiseView, body=body))[0]

    async def promise(self, id: str) -> m.PromiseView:
        return (await self.request("GET", f"/promises/{_quote(id)}", m.PromiseView))[0]

    async def resolve(self, id: str, value: Any) -> m.PromiseView:
        path = f"/promises/{_quote(id)}/resolve"
        return (await self.request("POST", path, m.PromiseView, body={"value": value}))[0]

    async def reject(self, id: str, error: str | m.ErrorInfo) -> m.PromiseView:
        path = f"/promises/{_quote(id)}/reject"
        body = {"error": error if isinstance(error, str) else error.model_dump()}
        return (await self.request("POST", path, m.PromiseView, body=body))[0]

    async def cancel_promise(self, id: str) -> m.PromiseView:
        return (await self.request("POST", f"/promises/{_quote(id)}/cancel", m.PromiseView))[0]

    async def promises(
        self, pattern: str = "*", *, state: str | None = None, limit: int = 100,
        cursor: str | None = None,
    ) -> m.PromisePage:  # fmt: skip
        params = _params(id=pattern, state=state, limit=str(limit), cursor=cursor)
        return (await self.request("GET", "/promises", m.PromisePage, params=params))[0]

    async def create_schedule(
        self, id: str, cron: str, function: str, args: list[Any], kwargs: dict[str, Any]
    ) -> m.ScheduleView:
        body = m.CreateSchedule(id=id, cron=cron, function=function, args=args, kwargs=kwargs)
        return (await self.request("POST", "/schedules", m.ScheduleView, body=body.model_dump()))[0]

    async def schedules(self, pattern: str = "*", *, limit: int = 100) -> m.ScheduleList:
        params = _params(id=pattern, limit=str(limit))
        return (await self.request("GET", "/schedules", m.ScheduleList, params=params))[0]

    async def schedule(self, id: str) -> m.ScheduleView:
        return (await self.request("GET", f"/schedules/{_quote(id)}", m.ScheduleView))[0]

    async def delete(self, id: str) -> None:
        """Delete settled invocation ``id`` with every call it made."""
        await self.request("DELETE", f"/invocations/{_quote(id)}", _NoBody)

    async def delete_promise(self, id: str) -> None:
        await self.request("DELETE", f"/promises/{_quote(id)}", _NoBody)

    async def delete_schedule(self, id: str) -> None:
        await self.request("DELETE", f"/schedules/{_quote(id)}", _NoBody)

    async def health(self) -> m.Health:
        return (await self.request("GET", "/readyz", m.Health))[0]


class _NoBody(pydantic.BaseModel):
    """A response without a body (204)."""

    @classmethod
    def model_validate_json(cls, json_data: Any, **kwargs: Any) -> _NoBody:
        return cls()


def _quote(id: str) -> str:
    return quote(id, safe="")


def _params(**values: str | None) -> dict[str, str]:
    return {key: value for key, value in values.items() if value is not None}


def _error(status: int, payload: bytes) -> DawaitError:
    try:
        body = m.ErrorBody.model_validate_json(payload)
    except pydantic.ValidationError:
        return ApiError(status, "http_error", payload[:200].decode(errors="replace"))
    kind = error_class(body.error)
    if kind is not None:
        return kind(body.message)
    if status == 503:
        return NotStartedError(body.message)
    return ApiError(status, body.error, body.message)


async def _pause(clock: Clock, retry_after: str) -> None:
    try:
        seconds = min(max(float(retry_after), 0.0), 5.0)
    except ValueError:
        seconds = 1.0
    await clock.sleep_until(clock.now() + round(seconds * 1000))
