"""The engine: one supervisor for the actors, the timers, the schedules and the store of one
app.

Every background task lives in the supervisor's task group, which runs in one runner task
that the app starts on open and cancels on close. The engine is the only place that
settles promises, so it is also the one place that tells what waits on them: in-memory
waiters (an actor awaiting a timer, a caller awaiting a result) and, through the store's
callbacks, suspended invocations that must be replayed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

from dawait.core._errors import NotStartedError, PromiseNotFoundError, StoreError
from dawait.core._param import call_target
from dawait.core._promise import PromiseRecord, PromiseState, Settle, SettleOutcome, Value
from dawait.core._retention import DEFAULT_RETENTION
from dawait.core._schedule import ScheduleRecord
from dawait.core._task import TaskRecord
from dawait.runtime._clock import Clock
from dawait.runtime._codec import check_request_size, check_size
from dawait.runtime._faults import Faults
from dawait.runtime._invocation import Invocation
from dawait.runtime._metrics import EngineMetrics
from dawait.runtime._ownership import Ownership, SoleOwnership
from dawait.runtime._retention import Retention
from dawait.runtime._schedule_loop import ScheduleLoop
from dawait.runtime._store import (
    CreatePromise,
    InvocationCreated,
    PromiseCreated,
    PromisePage,
    PromiseSettled,
    ScheduleCreated,
    SchedulePage,
    Store,
)
from dawait.runtime._timers import TimerLoop

if TYPE_CHECKING:
    from dawait.runtime._invocation import Start
    from dawait.runtime._registry import Registered, Registry
    from dawait.runtime._task_ops import Workers

__all__ = ["Engine", "EngineConfig"]

log = logging.getLogger("dawait.engine")

_RECOVER_BATCH = 1000


class EngineConfig:
    """Tunables of the engine (plain attributes, all with working defaults)."""

    def __init__(
        self,
        *,
        evict_after: float = 1.0,
        max_active: int = 10_000,
        retention: float | None = DEFAULT_RETENTION,
        max_payload: int | None = None,
    ) -> None:
        if evict_after < 0:
            raise ValueError(f"evict_after must be >= 0 seconds, got {evict_after}")
        if max_active < 1:
            raise ValueError(f"max_active must be >= 1, got {max_active}")
        if max_payload is not None and (isinstance(max_payload, bool) or max_payload < 1):
            raise ValueError(f"max_payload must be a number of bytes >= 1, got {max_payload!r}")
        self.evict_after = evict_after
        """Seconds an invocation may sit blocked on timers or other promises before it is
        evicted from memory (and replayed when what it awaits settles)."""
        self.max_active = max_active
        """Invocations held in memory at once; more wait in a queue."""
        self.retention = retention
        """Seconds a settled root is kept unless its function says (None: until deleted)."""
        self.max_payload = max_payload
        """Bytes of JSON one argument list, result or promise value may hold (None: the
        store's default; at most what the store can take)."""


class Engine:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        registry: Registry,
        *,
        config: EngineConfig | None = None,
        pid: str | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.registry = registry
        self.config = config or EngineConfig()
        self._pid = pid or uuid.uuid4().hex
        self._waiters: dict[str, list[asyncio.Future[PromiseRecord]]] = {}
        self._actors: dict[str, Invocation] = {}
        self._queued: collections.deque[str] = collections.deque()
        self._queued_ids: set[str] = set()
        self._requeue: set[str] = set()
        self._fresh: dict[str, Start] = {}
        self._group: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self._timer_wakeup = asyncio.Event()
        self._next_timeout: int | None = None
        self.schedules = ScheduleLoop(self)
        self.metrics = EngineMetrics()
        self.retention = Retention(self)
        self.faults = Faults(self)
        self.timers = TimerLoop(self)
        self.use_store(store)
        self._quiescing = False
        self._idle = asyncio.Event()
        self.ownership: Ownership = SoleOwnership()
        """Which invocations run here and whether this process fires timers (see
        ``use_ownership``)."""
        self.workers: Workers | None = None
        """Workers of other processes (the official SDKs') that run some invocations."""

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store, then start the supervisor: timers and recovery of pending work."""
        if self._runner is not None:
            return
        await self.store.open()
        started = asyncio.get_running_loop().create_future()
        self._runner = asyncio.get_running_loop().create_task(
            self._supervise(started), name="dawait-supervisor"
        )
        await started

    async def close(self) -> None:
        """Stop every actor and timer (their work resumes on the next open), close the store."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing = True
        try:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        finally:
            self._closing = False
        self._group = None
        # Whatever was running or queued resumes from the store on the next open.
        self._actors.clear()
        self._queued.clear()
        self._queued_ids.clear()
        self._requeue.clear()
        self._fresh.clear()
        closed = NotStartedError("the app was closed while this was waiting")
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(closed)
        self._waiters.clear()
        await self.store.close()

    @property
    def running(self) -> bool:
        return self._group is not None

    async def _supervise(self, started: asyncio.Future[None]) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            started.set_result(None)
            loops = {
                "dawait-timers": ("firing timers", self.timers.fire_due),
                "dawait-schedules": ("firing schedules", self.schedules.fire_due),
                "dawait-retention": ("deleting expired invocations", self.retention.sweep),
            }
            self.faults.run_loops(group, loops)
            recovering = self.faults.keep_running(
                "recovering invocations", self._recover, once=True
            )
            group.create_task(recovering, name="dawait-recover")
            await asyncio.Event().wait()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Start a background task under the supervisor (it must not raise)."""
        if self._closing:
            coro.close()
            raise asyncio.CancelledError  # the caller is being stopped too
        return self._require_group().create_task(coro, name=name)

    def _require_group(self) -> asyncio.TaskGroup:
        if self._group is None:
            raise NotStartedError(
                "the app is not open: use `async with Resonate(...) as app` or `await app.open()`"
            )
        return self._group

    # -- promises --------------------------------------------------------------------------

    @property
    def max_payload(self) -> int:
        """The payload limit: the app's, else the store's."""
        return self.config.max_payload or self.store.max_payload

    def may_be_oversize(self, data: str | None) -> TypeGuard[str]:
        """Whether ``data`` may be over the payload limit (then ``check_size`` it): a cheap
        test that spares naming what it is in the common case."""
        return data is not None and len(data) * 4 > self.max_payload

    async def create_promise(self, request: CreatePromise) -> PromiseCreated:
        self._require_group()
        check_request_size(request.id, request.param, request.value, self.max_payload)
        request = self.retention.tag(request)
        with self.faults.noting():
            created = await self.store.create_promise(request, now=self.clock.now())
        if created.created:
            self.timers.arm(created.promise)
            self._schedule_timeout(created.promise)
        return created

    async def settle(self, id: str, event: Settle, value: Value) -> PromiseSettled:
        self._require_group()
        if self.may_be_oversize(value.data):
            check_size(value.data, self.max_payload, f"the value of promise {id}")
        with self.faults.noting():
            settled = await self.store.settle_promise(
                id, event=event, value=value, now=self.clock.now()
            )
        self.on_settled(settled)
        return settled

    async def cancel(self, id: str) -> PromiseSettled:
        """Cancel invocation or promise ``id`` with the calls it awaits (``cancel_tree``, in
        bounded transactions, each invocation it called elsewhere with its own): the root's
        settle, whose outcome says whether this call canceled it."""
        self._require_group()
        root = None
        while True:
            with self.faults.noting():
                tree = await self.store.cancel_tree(id, now=self.clock.now())
            for settled in (tree.root, *tree.calls) if root is None else tree.calls:
                self.on_settled(settled)
            root = root or tree.root
            for child in tree.elsewhere:
                await self.cancel(child)
            if not tree.more:
                return root

    async def get_promise(self, id: str) -> PromiseRecord | None:
        self._require_group()
        return await self.store.get_promise(id, now=self.timers.expiry_now())

    async def search_promises(
        self, pattern: str, *, state: PromiseState | None, limit: int, cursor: str | None = None
    ) -> PromisePage:
        self._require_group()
        return await self.store.search_promises(
            pattern, state=state, limit=limit, cursor=cursor, now=self.timers.expiry_now()
        )

    async def wait_settled(self, id: str) -> PromiseRecord:
        """The promise once it has settled (raises ``PromiseNotFoundError`` for an unknown id)."""
        future = self.waiter(id)
        self.ownership.watch(id)
        try:
            record = await self.get_promise(id)
            if record is None:
                raise PromiseNotFoundError(f"no promise or invocation with id {id!r}")
            if record.state.settled:
                return record
            return await future
        finally:
            self.drop_waiter(id, future)

    def settles_here(self, id: str) -> bool:
        """Whether invocation ``id`` is pending and running here, its outcome not yet being
        recorded: whatever settles it next notifies this engine's waiters."""
        actor = self._actors.get(id)
        return actor is not None and actor.running and not actor.finishing

    def waiter(self, id: str) -> asyncio.Future[PromiseRecord]:
        """A future resolved when the engine settles promise ``id``; drop it when done."""
        future: asyncio.Future[PromiseRecord] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(id, []).append(future)
        return future

    def waited_on(self, id: str) -> bool:
        """Whether anything here waits for promise ``id`` to settle."""
        return id in self._waiters

    def drop_waiter(self, id: str, future: asyncio.Future[PromiseRecord]) -> None:
        waiters = self._waiters.get(id)
        if waiters is None:
            return
        with contextlib.suppress(ValueError):
            waiters.remove(future)
        if not waiters:
            del self._waiters[id]

    def on_settled(self, settled: PromiseSettled) -> None:
        record = settled.promise
        self.timers.disarm(record.id)
        self.ownership.settled(record)
        self.retention.settled(record)
        for future in self._waiters.pop(record.id, ()):
            if not future.done():
                future.set_result(record)
        actor = self._actors.get(record.id)
        if actor is not None:
            actor.root_settled(record)
        if self.workers is not None:
            self.workers.settled(record)
        for task in settled.resumed:
            if self.ownership.runs_here(task.id, None, None):
                self.resume(task.id)

    def promise_changed(self, old: PromiseRecord | None, new: PromiseRecord) -> None:
        """Another node changed a promise (a cluster store's watch): wake what waits on it,
        and the timer loop for a new deadline."""
        if new.state.settled:
            if old is None or not old.state.settled:
                self._settled_elsewhere(new)
        elif old is None:
            self._schedule_timeout(new)

    def _settled_elsewhere(self, record: PromiseRecord) -> None:
        """Wake what waits here on a promise another node settled (its tasks resume through
        their own records)."""
        self.on_settled(PromiseSettled(promise=record, outcome=SettleOutcome.SETTLED, resumed=()))

    def schedules_changed(self) -> None:
        self.schedules.wakeup.set()

    def settled_since(self, records: Callable[[str], PromiseRecord | None]) -> None:
        """After a cluster store reloaded: wake waiters whose promise settled meanwhile."""
        for id in {*self._waiters, *self._actors}:
            record = records(id)
            if record is not None and record.state.settled:
                self._settled_elsewhere(record)
        self._timer_wakeup.set()
        self.schedules.wakeup.set()
        self.retention.wake()

    def drop_all(self) -> None:
        """Stop every invocation in memory without writing (this node lost its lease)."""
        self.drop([*self._actors, *self._queued_ids])

    def drop(self, ids: Iterable[str]) -> None:
        """Stop the invocations ``ids`` in memory without writing (their partition moved to
        another node, which replays them)."""
        for id in ids:
            if (actor := self._actors.get(id)) is not None:
                actor.abort()
            if id in self._queued_ids:
                self._queued_ids.discard(id)
                self._queued.remove(id)
            self._requeue.discard(id)
            self._fresh.pop(id, None)

    # -- invocations -----------------------------------------------------------------------

    async def start_invocation(
        self,
        request: CreatePromise,
        call: tuple[Registered, list[Any], dict[str, Any]] | None = None,
    ) -> InvocationCreated:
        """Create an invocation and run it here (or return the one with that id).

        ``call`` is the function and arguments the request encodes, when the caller has
        them: a new invocation then starts without reading them back from the store.
        """
        self._require_group()
        self.faults.admit()
        function, version = call_target(request.param.data)
        check_request_size(request.id, request.param, request.value, self.max_payload)
        if call is not None:
            function, version = call[0].name, call[0].version
        workers = self.workers
        here = self.ownership.runs_here(request.id, function, version) and not (
            workers is not None and workers.takes(request.tags, request.param.data)
        )
        request = self.retention.tag(request, call[0] if call is not None else None)
        # Shielded: once the store took the task for this process, it must also be started
        # here, even if the caller is cancelled meanwhile (else no one would run it).
        return await asyncio.shield(self._create_and_start(request, here, call))

    async def _create_and_start(
        self,
        request: CreatePromise,
        here: bool,
        call: tuple[Registered, list[Any], dict[str, Any]] | None,
    ) -> InvocationCreated:
        with self.faults.noting():
            created = await self.store.create_invocation(
                request, pid=self.pid if here else None, ttl=None, now=self.clock.now()
            )
        if not here:
            # Another node or an SDK's worker runs it; wake waiters when it settles.
            if created.task is not None:
                self._schedule_timeout(created.promise)
                if self.workers is not None and self.ownership.runs_here(request.id, None, None):
                    self.workers.dispatch(created.promise, created.task)
            return created
        self.started(created, call)
        return created

    def started(
        self,
        created: InvocationCreated,
        call: tuple[Registered, list[Any], dict[str, Any]] | None = None,
    ) -> None:
        """Run an invocation the store has just created with a task for this process."""
        if created.task is not None:
            name = call[0].name if call else _function_name(created.promise.param.data)
            self.metrics.count("started", name)
            self._schedule_timeout(created.promise)
            # Fresh (no read-back) only if nothing queued it from the store meanwhile.
            if call is not None and not self.knows(created.promise.id):
                self._fresh[created.promise.id] = (created.promise, *call)
            self._enqueue(created.promise.id)

    def resume(self, id: str) -> None:
        """Run invocation ``id`` (again): its task became pending."""
        if id in self._actors:
            self._requeue.add(id)  # it is being evicted: start again once it has gone
        else:
            self._enqueue(id)

    def _enqueue(self, id: str) -> None:
        if id in self._queued_ids or id in self._actors:
            return
        self._queued.append(id)
        self._queued_ids.add(id)
        self._start_queued()

    def _start_queued(self) -> None:
        group = self._group
        if group is None or self._closing or self._quiescing:
            return
        while self._queued and len(self._actors) < self.config.max_active:
            id = self._queued.popleft()
            self._queued_ids.discard(id)
            actor = Invocation(self, id, self._fresh.pop(id, None))
            self._actors[id] = actor
            group.create_task(self._run_actor(actor), name=f"dawait-invocation:{id}")

    def actor(self, id: str) -> Invocation | None:
        """The actor running invocation ``id`` here, if one is."""
        return self._actors.get(id)

    async def _run_actor(self, actor: Invocation) -> None:
        try:
            await actor.run()
        except StoreError as exc:  # nothing of the run recorded: run it again later
            if not self.ownership.still_owns(actor.id):
                self.metrics.event("dropped")
            else:
                self.faults.run_again_later(actor.id, exc)
        except Exception:
            if not self.ownership.still_owns(actor.id):
                log.warning("invocation %s: owned by another node now; dropped here", actor.id)
                self.metrics.event("dropped")
            else:
                log.exception(
                    "invocation %s failed inside the engine; it resumes on restart", actor.id
                )
                self.metrics.event("actor_crashes")
        else:
            self.faults.ran(actor.id)
        finally:
            self._actors.pop(actor.id, None)
            if actor.id in self._requeue:
                self._requeue.discard(actor.id)
                self._enqueue(actor.id)
            self._start_queued()

    def use_store(self, store: Store) -> None:
        """Keep records in ``store`` (before open)."""
        limit = self.config.max_payload
        if limit is not None and limit > store.payload_ceiling:
            raise ValueError(
                f"max_payload {limit:,} bytes is over what {store!r} can take per payload "
                f"({store.payload_ceiling:,} bytes)"
            )
        self.store = store
        store.metrics = self.metrics

    def use_ownership(self, ownership: Ownership) -> None:
        """Run only what ``ownership`` places here, and fire timers while it leads (a
        cluster node; before open)."""
        if self.running:
            raise RuntimeError("use_ownership: the engine is running already")
        self.ownership = ownership

    @property
    def pid(self) -> str:
        """The process id this engine acquires tasks as: the store's (a cluster node's
        current incarnation, which changes when it rejoins), else its own."""
        return self.store.pid or self._pid

    async def quiesce(self, grace: float) -> None:
        """Start no more invocations; wait up to ``grace`` seconds until no step is running."""
        self._quiescing = True
        deadline = self.clock.now() + round(grace * 1000)
        while self.busy and self.clock.now() < deadline:
            self._idle.clear()
            await self.sleep_until(deadline, self._idle)

    @property
    def busy(self) -> bool:
        """Whether any invocation in memory is running a step or writing a record."""
        return any(actor.local_work for actor in self._actors.values())

    def local_work_done(self) -> None:
        """An actor's local work fell to zero (see ``quiesce``)."""
        if self._quiescing:
            self._idle.set()

    def knows(self, id: str) -> bool:
        """Whether invocation ``id`` is in memory or queued here."""
        return id in self._actors or id in self._queued_ids

    @property
    def queued(self) -> int:
        """Invocations waiting for a slot in memory."""
        return len(self._queued)

    @property
    def active(self) -> int:
        """Invocations in memory now."""
        return len(self._actors)

    async def _recover(self) -> None:
        """Resume every invocation the store says should be running (after a restart)."""
        after: str | None = None
        while True:
            tasks: Sequence[TaskRecord] = await self.store.runnable_tasks(
                after=after, limit=_RECOVER_BATCH
            )
            for task in tasks:
                if self.ownership.runs_here(task.id, None, None):
                    self._enqueue(task.id)
            if len(tasks) < _RECOVER_BATCH:
                return
            after = tasks[-1].id

    # -- timers ----------------------------------------------------------------------------

    def arm_timeout(self, record: PromiseRecord) -> None:
        """A promise written past the engine (the Resonate protocol's): time it out here."""
        self._schedule_timeout(record)

    def _schedule_timeout(self, record: PromiseRecord) -> None:
        if record.state.settled or record.timeout_at is None:
            return
        if self._next_timeout is None or record.timeout_at < self._next_timeout:
            self._next_timeout = record.timeout_at
            self._timer_wakeup.set()

    async def sleep_until(self, deadline: int | None, wakeup: asyncio.Event) -> None:
        """Return at ``deadline`` (never, when None), or earlier once ``wakeup`` is set."""
        waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(wakeup.wait())}
        if deadline is not None:
            waits.add(asyncio.ensure_future(self.clock.sleep_until(deadline)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in waits:
                future.cancel()

    # -- schedules -------------------------------------------------------------------------

    async def create_schedule(self, record: ScheduleRecord) -> ScheduleCreated:
        """Store a schedule (or return the one with that id) and fire it when it is due."""
        self._require_group()
        created = await self.store.create_schedule(record)
        if created.created:
            self.schedules.wakeup.set()  # its slot may come before the one the loop awaits
        return created

    async def get_schedule(self, id: str) -> ScheduleRecord | None:
        self._require_group()
        return await self.store.get_schedule(id)

    async def delete_schedule(self, id: str) -> bool:
        self._require_group()
        return await self.store.delete_schedule(id)

    async def search_schedules(
        self, pattern: str, *, limit: int, cursor: str | None = None
    ) -> SchedulePage:
        self._require_group()
        return await self.store.search_schedules(pattern, limit=limit, cursor=cursor)


def _function_name(param: str | None) -> str:
    return call_target(param)[0] or "?"
