"""``LocalBackend``: an app whose invocations run in this process, on its own store.

It holds the store (memory, SQLite or etcd), the registry, the engine and, once the app
joined a cluster, the ``ClusterNode``. Besides the ``AppBackend`` methods it is the
documented internal interface the HTTP node serves an app through (``Resonate.local``):
``start_invocation``, ``create_promise_record`` and ``settle`` work in records, and
``engine`` is the engine itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dawait._promises import PromiseInfo
from dawait._schedules import ScheduleInfo
from dawait.core._errors import (
    InvocationConflictError,
    NotSettleableError,
    PromiseAlreadySettledError,
    PromiseNotFoundError,
    ScheduleConflictError,
    ScheduleNotFoundError,
    UnknownFunctionError,
)
from dawait.core._ids import check_promise_id
from dawait.core._param import call_conflict, call_target, invocation_param
from dawait.core._promise import (
    TAG_TIMER,
    PromiseRecord,
    PromiseState,
    Settle,
    SettleOutcome,
    Value,
)
from dawait.core._schedule import Cron, ScheduleRecord
from dawait.core._units import parse_size
from dawait.runtime._calls import TAG_EXTERNAL
from dawait.runtime._clock import Clock
from dawait.runtime._codec import ANY, decode_outcome, encode_error, encode_json
from dawait.runtime._engine import Engine, EngineConfig
from dawait.runtime._memory_store import MemoryStore
from dawait.runtime._registry import Registry, check_group
from dawait.runtime._sqlite_store import SQLiteStore
from dawait.runtime._store import CreatePromise, InvocationCreated, PromiseCreated, Store

if TYPE_CHECKING:
    from dawait._backend import Function
    from dawait.cluster._node import ClusterNode

__all__ = ["LocalBackend", "open_store"]


def open_store(store: Store | str | None) -> Store:
    """A store from a URL: ``None`` or ``memory://`` (RAM), ``sqlite:///relative/app.db``,
    ``sqlite:////absolute/app.db`` (``?fsync=false`` relaxes SQLite's fsync per commit;
    ``?reserve=64MiB`` sets the free space below which new invocations are refused), or
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
        reserve = options.pop("reserve", None)
        if fsync not in ("true", "false") or options:
            raise ValueError(f"store {store!r}: the options are fsync=true|false and reserve=SIZE")
        try:
            kept = None if reserve is None else parse_size(reserve)
        except ValueError as exc:
            raise ValueError(f"store {store!r}: reserve: {exc}") from None
        return SQLiteStore(Path(path), fsync=fsync == "true", reserve=kept)
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


def _owned_kind(record: PromiseRecord) -> str:
    if TAG_TIMER in record.tags:
        return "a timer"
    if record.branch not in (None, record.id):
        return f"a call of {record.branch!r}"
    return "an invocation"


class LocalBackend:
    """Runs the app's invocations here, on ``store``."""

    def __init__(
        self, store: Store | str | None, clock: Clock, registry: Registry, config: EngineConfig
    ) -> None:
        self.clock = clock
        self.registry = registry
        self.engine = Engine(open_store(store), clock, registry, config=config)
        self.made_with = store
        """The store the app was made with (None: none named, the memory store)."""
        self.cluster: ClusterNode | None = None
        self._groups: tuple[str, ...] | None = None

    @property
    def store(self) -> Store:
        return self.engine.store

    def use_store(self, store: Store | str | None) -> None:
        if self.engine.running:
            raise RuntimeError("use_store: the app is open already")
        self.engine.use_store(open_store(store))

    def join(
        self,
        etcd: str | Sequence[str],
        *,
        namespace: str,
        node_id: str | None,
        groups: Sequence[str] | None,
        address: str,
        lease_ttl: int,
        partitions: int | None = None,
        compact_every: int = 300,
        max_offset: float = 0.5,
    ) -> None:
        from dawait.cluster._etcd_records import namespace_prefix
        from dawait.cluster._etcd_store import EtcdStore
        from dawait.cluster._node import ClusterNode

        if self.engine.running:
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
            etcd,
            namespace=namespace,
            prefix=namespace_prefix(namespace),
            node_id=node_id,
            address=address,
            lease_ttl=lease_ttl,
        )
        self.cluster = ClusterNode(
            self.engine,
            store,
            partitions=partitions,
            compact_every=compact_every,
            max_offset=max_offset,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        if self.cluster is not None:
            store = self.cluster.ns
            store.groups = self._groups or tuple(sorted(self.registry.groups() or {"default"}))
            store.versions = self.registry.served(store.groups)
        await self.engine.open()
        if self.cluster is not None:
            self.cluster.start()

    async def quiesce(self, grace: float) -> None:
        await self.engine.quiesce(grace)

    async def close(self) -> None:
        if self.cluster is not None:
            await self.cluster.stop()
        await self.engine.close()

    # -- invocations -----------------------------------------------------------------------

    async def start_invocation(
        self,
        id: str,
        fn: Function,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        *,
        version: int | None = None,
        from_json: bool = True,
    ) -> InvocationCreated:
        """Start (or find) invocation ``id``; says whether it was created.

        ``from_json``: ``args`` and ``kwargs`` are JSON values from outside (what the HTTP
        API was sent), each checked strictly against its parameter's annotation (``"1"`` is
        no ``int``); False for Python objects (``app.start``, ``app.run``)."""
        registered = self.registry.resolve(fn, version)
        encoded = registered.signature.encode_args(args, kwargs, strict=from_json)
        param = invocation_param(registered.name, registered.version, encoded)
        timeout_at = (
            None
            if registered.timeout is None
            else self.clock.now() + round(registered.timeout * 1000)
        )
        created = await self.engine.start_invocation(
            CreatePromise(id=id, param=Value(data=param), timeout_at=timeout_at),
            (registered, *registered.signature.decode_param(param)),
        )
        if not created.created:
            _check_same_call(id, param, created.promise)
        return created

    async def start(
        self, id: str, fn: Function, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> str:
        created = await self.start_invocation(id, fn, args, kwargs, from_json=False)
        return call_target(created.promise.param.data)[0] or "?"

    async def run(
        self, id: str, fn: Function, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        return await self.result(id, await self.start(id, fn, args, kwargs))

    async def function_of(self, id: str) -> str | None:
        record = await self.engine.get_promise(id)
        if record is None:
            raise PromiseNotFoundError(f"no invocation with id {id!r}")
        return call_target(record.param.data)[0]

    async def result(self, id: str, function: str | None) -> Any:
        return self.decode_result(await self.engine.wait_settled(id))

    def decode_result(self, record: PromiseRecord) -> Any:
        """A settled invocation's value, typed by its function's return annotation (or the
        exception it failed with, raised)."""
        name, version = call_target(record.param.data)
        adapter = ANY
        if name is not None:
            with contextlib.suppress(UnknownFunctionError):
                adapter = self.registry.get(name, version).signature.result
        return decode_outcome(record, adapter, f"invocation {record.id} ({name or '?'})")

    async def done(self, id: str) -> bool:
        record = await self.engine.get_promise(id)
        if record is None:
            raise PromiseNotFoundError(f"no invocation with id {id!r}")
        return record.state.settled

    async def cancel(self, id: str) -> None:
        await self.engine.cancel(id)

    async def delete(self, id: str) -> None:
        await self.engine.store.delete_tree(id)

    # -- promises --------------------------------------------------------------------------

    async def create_promise_record(
        self, id: str, timeout: float | None, data: Any
    ) -> PromiseCreated:
        """Create a pending promise (or find it); ``timeout`` in seconds from now."""
        check_promise_id(id)
        timeout_at = None if timeout is None else self.clock.now() + round(timeout * 1000)
        param = (
            Value() if data is None else Value(data=encode_json(data, what=f"promise {id} data"))
        )
        return await self.engine.create_promise(
            CreatePromise(id=id, param=param, timeout_at=timeout_at)
        )

    async def settle(self, id: str, event: Settle, value: Value) -> PromiseRecord:
        """Settle promise ``id`` through the promise API: only one settled from outside
        (``NotSettleableError`` otherwise); settling it again another way raises
        ``PromiseAlreadySettledError``."""
        record = await self.engine.get_promise(id)
        if record is None:
            raise PromiseNotFoundError(f"no promise with id {id!r}")
        if not await self._settled_from_outside(record):
            raise NotSettleableError(
                f"promise {id!r} is {_owned_kind(record)}, settled by the engine that runs it: "
                "only promises made with ctx.promise or through the promise API are settled "
                "from outside (cancel an invocation with cancel)"
            )
        settled = await self.engine.settle(id, event, value)
        if settled.outcome is SettleOutcome.ALREADY_OTHER:
            raise PromiseAlreadySettledError(
                f"promise {id!r} is already {settled.promise.state.value}"
            )
        return settled.promise

    async def _settled_from_outside(self, record: PromiseRecord) -> bool:
        """A ``ctx.promise`` promise (tagged external), or a root promise with no task (one
        made through the promise API, not an invocation)."""
        if record.tags.get(TAG_EXTERNAL) == "true":
            return True
        if record.branch not in (None, record.id) or TAG_TIMER in record.tags:
            return False
        return await self.engine.store.get_task(record.id) is None

    async def create_promise(self, id: str, timeout: float | None, data: Any) -> PromiseInfo:
        return PromiseInfo.of((await self.create_promise_record(id, timeout, data)).promise)

    async def get_promise(self, id: str) -> PromiseInfo:
        record = await self.engine.get_promise(id)
        if record is None:
            raise PromiseNotFoundError(f"no promise with id {id!r}")
        return PromiseInfo.of(record)

    async def resolve_promise(self, id: str, value: Any) -> PromiseInfo:
        data = encode_json(value, what=f"promise {id} value")
        return PromiseInfo.of(await self.settle(id, Settle.RESOLVE, Value(data=data)))

    async def reject_promise(self, id: str, error: BaseException | str) -> PromiseInfo:
        exc = Exception(error) if isinstance(error, str) else error
        return PromiseInfo.of(await self.settle(id, Settle.REJECT, Value(data=encode_error(exc))))

    async def cancel_promise(self, id: str) -> PromiseInfo:
        return PromiseInfo.of(await self.settle(id, Settle.CANCEL, Value()))

    async def search_promises(
        self, pattern: str, state: str | None, limit: int
    ) -> list[PromiseInfo]:
        wanted = None if state is None else PromiseState(state)
        found: list[PromiseInfo] = []
        cursor = None
        while True:  # a page may end short where a store bounds its scan: follow its cursor
            page = await self.engine.search_promises(
                pattern, state=wanted, limit=limit - len(found), cursor=cursor
            )
            found += [PromiseInfo.of(record) for record in page.promises]
            cursor = page.cursor
            if cursor is None or len(found) >= limit:
                return found

    # -- schedules -------------------------------------------------------------------------

    async def create_schedule(
        self, id: str, cron: str, fn: Function, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> ScheduleInfo:
        parsed = Cron(cron)
        registered = self.registry.resolve(fn)
        encoded = registered.signature.encode_args(args, kwargs)
        now = self.clock.now()
        next_run_at = parsed.next_after(now)
        if next_run_at is None:
            raise ValueError(
                f"schedule {id!r}: cron expression {parsed.expression!r} has no upcoming slot"
            )
        created = await self.engine.create_schedule(
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

    async def get_schedule(self, id: str) -> ScheduleInfo:
        record = await self.engine.get_schedule(id)
        if record is None:
            raise ScheduleNotFoundError(f"no schedule with id {id!r}")
        return ScheduleInfo.of(record)

    async def delete_schedule(self, id: str) -> bool:
        return await self.engine.delete_schedule(id)

    async def search_schedules(self, pattern: str, limit: int) -> list[ScheduleInfo]:
        page = await self.engine.search_schedules(pattern, limit=limit)
        return [ScheduleInfo.of(record) for record in page.schedules]


def _check_same_call(id: str, param: str, existing: PromiseRecord) -> None:
    """An existing invocation may be attached to only with the same function and arguments:
    else ``InvocationConflictError`` saying what differs."""
    problem = call_conflict(id, existing.param.data, param)
    if problem is not None:
        raise InvocationConflictError(problem)
