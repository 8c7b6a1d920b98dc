"""One batch of the etcd store: the operations run on the replica, and what they touched.

The store operations are written once over a synchronous ``Tables`` interface
(runtime/_store_ops.py). ``Recorder`` is that interface over the replica: it runs each
operation on the replica at once (later operations of the batch see its writes) and notes
in the open ``Batch`` every key read, with the revision the replica had for it, and every
key written. The batch's transaction compares the one and writes the other
(``_etcd_batches``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dawait.cluster._etcd_records import dumps, encode_promise, encode_schedule, encode_task
from dawait.core._listing import InvocationQuery, ListCursor
from dawait.core._param import call_target
from dawait.core._promise import PromiseRecord, PromiseState
from dawait.core._schedule import ScheduleRecord
from dawait.core._task import TaskRecord
from dawait.runtime._store_ops import Done

if TYPE_CHECKING:
    from dawait.cluster._etcd_store import EtcdStore
    from dawait.runtime._memory_store import MemoryTables

__all__ = ["Batch", "Recorder"]


@dataclass
class Batch:
    """What the operations of one batch touched, and their outcomes (not answered yet)."""

    compares: dict[str, int] = field(default_factory=dict)
    """Every key touched, with its revision as the replica had it when first touched."""
    writes: dict[str, bytes | None] = field(default_factory=dict)
    prefixes: list[str] = field(default_factory=list)
    """Deleted with every key under them (written blind: see ``op_delete_indexed``)."""
    done: list[Done] = field(default_factory=list)
    bytes: int = 0
    """Bytes of keys and values written (a key written twice counted twice)."""

    @property
    def size(self) -> int:
        return max(len(self.compares), len(self.writes) + len(self.prefixes))


class Recorder:
    """``Tables`` over the replica that notes, in the open batch, each key read or written.

    Writes change the replica at once (later operations of the batch see them); if the
    batch's transaction fails, the replica is reloaded.
    """

    def __init__(self, store: EtcdStore) -> None:
        self.store = store
        self.keys = store.keys

    @property
    def t(self) -> MemoryTables:
        """The replica (a reload replaces it)."""
        return self.store.mirror.tables

    def touch(self, key: str) -> None:
        """Note ``key`` as read: the batch's transaction compares its revision."""
        compares = self.store.batches.batch.compares
        if key not in compares:
            compares[key] = max(self.store.mirror.revisions.get(key, 0), 0)

    def _write(self, key: str, value: bytes | None) -> None:
        self.touch(key)
        batch = self.store.batches.batch
        batch.writes[key] = value
        batch.bytes += len(key) + (0 if value is None else len(value))

    def index_deletion(
        self, id: str, before: int | None, after: int | None, value: bytes | None = None
    ) -> None:
        """Keep the retention index (``r/`` keys) in line with promise ``id``'s
        ``delete_at`` going from ``before`` to ``after`` (the entry holds ``value``, by
        default the id). Written blind, not compared: the promise's own key orders every
        change of it."""
        if before == after:
            return
        writes = self.store.batches.batch.writes
        if before is not None:
            writes[self.keys.deletion(before, id)] = None
        if after is not None:
            writes[self.keys.deletion(after, id)] = id.encode() if value is None else value
            self.store.deadline_written(after)

    def deletion_entry(self, record: PromiseRecord, old: PromiseRecord | None) -> bytes | None:
        """What the retention index holds for ``record`` (from ``old``): None, its id."""
        return None

    # promises

    def get_promise(self, id: str) -> PromiseRecord | None:
        self.touch(self.keys.promise(id))
        return self.t.get_promise(id)

    def insert_promise(self, record: PromiseRecord) -> bool:
        self.touch(self.keys.promise(record.id))
        if record.id in self.t.promises:
            return False
        self.put_promise(record, new=True)
        return True

    def put_promise(self, record: PromiseRecord, *, new: bool) -> None:
        self._write(self.keys.promise(record.id), encode_promise(record))
        old = None if new else self.t.promises.get(record.id)
        before, after = None if old is None else old.delete_at, record.delete_at
        if before != after:
            entry = None if after is None else self.deletion_entry(record, old)
            self.index_deletion(record.id, before, after, entry)
        self.t.put_promise(record, new=new)

    def branch_promises(self, branch: str) -> list[PromiseRecord]:
        return self.t.branch_promises(branch)

    def search_promises(
        self, pattern: str, state: PromiseState | None, limit: int, after: str | None
    ) -> list[PromiseRecord]:
        return self.t.search_promises(pattern, state, limit, after)

    def due_promises(self, now: int, limit: int) -> list[PromiseRecord]:
        # Not consumed from the replica's heap: a failed batch must find them again.
        due = sorted(
            (
                r
                for r in self.t.promises.values()
                if r.state is PromiseState.PENDING
                and r.timeout_at is not None
                and r.timeout_at <= now
            ),
            key=lambda r: (r.timeout_at, r.id),
        )[:limit]
        for record in due:
            self.touch(self.keys.promise(record.id))
        return due

    def next_timeout(self) -> int | None:
        return self.t.next_timeout()

    def due_deletions(self, now: int, limit: int) -> list[str]:
        return self.t.due_deletions(now, limit)

    def next_deletion(self) -> int | None:
        return self.t.next_deletion()

    # tasks

    def get_task(self, id: str) -> TaskRecord | None:
        self.touch(self.keys.task(id))
        return self.t.get_task(id)

    def put_task(self, task: TaskRecord, *, new: bool) -> None:
        self._write(self.keys.task(task.id), encode_task(task))
        self.t.put_task(task, new=new)
        if new and self.store.lists_from_etcd:
            self.index_creation(task.id, present=True)

    def index_creation(self, id: str, *, present: bool) -> None:
        """Keep the creation index (``o/`` keys: listings read it, newest first) in line
        with invocation ``id``'s task being created or deleted. Written blind, as the
        retention index is."""
        record = self.t.promises.get(id)
        if record is not None:
            key = self.keys.creation(record.created_at, id)
            func = call_target(record.param.data)[0]
            self.store.batches.batch.writes[key] = dumps({"func": func}) if present else None

    def runnable_tasks(self, after: str | None, limit: int) -> list[TaskRecord]:
        return self.t.runnable_tasks(after, limit)

    def invocation_promises(
        self, query: InvocationQuery, after: ListCursor | None, limit: int
    ) -> list[PromiseRecord]:
        return self.t.invocation_promises(query, after, limit)

    # callbacks

    def add_callback(self, promise_id: str, task_id: str) -> None:
        self._write(self.keys.callback(promise_id, task_id), dumps([promise_id, task_id]))
        self.t.add_callback(promise_id, task_id)
        # The promise is written again, unchanged, for its revision: a settle on a node
        # whose replica has not seen this callback compares the promise's older revision
        # and fails (then reloads and resumes the task), instead of committing without it.
        record = self.t.get_promise(promise_id)
        if record is not None:
            self._write(self.keys.promise(promise_id), encode_promise(record))

    def pop_callbacks(self, promise_id: str) -> list[str]:
        task_ids = self.t.pop_callbacks(promise_id)
        for task_id in task_ids:
            self._write(self.keys.callback(promise_id, task_id), None)
        return task_ids

    def drop_callbacks(self, task_id: str) -> None:
        for promise_id in list(self.t.awaiting.get(task_id, ())):
            self._write(self.keys.callback(promise_id, task_id), None)
        self.t.drop_callbacks(task_id)

    def delete_promise(self, id: str) -> None:
        key = self.keys.promise(id)
        self.touch(key)
        if id not in self.t.promises:
            return
        Recorder.pop_callbacks(self, id)  # deleted: no partition's outbox for them
        self._write(key, None)
        self.index_deletion(id, self.t.promises[id].delete_at, None)
        self.t.delete_promise(id)

    def delete_all(self, ids: Sequence[str]) -> None:
        for id in ids:
            self.delete_task(id)
            self.delete_promise(id)

    def calls_below(self, id: str) -> list[tuple[str, str, str | None]]:
        return self.t.calls_below(id)

    def delete_task(self, id: str) -> None:
        key = self.keys.task(id)
        self.touch(key)
        if id not in self.t.tasks:
            return
        Recorder.drop_callbacks(self, id)
        self._write(key, None)
        if self.store.lists_from_etcd:
            self.index_creation(id, present=False)
            self.store.batches.batch.prefixes.append(self.keys.links(id))
        self.t.delete_task(id)

    # schedules

    def get_schedule(self, id: str) -> ScheduleRecord | None:
        self.touch(self.keys.schedule(id))
        return self.t.get_schedule(id)

    def put_schedule(self, record: ScheduleRecord, *, new: bool) -> None:
        self._write(self.keys.schedule(record.id), encode_schedule(record))
        self.t.put_schedule(record, new=new)

    def delete_schedule(self, id: str) -> bool:
        key = self.keys.schedule(id)
        self.touch(key)
        if id not in self.t.schedules:
            return False
        self._write(key, None)
        return self.t.delete_schedule(id)

    def search_schedules(self, pattern: str, limit: int, after: str | None) -> list[ScheduleRecord]:
        return self.t.search_schedules(pattern, limit, after)

    def due_schedules(self, now: int, limit: int) -> list[ScheduleRecord]:
        due = self.t.due_schedules(now, limit)
        for record in due:
            self.touch(self.keys.schedule(record.id))
        return due

    def next_schedule_at(self) -> int | None:
        return self.t.next_schedule_at()
