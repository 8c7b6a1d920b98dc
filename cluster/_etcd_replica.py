"""The etcd store's replica: the namespace in memory, loaded from a snapshot and kept
current by a watch.

The store operations run on the replica (``MemoryTables`` for the records, ``ClusterView``
for the cluster's own), and each key's revision as the replica has it is what a batch's
transaction compares. Watch events that arrive while a batch is open are held, and applied
once it is done (``apply_held``): the batch compares the revisions it read. A node hears
the changes other nodes made through its ``Listener``. When the watch breaks (etcd
unreachable, history compacted) the replica is loaded afresh once no batch is in flight.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Protocol

from dawait.cluster._etcd import EtcdError, KeyValue, cancel_task
from dawait.cluster._etcd_records import (
    ClusterView,
    Keys,
    Member,
    decode_promise,
    decode_schedule,
    decode_task,
)
from dawait.core._promise import PromiseRecord
from dawait.core._task import TaskRecord
from dawait.runtime._memory_store import MemoryTables

if TYPE_CHECKING:
    from dawait.cluster._etcd_store import EtcdStore

__all__ = ["Listener", "Replica", "apply_change"]

log = logging.getLogger("dawait.etcd")


class Listener(Protocol):
    """What a cluster node hears of changes other nodes made (through the watch)."""

    def promise_changed(self, old: PromiseRecord | None, new: PromiseRecord) -> None: ...
    def task_changed(self, task: TaskRecord) -> None: ...
    def schedules_changed(self) -> None: ...
    def members_changed(self) -> None: ...
    def reloaded(self) -> None: ...
    def lease_lost(self) -> None: ...


def apply_change(
    tables: MemoryTables,
    view: ClusterView,
    keys: Keys,
    change: KeyValue,
    listener: Listener | None = None,
) -> None:
    """Bring the replica in line with one stored key (from a snapshot or the watch), and
    tell ``listener`` (the watch's changes only)."""
    kind, _, _rest = change.key[len(keys.prefix) :].partition("/")
    value = change.value
    if kind in ("p", "t") and value is None:  # deleted (app.delete, retention)
        if kind == "p":
            tables.delete_promise(_rest)
        else:
            tables.delete_task(_rest)
    elif kind == "p" and value is not None:
        record = decode_promise(value)
        old = tables.promises.get(record.id)
        tables.put_promise(record, new=old is None)
        if listener is not None:
            listener.promise_changed(old, record)
    elif kind == "t" and value is not None:
        task = decode_task(value)
        tables.put_task(task, new=False)
        if listener is not None:
            listener.task_changed(task)
    elif kind == "c":
        length, _, ids = _rest.partition("/")
        promise_id, task_id = ids[: int(length)], ids[int(length) :]
        if value is not None:
            tables.add_callback(promise_id, task_id)
        else:
            _remove_callback(tables, promise_id, task_id)
    elif kind == "s":
        schedule_id = _rest
        if value is None:
            tables.delete_schedule(schedule_id)
        else:
            tables.put_schedule(decode_schedule(value), new=False)
        if listener is not None:
            listener.schedules_changed()
    elif kind == "n":
        if value is None:
            view.members.pop(_rest, None)
        else:
            view.members[_rest] = Member.decode(value)
        if listener is not None:
            listener.members_changed()
    elif kind == "q":
        if value is None:
            view.polls.pop(_rest, None)
        else:
            view.polls[_rest] = frozenset(json.loads(value))
    elif kind == "leader":
        view.leader = None if value is None else json.loads(value)["node_id"]
        if listener is not None:
            listener.members_changed()


def _remove_callback(tables: MemoryTables, promise_id: str, task_id: str) -> None:
    awaiters = tables.callbacks.get(promise_id)
    if awaiters is not None and task_id in awaiters:
        awaiters.remove(task_id)
        if not awaiters:
            del tables.callbacks[promise_id]
    awaited = tables.awaiting.get(task_id)
    if awaited is not None:
        awaited.discard(promise_id)
        if not awaited:
            del tables.awaiting[task_id]


class Replica:
    """The namespace of ``store`` as this node last read it, kept current by a watch."""

    def __init__(self, store: EtcdStore, *, watch: bool = True) -> None:
        self.store = store
        self.watching = watch
        """Keep the replica current by a watch (not where this node is the only writer)."""
        self.tables = self.new_tables()
        self.view = ClusterView()
        self.revisions: dict[str, int] = {}
        """Each key's mod revision as the replica has it; a key deleted since has its
        deletion's revision, negated (an older event for it must not bring it back)."""
        self.dirty = False
        """A given-up batch's writes are in the replica: operations are refused until a
        reload replaces it."""
        self.held: list[KeyValue] = []
        """Watch events that arrived while a batch was open: applied once it is done."""
        self.watcher: asyncio.Task[None] | None = None

    def new_tables(self) -> MemoryTables:
        """Empty tables to load the records into."""
        return MemoryTables()

    async def reload(self) -> dict[str, bytes | None]:
        """Load the namespace afresh and watch it from there; what each key holds."""
        store = self.store
        await self.stop_watch()
        revision, items = await store.etcd.snapshot(store.keys.prefix)
        tables = self.new_tables()
        view = ClusterView()
        revisions: dict[str, int] = {}
        for item in items:
            apply_change(tables, view, store.keys, item)
            revisions[item.key] = item.mod_revision
        self.tables = tables
        self.view = view
        self.revisions = revisions
        self.dirty = False
        self.held.clear()
        if store.listener is not None:
            store.listener.reloaded()
        if self.watching:
            self.watcher = asyncio.get_running_loop().create_task(
                self._watch(revision + 1), name=f"dawait-etcd-watch:{store.namespace}"
            )
        return {item.key: item.value for item in items}

    async def stop_watch(self) -> None:
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            await cancel_task(watcher)

    async def _watch(self, start: int) -> None:
        store = self.store
        try:
            async for change in store.etcd.watch(store.keys.prefix, start):
                if store.batches.holding:
                    self.held.append(change)
                else:
                    self.apply(change)
        except Exception as exc:
            if isinstance(exc, EtcdError):
                log.warning("%r: %s; reloading", store, exc)
            else:
                log.exception("%r: the watch failed; reloading", store)
            store.batches.reload_when_idle()

    def apply(self, change: KeyValue) -> None:
        """Bring the replica in line with one change from the watch."""
        if change.mod_revision <= abs(self.revisions.get(change.key, 0)):
            return  # our own write, applied when its transaction succeeded
        apply_change(self.tables, self.view, self.store.keys, change, self.store.listener)
        deleted = change.value is None
        self.revisions[change.key] = -change.mod_revision if deleted else change.mod_revision

    def apply_held(self) -> None:
        """Apply the watch events held while a batch was open (it is done)."""
        held, self.held = self.held, []
        for change in held:
            try:
                self.apply(change)
            except Exception:  # one bad record must not stall every waiting operation
                log.exception("%r: cannot apply the change of %s", self.store, change.key)
