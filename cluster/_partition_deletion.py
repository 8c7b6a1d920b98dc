"""Deletion on a partition: a tree read back from etcd and deleted by the owner, and the
retention index, ``r/{deadline}/{id}`` keys written by the ``Recorder`` in the transaction
that settles (or deletes) the root they name, so that they sort by deadline and the owner
finds what is due with one range read.

Only the earliest deadline is kept in memory (``next``; it may be earlier than the real
one, never later), not the index: a partition's memory holds what is in flight, not
history. The owner's sweep reads the index only when ``next`` has come.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from dawait.cluster._etcd import Range
from dawait.core._errors import NotDeletableError
from dawait.core._ids import root_of
from dawait.runtime._deletion import delete_in_batches, op_delete_tree, op_keep

if TYPE_CHECKING:
    from dawait.cluster._etcd_recorder import Recorder
    from dawait.cluster._partition_store import PartitionStore

__all__ = ["Deletions", "op_unindex"]

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


class Deletions:
    """The deletions of partition store ``store``: its trees, and its retention index with
    its earliest deadline."""

    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self.next: int | None = None
        """The earliest deadline in the index, or earlier; None: the index is empty."""
        self._lowered: int | None = None
        """The earliest deadline written since the last read of the index began."""
        self._read: dict[str, int] = {}
        """Id -> its deadline, as the last read of the index found them."""

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
        prefix = self.prefix
        items, _more = await self.store.etcd.page(prefix, prefix, limit + 1)
        due: list[str] = []
        later = None
        for item in items:
            at = int(item.key[len(prefix) : len(prefix) + _AT])
            if at > now or len(due) == limit:
                later = at
                break
            id = item.key[len(prefix) + _AT + 1 :]
            due.append(id)
            self._read[id] = at
        self.next = _earliest(later, self._lowered)
        return due

    async def keep(self, id: str, until: int | None) -> None:
        """Keep ``id`` until ``until`` (``op_keep``); if its record is gone, drop the stale
        index entry the last read found."""
        store = self.store
        at = self._read.pop(id, None)
        if await store.get_promise(id) is not None:
            await store.run_for(id, op_keep, id, until)
        elif at is not None:
            log.warning("%r: index entry of %r without its record; dropped", store, id)
            await store.run_for(id, op_unindex, id, at)

    async def delete_tree(
        self, id: str, caller_pending: Callable[[str], Awaitable[bool]] | None = None
    ) -> int:
        """``Store.delete_tree`` on the partition: the tree is read back from etcd first (a
        finished tree is not in memory), then deleted under the owner's fence.
        ``caller_pending``: whether a caller in another partition is pending (the router
        asks wherever it lives)."""
        store = self.store
        root = root_of(id)
        with store.pinned(root):
            # The root's records, and its calls: no call has a task (only invocations do,
            # and an invocation is a root of its own), so the calls' promises are all.
            await self._read_tree(id)
            record = store.replica.get_promise(id)
            caller = None if record is None else record.branch
            if (
                caller is not None
                and caller != id
                and caller_pending is not None
                and await caller_pending(caller)
            ):
                raise NotDeletableError(
                    f"{id!r} was called by {caller!r}, which is still pending: delete it once "
                    f"{caller!r} has settled"
                )
            if any(root_of(promise_id) == root for promise_id, _task in store.outbox):
                raise NotDeletableError(
                    f"{id!r}: a promise of it is still being delivered to another partition; "
                    "try again in a moment"
                )
            return await delete_in_batches(lambda: store.run_for(id, op_delete_tree, id))

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
