"""``MemoryStore``: the store in this process's memory, for tests and throwaway apps."""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Callable, Sequence
from typing import TypeVar

from dawait.core._ids import glob_match
from dawait.core._listing import InvocationQuery, ListCursor, listed_after, listing_order
from dawait.core._param import call_target
from dawait.core._promise import PromiseRecord, PromiseState
from dawait.core._schedule import ScheduleRecord
from dawait.core._task import TaskRecord, TaskState
from dawait.runtime._store_ops import TablesStore

__all__ = ["MemoryStore"]

R = TypeVar("R")


class MemoryTables:
    """Records in dicts, with the indexes the operations need. ``deletions``: whether to
    index retention deadlines here (not where the records are a cache of another store's,
    which keeps that index itself)."""

    def __init__(self, *, deletions: bool = True) -> None:
        self.promises: dict[str, PromiseRecord] = {}
        self.branches: dict[str, list[str]] = {}
        self.timeouts: list[tuple[int, str]] = []
        self.index_deletions = deletions
        self.deletions: list[tuple[int, str]] = []
        """A heap of (deadline, id): retention deadlines (``PromiseRecord.delete_at``); an
        entry whose record is gone or has another deadline goes when it comes up."""
        self.tasks: dict[str, TaskRecord] = {}
        self.callbacks: dict[str, list[str]] = {}
        self.awaiting: dict[str, set[str]] = {}
        """Task id -> the promises it has callbacks on (to drop them when it resumes)."""
        self.schedules: dict[str, ScheduleRecord] = {}
        """Few enough to scan: schedules are configuration, not per-invocation records."""

    def get_promise(self, id: str) -> PromiseRecord | None:
        return self.promises.get(id)

    def insert_promise(self, record: PromiseRecord) -> bool:
        if record.id in self.promises:
            return False
        self.put_promise(record, new=True)
        return True

    def put_promise(self, record: PromiseRecord, *, new: bool) -> None:
        self.promises[record.id] = record
        if self.index_deletions and (at := record.delete_at) is not None:
            heapq.heappush(self.deletions, (at, record.id))
        if not new:
            return
        if record.branch is not None and record.branch != record.id:
            self.branches.setdefault(record.branch, []).append(record.id)
        if record.state is PromiseState.PENDING and record.timeout_at is not None:
            heapq.heappush(self.timeouts, (record.timeout_at, record.id))

    def branch_promises(self, branch: str) -> list[PromiseRecord]:
        return [self.promises[id] for id in self.branches.get(branch, ())]

    def search_promises(
        self, pattern: str, state: PromiseState | None, limit: int, after: str | None
    ) -> list[PromiseRecord]:
        found = sorted(
            (
                record
                for id, record in self.promises.items()
                if (after is None or id > after)
                and (state is None or record.state is state)
                and glob_match(pattern, id)
            ),
            key=lambda record: record.id,
        )
        return found[:limit]

    def due_promises(self, now: int, limit: int) -> list[PromiseRecord]:
        due: list[PromiseRecord] = []
        while self.timeouts and len(due) < limit:
            timeout_at, id = self.timeouts[0]
            if timeout_at > now:
                break
            heapq.heappop(self.timeouts)
            record = self.promises.get(id)  # None: dropped from memory (settled)
            if record is not None and record.state is PromiseState.PENDING:
                due.append(record)
        return due

    def next_timeout(self) -> int | None:
        while self.timeouts:
            timeout_at, id = self.timeouts[0]
            record = self.promises.get(id)
            if record is not None and record.state is PromiseState.PENDING:
                return timeout_at
            heapq.heappop(self.timeouts)
        return None

    def due_deletions(self, now: int, limit: int) -> list[str]:
        # Left in the heap (its record's deletion may fail): it goes with its record.
        due: list[tuple[int, str]] = []
        while self.deletions and len(due) < limit and self.deletions[0][0] <= now:
            at, id = heapq.heappop(self.deletions)
            if self._deletes_at(at, id) and (not due or due[-1] != (at, id)):
                due.append((at, id))
        for entry in due:
            heapq.heappush(self.deletions, entry)
        return [id for _at, id in due]

    def next_deletion(self) -> int | None:
        while self.deletions:
            at, id = self.deletions[0]
            if self._deletes_at(at, id):
                return at
            heapq.heappop(self.deletions)
        return None

    def _deletes_at(self, at: int, id: str) -> bool:
        record = self.promises.get(id)
        return record is not None and record.delete_at == at

    def get_task(self, id: str) -> TaskRecord | None:
        return self.tasks.get(id)

    def put_task(self, task: TaskRecord, *, new: bool) -> None:
        self.tasks[task.id] = task

    def add_callback(self, promise_id: str, task_id: str) -> None:
        awaiters = self.callbacks.setdefault(promise_id, [])
        if task_id not in awaiters:
            awaiters.append(task_id)
            self.awaiting.setdefault(task_id, set()).add(promise_id)

    def pop_callbacks(self, promise_id: str) -> list[str]:
        task_ids = self.callbacks.pop(promise_id, [])
        for task_id in task_ids:
            awaited = self.awaiting.get(task_id)
            if awaited is not None:
                awaited.discard(promise_id)
                if not awaited:
                    del self.awaiting[task_id]
        return task_ids

    def drop_callbacks(self, task_id: str) -> None:
        for promise_id in self.awaiting.pop(task_id, ()):
            awaiters = self.callbacks.get(promise_id)
            if awaiters is not None and task_id in awaiters:
                awaiters.remove(task_id)
                if not awaiters:
                    del self.callbacks[promise_id]

    def delete_promise(self, id: str) -> None:
        record = self.promises.pop(id, None)
        if record is None:
            return
        self.pop_callbacks(id)
        branch = record.branch
        if branch is not None and branch != id and (siblings := self.branches.get(branch)):
            with contextlib.suppress(ValueError):
                siblings.remove(id)
            if not siblings:
                del self.branches[branch]
        # Its entry in the timeouts heap goes when it comes up (the record is gone).

    def delete_task(self, id: str) -> None:
        if self.tasks.pop(id, None) is not None:
            self.drop_callbacks(id)

    def delete_all(self, ids: Sequence[str]) -> None:
        for id in ids:
            self.delete_task(id)
            self.delete_promise(id)

    def calls_below(self, id: str) -> list[tuple[str, str, str | None]]:
        found: list[tuple[str, str, str | None]] = []
        callers = [id]
        while callers:
            caller = callers.pop()
            for call in self.branches.get(caller, ()):
                found.append((call, caller, self.promises[call].param.data))
                callers.append(call)
        return found

    def invocation_promises(
        self, query: InvocationQuery, after: ListCursor | None, limit: int
    ) -> list[PromiseRecord]:
        # A scan of every invocation: the memory store holds what one process runs.
        states = query.stored_states()
        return heapq.nsmallest(
            limit,
            (
                record
                for record in (self.promises[id] for id in self.tasks)
                if listed_after(record, after)
                and (states is None or record.state in states)
                and query.created_within(record.created_at)
                and query.names(_function_of(record))
            ),
            key=listing_order,
        )

    def runnable_tasks(self, after: str | None, limit: int) -> list[TaskRecord]:
        runnable = sorted(
            (
                task
                for id, task in self.tasks.items()
                if task.state in (TaskState.PENDING, TaskState.ACQUIRED)
                and (after is None or id > after)
            ),
            key=lambda task: task.id,
        )
        return runnable[:limit]

    def get_schedule(self, id: str) -> ScheduleRecord | None:
        return self.schedules.get(id)

    def put_schedule(self, record: ScheduleRecord, *, new: bool) -> None:
        self.schedules[record.id] = record

    def delete_schedule(self, id: str) -> bool:
        return self.schedules.pop(id, None) is not None

    def search_schedules(self, pattern: str, limit: int, after: str | None) -> list[ScheduleRecord]:
        found = sorted(
            (
                record
                for id, record in self.schedules.items()
                if (after is None or id > after) and glob_match(pattern, id)
            ),
            key=lambda record: record.id,
        )
        return found[:limit]

    def due_schedules(self, now: int, limit: int) -> list[ScheduleRecord]:
        due = [
            record
            for record in self.schedules.values()
            if record.next_run_at is not None and record.next_run_at <= now
        ]
        due.sort(key=lambda record: (record.next_run_at, record.id))
        return due[:limit]

    def next_schedule_at(self) -> int | None:
        return min(
            (r.next_run_at for r in self.schedules.values() if r.next_run_at is not None),
            default=None,
        )


class MemoryStore(TablesStore):
    """Everything in RAM: lost when the process ends. Operations are atomic because they
    run to completion on the event loop without awaiting."""

    def __init__(self) -> None:
        self.tables = MemoryTables()

    def __repr__(self) -> str:
        return "MemoryStore()"

    async def _transact(self, op: Callable[..., R], *args: object) -> R:
        return op(self.tables, *args)


def _function_of(record: PromiseRecord) -> str | None:
    return call_target(record.param.data)[0]
