"""The store operations, written once over a small synchronous ``Tables`` interface.

A store provides ``Tables`` over its own records (dicts in memory, SQL in one SQLite
transaction) and runs these functions atomically; the logic of creating, settling, timing
out, suspending and resuming, and of keeping schedules, is therefore the same in every
store.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from dawait.core._errors import DawaitError, PromiseNotFoundError
from dawait.core._listing import InvocationQuery, ListCursor, decode_cursor
from dawait.core._promise import (
    TAG_DETACHED,
    PromiseRecord,
    PromiseState,
    Settle,
    SettleOutcome,
    Transition,
    Value,
    create_promise,
    expire_promise,
    settle_promise,
)
from dawait.core._schedule import ScheduleRecord
from dawait.core._task import (
    TaskRecord,
    acquire_task,
    fulfill_task,
    new_task,
    resume_task,
    suspend_task,
)
from dawait.runtime._deletion import delete_in_batches, op_delete_tree, op_keep, op_sweep, sweep
from dawait.runtime._metrics import EngineMetrics
from dawait.runtime._search_ops import op_search_invocations, op_search_promises
from dawait.runtime._store import (
    DEFAULT_MAX_PAYLOAD,
    MAX_PAYLOAD_CEILING,
    CanceledTree,
    CreatePromise,
    Expired,
    InvocationCreated,
    PromiseCreated,
    PromisePage,
    PromiseSettled,
    ScheduleCreated,
    SchedulePage,
)

__all__ = ["CANCEL_BATCH", "Tables", "TablesStore", "op_cancel_tree"]

R = TypeVar("R")


class Tables(Protocol):
    """Synchronous access to a store's records inside one transaction."""

    def get_promise(self, id: str) -> PromiseRecord | None: ...
    def put_promise(self, record: PromiseRecord, *, new: bool) -> None: ...
    def insert_promise(self, record: PromiseRecord) -> bool:
        """Insert a new promise; False, changing nothing, if the id is taken."""
        ...

    def branch_promises(self, branch: str) -> list[PromiseRecord]: ...
    def search_promises(
        self, pattern: str, state: PromiseState | None, limit: int, after: str | None
    ) -> list[PromiseRecord]: ...
    def due_promises(self, now: int, limit: int) -> list[PromiseRecord]: ...
    def next_timeout(self) -> int | None: ...
    def get_task(self, id: str) -> TaskRecord | None: ...
    def put_task(self, task: TaskRecord, *, new: bool) -> None: ...
    def add_callback(self, promise_id: str, task_id: str) -> None: ...
    def pop_callbacks(self, promise_id: str) -> list[str]: ...
    def drop_callbacks(self, task_id: str) -> None: ...
    def delete_promise(self, id: str) -> None:
        """Delete promise ``id`` (its callbacks too); nothing if there is none."""
        ...

    def delete_task(self, id: str) -> None:
        """Delete task ``id`` (the callbacks it holds too); nothing if there is none."""
        ...

    def delete_all(self, ids: Sequence[str]) -> None:
        """Delete the promises ``ids`` and their tasks (with their callbacks)."""
        ...

    def calls_below(self, id: str) -> list[tuple[str, str, str | None]]:
        """Every promise below ``id`` by branch (its calls, theirs, and so on), in any
        order, as (id, its caller, its param's data)."""
        ...

    def due_deletions(self, now: int, limit: int) -> list[str]:
        """Ids whose ``delete_at`` is at or before ``now``, earliest first (left indexed:
        an entry goes with its record, or when the record's deadline changes)."""
        ...

    def next_deletion(self) -> int | None: ...
    def runnable_tasks(self, after: str | None, limit: int) -> list[TaskRecord]: ...
    def invocation_promises(
        self, query: InvocationQuery, after: ListCursor | None, limit: int
    ) -> list[PromiseRecord]:
        """Up to ``limit`` invocations' promises listed after ``after`` (newest first:
        ``core/_listing.py``), of the query's stored states, function and time range."""
        ...

    def get_schedule(self, id: str) -> ScheduleRecord | None: ...
    def put_schedule(self, record: ScheduleRecord, *, new: bool) -> None: ...
    def delete_schedule(self, id: str) -> bool: ...
    def search_schedules(
        self, pattern: str, limit: int, after: str | None
    ) -> list[ScheduleRecord]: ...
    def due_schedules(self, now: int, limit: int) -> list[ScheduleRecord]: ...
    def next_schedule_at(self) -> int | None: ...


def op_create_promise(t: Tables, request: CreatePromise, now: int) -> PromiseCreated:
    def transition(existing: PromiseRecord | None) -> Transition:
        return create_promise(
            existing,
            id=request.id,
            now=now,
            param=request.param,
            timeout_at=request.timeout_at,
            tags=request.tags,
            state=request.state,
            value=request.value,
        )

    # Most creates are of new ids (a step's one write): try the insert first and read the
    # existing record only when the id is taken.
    fresh = transition(None).record
    if t.insert_promise(fresh):
        return PromiseCreated(promise=fresh, created=True)
    existing = t.get_promise(request.id)
    assert existing is not None
    found = transition(existing)
    if found.changed:
        _settled(t, found.record, SettleOutcome.SETTLED)
    return PromiseCreated(promise=found.record, created=False)


def op_create_invocation(
    t: Tables, request: CreatePromise, pid: str | None, ttl: int | None, now: int
) -> InvocationCreated:
    created = op_create_promise(t, request, now)
    if not created.created:
        return InvocationCreated(promise=created.promise, task=None, created=False)
    if created.promise.state.settled:
        return InvocationCreated(promise=created.promise, task=None, created=True)
    task = new_task(request.id, pid=pid, now=now, ttl=ttl)
    t.put_task(task, new=True)
    return InvocationCreated(promise=created.promise, task=task, created=True)


def op_settle_promise(t: Tables, id: str, event: Settle, value: Value, now: int) -> PromiseSettled:
    record = t.get_promise(id)
    if record is None:
        raise PromiseNotFoundError(f"no promise with id {id!r}")
    transition = settle_promise(record, event=event, value=value, now=now)
    if not transition.changed:
        return PromiseSettled(promise=transition.record, outcome=transition.outcome, resumed=())
    return _settled(t, transition.record, transition.outcome)


CANCEL_BATCH = 40
"""Calls one ``op_cancel_tree`` cancels at most (a transaction's writes stay bounded)."""


def op_cancel_tree(t: Tables, id: str, now: int) -> CanceledTree:
    """``Store.cancel_tree``: the root, then pending calls below it, by branch."""
    root = op_settle_promise(t, id, Settle.CANCEL, Value(), now)
    if root.promise.state is not PromiseState.REJECTED_CANCELED:
        return CanceledTree(root=root)  # it had ended otherwise: nothing below to cancel
    below: dict[str, list[str]] = {}
    for call, caller, _param in t.calls_below(id):
        below.setdefault(caller, []).append(call)
    canceled: list[PromiseSettled] = []
    callers = [id]
    while callers:
        for call in sorted(below.get(callers.pop(), ())):
            record = t.get_promise(call)
            if record is None or record.tags.get(TAG_DETACHED) == "true":
                continue  # a detached invocation outlives its caller, with its calls
            if record.state is PromiseState.PENDING:
                if len(canceled) == CANCEL_BATCH:
                    return CanceledTree(root=root, calls=canceled, more=True)
                canceled.append(op_settle_promise(t, call, Settle.CANCEL, Value(), now))
            callers.append(call)
    return CanceledTree(root=root, calls=canceled)


def op_expire_promises(t: Tables, now: int, limit: int) -> list[PromiseSettled]:
    results = []
    for record in t.due_promises(now, limit):
        transition = expire_promise(record, now)
        if transition.changed:
            results.append(_settled(t, transition.record, SettleOutcome.SETTLED))
    return results


def op_get_promise(t: Tables, id: str, now: int | None) -> PromiseRecord | None:
    record = t.get_promise(id)
    if record is None or now is None:
        return record
    return expire_promise(record, now).record


def op_acquire_task(
    t: Tables, id: str, pid: str, ttl: int | None, now: int, force: bool
) -> TaskRecord | None:
    task = t.get_task(id)
    acquired = None if task is None else acquire_task(task, pid=pid, now=now, ttl=ttl, force=force)
    if acquired is not None:
        t.put_task(acquired, new=False)
    return acquired


def op_suspend_task(t: Tables, id: str, awaited: Sequence[str], now: int) -> bool:
    task = t.get_task(id)
    suspended = None if task is None else suspend_task(task)
    if suspended is None:
        return False
    for promise_id in awaited:
        record = t.get_promise(promise_id)
        if record is None or expire_promise(record, now).record.state.settled:
            return False
    for promise_id in awaited:
        t.add_callback(promise_id, id)
    t.put_task(suspended, new=False)
    return True


def op_create_schedule(t: Tables, record: ScheduleRecord) -> ScheduleCreated:
    existing = t.get_schedule(record.id)
    if existing is not None:
        return ScheduleCreated(schedule=existing, created=False)
    t.put_schedule(record, new=True)
    return ScheduleCreated(schedule=record, created=True)


def op_search_schedules(t: Tables, pattern: str, limit: int, cursor: str | None) -> SchedulePage:
    rows = t.search_schedules(pattern, limit + 1, cursor)
    page = rows[:limit]
    next_cursor = page[-1].id if len(rows) > limit and page else None
    return SchedulePage(schedules=page, cursor=next_cursor)


def op_fire_schedule(
    t: Tables,
    id: str,
    expected: int | None,
    invocation: CreatePromise,
    next_run_at: int | None,
    last_run_at: int,
    pid: str | None,
    ttl: int | None,
    now: int,
) -> InvocationCreated | None:
    record = t.get_schedule(id)
    if record is None or record.next_run_at != expected:
        return None
    created = op_create_invocation(t, invocation, pid, ttl, now)
    op_move_schedule(t, id, expected, next_run_at, last_run_at)
    return created


def op_move_schedule(
    t: Tables, id: str, expected: int | None, next_run_at: int | None, last_run_at: int
) -> bool:
    """Move a schedule to its next slot if it is still at ``expected``."""
    record = t.get_schedule(id)
    if record is None or record.next_run_at != expected:
        return False
    t.put_schedule(
        dataclasses.replace(record, next_run_at=next_run_at, last_run_at=last_run_at), new=False
    )
    return True


def _settled(t: Tables, record: PromiseRecord, outcome: SettleOutcome) -> PromiseSettled:
    """Write a newly settled promise, fulfil its task and resume the tasks awaiting it."""
    t.put_promise(record, new=False)
    task = t.get_task(record.id)
    fulfilled = None if task is None else fulfill_task(task)
    if fulfilled is not None:
        t.put_task(fulfilled, new=False)
    resumed = []
    for task_id in t.pop_callbacks(record.id):
        awaiter = t.get_task(task_id)
        pending = None if awaiter is None else resume_task(awaiter)
        if pending is not None:
            t.put_task(pending, new=False)
            t.drop_callbacks(task_id)  # it replays now; it will say what it awaits next
            resumed.append(pending)
    return PromiseSettled(promise=record, outcome=outcome, resumed=resumed)


Done = tuple["asyncio.Future[Any]", bool, Any, Callable[..., Any], tuple[object, ...]]
"""An operation run but not answered yet: its future, whether it succeeded, its result or
error, and the operation and arguments (to run it again if its transaction is undone)."""


def run_op(
    tables: Tables,
    op: Callable[..., Any],
    args: tuple[object, ...],
    future: asyncio.Future[Any],
    as_error: Callable[[Exception], BaseException],
) -> Done:
    """Run ``op`` on ``tables``; its outcome, to answer ``future`` with once committed.
    ``as_error`` turns an unexpected exception into the store's error."""
    try:
        return (future, True, op(tables, *args), op, args)
    except DawaitError as exc:
        return (future, False, exc, op, args)
    except Exception as exc:
        return (future, False, as_error(exc), op, args)


def answer(done: Iterable[Done]) -> None:
    """Answer each operation's future with its outcome (unless its caller went away)."""
    for future, ok, result, _op, _args in done:
        if future.done():
            continue
        if ok:
            future.set_result(result)
        else:
            future.set_exception(result)


def fail(done: Iterable[Done], error: BaseException) -> None:
    """Answer each operation's future with ``error``: its transaction did not commit."""
    for future, _ok, _result, _op, _args in done:
        if not future.done():
            future.set_exception(error)


class TablesStore:
    """A ``Store`` built from the operations above; subclasses say how an operation runs.

    ``_transact(op, *args)`` runs ``op(tables, *args)`` atomically and returns its result.
    """

    metrics: EngineMetrics | None = None
    max_payload = DEFAULT_MAX_PAYLOAD
    payload_ceiling = MAX_PAYLOAD_CEILING
    sweep_at_once = True
    """Whether a retention sweep deletes its due trees in one transaction (``op_sweep``);
    else one tree at a time, a few at once (etcd bounds a transaction's operations)."""

    async def transact(self, op: Callable[..., R], *args: object) -> R:
        """Run ``op(tables, *args)`` atomically: operations written over ``Tables`` outside
        this module (the Resonate protocol's task operations, ``_task_ops.py``)."""
        return await self._transact(op, *args)

    async def _transact(self, op: Callable[..., R], *args: object) -> R:
        raise NotImplementedError

    @property
    def pid(self) -> str | None:
        return None

    def problem(self) -> str | None:
        return None

    def refusal(self) -> str | None:
        return None

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def create_promise(self, request: CreatePromise, *, now: int) -> PromiseCreated:
        return await self._transact(op_create_promise, request, now)

    async def create_invocation(
        self, request: CreatePromise, *, pid: str | None, ttl: int | None, now: int
    ) -> InvocationCreated:
        return await self._transact(op_create_invocation, request, pid, ttl, now)

    async def settle_promise(
        self, id: str, *, event: Settle, value: Value, now: int
    ) -> PromiseSettled:
        return await self._transact(op_settle_promise, id, event, value, now)

    async def expire_promises(self, *, now: int, limit: int) -> Sequence[PromiseSettled]:
        return await self._transact(op_expire_promises, now, limit)

    async def next_timeout(self) -> int | None:
        return await self._transact(_next_timeout)

    async def get_promise(self, id: str, *, now: int | None = None) -> PromiseRecord | None:
        return await self._transact(op_get_promise, id, now)

    async def branch_promises(self, branch: str) -> Sequence[PromiseRecord]:
        return await self._transact(_branch_promises, branch)

    async def search_promises(
        self,
        pattern: str,
        *,
        state: PromiseState | None = None,
        limit: int = 100,
        cursor: str | None = None,
        now: int | None = None,
    ) -> PromisePage:
        return await self._transact(op_search_promises, pattern, state, limit, cursor, now)

    async def get_task(self, id: str) -> TaskRecord | None:
        return await self._transact(_get_task, id)

    async def acquire_task(
        self, id: str, *, pid: str, ttl: int | None, now: int, force: bool = False
    ) -> TaskRecord | None:
        return await self._transact(op_acquire_task, id, pid, ttl, now, force)

    async def suspend_task(self, id: str, *, awaited: Sequence[str], now: int) -> bool:
        return await self._transact(op_suspend_task, id, awaited, now)

    async def runnable_tasks(
        self, *, after: str | None = None, limit: int = 1000
    ) -> Sequence[TaskRecord]:
        return await self._transact(_runnable_tasks, after, limit)

    async def search_invocations(
        self,
        query: InvocationQuery,
        *,
        limit: int = 100,
        cursor: str | None = None,
        now: int,
    ) -> PromisePage:
        after = None if cursor is None else decode_cursor(cursor)
        return await self._transact(op_search_invocations, query, limit, after, now)

    async def create_schedule(self, record: ScheduleRecord) -> ScheduleCreated:
        return await self._transact(op_create_schedule, record)

    async def get_schedule(self, id: str) -> ScheduleRecord | None:
        return await self._transact(_get_schedule, id)

    async def delete_schedule(self, id: str) -> bool:
        return await self._transact(_delete_schedule, id)

    async def cancel_tree(self, id: str, *, now: int) -> CanceledTree:
        return await self._transact(op_cancel_tree, id, now)

    async def delete_tree(self, id: str) -> int:
        return await delete_in_batches(lambda: self._transact(op_delete_tree, id))

    async def delete_expired(self, *, now: int, limit: int) -> Expired:
        due = await self._transact(_due_deletions, now, limit)
        if not self.sweep_at_once:
            return await sweep(due, self.delete_tree, self._keep, now=now, more=len(due) == limit)
        if not due:
            return Expired(roots=0, records=0, more=False)
        roots, records, cut = await self._transact(op_sweep, due, now)
        return Expired(roots=roots, records=records, more=cut or len(due) == limit)

    async def _keep(self, id: str, until: int | None) -> None:
        await self._transact(op_keep, id, until)

    async def next_deletion(self) -> int | None:
        return await self._transact(_next_deletion)

    async def search_schedules(
        self, pattern: str, *, limit: int = 100, cursor: str | None = None
    ) -> SchedulePage:
        return await self._transact(op_search_schedules, pattern, limit, cursor)

    async def due_schedules(self, *, now: int, limit: int) -> Sequence[ScheduleRecord]:
        return await self._transact(_due_schedules, now, limit)

    async def next_schedule_at(self) -> int | None:
        return await self._transact(_next_schedule_at)

    async def fire_schedule(
        self,
        id: str,
        *,
        expected: int | None,
        invocation: CreatePromise,
        next_run_at: int | None,
        last_run_at: int,
        pid: str | None,
        ttl: int | None,
        now: int,
    ) -> InvocationCreated | None:
        return await self._transact(
            op_fire_schedule, id, expected, invocation, next_run_at, last_run_at, pid, ttl, now
        )


def _next_timeout(t: Tables) -> int | None:
    return t.next_timeout()


def _due_deletions(t: Tables, now: int, limit: int) -> list[str]:
    return t.due_deletions(now, limit)


def _next_deletion(t: Tables) -> int | None:
    return t.next_deletion()


def _branch_promises(t: Tables, branch: str) -> list[PromiseRecord]:
    return t.branch_promises(branch)


def _get_task(t: Tables, id: str) -> TaskRecord | None:
    return t.get_task(id)


def _runnable_tasks(t: Tables, after: str | None, limit: int) -> list[TaskRecord]:
    return t.runnable_tasks(after, limit)


def _get_schedule(t: Tables, id: str) -> ScheduleRecord | None:
    return t.get_schedule(id)


def _delete_schedule(t: Tables, id: str) -> bool:
    return t.delete_schedule(id)


def _due_schedules(t: Tables, now: int, limit: int) -> list[ScheduleRecord]:
    return t.due_schedules(now, limit)


def _next_schedule_at(t: Tables) -> int | None:
    return t.next_schedule_at()
