"""``dawait migrate``: move a namespace written by layout 1 (every record directly under
``/dawait/{namespace}/``, as the single-node ``etcd://`` store and clusters before
partitions wrote it) into the partitioned layout, in place, while no node runs.

Each record goes where a node of layout 2 looks for it (cluster/_router.py): an invocation
(a promise with a task) to its function's group at its root's index; a call's promise to
the partition of the invocation that made it (walking up its ``resonate:branch`` tags);
any other promise to the free family; a callback to its promise's partition; a schedule to
the namespace records. The meta record is written once every record is copied, then the old
keys are deleted, so an interrupted migration is run again from the start and a node never
starts on half of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from dawait.cluster._etcd import Compare, Etcd, Write
from dawait.cluster._etcd_records import (
    LAYOUT,
    Keys,
    decode_promise,
    dumps,
    namespace_prefix,
    partition_prefix,
)
from dawait.core._errors import StoreError
from dawait.core._ids import root_of
from dawait.core._param import call_target
from dawait.core._partitions import FREE, Partition, check_partition_count, partition_index

__all__ = ["Migrated", "migrate"]

_PER_TXN = 100
"""Writes per transaction (etcd's --max-txn-ops is 128 by default)."""
_OLD_KINDS = ("p", "t", "c", "s")
"""The layout-1 record kinds moved; the rest (members, claims, leader, lock, markers) live
under leases and are only deleted."""


@dataclass(frozen=True, slots=True)
class Migrated:
    promises: int
    tasks: int
    callbacks: int
    schedules: int
    partitions: int

    def __str__(self) -> str:
        return (
            f"moved {self.promises} promises, {self.tasks} tasks, {self.callbacks} callbacks "
            f"and {self.schedules} schedules into {self.partitions} partitions per family"
        )


async def migrate(
    etcd: Etcd, namespace: str, *, group_of: Callable[[str | None], str], partitions: int
) -> Migrated:
    """Move ``namespace`` to layout 2 with ``partitions`` partitions per family;
    ``group_of(function)`` names each function's group (from the app)."""
    check_partition_count(partitions, "--partitions")
    root = f"/dawait/{namespace}/"
    meta_key = namespace_prefix(namespace) + "meta"
    _revision, items = await etcd.snapshot(root)
    old = {
        i.key: i.value
        for i in items
        if i.value is not None and not i.key.startswith((root + "N/", root + "P/"))
    }
    live = [k for k in old if k.startswith((root + "n/", root + "lock"))]
    if live:
        raise StoreError(
            f"etcd namespace {namespace!r} is in use ({live[0]} exists): stop every node "
            "using it, wait one lease TTL, and run the migration again"
        )
    meta = next((i.value for i in items if i.key == meta_key and i.value is not None), None)
    if meta is not None and json.loads(meta).get("partitions") != partitions:
        raise StoreError(
            f"etcd namespace {namespace!r} has {json.loads(meta).get('partitions')} "
            f"partitions already; run the migration with that --partitions"
        )
    keys = Keys(root)
    promises = {
        k[len(keys.promise("")) :]: decode_promise(v)
        for k, v in old.items()
        if k.startswith(keys.promise(""))
    }
    tasks = {k[len(keys.task("")) :] for k in old if k.startswith(keys.task(""))}
    families: dict[str, str] = {}

    def family(id: str) -> str:
        if id in families:
            return families[id]
        record = promises.get(id)
        found = FREE
        if id in tasks and record is not None:
            found = group_of(call_target(record.param.data)[0])
        elif (
            record is not None
            and record.branch not in (None, id)
            and root_of(record.branch or "") == root_of(id)
        ):
            found = family(record.branch or "")
        families[id] = found
        return found

    def where(id: str) -> str:
        return partition_prefix(namespace, Partition(family(id), partition_index(id, partitions)))

    writes: list[Write] = []
    counts = {"p": 0, "t": 0, "c": 0, "s": 0}
    for key, value in old.items():
        kind, _, rest = key[len(root) :].partition("/")
        if kind not in _OLD_KINDS:
            continue
        counts[kind] += 1
        if kind in ("p", "t"):
            writes.append(Write(f"{where(rest)}{kind}/{rest}", value))
        elif kind == "c":
            length, _, ids = rest.partition("/")
            promise_id = ids[: int(length)]
            writes.append(Write(f"{where(promise_id)}c/{rest}", value))
        else:
            writes.append(Write(f"{namespace_prefix(namespace)}s/{rest}", value))
    for start in range(0, len(writes), _PER_TXN):
        await etcd.commit([], writes[start : start + _PER_TXN])
    if meta is None:
        value = dumps({"layout": LAYOUT, "partitions": partitions})
        made, _revision = await etcd.commit([Compare(meta_key, 0)], [Write(meta_key, value)])
        if not made:
            raise StoreError(f"etcd namespace {namespace!r}: its meta record appeared meanwhile")
    deletes = [Write(key, None) for key in old]
    for start in range(0, len(deletes), _PER_TXN):
        await etcd.commit([], deletes[start : start + _PER_TXN])
    return Migrated(counts["p"], counts["t"], counts["c"], counts["s"], partitions)
