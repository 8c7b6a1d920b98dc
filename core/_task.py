"""Tasks: who executes an invocation, and its state machine.

An invocation's task says whether some process should be running it. ``version`` grows on
every acquire and every resume, so a write made under an older version can be told apart
(fencing). Pure code: ``now`` is an argument.

::

    pending ──acquire──▶ acquired ──suspend──▶ suspended ──awaited settles──▶ pending
       ▲                    │ release / lease ends                               │
       └────────────────────┘                                                    │
    any ──its promise settles──▶ fulfilled  ◀────────────────────────────────────┘
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "TaskRecord",
    "TaskState",
    "acquire_task",
    "fulfill_task",
    "new_task",
    "resume_task",
    "suspend_task",
]


class TaskState(enum.StrEnum):
    PENDING = "pending"
    ACQUIRED = "acquired"
    SUSPENDED = "suspended"
    FULFILLED = "fulfilled"


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRecord:
    id: str
    """The id of the invocation's promise."""
    state: TaskState
    version: int = 0
    pid: str | None = None
    expires_at: int | None = None


def task_row(task: TaskRecord) -> tuple[str, str, int, str | None, int | None]:
    """The task as a row of plain values (a store's columns, or a JSON array)."""
    return (task.id, task.state.value, task.version, task.pid, task.expires_at)


def task_from_row(row: Sequence[Any]) -> TaskRecord:
    id, state, version, pid, expires_at = row
    return TaskRecord(
        id=id, state=TaskState(state), version=version, pid=pid, expires_at=expires_at
    )


def new_task(id: str, *, pid: str | None, now: int, ttl: int | None) -> TaskRecord:
    """A task for a new invocation: acquired at once by ``pid`` when given, else pending."""
    if pid is None:
        return TaskRecord(id=id, state=TaskState.PENDING)
    return TaskRecord(
        id=id,
        state=TaskState.ACQUIRED,
        pid=pid,
        expires_at=None if ttl is None else now + ttl,
    )


def acquire_task(
    task: TaskRecord, *, pid: str, now: int, ttl: int | None, force: bool = False
) -> TaskRecord | None:
    """Take a pending task, or one whose holder's lease has ended; None if it cannot be taken.

    ``force`` also takes a task another holder acquired: for a caller that knows the holder
    is gone (the embedded engine, which holds its store's only lock).
    """
    lapsed = task.state is TaskState.ACQUIRED and (
        force or (task.expires_at is not None and task.expires_at <= now)
    )
    if task.state is not TaskState.PENDING and not lapsed:
        return None
    return replace(
        task,
        state=TaskState.ACQUIRED,
        version=task.version + 1,
        pid=pid,
        expires_at=None if ttl is None else now + ttl,
    )


def suspend_task(task: TaskRecord) -> TaskRecord | None:
    """Park an acquired task until a promise it awaits settles; None if it is not acquired."""
    if task.state is not TaskState.ACQUIRED:
        return None
    return replace(task, state=TaskState.SUSPENDED, pid=None, expires_at=None)


def resume_task(task: TaskRecord) -> TaskRecord | None:
    """Make a suspended task runnable again; None if it was not suspended."""
    if task.state is not TaskState.SUSPENDED:
        return None
    return replace(task, state=TaskState.PENDING, version=task.version + 1)


def fulfill_task(task: TaskRecord) -> TaskRecord | None:
    """Finish the task because its promise settled; None if it already was."""
    if task.state is TaskState.FULFILLED:
        return None
    return replace(task, state=TaskState.FULFILLED, pid=None, expires_at=None)
