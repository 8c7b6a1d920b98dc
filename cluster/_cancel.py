"""A cancel's cascade in a cluster (``Store.cancel_tree`` on a node).

The tree of an invocation lives in its partition (its steps, timers and ``ctx.promise``
promises, and its ``ctx.rpc`` invocations of the same group), so its owner cancels all of it
in memory, where a pending tree is (``op_cancel_tree``). An ``rpc`` to another group is an
invocation in that group's partition at the same index (its id is below the root's); those
are found by reading, in each other family's partition, the keys below each canceled
invocation's id, and the engine cancels each with its own tree, on its owner.

A promise an invocation makes with an id of its own (``ctx.promise(id="approval-7")``)
lives in the free family, where its id hashes. So the invocation's partition keeps a link to
it, ``k/{len}/{invocation}{promise}``, written (blind, as the indexes are) before the promise
is created and deleted with the invocation's tree; a cancel reads the links of each
invocation it canceled. A promise created while its link's write was lost (the node died
between the two) is not reached: it keeps its own timeout.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from dawait.cluster._etcd import Range
from dawait.cluster._etcd_records import Keys, decode_promise, partition_prefix
from dawait.cluster._peer import record_from_json
from dawait.core._errors import PromiseNotFoundError
from dawait.core._param import read_invocation
from dawait.core._partitions import Partition
from dawait.core._promise import TAG_DETACHED, PromiseRecord, PromiseState, SettleOutcome
from dawait.runtime._store import CanceledTree, PromiseSettled
from dawait.runtime._store_ops import op_cancel_tree

if TYPE_CHECKING:
    from dawait.cluster._etcd_recorder import Recorder
    from dawait.cluster._router import PartitionedStore

__all__ = ["cancel_tree", "op_link"]


async def cancel_tree(router: PartitionedStore, id: str, now: int) -> CanceledTree:
    """``Store.cancel_tree`` on a cluster node: on the owner of ``id``'s partition (asked
    over the peer RPC if that is another node, which then runs the whole cascade)."""
    node = router.node
    store = node.holding_task(id) or router.local_store(id)
    partition = store.partition if store is not None else await router.locate(id)
    if partition is None:
        raise PromiseNotFoundError(f"no invocation or promise with id {id!r}")
    if store is None:
        store = await node.owned_or_none(partition)
    if store is None:
        answer = await node.peering.ask(partition, "cancel", {"id": id})
        root = PromiseSettled(
            promise=record_from_json(answer["promise"]),
            outcome=SettleOutcome(answer["outcome"]),
            resumed=(),
        )
        return CanceledTree(root=root)
    tree: CanceledTree = await store.run_for(id, op_cancel_tree, id, now)
    node.peering.deliver_soon(store)
    if tree.root.promise.state is not PromiseState.REJECTED_CANCELED:
        return tree
    callers = [s.promise.id for s in tree.calls if read_invocation(s.promise.param.data)]
    if not tree.more:
        callers.append(id)
    elsewhere = await _called_elsewhere(router, partition, callers)
    return dataclasses.replace(tree, elsewhere=elsewhere)


def op_link(t: Recorder, invocation: str, promise: str) -> None:
    """Note in ``invocation``'s partition that it makes ``promise`` (see the module
    docstring)."""
    t.store.batches.batch.writes[t.keys.link(invocation, promise)] = b""


async def _called_elsewhere(
    router: PartitionedStore, partition: Partition, callers: list[str]
) -> list[str]:
    """The pending calls of ``callers`` (invocations of ``partition``) that live in other
    partitions: their invocations in other families' partitions (but not detached ones),
    and the promises with ids of their own they link to."""
    namespace = router.node.namespace
    ranges = [
        Range(Keys(partition_prefix(namespace, partition)).links(caller), prefix=True)
        for caller in callers
    ]
    for family in router.node.all_families():
        if family != partition.family:
            other = partition_prefix(namespace, Partition(family, partition.index))
            for caller in callers:
                separator = "." if ":" in caller else ":"
                ranges.append(Range(f"{other}p/{caller}{separator}", prefix=True))
    found: list[PromiseRecord] = []
    linked: list[str] = []
    for first in range(0, len(ranges), 100):  # etcd's --max-txn-ops is 128 by default
        for k, (items, _more) in enumerate(await router.etcd_ranges(ranges[first : first + 100])):
            if first + k < len(callers):
                prefix = ranges[first + k].key
                linked.extend(i.key[len(prefix) :] for i in items)
            else:
                found.extend(decode_promise(i.value) for i in items if i.value is not None)
    for id in linked:
        record = await router.get_promise(id)
        if record is not None:
            found.append(record)
    callers_set = set(callers)
    return [
        r.id
        for r in found
        if r.branch in callers_set
        and r.state is PromiseState.PENDING
        and r.tags.get(TAG_DETACHED) != "true"
    ]
