"""The ``Store`` protocol: everything the engine knows, kept durably.

Records and operations follow the Distributed Async Await protocol: promises, tasks (who runs
an invocation), callbacks (a suspended task waiting for a promise) and schedules (cron
expressions that start invocations). Each operation is atomic. Every store applies the pure
transitions of ``_promise``, ``_task`` and ``_schedule``, so the stores differ only in where
the records live.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dawait.core._listing import InvocationQuery
from dawait.core._promise import (
    EMPTY,
    NO_TAGS,
    PromiseRecord,
    PromiseState,
    Settle,
    SettleOutcome,
    Value,
)
from dawait.core._schedule import ScheduleRecord
from dawait.core._task import TaskRecord
from dawait.runtime._metrics import EngineMetrics

__all__ = [
    "ACTING_FOR",
    "DEFAULT_MAX_PAYLOAD",
    "MAX_PAYLOAD_CEILING",
    "CreatePromise",
    "Expired",
    "InvocationCreated",
    "PromiseCreated",
    "PromisePage",
    "PromiseSettled",
    "ScheduleCreated",
    "SchedulePage",
    "Store",
]


DEFAULT_MAX_PAYLOAD = 2 * 1024 * 1024
"""Bytes of JSON one argument list, result or promise value may hold on the memory and
SQLite stores unless the app says otherwise (``Resonate(max_payload=)``)."""
MAX_PAYLOAD_CEILING = 256 * 1024 * 1024
"""The most the memory and SQLite stores may be configured to take per payload."""

ACTING_FOR: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dawait_acting_for", default=None
)
"""The invocation whose actor is making the current store calls (set by the actor's task,
inherited by the tasks it starts). A store shared by several nodes fences those calls: they
fail once another node owns the invocation. Stores of one process ignore it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatePromise:
    """A request to create a promise; ``state`` other than pending creates it settled."""

    id: str
    param: Value = EMPTY
    timeout_at: int | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: NO_TAGS)
    state: PromiseState = PromiseState.PENDING
    value: Value = EMPTY


@dataclass(frozen=True, slots=True, kw_only=True)
class PromiseCreated:
    promise: PromiseRecord
    created: bool
    """False when a promise with this id existed already (it is returned unchanged)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InvocationCreated:
    promise: PromiseRecord
    task: TaskRecord | None
    """The new task; None when the invocation existed already."""
    created: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class PromiseSettled:
    promise: PromiseRecord
    outcome: SettleOutcome
    resumed: Sequence[TaskRecord]
    """Suspended tasks that awaited this promise and are now pending again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CanceledTree:
    """What one ``cancel_tree`` transaction did."""

    root: PromiseSettled
    calls: Sequence[PromiseSettled] = ()
    """Pending calls below the root canceled with it."""
    elsewhere: Sequence[str] = ()
    """Pending invocations it called that live where this store cannot cancel them (a
    cluster's other partitions): cancel each with its own tree."""
    more: bool = False
    """Whether pending calls are left (a transaction cancels a bounded number): again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Expired:
    """What one ``delete_expired`` did."""

    roots: int
    """Roots deleted, each with its tree."""
    records: int
    """Promises deleted (each with its task, if it had one)."""
    more: bool
    """Whether it stopped at its limit: more may be due."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PromisePage:
    promises: Sequence[PromiseRecord]
    cursor: str | None
    """Pass back to get the next page; None on the last page."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleCreated:
    schedule: ScheduleRecord
    created: bool
    """False when a schedule with this id existed already (it is returned unchanged)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulePage:
    schedules: Sequence[ScheduleRecord]
    cursor: str | None
    """Pass back to get the next page; None on the last page."""


class Store(Protocol):
    """Durable promises, tasks, callbacks and schedules. Every method is one atomic operation.

    Besides the operations, what a store tells the engine and the node about itself:
    ``metrics`` (set by the engine: where a store counts its commits), its payload limits,
    ``pid`` and ``problem()``.
    """

    metrics: EngineMetrics | None
    """Where the store counts its commits and batches (the engine sets it; None: nowhere)."""
    max_payload: int
    """The payload limit unless the app sets one: bytes of JSON one argument list, result
    or promise value may hold (what is larger is refused before it reaches the store)."""
    payload_ceiling: int
    """The largest payload limit the store can be given (etcd: what fits in its requests)."""

    @property
    def pid(self) -> str | None:
        """The process id tasks must be acquired as (a cluster node's current incarnation,
        which fences its writes), or None when any id the engine picks will do."""
        ...

    def problem(self) -> str | None:
        """None while the store can take work, else what is wrong (the node is not ready)."""
        ...

    def refusal(self) -> str | None:
        """None while the store takes new invocations, else why not (``problem()``, or a
        disk below its free-space reserve: running invocations still write)."""
        ...

    async def open(self) -> None:
        """Make the store ready (create files and schema); called once before use."""
        ...

    async def close(self) -> None:
        """Flush and release everything; the store is not used afterwards."""
        ...

    async def create_promise(self, request: CreatePromise, *, now: int) -> PromiseCreated:
        """Create a promise, or return the existing one with that id (idempotent)."""
        ...

    async def create_invocation(
        self, request: CreatePromise, *, pid: str | None, ttl: int | None, now: int
    ) -> InvocationCreated:
        """Create a promise and its task together (acquired by ``pid`` when given)."""
        ...

    async def settle_promise(
        self, id: str, *, event: Settle, value: Value, now: int
    ) -> PromiseSettled:
        """Settle a promise, fulfil its task and resume the tasks awaiting it.

        Raises ``PromiseNotFoundError`` for an unknown id.
        """
        ...

    async def expire_promises(self, *, now: int, limit: int) -> Sequence[PromiseSettled]:
        """Time out (or, for timers, resolve) up to ``limit`` pending promises past due."""
        ...

    async def next_timeout(self) -> int | None:
        """The earliest ``timeout_at`` of any pending promise."""
        ...

    async def get_promise(self, id: str, *, now: int | None = None) -> PromiseRecord | None:
        """The promise with this id; with ``now``, as it is at that time (timed out if due)."""
        ...

    async def branch_promises(self, branch: str) -> Sequence[PromiseRecord]:
        """Every promise tagged with this branch: the calls made by one invocation."""
        ...

    async def search_promises(
        self,
        pattern: str,
        *,
        state: PromiseState | None = None,
        limit: int = 100,
        cursor: str | None = None,
        now: int | None = None,
    ) -> PromisePage:
        """Promises whose id matches the glob ``pattern`` (``*`` any run), ordered by id."""
        ...

    async def get_task(self, id: str) -> TaskRecord | None: ...

    async def acquire_task(
        self, id: str, *, pid: str, ttl: int | None, now: int, force: bool = False
    ) -> TaskRecord | None:
        """Take a task that is pending (or whose lease ended, or any with ``force``);
        None if it cannot be taken."""
        ...

    async def suspend_task(self, id: str, *, awaited: Sequence[str], now: int) -> bool:
        """Park an acquired task until one of ``awaited`` settles.

        False, changing nothing, when one of them has settled already: the caller goes on.
        """
        ...

    async def search_invocations(
        self,
        query: InvocationQuery,
        *,
        limit: int = 100,
        cursor: str | None = None,
        now: int,
    ) -> PromisePage:
        """Invocations (promises that have a task), newest first (by creation time, then
        id), that ``query`` keeps as of ``now``; the page's cursor (``core/_listing.py``)
        says where the next starts. ValueError for a cursor no listing gave."""
        ...

    async def runnable_tasks(
        self, *, after: str | None = None, limit: int = 1000
    ) -> Sequence[TaskRecord]:
        """Tasks that are pending or acquired, ordered by id, after the id ``after``."""
        ...

    async def create_schedule(self, record: ScheduleRecord) -> ScheduleCreated:
        """Store a schedule, or return the existing one with that id (idempotent)."""
        ...

    async def get_schedule(self, id: str) -> ScheduleRecord | None: ...

    async def cancel_tree(self, id: str, *, now: int) -> CanceledTree:
        """Cancel promise ``id`` (``Settle.CANCEL``) and every pending call below it that it
        made and awaits: steps, timers, its ``ctx.promise`` promises, its ``ctx.rpc``
        invocations with theirs; not ``detached`` invocations (nor below them). Again on a
        root already canceled finishes a cascade cut short. ``PromiseNotFoundError`` for
        an unknown id."""
        ...

    async def delete_tree(self, id: str) -> int:
        """Delete settled invocation or promise ``id`` with every call it made (not its
        ``rpc`` and ``detached`` invocations): how many records went.
        ``PromiseNotFoundError`` if there is none, ``NotDeletableError`` if it is pending
        or is a call of another invocation. Done in bounded transactions, the root last."""
        ...

    async def delete_expired(self, *, now: int, limit: int) -> Expired:
        """Delete, as ``delete_tree``, up to ``limit`` roots whose retention ended by ``now``
        (``PromiseRecord.delete_at``; on a cluster node, those of the partitions it owns). A
        root whose caller is still pending is kept a while longer (``KEEP_WAITING``)."""
        ...

    async def next_deletion(self) -> int | None:
        """The earliest retention deadline (it may be earlier than the real one, never
        later); None if nothing has one."""
        ...

    async def delete_schedule(self, id: str) -> bool:
        """Remove a schedule; False when there was none with this id."""
        ...

    async def search_schedules(
        self, pattern: str, *, limit: int = 100, cursor: str | None = None
    ) -> SchedulePage:
        """Schedules whose id matches the glob ``pattern`` (``*`` any run), ordered by id."""
        ...

    async def due_schedules(self, *, now: int, limit: int) -> Sequence[ScheduleRecord]:
        """Up to ``limit`` schedules whose ``next_run_at`` is at or before ``now``, earliest
        first."""
        ...

    async def next_schedule_at(self) -> int | None:
        """The earliest ``next_run_at`` of any schedule."""
        ...

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
        """Fire one slot of a schedule: create its invocation (as ``create_invocation``) and
        move the schedule to ``next_run_at``, together, if its ``next_run_at`` is still
        ``expected``.

        None, changing nothing, when the schedule is gone or has moved on already.
        """
        ...
