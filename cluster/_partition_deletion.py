"""Deletion on a partition: a tree read back from etcd and deleted by the owner, and the
retention index, ``r/{deadline}/{id}`` keys written by the ``Recorder`` in the transaction
that settles (or deletes) the root they name, so that they sort by deadline and the owner
finds what is due with one range read.

Only the earliest deadline is kept in memory (``next``; it may be earlier than the real
one, never later), not the index: a partition's memory holds what is in flight, not
history. The owner's sweep reads the index only when ``next`` has come.

A root settles with its whole tree in memory (it was in flight), so its entry can say how
its tree goes (``Deletions.entry``): when no call below it is a root of its own, the entry
holds how many calls it has and its caller, and the sweep deletes the tree without reading
it back: its promise, its task, every key under its calls' prefix and the entry, blind, in
one transaction (``op_delete_indexed``), while operations on the tree wait. Otherwise (and
for entries written before) the entry holds the id, and the tree is read back and deleted
call by call, compared (``op_delete_tree``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from dawait.cluster._etcd import Range
from dawait.cluster._etcd_records import dumps
from dawait.core._errors import NotDeletableError
from dawait.core._ids import root_of
from dawait.core._param import is_root
from dawait.core._promise import PromiseRecord, PromiseState
from dawait.runtime._deletion import delete_in_batches, op_delete_tree, op_keep

if TYPE_CHECKING:
    from dawait.cluster._etcd_recorder import Recorder
    from dawait.cluster._partition_store import PartitionStore

__all__ = ["Deletions", "op_delete_indexed", "op_unindex"]

log = logging.getLogger("dawait.cluster")

_PAGE = 500
"""Records read at once of a large tree."""
_AT = 15
"""Digits of a deadline in an index key (``Keys.deletion``)."""


def _earliest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def op_unindex(t: Recorder, id: str, at: int) -> None:
    """Drop the index entry of ``id`` at ``at`` (its record is gone)."""
    t.index_deletion(id, at, None)


def calls_prefix(id: str) -> str:
    """What the ids of the calls below ``id`` start with (``a:1``, ``a:1.2`` below ``a``;
    ``a:3.1`` below ``a:3``)."""
    return f"{id}{'.' if ':' in id else ':'}"


def op_delete_indexed(t: Recorder, id: str, at: int, created: int | None) -> None:
    """Delete the tree of settled root ``id``, not in memory, as its index entry at ``at``
    says it may go: its promise and task (and its creation index entry, if an invocation
    created at ``created``), every key under its calls' prefix, and the entry. Blind, not
    compared: only the owner writes a partition (its lock is compared), and no operation on
    the tree runs meanwhile (``Deletions.delete_tree``)."""
    keys, batch = t.keys, t.store.batches.batch
    for key in (keys.promise(id), keys.task(id), keys.deletion(at, id)):
        batch.writes[key] = None
    if created is not None:
        batch.writes[keys.creation(created, id)] = None
        batch.prefixes.append(keys.links(id))
    batch.prefixes.append(keys.promise(calls_prefix(id)))


class Deletions:
    """The deletions of partition store ``store``: its trees, and its retention index with
    its earliest deadline."""

    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self.next: int | None = None
        """The earliest deadline in the index, or earlier; None: the index is empty."""
        self._lowered: int | None = None
        """The earliest deadline written since the last read of the index began."""
        self._read: dict[str, tuple[int, dict[str, object] | None]] = {}
        """Id -> its deadline and how its tree goes (None: read back), as the last read of
        the index found them."""
        self._reading = False
        self._changed: set[str] = set()
        """Ids created since the last read of the index began: their entries are stale."""
        self.deleting: dict[str, asyncio.Event] = {}
        """Root id -> set once its tree, deleted without being read back, is gone: the
        operations on it wait until then (``delete_tree``)."""

    @property
    def prefix(self) -> str:
        return f"{self.store.keys.prefix}r/"

    def loaded(self, stored: Mapping[str, bytes | None]) -> None:
        """The partition was loaded (``stored``, every key it holds): note its earliest
        deadline, and forget the index keys' revisions (they are written blind)."""
        prefix, revisions = self.prefix, self.store.mirror.revisions
        deadlines = []
        for key, value in stored.items():
            if key.startswith(prefix):
                revisions.pop(key, None)
                if value is not None:
                    deadlines.append(int(key[len(prefix) : len(prefix) + _AT]))
        self.next = min(deadlines, default=None)
        self._lowered = None

    def entry(self, record: PromiseRecord, old: PromiseRecord | None) -> bytes | None:
        """The index entry of root ``record`` (``old`` before): how its tree goes, if
        it can go without being read back; None: read it back."""
        if old is not None and old.state is not PromiseState.PENDING:
            return None  # kept longer (op_keep): its tree may not be in memory
        store = self.store
        t, id = store.replica, record.id
        below = calls_prefix(id)
        calls = 0
        for other in store.roots.get(root_of(id), ()):
            if other.startswith(below):
                call = t.promises.get(other)
                if call is None or other in t.tasks or is_root(other, call.param.data, call.branch):
                    return None  # a root of its own is kept until its own deadline
                calls += 1
        caller = record.branch if record.branch not in (None, id) else None
        created = record.created_at if id in t.tasks else None  # an invocation: listed
        return dumps({"calls": calls, "caller": caller, "created": created})

    async def not_deleting(self, root: str) -> None:
        """Once the tree of ``root`` is not being deleted unread (``deleting``)."""
        while (deleting := self.deleting.get(root)) is not None:
            await deleting.wait()

    def created(self, id: str) -> None:
        """Root ``id`` may be created anew: an index entry of it read before is stale."""
        if self._reading or id in self._read:
            self._changed.add(id)

    def written(self, at: int) -> None:
        """A transaction writes deadline ``at`` to the index."""
        self.next = _earliest(self.next, at)
        self._lowered = _earliest(self._lowered, at)

    def due_by(self, now: int) -> bool:
        return self.store.is_open and self.next is not None and self.next <= now

    async def due(self, now: int, limit: int) -> list[str]:
        """Up to ``limit`` ids due by ``now``, earliest first (one range read)."""
        self._lowered = None
        self._read.clear()
        self._changed.clear()
        prefix = self.prefix
        self._reading = True
        try:
            wanted = [Range(prefix, prefix=True, limit=limit + 1)]
            if self.store.joint is not None:  # with the other partitions' of this pass
                [(items, _more)] = await self.store.joint.ranges(wanted)
            else:
                _revision, [(items, _more)] = await self.store.etcd.ranges(wanted)
        finally:
            self._reading = False
        due: list[str] = []
        later = None
        for item in items:
            at = int(item.key[len(prefix) : len(prefix) + _AT])
            if at > now or len(due) == limit:
                later = at
                break
            id = item.key[len(prefix) + _AT + 1 :]
            due.append(id)
            plan = None if item.value in (None, id.encode()) else json.loads(item.value)
            self._read[id] = (at, plan)
        self.next = _earliest(later, self._lowered)
        return due

    async def keep(self, id: str, until: int | None) -> None:
        """Keep ``id`` until ``until`` (``op_keep``); if its record is gone, drop the stale
        index entry the last read found."""
        store = self.store
        at, _plan = self._read.pop(id, (None, None))
        if await store.get_promise(id) is not None:
            await store.run_for(id, op_keep, id, until)
        elif at is not None:
            log.warning("%r: index entry of %r without its record; dropped", store, id)
            await store.run_for(id, op_unindex, id, at)

    async def delete_tree(
        self,
        id: str,
        caller_pending: Callable[[str], Awaitable[bool]] | None = None,
        *,
        swept: bool = False,
    ) -> int:
        """``Store.delete_tree`` on the partition: the tree is read back from etcd first (a
        finished tree is not in memory), then deleted call by call, under the owner's fence.
        ``caller_pending``: whether a caller in another partition is pending (the router
        asks wherever it lives).

        ``swept``: ``id`` is one the last read of the index found due. If it may have been
        created anew since, it is left to its own entry (0); if its entry says how its tree
        goes and nothing of the tree is in memory or in use, it is deleted unread
        (``op_delete_indexed``), also under the fence."""
        store = self.store
        root = root_of(id)
        at, plan = self._read.get(id, (0, None)) if swept else (0, None)
        if swept and id in self._changed:
            self.next = _earliest(self.next, at)  # its old entry, if still there: next pass
            return 0

        async def check_caller(caller: object) -> None:
            if (
                isinstance(caller, str)
                and caller != id
                and caller_pending is not None
                and await caller_pending(caller)
            ):
                raise NotDeletableError(
                    f"{id!r} was called by {caller!r}, which is still pending: delete it "
                    f"once {caller!r} has settled"
                )

        if plan is not None and self._untouched(root):
            await check_caller(plan.get("caller"))
            if self._untouched(root):  # still, after the wait
                deleting = self.deleting[root] = asyncio.Event()
                try:
                    created = plan.get("created")
                    if not isinstance(created, int):
                        created = None
                    await store.batches.transact(op_delete_indexed, id, at, created)
                finally:
                    del self.deleting[root]
                    deleting.set()
                self._read.pop(id, None)
                calls = plan.get("calls")
                return 1 + (calls if isinstance(calls, int) else 0)
        await self.not_deleting(root)
        with store.pinned(root):
            # The root's records, and its calls: no call has a task (only invocations do,
            # and an invocation is a root of its own), so the calls' promises are all.
            await self._read_tree(id)
            record = store.replica.get_promise(id)
            await check_caller(None if record is None else record.branch)
            if any(root_of(promise_id) == root for promise_id, _task in store.outbox):
                raise NotDeletableError(
                    f"{id!r}: a promise of it is still being delivered to another partition; "
                    "try again in a moment"
                )
            return await delete_in_batches(lambda: store.run_for(id, op_delete_tree, id))

    def _untouched(self, root: str) -> bool:
        """Whether nothing of the tree of ``root`` is in memory or in use here: no record,
        no operation, no delivery, no other deletion."""
        store = self.store
        return (
            root not in store.roots
            and root not in self.deleting
            and not store.in_use(root)
            and not any(root_of(promise_id) == root for promise_id, _task in store.outbox)
        )

    async def _read_tree(self, id: str) -> None:
        """Bring the records of ``id``'s tree into memory: its promise and task, and its calls'
        promises (no call has a task: only invocations do, and an invocation is a root of
        its own). One request with the others of its wave, then pages if the tree is large."""
        store = self.store
        separator = "." if ":" in id else ":"
        calls = f"{store.keys.prefix}p/{id}{separator}"
        ranges = [Range(store.keys.promise(id)), Range(store.keys.task(id))]
        ranges.append(Range(calls, prefix=True, limit=_PAGE))
        if store.joint is not None:
            found = await store.joint.ranges(ranges)
        else:
            _revision, found = await store.etcd.ranges(ranges)
        for items, _more in found:
            store.hold(items)
        items, more = found[-1]
        while more and items:
            items, more = await store.etcd.page(items[-1].key + "\0", calls, _PAGE)
            store.hold(items)
