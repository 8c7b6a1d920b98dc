"""``Resonate``: the app. Registers functions, starts and awaits invocations, settles promises
(``app.promises``) and keeps schedules (``app.schedules``), on one of two backends: its own
store in this process (``_local``), or a node's HTTP API (``dawait.node._remote``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    ParamSpec,
    Self,
    TypeVar,
    overload,
)

from dawait._local import LocalBackend, open_store
from dawait._promises import Promises
from dawait._schedules import Schedules
from dawait.core._ids import check_invocation_id
from dawait.core._retention import APP_RETENTION, DEFAULT_RETENTION, AppRetention, check_retention
from dawait.core._retry import RetryPolicy
from dawait.runtime._calls import to_seconds
from dawait.runtime._clock import Clock, SystemClock
from dawait.runtime._context import Context
from dawait.runtime._engine import Engine, EngineConfig
from dawait.runtime._registry import Registry, function_name
from dawait.runtime._store import Store

if TYPE_CHECKING:
    from dawait._backend import AppBackend
    from dawait.cluster._node import ClusterNode

__all__ = ["Handle", "Resonate", "open_store"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
P = ParamSpec("P")


class Handle(Generic[T]):
    """An invocation, started or found by id."""

    def __init__(self, backend: AppBackend, id: str, function: str | None = None) -> None:
        self._backend = backend
        self._function = function
        self.id = id

    def __repr__(self) -> str:
        return f"<Handle {self.id}>"

    async def result(self) -> T:
        """Wait for the invocation to finish: its result, or the exception it failed with."""
        result: T = await self._backend.result(self.id, self._function)
        return result

    async def done(self) -> bool:
        """Whether the invocation has finished (in any way)."""
        return await self._backend.done(self.id)

    async def cancel(self) -> None:
        """Cancel the invocation: it settles ``rejected_canceled`` and its running code gets
        ``asyncio.CancelledError`` at its next await. Canceling a finished one does nothing."""
        await self._backend.cancel(self.id)


class Resonate:
    """A dawait app: ``Resonate()`` keeps everything in memory,
    ``Resonate(store="sqlite:///app.db")`` in one SQLite file that survives restarts.

    Use it as ``async with Resonate(...) as app:``; on entry it resumes every invocation
    its store holds pending.
    """

    def __init__(
        self,
        store: Store | str | None = None,
        *,
        clock: Clock | None = None,
        evict_after: float = 1.0,
        max_active: int = 10_000,
        url: str | None = None,
        token: str | None = None,
        route: bool = False,
        etcd: str | Sequence[str] | None = None,
        namespace: str = "default",
        node_id: str | None = None,
        groups: Sequence[str] | None = None,
        retention: float | dt.timedelta | None = DEFAULT_RETENTION,
        max_payload: int | None = None,
    ) -> None:
        """``url`` (and ``token``) make a client of a node's HTTP API instead, which runs
        nothing itself: ``Resonate(url="http://host:8080", token=...)``; with ``route=True``
        it sends each start straight to the cluster node it places on. Functions registered
        on a client only type their results (decoded through their return annotations).

        ``etcd`` (endpoints) makes this process a cluster node: see ``join``.

        ``retention``: how long a finished invocation or promise is kept (7 days by
        default; a function's own ``retention`` wins), then deleted with everything it
        recorded; None keeps everything until deleted. Within it, the same id gives the
        same result; after it, the id is free and starting it again runs anew.

        ``max_payload``: the most bytes of JSON one argument list, result or promise value
        may hold (the store's default when None: 2 MiB on memory and SQLite, 256 KiB on
        etcd, which is also its most). A step or invocation whose result is larger fails
        with ``PayloadTooLargeError`` (not retried); a start or promise call with larger
        arguments or value raises it. Keep large data in a blob store and pass its key."""
        self.clock: Clock = clock or SystemClock()
        self._registry = Registry(Context)
        self._local: LocalBackend | None = None
        self._backend: AppBackend
        self.url = url
        if url is not None:
            from dawait.node._remote import RemoteBackend

            if store is not None or etcd is not None:
                raise ValueError("Resonate(url=...) is a client: it takes no store and no etcd")
            self._backend = RemoteBackend(url, self._registry, token=token, route=route)
        else:
            self._local = LocalBackend(
                store,
                self.clock,
                self._registry,
                EngineConfig(
                    evict_after=evict_after,
                    max_active=max_active,
                    retention=check_retention(retention, "Resonate retention"),
                    max_payload=max_payload,
                ),
            )
            self._backend = self._local
        self.promises = Promises(self._backend)
        self.schedules = Schedules(self._backend)
        if etcd is not None:
            self.join(etcd, namespace=namespace, node_id=node_id, groups=groups)

    def __repr__(self) -> str:
        return (
            f"Resonate(url={self.url!r})" if self.url is not None else f"Resonate({self.store!r})"
        )

    @property
    def local(self) -> LocalBackend:
        """This app's engine, store and registry (what ``dawait serve`` serves); a client
        app (``url=...``) has none."""
        if self._local is None:
            raise TypeError(f"{self!r} is a client of a node: it runs nothing itself")
        return self._local

    @property
    def store(self) -> Store:
        """Where this app keeps its records."""
        return self.local.store

    @property
    def retention(self) -> float | None:
        """Seconds a finished invocation or promise is kept (None: until deleted), unless
        its function says otherwise. Set it before the app opens (``dawait serve
        --retention`` does); it applies to what starts afterwards."""
        return self._engine.config.retention

    @retention.setter
    def retention(self, value: float | dt.timedelta | None) -> None:
        self._engine.config.retention = check_retention(value, "Resonate retention")

    @property
    def max_payload(self) -> int:
        """The payload limit in bytes (see ``Resonate(max_payload=)``); set it before the
        app opens, at most the store's ``payload_ceiling``."""
        return self._engine.max_payload

    @max_payload.setter
    def max_payload(self, value: int) -> None:
        ceiling = self._engine.store.payload_ceiling
        if value > ceiling:
            raise ValueError(
                f"{value:,} bytes is over what {self._engine.store!r} can take per payload "
                f"({ceiling:,} bytes)"
            )
        EngineConfig(max_payload=value)  # its ValueError names what is wrong
        self._engine.config.max_payload = value

    @property
    def cluster(self) -> ClusterNode | None:
        """This process's part in a cluster (after ``join``), else None."""
        return None if self._local is None else self._local.cluster

    @property
    def _engine(self) -> Engine:
        return self.local.engine

    def join(
        self,
        etcd: str | Sequence[str],
        *,
        namespace: str = "default",
        node_id: str | None = None,
        groups: Sequence[str] | None = None,
        address: str = "",
        lease_ttl: int = 5,
        partitions: int | None = None,
        compact_every: int = 300,
        max_offset: float = 0.5,
    ) -> None:
        """Make this app a node of the cluster coordinated by ``etcd`` (before it opens).

        Everything lives in etcd under ``namespace``, cut into ``partitions`` partitions per
        function group (64 by default; fixed when the namespace is made). This node owns a
        share of the partitions of the groups it serves (``groups``: every group this app
        registers, by default), runs what is in them and fires their timers, and takes over
        from nodes that die. ``address`` is where peers reach its HTTP API (``dawait serve``
        sets it); ``node_id`` defaults to ``{hostname}-{pid}``. The leader compacts etcd's
        history older than ``compact_every`` seconds (0: never). A node whose wall clock is
        more than ``max_offset`` seconds off the majority of three or more nodes stands
        aside until it is back within it (cluster/_clock_offset.py).
        """
        self.local.join(
            etcd,
            namespace=namespace,
            node_id=node_id,
            groups=groups,
            address=address,
            lease_ttl=lease_ttl,
            partitions=partitions,
            compact_every=compact_every,
            max_offset=max_offset,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store and resume pending invocations (``async with`` does this)."""
        await self._backend.open()

    def use_store(self, store: Store | str | None) -> None:
        """Replace the store before the app opens (``dawait serve --store`` does this)."""
        self.local.use_store(store)

    async def quiesce(self, grace: float) -> None:
        """Stop starting invocations and wait up to ``grace`` seconds for running steps to
        finish (a graceful shutdown does this before ``close``)."""
        await self._backend.quiesce(grace)

    async def close(self) -> None:
        """Stop running invocations (they resume on the next open) and close the store."""
        await self._backend.close()

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

    # -- registration ----------------------------------------------------------------------

    @overload
    def register(self, fn: F, /) -> F: ...

    @overload
    def register(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        version: int = 1,
        retry_policy: RetryPolicy | None = None,
        timeout: float | dt.timedelta | None = None,
        non_retryable: tuple[type[BaseException], ...] = (),
        group: str = "default",
        retention: float | dt.timedelta | AppRetention | None = APP_RETENTION,
    ) -> Callable[[F], F]: ...

    def register(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        version: int = 1,
        retry_policy: RetryPolicy | None = None,
        timeout: float | dt.timedelta | None = None,
        non_retryable: tuple[type[BaseException], ...] = (),
        group: str = "default",
        retention: float | dt.timedelta | AppRetention | None = APP_RETENTION,
    ) -> F | Callable[[F], F]:
        """Register a function so invocations can run (and after a restart, resume) it.

        ``@app.register`` or ``@app.register(name=, version=, retry_policy=, timeout=,
        non_retryable=, group=, retention=)``. A durable function (first parameter a
        ``Context``) is retried only when given a ``retry_policy``; a plain one used as a
        step is retried by default. In a cluster, invocations of a function run only on
        nodes serving its ``group`` (``dawait serve --groups``). ``retention``: how long a
        finished invocation of it is kept, then deleted with everything it recorded (the
        app's by default; None keeps it until deleted).
        """

        def add(function: F) -> F:
            what = f"register {name or function_name(function)}"
            seconds = None if timeout is None else to_seconds(timeout, f"{what} timeout")
            kept = (
                retention
                if isinstance(retention, AppRetention)
                else check_retention(retention, what)
            )
            self._registry.add(
                function,
                name=name,
                version=version,
                retry_policy=retry_policy,
                timeout=seconds,
                non_retryable=non_retryable,
                group=group,
                retention=kept,
            )
            return function

        return add if fn is None else add(fn)

    # -- invocations -----------------------------------------------------------------------

    @overload
    async def run(
        self,
        id: str,
        fn: Callable[Concatenate[Context, P], Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T: ...

    @overload
    async def run(
        self, id: str, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T: ...

    @overload
    async def run(self, id: str, fn: str, /, *args: Any, **kwargs: Any) -> Any: ...

    async def run(self, id: str, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Any:
        """Start invocation ``id`` of ``fn`` (or attach to the one with that id) and return
        its result. The same id always gives the same result."""
        check_invocation_id(id)
        return await self._backend.run(id, fn, args, kwargs)

    @overload
    async def start(
        self,
        id: str,
        fn: Callable[Concatenate[Context, P], Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Handle[T]: ...

    @overload
    async def start(
        self, id: str, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Handle[T]: ...

    @overload
    async def start(self, id: str, fn: str, /, *args: Any, **kwargs: Any) -> Handle[Any]: ...

    async def start(
        self, id: str, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any
    ) -> Handle[Any]:
        """Start invocation ``id`` of ``fn`` (or find the one with that id): a ``Handle``."""
        check_invocation_id(id)
        return Handle(self._backend, id, await self._backend.start(id, fn, args, kwargs))

    async def delete(self, id: str) -> None:
        """Delete settled invocation ``id`` (or a promise made with ``promises.create``)
        with every call it made: steps, durable children, timers, promises. Its ``rpc`` and
        ``detached`` invocations are invocations of their own and stay. After this the id
        is free: starting it again runs it again. ``NotDeletableError`` while it is pending
        (cancel it first) or if it is a call of another invocation (an ``rpc`` or
        ``detached`` one, ``parent:N``, is deleted by its own id)."""
        if not isinstance(id, str) or not id:
            raise ValueError(f"delete: id must be a non-empty string, got {id!r}")
        await self._backend.delete(id)

    async def get(self, id: str) -> Handle[Any]:
        """The handle of an existing invocation (``PromiseNotFoundError`` if there is none)."""
        return Handle(self._backend, id, await self._backend.function_of(id))

    @property
    def registered(self) -> list[str]:
        """Names of the registered functions."""
        return self._registry.names()
