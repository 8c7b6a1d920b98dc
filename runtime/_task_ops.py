"""The task operations of Resonate's protocol, for workers in other processes (the official
SDKs), written over ``Tables`` like the store's own (``_store_ops.py``) and run atomically.

Each is fenced by the task's ``version`` as the worker last saw it: a write from a worker
whose task was taken by another (its lease ended, version grew) changes nothing and answers
a conflict. dawait's version grows on every acquire (``core/_task.py``); the version a push
names is the task's as stored, and the acquire that takes it answers the next one.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from dawait.core._promise import PromiseRecord, Settle, Value, expire_promise
from dawait.core._task import TaskRecord, TaskState, acquire_task, suspend_task
from dawait.runtime._store import CreatePromise, PromiseSettled
from dawait.runtime._store_ops import (
    Tables,
    op_create_invocation,
    op_create_promise,
    op_settle_promise,
)

if TYPE_CHECKING:
    from dawait.runtime._engine import Engine

__all__ = [
    "Acquired",
    "Fenced",
    "Suspended",
    "Workers",
    "op_heartbeat",
    "op_register_callback",
    "op_task_acquire",
    "op_task_create_again",
    "op_task_fence_create",
    "op_task_fence_settle",
    "op_task_held",
    "op_task_release",
    "op_task_suspend",
    "run_or_dispatch",
]


class Workers(Protocol):
    """Workers in other processes that run some invocations (the official SDKs' workers,
    connected to the node's poll endpoint): the engine hands them the tasks they run."""

    def takes(self, tags: Mapping[str, str], param: str | None) -> bool:
        """Whether the invocation with these tags and param runs on such a worker, not in
        this engine."""
        ...

    def dispatch(self, record: PromiseRecord, task: TaskRecord) -> None:
        """Tell a worker to run ``task`` (pending, or acquired with a lease that ended)."""
        ...

    def settled(self, record: PromiseRecord) -> None:
        """A promise settled: tell the addresses listening for it."""
        ...


def run_or_dispatch(engine: Engine, record: PromiseRecord, task: TaskRecord | None) -> None:
    """A pending task made past ``start_invocation`` (by Resonate's protocol, or an SDK's
    schedule firing): pushed to a worker of its target, or run by ``engine`` (a function
    registered here); left to the owner of its partition when that is another node."""
    if task is None or not engine.ownership.runs_here(record.id, None, None):
        return
    workers = engine.workers
    if workers is not None and workers.takes(record.tags, record.param.data):
        workers.dispatch(record, task)
    else:
        engine.resume(record.id)


class Fenced(enum.Enum):
    """Why a fenced write changed nothing."""

    NO_TASK = "no such task"
    NOT_HELD = "the task is not acquired at that version"


@dataclasses.dataclass(frozen=True, slots=True)
class Acquired:
    task: TaskRecord
    promise: PromiseRecord


@dataclasses.dataclass(frozen=True, slots=True)
class Suspended:
    suspended: bool
    """False: an awaited promise has settled already (a redirect: run again now)."""
    missing: str | None = None
    """An awaited promise that does not exist (nothing to wait for: refused)."""


def op_task_held(t: Tables, id: str, version: int) -> TaskRecord | Fenced:
    """Task ``id`` if it is held at ``version`` (a fence checked on its own)."""
    task = t.get_task(id)
    if task is None:
        return Fenced.NO_TASK
    if task.state is not TaskState.ACQUIRED or task.version != version:
        return Fenced.NOT_HELD
    return task


def op_task_acquire(
    t: Tables, id: str, version: int, pid: str, ttl: int, now: int
) -> Acquired | Fenced:
    """Take task ``id`` at ``version`` (pending, or acquired with its lease ended)."""
    task = t.get_task(id)
    if task is None:
        return Fenced.NO_TASK
    if task.version != version:
        return Fenced.NOT_HELD
    acquired = acquire_task(task, pid=pid, now=now, ttl=ttl)
    promise = t.get_promise(id)
    if acquired is None or promise is None:
        return Fenced.NOT_HELD
    t.put_task(acquired, new=False)
    return Acquired(acquired, expire_promise(promise, now).record)


def op_task_create_again(t: Tables, id: str, pid: str, ttl: int, now: int) -> Acquired | None:
    """``task.create`` of an id that exists: its task taken by ``pid`` if pending, as it is
    if fulfilled (the result is there); None otherwise (held or parked: listen to it)."""
    task, promise = t.get_task(id), t.get_promise(id)
    if task is None or promise is None:
        return None
    if task.state is TaskState.FULFILLED:
        return Acquired(task, promise)
    if task.state is not TaskState.PENDING:
        return None
    acquired = acquire_task(task, pid=pid, now=now, ttl=ttl)
    assert acquired is not None
    t.put_task(acquired, new=False)
    return Acquired(acquired, expire_promise(promise, now).record)


def op_task_fence_create(
    t: Tables, id: str, version: int, request: CreatePromise, with_task: bool, now: int
) -> tuple[PromiseRecord, TaskRecord | None] | Fenced:
    """Create a promise for the holder of task ``id``; ``with_task``, with a task of its own
    (pending: the caller dispatches it). The existing record when the id is taken."""
    held = op_task_held(t, id, version)
    if isinstance(held, Fenced):
        return held
    if not with_task:
        return op_create_promise(t, request, now).promise, None
    created = op_create_invocation(t, request, None, None, now)
    return created.promise, created.task


def op_task_fence_settle(
    t: Tables, id: str, version: int, promise_id: str, event: Settle, value: Value, now: int
) -> PromiseSettled | Fenced:
    """Settle a promise for the holder of task ``id`` (its own, to fulfil it, or a step's)."""
    held = op_task_held(t, id, version)
    if isinstance(held, Fenced):
        return held
    return op_settle_promise(t, promise_id, event, value, now)


def op_task_suspend(
    t: Tables, id: str, version: int, awaited: Sequence[str], now: int
) -> Suspended | Fenced:
    """Park task ``id`` until one of ``awaited`` settles; not if one already has."""
    held = op_task_held(t, id, version)
    if isinstance(held, Fenced):
        return held
    records = [t.get_promise(promise_id) for promise_id in awaited]
    missing = [p for p, record in zip(awaited, records, strict=True) if record is None]
    if missing:
        return Suspended(False, missing=missing[0])
    if any(r is not None and expire_promise(r, now).record.state.settled for r in records):
        return Suspended(False)
    suspended = suspend_task(held)
    assert suspended is not None
    for promise_id in awaited:
        t.add_callback(promise_id, id)
    t.put_task(suspended, new=False)
    return Suspended(True)


def op_task_release(t: Tables, id: str, version: int) -> TaskRecord | Fenced:
    """Give task ``id`` back (pending, to be dispatched again)."""
    held = op_task_held(t, id, version)
    if isinstance(held, Fenced):
        return held
    released = dataclasses.replace(held, state=TaskState.PENDING, pid=None, expires_at=None)
    t.put_task(released, new=False)
    return released


def op_heartbeat(
    t: Tables, pid: str, tasks: Sequence[tuple[str, int, int]], now: int
) -> list[TaskRecord]:
    """Extend the leases ``pid`` holds on ``tasks`` (id, version, ttl) by their ttl; those it
    no longer holds (fulfilled, or taken by another) are left as they are."""
    extended = []
    for id, version, ttl in tasks:
        held = op_task_held(t, id, version)
        if isinstance(held, Fenced) or held.pid != pid:
            continue
        renewed = dataclasses.replace(held, expires_at=now + ttl)
        t.put_task(renewed, new=False)
        extended.append(renewed)
    return extended


def op_register_callback(t: Tables, awaited: str, awaiter: str, now: int) -> PromiseRecord | None:
    """Resume task ``awaiter`` (once suspended) when ``awaited`` settles; the awaited promise
    as it is now (None if there is none; settled: nothing registered)."""
    record = t.get_promise(awaited)
    if record is None:
        return None
    record = expire_promise(record, now).record
    if not record.state.settled and t.get_task(awaiter) is not None:
        t.add_callback(awaited, awaiter)
    return record
