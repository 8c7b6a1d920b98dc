"""The actor of one invocation: runs (or replays) its function and owns every task it starts.

An invocation is a root promise whose param names a registered function and its
arguments. Its actor loads the promises the invocation recorded before (its branch), runs
the function with a root ``Context`` (calls already recorded return their stored outcome
without running), and settles the root promise with the result.

While every task of the invocation is waiting on promises that others settle (timers,
external promises, remote calls) and no step is running, it is *blocked*. Blocked for
``evict_after`` seconds, it is evicted: the store records a callback on each awaited promise,
the coroutine is cancelled and the actor ends. When one of those promises settles the
store makes the task pending again and the engine replays the invocation from the top.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from dawait.core._errors import (
    PromiseTimeoutError,
    SerializationError,
    StoreError,
    UnknownFunctionError,
)
from dawait.core._param import read_invocation
from dawait.core._promise import TAG_BRANCH, PromiseRecord, Settle, SettleOutcome, Value
from dawait.core._task import TaskState
from dawait.runtime._clock import deadline_scope
from dawait.runtime._codec import check_size, encode_error, encode_json
from dawait.runtime._context import Context, Frame
from dawait.runtime._store import ACTING_FOR

if TYPE_CHECKING:
    from dawait.runtime._engine import Engine
    from dawait.runtime._registry import Registered

__all__ = ["Invocation"]

log = logging.getLogger("dawait.invocation")


Start = tuple[PromiseRecord, "Registered", list[Any], dict[str, Any]]
"""An invocation's promise, function and decoded arguments."""


class _Evicted(Exception):
    """The invocation left memory; it is replayed when what it awaits settles."""


class _Aborted(Exception):
    """The invocation was canceled or timed out from outside: write nothing more."""


class Invocation:
    """One active invocation: its replay cache, its tasks and its blocked/evicted state."""

    def __init__(self, engine: Engine, id: str, fresh: Start | None = None) -> None:
        self.engine = engine
        self.id = id
        self.fresh = fresh
        """What a new invocation started here runs with, so it need not read it back."""
        self.cache: dict[str, PromiseRecord] = {}
        self.tags = {TAG_BRANCH: id}
        self.registered: Registered | None = None
        self._task: asyncio.Task[Any] | None = None
        self._writes: set[asyncio.Task[Any]] = set()
        self._unwritten: set[asyncio.Future[PromiseRecord]] = set()
        self._waiters: list[tuple[str, asyncio.Future[PromiseRecord]]] = []
        self._cancelled = False
        self._local = 0
        self._remote: dict[str, int] = {}
        self._epoch = 0
        self._evict_timer: asyncio.Task[None] | None = None
        self._evicting = False
        self._aborted = False
        self._finishing = False
        self.store_error: StoreError | None = None
        """The first store error a call made for this run met (``Faults.noted``): the run
        then records nothing more, whatever its code did with the error, and is run again
        (a store error is never an outcome)."""

    # -- what Context uses -----------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once the invocation is being evicted or aborted: ctx calls must not start."""
        return self._evicting or self._aborted

    @property
    def running(self) -> bool:
        """True while it runs a pending invocation (started here, or read back pending)."""
        return (self.fresh is not None or self.registered is not None) and not self.stopping

    @property
    def finishing(self) -> bool:
        """True once it has begun recording the invocation's outcome."""
        return self._finishing

    def write(
        self, coro: Coroutine[Any, Any, PromiseRecord], *, name: str
    ) -> asyncio.Future[PromiseRecord]:
        """Start writing a record; later calls wait for it (see ``unwritten``)."""
        future: asyncio.Future[PromiseRecord] = asyncio.get_running_loop().create_future()
        self.begin_local()
        self._unwritten.add(future)
        future.add_done_callback(self._unwritten.discard)
        task = self.engine.spawn(resolve_with(future, coro, self.end_local), name=name)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return future

    def unwritten(self) -> list[asyncio.Future[PromiseRecord]]:
        """Records still being written, which a call made now must wait for."""
        return list(self._unwritten)

    def waiter(self, id: str) -> asyncio.Future[PromiseRecord]:
        """A future the engine resolves when promise ``id`` settles (dropped when the run ends)."""
        future = self.engine.waiter(id)
        self._waiters.append((id, future))
        return future

    def remember(self, record: PromiseRecord) -> None:
        """Keep a settled call's record, so a retry within this run replays it."""
        if record.state.settled:
            self.cache[record.id] = record

    def begin_local(self) -> None:
        """Local work (a step running, a record being written) started: not blocked."""
        self._local += 1
        self._epoch += 1

    def end_local(self) -> None:
        self._local -= 1
        self._epoch += 1
        if not self._local:
            self.engine.local_work_done()
        self._check_blocked()

    @property
    def local_work(self) -> int:
        """Steps running and records being written right now."""
        return self._local

    def begin_remote(self, id: str) -> None:
        """A task started waiting for promise ``id``, which something else settles."""
        if id not in self._remote:
            self.engine.ownership.awaiting(self.id, id)
        self._remote[id] = self._remote.get(id, 0) + 1
        self._epoch += 1
        self._check_blocked()

    def end_remote(self, id: str) -> None:
        count = self._remote[id] - 1
        if count:
            self._remote[id] = count
        else:
            del self._remote[id]
        self._epoch += 1
        self._check_blocked()

    @property
    def blocked(self) -> bool:
        return self._local == 0 and bool(self._remote)

    # -- engine -> actor -------------------------------------------------------------------

    def root_settled(self, record: PromiseRecord) -> None:
        """The root promise settled; unless by this actor's own result, stop running."""
        if not self._finishing:
            self.abort()

    def abort(self) -> None:
        """Stop at once without writing anything more (canceled, timed out)."""
        if self._aborted:
            return
        self._aborted = True
        self._stop_running()

    def _stop_running(self) -> None:
        """Cancel the function where it awaits, and the writes it started."""
        for task in self._writes:
            task.cancel()
        if self._task is not None and not self._cancelled:
            self._cancelled = True
            self._task.cancel()

    # -- the actor -------------------------------------------------------------------------

    async def run(self) -> None:
        # This task's own context: from the acquire on (or at once for a fresh invocation,
        # created with its claim), its store calls are fenced by this invocation's claim.
        ACTING_FOR.set(None if self.fresh is None else self.id)
        start = self.fresh or await self._load()
        if start is None:
            return
        record, registered, args, kwargs = start
        engine = self.engine
        self.registered = registered
        retry = 0
        while True:
            if self.fresh is None or retry:
                self.cache = {r.id: r for r in await engine.store.branch_promises(self.id)}
            if self._aborted:
                return  # aborted while reading (its node lost its lease): run nothing
            try:
                result = await self._run_once(record, registered, args, kwargs)
            except _Evicted:
                engine.metrics.event("evictions")
                return
            except _Aborted:
                return
            except Exception as exc:
                if not engine.ownership.still_owns(self.id):
                    raise  # another node runs it now: write nothing (the engine drops it)
                if self.store_error is not None or isinstance(exc, StoreError):
                    raise self.store_error or exc from None  # run again later (Faults)
                retry += 1
                delay = self._retry_delay(registered, exc, retry)
                if delay is None:
                    await self._finish(Settle.REJECT, Value(data=encode_error(exc)))
                    return
                engine.metrics.event("retries")
                if not await self._backoff(delay):
                    return
                continue
            if self.store_error is not None:
                raise self.store_error  # its code caught it: the result may be wrong
            try:
                data = encode_json(
                    result, registered.signature.result, what=f"{registered.name} result"
                )
                if engine.may_be_oversize(data):
                    check_size(
                        data, engine.max_payload, f"the result of {registered.name} ({self.id})"
                    )
            except SerializationError as exc:
                await self._finish(Settle.REJECT, Value(data=encode_error(exc)))
                return
            await self._finish(Settle.RESOLVE, Value(data=data))
            return

    async def _load(self) -> Start | None:
        """Read the invocation back from the store and take its task; None if done."""
        engine = self.engine
        record = await engine.store.get_promise(self.id, now=engine.timers.expiry_now())
        if record is None or record.state.settled:
            return None
        task = await engine.store.get_task(self.id)
        if task is None or task.state is TaskState.FULFILLED:
            return None
        workers = engine.workers
        if workers is not None and workers.takes(record.tags, record.param.data):
            workers.dispatch(record, task)  # an SDK's worker runs it
            return None
        held = task.state is TaskState.ACQUIRED and task.pid == engine.pid
        call = read_invocation(record.param.data)
        try:
            registered = None if call is None else engine.registry.get(call.func, call.version)
        except UnknownFunctionError as exc:
            # Not deployed here (yet): leave it, untaken, for a process that has it.
            log.error("cannot run invocation %s: %s", self.id, exc)
            engine.metrics.event("unknown_function")
            return None
        ACTING_FOR.set(self.id)
        # One process holds the store's only lock: whoever held the task before is gone. In
        # a cluster the claim decides: the store refuses this acquire while another holds it.
        if not held and not await engine.store.acquire_task(
            self.id, pid=engine.pid, ttl=None, now=engine.clock.now(), force=True
        ):
            return None
        if self.stopping:
            return None
        try:
            if registered is None or call is None:  # undecodable: taken above, now rejected
                raise ValueError("its call record is not {func, version, args, kwargs}")
            args, kwargs = registered.signature.decode_args(call.args, call.kwargs)
        except (SerializationError, KeyError, TypeError, ValueError) as exc:
            error = SerializationError(f"invocation {self.id}: cannot decode its call: {exc}")
            await self._finish(Settle.REJECT, Value(data=encode_error(error)))
            return None
        return record, registered, args, kwargs

    @staticmethod
    def _retry_delay(registered: Registered, error: Exception, retry: int) -> float | None:
        policy = registered.retry_policy
        if policy is None or isinstance(error, registered.non_retryable):
            return None
        return policy.backoff(retry)

    async def _run_once(
        self, record: PromiseRecord, registered: Registered, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        """Run the function once to its end in this task, replaying what is recorded."""
        self._local = 0
        self._remote.clear()
        self._task = asyncio.current_task()
        root = Context(self, Frame(self.id, record.timeout_at))
        fn_args = (root, *args) if registered.durable else tuple(args)
        try:
            try:
                if registered.signature.is_async:
                    result = await registered.fn(*fn_args, **kwargs)
                else:
                    call = functools.partial(registered.fn, *fn_args, **kwargs)
                    result = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
            finally:
                self._task = None
                self._uncancel()
            await self._drain()
        finally:
            if self._evict_timer is not None:
                self._evict_timer.cancel()
                self._evict_timer = None
            for id, future in self._waiters:
                self.engine.drop_waiter(id, future)
            self._waiters.clear()
        return result

    async def _backoff(self, delay: float) -> bool:
        """Wait before retrying the function; False if it was aborted meanwhile."""
        clock = self.engine.clock
        self._task = asyncio.current_task()
        try:
            await clock.sleep_until(clock.now() + round(delay * 1000))
        except asyncio.CancelledError:
            if not self._aborted:
                raise
        finally:
            self._task = None
        if self._cancelled:
            self._cancelled = False
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        return not self._aborted

    def _uncancel(self) -> None:
        """Take back the cancellation this actor asked for (eviction, abort)."""
        if self._cancelled:
            self._cancelled = False
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        if self._evicting:
            raise _Evicted
        if self._aborted:
            raise _Aborted

    async def _drain(self) -> None:
        """After the function returned: let the records it started writing finish."""
        while self._writes:
            await asyncio.wait(list(self._writes))

    async def _finish(self, event: Settle, value: Value) -> None:
        self._finishing = True
        if self._aborted:
            return
        try:
            settled = await self.engine.settle(self.id, event, value)
            if settled.outcome is SettleOutcome.SETTLED and self.registered is not None:
                outcome = "completed" if event is Settle.RESOLVE else "failed"
                self.engine.metrics.count(outcome, self.registered.name)
        except StoreError:
            raise  # the engine runs it again later
        except Exception:
            log.exception(
                "invocation %s: cannot record its outcome; it resumes on restart", self.id
            )
            raise

    # -- eviction --------------------------------------------------------------------------

    def _check_blocked(self) -> None:
        idle = self.blocked and not self.stopping and self._task is not None
        if idle and self._evict_timer is None:
            self._evict_timer = self.engine.spawn(
                self._evict_when_idle(), name=f"dawait-evict:{self.id}"
            )

    async def _evict_when_idle(self) -> None:
        clock = self.engine.clock
        delay = round(self.engine.config.evict_after * 1000)
        try:
            while True:
                epoch = self._epoch
                await clock.sleep_until(clock.now() + delay)
                if not self.blocked or self.stopping:
                    return
                if epoch == self._epoch:
                    break
            awaited = list(self._remote)
            try:
                suspended = await self.engine.store.suspend_task(
                    self.id, awaited=awaited, now=self.engine.timers.expiry_now()
                )
                if self.stopping:
                    return
                if not suspended:
                    # Something it awaits settled meanwhile: it goes on in memory.
                    await self._wake_settled(awaited)
                    return
            except StoreError as exc:
                # This task runs under the engine's supervisor: raising would stop the
                # engine. Staying in memory loses nothing; the invocation goes on here.
                log.warning("invocation %s: cannot leave memory (%s); it stays", self.id, exc)
                return
            self._evicting = True
            self._stop_running()
        finally:
            if asyncio.current_task() is self._evict_timer:
                self._evict_timer = None

    async def _wake_settled(self, awaited: list[str]) -> None:
        """Wake this run's waiters on the awaited promises that have settled.

        A promise that settled while this run read its records, before it waited on it,
        woke no one: the run waits on the pending copy it read, and the refused suspend is
        the only sign of it. Read again, from the store.
        """
        engine = self.engine
        now = engine.timers.expiry_now()
        records = await asyncio.gather(*(engine.store.get_promise(id, now=now) for id in awaited))
        settled = {r.id: r for r in records if r is not None and r.state.settled}
        for id, future in self._waiters:
            if id in settled and not future.done():
                future.set_result(settled[id])

    # -- helpers for Context ---------------------------------------------------------------

    async def within(self, deadline: int | None, coro: Coroutine[Any, Any, Any], what: str) -> Any:
        """Await ``coro``; past ``deadline`` cancel it and raise ``PromiseTimeoutError``."""
        if deadline is None:
            return await coro
        try:
            async with deadline_scope(self.engine.clock, deadline):
                return await coro
        except TimeoutError:
            raise PromiseTimeoutError(f"{what} timed out") from None


async def resolve_with(
    future: asyncio.Future[Any],
    coro: Coroutine[Any, Any, Any],
    done: Callable[[], None] | None = None,
) -> None:
    """Run ``coro`` into ``future``, never raising into the task group, then call ``done``.

    The future may have been cancelled by a waiter that went away; the outcome is then
    dropped.
    """
    try:
        result = await coro
    except asyncio.CancelledError:
        future.cancel()
        raise
    except Exception as exc:  # the outcome belongs to whoever awaits the future
        if not future.done():
            future.set_exception(exc)
    else:
        if not future.done():
            future.set_result(result)
    finally:
        if done is not None:
            done()
