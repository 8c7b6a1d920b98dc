"""``Resonate``: the app. Registers functions, starts and awaits invocations, settles promises,
keeps schedules (``app.schedules``, in ``_schedules``)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
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

from dawait._schedules import Schedules
from dawait.core._errors import (
    InvocationConflictError,
    PromiseAlreadySettledError,
    PromiseNotFoundError,
    UnknownFunctionError,
)
from dawait.core._ids import check_invocation_id
from dawait.core._param import call_target, invocation_param, read_invocation
from dawait.core._promise import PromiseRecord, PromiseState, Settle, SettleOutcome, Value
from dawait.core._retry import RetryPolicy
from dawait.runtime._calls import to_seconds
from dawait.runtime._clock import Clock, SystemClock
from dawait.runtime._codec import (
    ANY,
    decode_json,
    decode_outcome,
    encode_error,
    encode_json,
)
from dawait.runtime._context import Context
from dawait.runtime._engine import Engine, EngineConfig
from dawait.runtime._memory_store import MemoryStore
from dawait.runtime._registry import Registered, Registry, check_group
from dawait.runtime._sqlite_store import SQLiteStore
from dawait.runtime._store import CreatePromise, InvocationCreated, Store

if TYPE_CHECKING:
    from dawait.cluster._node import ClusterNode

__all__ = ["Handle", "PromiseInfo", "Promises", "Resonate", "open_store"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
P = ParamSpec("P")


def open_store(store: Store | str | None) -> Store:
    """A store from a URL: ``None`` or ``memory://`` (RAM), ``sqlite:///relative/app.db``,
    ``sqlite:////absolute/app.db`` (``?fsync=false`` relaxes SQLite's fsync per commit), or
    ``etcd://HOST:PORT[,HOST:PORT...][?namespace=NS]`` (one node per namespace for now)."""
    if store is None:
        return MemoryStore()
    if not isinstance(store, str):
        return store
    url = urllib.parse.urlsplit(store)
    options = dict(urllib.parse.parse_qsl(url.query))
    if url.scheme == "memory":
        return MemoryStore()
    if url.scheme == "sqlite":
        path = url.path[1:] if url.path.startswith("/") else url.path
        if url.netloc or not path:
            raise ValueError(
                f"store {store!r}: expected sqlite:///relative/path.db or sqlite:////abs/path.db"
            )
        fsync = options.pop("fsync", "true").lower()
        if fsync not in ("true", "false") or options:
            raise ValueError(f"store {store!r}: the only option is fsync=true|false")
        return SQLiteStore(Path(path), fsync=fsync == "true")
    if url.scheme == "etcd":
        from dawait.cluster._etcd_store import EtcdStore

        namespace = options.pop("namespace", "default")
        if options:
            raise ValueError(f"store {store!r}: unknown option(s) {sorted(options)}")
        if not url.netloc:
            raise ValueError(f"store {store!r}: expected etcd://HOST:PORT[,HOST:PORT]")
        return EtcdStore(url.netloc, namespace=namespace)
    raise ValueError(
        f"store {store!r}: unknown scheme {url.scheme!r} (use memory://, sqlite:/// or etcd://)"
    )


def _time(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class PromiseInfo:
    """A durable promise as the outside sees it, its payloads decoded from JSON."""

    id: str
    state: str
    """``pending``, ``resolved``, ``rejected``, ``rejected_canceled`` or ``rejected_timedout``."""
    value: Any
    """The resolved value (decoded JSON), or None."""
    error: BaseException | None
    """The rejection as an exception, or None."""
    param: Any
    timeout_at: dt.datetime | None
    created_at: dt.datetime
    settled_at: dt.datetime | None
    tags: Mapping[str, str]

    @classmethod
    def of(cls, record: PromiseRecord) -> PromiseInfo:
        error: BaseException | None = None
        value: Any = None
        if record.state is PromiseState.RESOLVED:
            value = decode_json(record.value.data, ANY, what=f"promise {record.id}")
        elif record.state.settled:
            try:
                decode_outcome(record, ANY, f"promise {record.id}")
            except Exception as exc:
                error = exc
        try:
            param = json.loads(record.param.data) if record.param.data else None
        except ValueError:
            param = record.param.data
        return cls(
            id=record.id,
            state=record.state.value,
            value=value,
            error=error,
            param=param,
            timeout_at=_time(record.timeout_at),
            created_at=_time(record.created_at) or dt.datetime.fromtimestamp(0, dt.UTC),
            settled_at=_time(record.settled_at),
            tags=dict(record.tags),
        )

    @property
    def pending(self) -> bool:
        return self.state == PromiseState.PENDING.value


class Handle(Generic[T]):
    """An invocation, started or found by id."""

    def __init__(self, app: Resonate, id: str) -> None:
        self._app = app
        self.id = id

    def __repr__(self) -> str:
        return f"<Handle {self.id}>"

    async def result(self) -> T:
        """Wait for the invocation to finish: its result, or the exception it failed with."""
        record = await self._app._engine.wait_settled(self.id)
        result: T = self._app._decode_result(record)
        return result

    async def done(self) -> bool:
        """Whether the invocation has finished (in any way)."""
        record = await self._app._engine.get_promise(self.id)
        if record is None:
            raise PromiseNotFoundError(f"no invocation with id {self.id!r}")
        return record.state.settled

    async def cancel(self) -> None:
        """Cancel the invocation: it settles ``rejected_canceled`` and its running code gets
        ``asyncio.CancelledError`` at its next await. Canceling a finished one does nothing."""
        await self._app._engine.settle(self.id, Settle.CANCEL, Value())


class Promises:
    """Durable promises, settled from outside the workflows that await them."""

    def __init__(self, app: Resonate) -> None:
        self._app = app

    async def create(
        self,
        id: str,
        *,
        timeout: float | dt.timedelta | None = None,
        data: Any = None,
    ) -> PromiseInfo:
        """Create a pending promise (idempotent: an existing one is returned unchanged)."""
        if not isinstance(id, str) or not id:
            raise ValueError(f"promise id must be a non-empty string, got {id!r}")
        engine = self._app._engine
        timeout_at = None
        if timeout is not None:
            seconds = to_seconds(timeout, f"promise {id} timeout")
            timeout_at = engine.clock.now() + round(seconds * 1000)
        param = (
            Value() if data is None else Value(data=encode_json(data, what=f"promise {id} data"))
        )
        created = await engine.create_promise(
            CreatePromise(id=id, param=param, timeout_at=timeout_at)
        )
        return PromiseInfo.of(created.promise)

    async def get(self, id: str) -> PromiseInfo:
        record = await self._app._engine.get_promise(id)
        if record is None:
            raise PromiseNotFoundError(f"no promise with id {id!r}")
        return PromiseInfo.of(record)

    async def resolve(self, id: str, value: Any = None) -> PromiseInfo:
        """Resolve a pending promise with ``value`` (JSON-able); resolving it again with the
        same value returns it, with another raises ``PromiseAlreadySettledError``."""
        data = encode_json(value, what=f"promise {id} value")
        return await self._settle(id, Settle.RESOLVE, Value(data=data))

    async def reject(self, id: str, error: BaseException | str) -> PromiseInfo:
        """Reject a pending promise; its awaiter raises ``error`` (a ``str`` becomes an
        ``Exception`` with that message)."""
        exc = Exception(error) if isinstance(error, str) else error
        return await self._settle(id, Settle.REJECT, Value(data=encode_error(exc)))

    async def cancel(self, id: str) -> PromiseInfo:
        return await self._settle(id, Settle.CANCEL, Value())

    async def search(
        self, pattern: str = "*", *, state: str | None = None, limit: int = 100
    ) -> list[PromiseInfo]:
        """Promises whose id matches ``pattern`` (``*`` matches any run), by id."""
        try:
            wanted = None if state is None else PromiseState(state)
        except ValueError:
            states = ", ".join(s.value for s in PromiseState)
            raise ValueError(f"search: unknown state {state!r} (one of {states})") from None
        if limit < 1:
            raise ValueError(f"search: limit must be >= 1, got {limit}")
        page = await self._app._engine.search_promises(pattern, state=wanted, limit=limit)
        return [PromiseInfo.of(record) for record in page.promises]

    async def _settle(self, id: str, event: Settle, value: Value) -> PromiseInfo:
        settled = await self._app._engine.settle(id, event, value)
        if settled.outcome is SettleOutcome.ALREADY_OTHER:
            raise PromiseAlreadySettledError(
                f"promise {id!r} is already {settled.promise.state.value}"
            )
        return PromiseInfo.of(settled.promise)


class Resonate:
    """A dawait app: ``Resonate()`` keeps everything in memory,
    ``Resonate(store="sqlite:///app.db")`` in one SQLite file that survives restarts.

    Use it as ``async with Resonate(...) as app:``; on entry it resumes every invocation
    its store holds pending.
    """

    def __new__(cls, *args: Any, url: str | None = None, **kwargs: Any) -> Resonate:
        if url is not None and cls is Resonate:
            from dawait.node._remote import RemoteResonate

            return object.__new__(RemoteResonate)
        return object.__new__(cls)

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
    ) -> None:
        """``url`` (and ``token``) make a client of a node's HTTP API instead, which runs
        nothing itself: ``Resonate(url="http://host:8080", token=...)``; with ``route=True``
        it sends each start straight to the cluster node it places on.

        ``etcd`` (endpoints) makes this process a cluster node: see ``join``."""
        self.store = open_store(store)
        self.clock: Clock = clock or SystemClock()
        self._registry = Registry(Context)
        self._engine = Engine(
            self.store,
            self.clock,
            self._registry,
            config=EngineConfig(evict_after=evict_after, max_active=max_active),
        )
        self.promises = Promises(self)
        self.schedules = Schedules(self)
        self.cluster: ClusterNode | None = None
        """This process's part in a cluster (after ``join``), else None."""
        self._groups: tuple[str, ...] | None = None
        if etcd is not None:
            self.join(etcd, namespace=namespace, node_id=node_id, groups=groups)

    def join(
        self,
        etcd: str | Sequence[str],
        *,
        namespace: str = "default",
        node_id: str | None = None,
        groups: Sequence[str] | None = None,
        address: str = "",
        lease_ttl: int = 5,
    ) -> None:
        """Make this app a node of the cluster coordinated by ``etcd`` (before it opens).

        Everything lives in etcd under ``namespace``; this node runs the invocations that
        place on it among the live nodes serving their function's group (``groups``: every
        group this app registers, by default), fires timers while it leads, and takes over
        from nodes that die. ``address`` is where peers reach its HTTP API (``dawait serve``
        sets it); ``node_id`` defaults to ``{hostname}-{pid}``.
        """
        from dawait.cluster._etcd_store import EtcdStore
        from dawait.cluster._node import ClusterNode

        if self._engine.running:
            raise RuntimeError("join: the app is open already")
        node_id = node_id or f"{socket.gethostname()}-{os.getpid()}"
        if not node_id or "/" in node_id or ":" in node_id:
            raise ValueError(f"node id {node_id!r}: must be non-empty, without '/' or ':'")
        if groups is not None:
            groups = tuple(check_group(g, "join") for g in groups)
            if not groups:
                raise ValueError("join: groups must name at least one group")
        self._groups = groups
        store = EtcdStore(
            etcd, namespace=namespace, node_id=node_id, address=address, lease_ttl=lease_ttl
        )
        self.store = store
        self._engine.use_store(store)
        self.cluster = ClusterNode(self._engine, store)

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store and resume pending invocations (``async with`` does this)."""
        if self.cluster is not None:
            store = self.cluster.store
            store.groups = self._groups or tuple(sorted(self._registry.groups() or {"default"}))
            store.versions = self._registry.served(store.groups)
        await self._engine.open()
        if self.cluster is not None:
            self.cluster.start()

    def use_store(self, store: Store | str | None) -> None:
        """Replace the store before the app opens (``dawait serve --store`` does this)."""
        if self._engine.running:
            raise RuntimeError("use_store: the app is open already")
        self.store = open_store(store)
        self._engine.use_store(self.store)

    async def quiesce(self, grace: float) -> None:
        """Stop starting invocations and wait up to ``grace`` seconds for running steps to
        finish (a graceful shutdown does this before ``close``)."""
        await self._engine.quiesce(grace)

    async def close(self) -> None:
        """Stop running invocations (they resume on the next open) and close the store."""
        if self.cluster is not None:
            await self.cluster.stop()
        await self._engine.close()

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
    ) -> F | Callable[[F], F]:
        """Register a function so invocations can run (and after a restart, resume) it.

        ``@app.register`` or ``@app.register(name=, version=, retry_policy=, timeout=,
        non_retryable=, group=)``. A durable function (first parameter a ``Context``) is
        retried only when given a ``retry_policy``; a plain one used as a step is retried by
        default. In a cluster, invocations of a function run only on nodes serving its
        ``group`` (``dawait serve --groups``).
        """
        seconds = None if timeout is None else to_seconds(timeout, f"register {name} timeout")

        def add(function: F) -> F:
            self._registry.add(
                function,
                name=name,
                version=version,
                retry_policy=retry_policy,
                timeout=seconds,
                non_retryable=non_retryable,
                group=group,
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
        handle: Handle[Any] = await self.start(id, fn, *args, **kwargs)
        return await handle.result()

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
        await self._start_invocation(id, fn, args, kwargs)
        return Handle(self, id)

    async def _start_invocation(
        self,
        id: str,
        fn: Callable[..., Any] | str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        *,
        version: int | None = None,
    ) -> InvocationCreated:
        """Start (or find) invocation ``id``; says whether it was created."""
        check_invocation_id(id)
        registered = self._registry.resolve(fn, version)
        param = invocation_param(
            registered.name, registered.version, registered.signature.encode_args(args, kwargs)
        )
        timeout_at = (
            None
            if registered.timeout is None
            else self.clock.now() + round(registered.timeout * 1000)
        )
        created = await self._engine.start_invocation(
            CreatePromise(id=id, param=Value(data=param), timeout_at=timeout_at),
            (registered, *registered.signature.decode_param(param)),
        )
        if not created.created:
            _check_same_call(id, registered, param, created.promise)
        return created

    async def get(self, id: str) -> Handle[Any]:
        """The handle of an existing invocation (``PromiseNotFoundError`` if there is none)."""
        if await self._engine.get_promise(id) is None:
            raise PromiseNotFoundError(f"no invocation with id {id!r}")
        return Handle(self, id)

    def _decode_result(self, record: PromiseRecord) -> Any:
        name, version = call_target(record.param.data)
        adapter = ANY
        if name is not None:
            with contextlib.suppress(UnknownFunctionError):
                adapter = self._registry.get(name, version).signature.result
        return decode_outcome(record, adapter, f"invocation {record.id} ({name or '?'})")

    @property
    def registered(self) -> list[str]:
        """Names of the registered functions."""
        return self._registry.names()


def _check_same_call(id: str, registered: Registered, param: str, existing: PromiseRecord) -> None:
    """An existing invocation may be attached to only with the same function and arguments."""
    stored = read_invocation(existing.param.data)
    if stored is None:
        raise InvocationConflictError(
            f"id {id!r} is already used by a promise that is not an invocation"
        )
    if stored.func != registered.name:
        raise InvocationConflictError(
            f"invocation {id!r} was started with function {stored.func!r}, not {registered.name!r}"
        )
    requested = read_invocation(param)
    if requested is None or (stored.args, stored.kwargs) != (requested.args, requested.kwargs):
        raise InvocationConflictError(
            f"invocation {id!r} of {registered.name!r} was started with other arguments"
        )
