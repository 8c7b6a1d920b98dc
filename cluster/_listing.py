"""Listing a cluster's invocations newest first, from every partition, a page at a time.

Each partition keeps a creation index beside its tasks: ``o/{mark}/{id}``, one key per
invocation, whose ``mark`` counts down as creation times go up (``creation_mark``), so that
its keys read in order are the partition's invocations newest first, then by id: the order
every store lists in (core/_listing.py). The ``Recorder`` writes an entry with the task and
deletes it with the task, blind as the retention index is; its value names the function, so
a listing by function reads no record it does not keep. A partition written before the
index existed gains its entries when a node takes it (``index_unlisted``).

A page merges the partitions' indexes: the first keys of every partition in one request,
more of one partition as the merge uses them up, then the records of the entries it keeps.
No node holds the listing: it reads at most ``SCAN_LIMIT`` entries, and a page cut short
by that ends with a cursor where it stopped.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dawait.cluster._etcd import Compare, KeyValue, Range, Write
from dawait.cluster._etcd_records import (
    creation_mark,
    decode_promise,
    dumps,
    partition_prefix,
)
from dawait.core._listing import InvocationQuery, decode_cursor, encode_cursor
from dawait.core._param import call_target
from dawait.core._partitions import Partition
from dawait.core._promise import PromiseRecord, expire_promise
from dawait.runtime._store import PromisePage

if TYPE_CHECKING:
    from dawait.cluster._partition_store import PartitionStore
    from dawait.cluster._router import PartitionedStore

__all__ = ["SCAN_LIMIT", "index_unlisted", "list_invocations"]

SCAN_LIMIT = 10_000
"""Index entries one page reads at most."""
_CHUNK = 200
"""Index entries read from a partition per request."""
_PER_TXN = 100
"""Ranges or writes in one etcd transaction (its --max-txn-ops is 128 by default)."""


@dataclass
class _Head:
    """Where the merge stands in one partition's index."""

    partition: Partition
    prefix: str
    """The partition's ``o/`` prefix."""
    start: str
    """The next key to read (inclusive)."""
    entries: list[KeyValue] = field(default_factory=list)
    more: bool = True

    def take(self, items: list[KeyValue], more: bool) -> None:
        self.entries = items[::-1]  # popped from the end: the newest last
        self.more = more and bool(items)
        if items:
            self.start = items[-1].key + "\0"

    @property
    def next_mark(self) -> str | None:
        return self.entries[-1].key[len(self.prefix) :] if self.entries else None


def _start(query: InvocationQuery, cursor: str | None) -> str:
    """The first index key suffix a page reads: after the cursor, and not newer than the
    query's ``created_before``."""
    start = ""
    if query.created_before is not None:
        start = f"{creation_mark(query.created_before - 1)}/"
    if cursor is not None:
        created_at, id = decode_cursor(cursor)
        start = max(start, f"{creation_mark(created_at)}/{id}\0")
    return start


async def list_invocations(
    router: PartitionedStore, query: InvocationQuery, limit: int, cursor: str | None, now: int
) -> PromisePage:
    """A page of the invocations ``query`` keeps as of ``now``, newest first, from every
    partition (see the module docstring)."""
    namespace = router.node.namespace
    start = _start(query, cursor)
    oldest = None if query.created_after is None else creation_mark(query.created_after)
    heads = []
    for partition in router.node.every_partition():
        prefix = f"{partition_prefix(namespace, partition)}o/"
        heads.append(_Head(partition, prefix, prefix + start))
    chunk = min(_CHUNK, limit + 1)
    for first in range(0, len(heads), _PER_TXN):
        some = heads[first : first + _PER_TXN]
        found = await router.etcd_ranges(
            [Range(h.start, within=h.prefix, limit=chunk) for h in some]
        )
        for head, (items, more) in zip(some, found, strict=True):
            head.take(items, more)
    merge = [(head.next_mark, k) for k, head in enumerate(heads) if head.next_mark is not None]
    heapq.heapify(merge)

    matches: list[PromiseRecord] = []
    scanned, last_mark = 0, ""
    while merge and len(matches) <= limit and scanned < SCAN_LIMIT:
        batch: list[tuple[Partition, str]] = []
        while merge and len(batch) < limit + 1 - len(matches) and scanned < SCAN_LIMIT:
            mark, k = heapq.heappop(merge)
            if oldest is not None and mark[: len(oldest)] > oldest:
                merge.clear()  # older than asked for, and so is every later entry
                break
            head = heads[k]
            entry = head.entries.pop()
            scanned += 1
            last_mark = mark
            if query.names(json.loads(entry.value or b"{}").get("func")):
                batch.append((head.partition, mark.partition("/")[2]))
            if not head.entries and head.more:
                items, more = await router.etcd_page(head.start, head.prefix, _CHUNK)
                head.take(items, more)
            if head.next_mark is not None:
                heapq.heappush(merge, (head.next_mark, k))
        matches.extend(await _kept(router, query, batch, now))
    page = matches[:limit]
    if len(matches) > limit:
        last = page[-1]
        return PromisePage(promises=page, cursor=encode_cursor((last.created_at, last.id)))
    if merge and last_mark:  # cut short by SCAN_LIMIT
        mark, _, id = last_mark.partition("/")
        return PromisePage(promises=page, cursor=encode_cursor((_created_at(mark), id)))
    return PromisePage(promises=page, cursor=None)


def _created_at(mark: str) -> int:
    return int(creation_mark(0)) - int(mark)


async def _kept(
    router: PartitionedStore,
    query: InvocationQuery,
    entries: list[tuple[Partition, str]],
    now: int,
) -> list[PromiseRecord]:
    """The records of ``entries`` (in their order) that ``query`` keeps as of ``now``; one
    deleted since its entry was read is left out."""
    namespace = router.node.namespace
    keys = [f"{partition_prefix(namespace, p)}p/{id}" for p, id in entries]
    kept = []
    for first in range(0, len(keys), _PER_TXN):
        _revision, found = await router.etcd_read(keys[first : first + _PER_TXN])
        for item in found:
            if item is not None and item.value is not None:
                record = expire_promise(decode_promise(item.value), now).record
                if query.keeps(record):
                    kept.append(record)
    return kept


async def index_unlisted(store: PartitionStore, stored: Mapping[str, bytes | None]) -> None:
    """Bring the creation index of the partition just loaded (``stored``, every key it
    holds) in line with its tasks: an entry for each invocation that has none (a partition
    written before the index), none for a task that is gone (deleted unread by an entry of
    the retention index written before it named the creation time); and forget the entries'
    revisions (they are written blind)."""
    keys, revisions = store.keys, store.mirror.revisions
    index = f"{keys.prefix}o/"
    listed = set()
    writes = []
    for key, value in stored.items():
        if key.startswith(f"{keys.prefix}k/"):  # links (cluster/_cancel.py): blind too
            revisions.pop(key, None)
        elif key.startswith(index):
            revisions.pop(key, None)
            listed.add(key)
            id = key[len(index) + len(creation_mark(0)) + 1 :]
            if value is not None and stored.get(keys.task(id)) is None:
                writes.append(Write(key, None))
    for key, value in stored.items():
        if not key.startswith(keys.task("")) or value is None:
            continue
        id = key[len(keys.task("")) :]
        raw = stored.get(keys.promise(id))
        if raw is None:
            continue
        record = decode_promise(raw)
        entry = keys.creation(record.created_at, id)
        if entry not in listed:
            writes.append(Write(entry, dumps({"func": call_target(record.param.data)[0]})))
    fence = [Compare(store.lock_key, store.membership.lock_revision)]
    for first in range(0, len(writes), _PER_TXN):
        await store.etcd.commit(fence, writes[first : first + _PER_TXN])
