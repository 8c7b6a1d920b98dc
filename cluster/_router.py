"""``PartitionedStore``: the engine's ``Store`` on a cluster node, over its partitions.

Each operation goes where its records live (core/_partitions.py):

* to a partition this node owns: its ``PartitionStore``, in memory, one transaction per
  loop turn;
* to another node's partition, when it writes: to that partition's owner, over HTTP
  (cluster/_peer.py), which runs it through its own engine (so a start runs there, and a
  settle wakes what waits there);
* reads of other partitions go to etcd directly (one request for every family the id may
  be in); lists and searches read every partition from etcd, a page at a time, so that no
  node holds them all.

Where an id lives: a call of the invocation whose actor makes the store call
(``ACTING_FOR``) lives in that invocation's partition; an invocation, in its function's
group at its root's index; any other promise (made through the API, or by a workflow with an
id of its own) in the free family. An id known only by itself is looked up in the owned
partitions, then in etcd.

Schedules are few and one per namespace: they live in the namespace store (``N/s/``) that
every node replicates; the leader fires them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from dawait.cluster._cancel import cancel_tree, op_link
from dawait.cluster._etcd import EtcdError, KeyValue, Range
from dawait.cluster._etcd_records import decode_promise, decode_task, partition_prefix
from dawait.cluster._etcd_store import ETCD_MAX_PAYLOAD
from dawait.cluster._listing import SCAN_LIMIT, list_invocations
from dawait.cluster._partition_store import (
    PartitionStore,
    op_await,
    op_deliver,
    op_suspend_across,
)
from dawait.cluster._peer import (
    decode_created,
    decode_invocation,
    encode_request,
    promise_json,
    record_from_json,
)
from dawait.core._errors import PromiseNotFoundError, StoreError
from dawait.core._ids import glob_match, root_of
from dawait.core._listing import InvocationQuery
from dawait.core._partitions import FREE, Partition, partition_index
from dawait.core._promise import (
    TAG_BRANCH,
    PromiseRecord,
    PromiseState,
    Settle,
    SettleOutcome,
    Value,
    expire_promise,
)
from dawait.core._schedule import ScheduleRecord
from dawait.core._task import TaskRecord, TaskState
from dawait.runtime._deletion import sweep
from dawait.runtime._metrics import EngineMetrics
from dawait.runtime._store import (
    ACTING_FOR,
    CanceledTree,
    CreatePromise,
    Expired,
    InvocationCreated,
    PromiseCreated,
    PromisePage,
    PromiseSettled,
    ScheduleCreated,
    SchedulePage,
)
from dawait.runtime._store_ops import op_move_schedule

if TYPE_CHECKING:
    from dawait.cluster._node import ClusterNode

__all__ = ["PartitionedStore"]

log = logging.getLogger("dawait.cluster")

R = TypeVar("R")

_PAGE = 500
"""Keys read from etcd per request when scanning a partition."""


class PartitionedStore:
    """The ``Store`` of cluster node ``node``: see the module docstring."""

    metrics: EngineMetrics | None = None
    max_payload = payload_ceiling = ETCD_MAX_PAYLOAD

    def __init__(self, node: ClusterNode) -> None:
        self.node = node

    def __repr__(self) -> str:
        return f"PartitionedStore(etcd={self.node.ns.etcd!r}, namespace={self.node.namespace!r})"

    @property
    def pid(self) -> str | None:
        return self.node.ns.pid

    def problem(self) -> str | None:
        return self.node.problem()

    def refusal(self) -> str | None:
        return self.node.problem()

    async def open(self) -> None:
        await self.node.open()

    async def close(self) -> None:
        await self.node.close()

    # -- reads of etcd (noted for problem(): a node that cannot read is not ready) ----------

    async def _noted(self, request: Awaitable[R]) -> R:
        ns = self.node.ns
        try:
            answer = await request
        except EtcdError as exc:
            ns.etcd_failed(exc)
            raise
        ns.etcd_answered()
        return answer

    async def etcd_read(self, keys: list[str]) -> tuple[int, list[KeyValue | None]]:
        return await self._noted(self.node.ns.etcd.read(keys))

    async def etcd_page(self, start: str, prefix: str, limit: int) -> tuple[list[KeyValue], bool]:
        return await self._noted(self.node.ns.etcd.page(start, prefix, limit))

    async def etcd_ranges(self, ranges: list[Range]) -> list[tuple[list[KeyValue], bool]]:
        return (await self._noted(self.node.ns.etcd.ranges(ranges)))[1]

    # -- where an id lives --------------------------------------------------------------

    def _acting(self, id: str) -> PartitionStore | None:
        """The partition of the invocation making this call, if ``id`` is one of its calls
        (or itself) and this node owns it."""
        acting = ACTING_FOR.get()
        if acting is None or root_of(acting) != root_of(id):
            return None
        return self.node.holding_task(acting)

    def _local(self, id: str) -> PartitionStore | None:
        """An owned partition holding promise ``id``."""
        acting = self._acting(id)
        if acting is not None:
            return acting
        return self.node.holding_promise(id)

    def _candidates(self, id: str) -> list[Partition]:
        index = partition_index(id, self.node.count)
        return [Partition(family, index) for family in self.node.all_families()]

    async def _read(self, id: str, kind: str) -> tuple[Partition, bytes] | None:
        """Where record ``id`` (``p`` or ``t``) lives and what it holds, from etcd."""
        candidates = self._candidates(id)
        keys = [f"{partition_prefix(self.node.namespace, p)}{kind}/{id}" for p in candidates]
        _revision, found = await self.etcd_read(keys)
        for partition, item in zip(candidates, found, strict=True):
            if item is not None and item.value is not None:
                return partition, item.value
        return None

    async def locate(self, id: str) -> Partition | None:
        """The partition holding promise ``id`` (None: there is none)."""
        local = self._local(id)
        if local is not None:
            return local.partition
        found = await self._read(id, "p")
        return None if found is None else found[0]

    async def locate_task(self, id: str) -> Partition | None:
        local = self.node.holding_task(id)
        if local is not None:
            return local.partition
        found = await self._read(id, "t")
        return None if found is None else found[0]

    # -- promises -------------------------------------------------------------------------

    async def create_promise(self, request: CreatePromise, *, now: int) -> PromiseCreated:
        acting = self._acting(request.id)
        if acting is not None:
            return await acting.create_promise(request, now=now)
        invocation = ACTING_FOR.get()
        if invocation is not None and request.tags.get(TAG_BRANCH) == invocation:
            maker = self.node.holding_task(invocation)  # an id of its own: link it first
            if maker is not None:
                await maker.run_for(invocation, op_link, invocation, request.id)
        partition = Partition(FREE, partition_index(request.id, self.node.count))
        store = await self.node.owned_or_none(partition)
        if store is not None:
            return await store.create_promise(request, now=now)
        body = {"request": encode_request(request)}
        return decode_created(await self.node.peering.ask(partition, "create", body))

    async def create_invocation(
        self, request: CreatePromise, *, pid: str | None, ttl: int | None, now: int
    ) -> InvocationCreated:
        partition = self.node.partition_of_invocation(request)
        store = await self.node.owned_or_none(partition)
        if store is not None:
            created = await store.create_invocation(request, pid=pid, ttl=ttl, now=now)
            if created.task is not None and created.task.state is TaskState.PENDING:
                # Made pending here (the engine asked before this node had taken the
                # partition): nothing else would start it.
                self.node.engine.resume(created.promise.id)
            return created
        body = {"request": encode_request(request)}
        return decode_invocation(await self.node.peering.ask(partition, "start", body))

    async def settle_promise(
        self, id: str, *, event: Settle, value: Value, now: int
    ) -> PromiseSettled:
        store = self._local(id)
        partition = store.partition if store is not None else await self.locate(id)
        if partition is None:
            raise PromiseNotFoundError(f"no promise with id {id!r}")
        if store is None:
            store = await self.node.owned_or_none(partition)
        if store is not None:
            settled = await store.settle_promise(id, event=event, value=value, now=now)
            self.node.peering.deliver_soon(store)
            return settled
        body = {"id": id, "event": event.value, "value": [value.data, value.headers]}
        answer = await self.node.peering.ask(partition, "settle", body)
        return PromiseSettled(
            promise=record_from_json(answer["promise"]),
            outcome=SettleOutcome(answer["outcome"]),
            resumed=(),  # resumed on the owner
        )

    async def cancel_tree(self, id: str, *, now: int) -> CanceledTree:
        return await cancel_tree(self, id, now)

    def local_store(self, id: str) -> PartitionStore | None:
        """An owned partition holding promise ``id``, if any (see ``_local``)."""
        return self._local(id)

    async def delete_tree(self, id: str) -> int:
        store = self.node.holding_task(id) or self._local(id)
        partition = store.partition if store is not None else await self.locate(id)
        if partition is None:
            raise PromiseNotFoundError(f"no invocation or promise with id {id!r}")
        if store is None:
            store = await self.node.owned_or_none(partition)
        if store is not None:
            return await store.deletions.delete_tree(id, self._caller_pending)
        answer = await self.node.peering.ask(partition, "delete", {"id": id})
        return int(answer["deleted"])

    async def _caller_pending(self, caller: str) -> bool:
        """Whether ``caller`` is pending: it may live in another partition (an rpc to
        another group, a promise with an id of its own), which its owner cannot see."""
        record = await self.get_promise(caller)
        return record is not None and record.state is PromiseState.PENDING

    async def delete_expired(self, *, now: int, limit: int) -> Expired:
        """``Store.delete_expired`` over the partitions this node owns (each its ``limit``),
        each root through ``delete_tree`` (its caller may live in another partition)."""
        due = [s for s in self.node.open_partitions() if s.deletions.due_by(now)]
        roots = records = 0
        more = False
        for swept in await asyncio.gather(
            *(self._sweep(s, now, limit) for s in due), return_exceptions=True
        ):
            if isinstance(swept, BaseException):
                # That partition was lost or etcd is away: the next sweep tries again.
                log.warning("%r: cannot delete expired invocations now: %r", self, swept)
                continue
            roots, records = roots + swept.roots, records + swept.records
            more = more or swept.more
        return Expired(roots=roots, records=records, more=more)

    async def _sweep(self, store: PartitionStore, now: int, limit: int) -> Expired:
        deletions = store.deletions
        ids = await deletions.due(now, limit)

        def delete(id: str) -> Awaitable[int]:  # in this partition: no need to look for it
            return deletions.delete_tree(id, self._caller_pending, swept=True)

        return await sweep(ids, delete, deletions.keep, now=now, more=len(ids) == limit)

    async def next_deletion(self) -> int | None:
        deadlines = [
            at for s in self.node.open_partitions() if (at := s.deletions.next) is not None
        ]
        return min(deadlines, default=None)

    async def expire_promises(self, *, now: int, limit: int) -> Sequence[PromiseSettled]:
        due = [s for s in self.node.open_partitions() if _due(s, now)]
        results: list[PromiseSettled] = []
        for settled in await asyncio.gather(
            *(s.expire_promises(now=now, limit=limit) for s in due), return_exceptions=True
        ):
            if isinstance(settled, BaseException):
                # That partition was lost or etcd is away: the timer loop tries again.
                log.warning("%r: cannot fire timers now: %r", self, settled)
                continue
            results.extend(settled)
        for store in due:
            self.node.peering.deliver_soon(store)
        return results[:limit] if len(results) > limit else results

    async def next_timeout(self) -> int | None:
        deadlines = [
            d for s in self.node.open_partitions() if (d := s.replica.next_timeout()) is not None
        ]
        return min(deadlines, default=None)

    async def get_promise(self, id: str, *, now: int | None = None) -> PromiseRecord | None:
        store = self._local(id)
        if store is not None:
            return await store.get_promise(id, now=now)
        found = await self._read(id, "p")
        if found is None:
            return None
        record = decode_promise(found[1])
        return record if now is None else expire_promise(record, now).record

    async def branch_promises(self, branch: str) -> Sequence[PromiseRecord]:
        store = self.node.holding_task(branch) or self._local(branch)
        if store is not None:
            return await store.branch_promises(branch)
        partition = await self.locate(branch)
        if partition is None:
            return []
        separator = "." if ":" in branch else ":"
        prefix = f"{partition_prefix(self.node.namespace, partition)}p/{branch}{separator}"
        records = [decode_promise(v) for v in await self._scan(prefix)]
        return [r for r in records if r.branch == branch]

    async def search_promises(
        self,
        pattern: str,
        *,
        state: PromiseState | None = None,
        limit: int = 100,
        cursor: str | None = None,
        now: int | None = None,
    ) -> PromisePage:
        def keep(record: PromiseRecord) -> PromiseRecord | None:
            if not glob_match(pattern, record.id):
                return None
            shown = record if now is None else expire_promise(record, now).record
            return shown if state is None or shown.state is state else None

        return await self._page(keep, limit, cursor)

    async def search_invocations(
        self,
        query: InvocationQuery,
        *,
        limit: int = 100,
        cursor: str | None = None,
        now: int,
    ) -> PromisePage:
        return await list_invocations(self, query, limit, cursor, now)

    async def _page(self, keep: Any, limit: int, cursor: str | None) -> PromisePage:
        """A page of promises from every partition, in partition then id order; the cursor
        says where it ended."""
        partitions = self.node.every_partition()
        start_at, after = 0, None
        if cursor:
            path, _, after = cursor.partition("\n")
            start_at = partitions.index(Partition.from_path(path))
        matches: list[tuple[Partition, PromiseRecord]] = []
        scanned, stopped = 0, None  # records read; where the scan stopped, if cut short
        for k, partition in enumerate(partitions[start_at:], start_at):
            prefix = f"{partition_prefix(self.node.namespace, partition)}p/"
            start = prefix if after is None else prefix + after + "\0"
            after = None
            while len(matches) <= limit:
                items, more = await self.etcd_page(start, prefix, _PAGE)
                for record in (decode_promise(i.value) for i in items if i.value is not None):
                    shown = keep(record)
                    if shown is not None:
                        matches.append((partition, shown))
                scanned += len(items)
                if scanned >= SCAN_LIMIT and items and (more or k + 1 < len(partitions)):
                    stopped = f"{partition.path}\n{items[-1].key[len(prefix) :]}"
                if not more or not items or stopped:
                    break
                start = items[-1].key + "\0"
            if len(matches) > limit or stopped:
                break
        page = matches[:limit]
        next_cursor = None
        if len(matches) > limit and page:
            last_partition, last = page[-1]
            next_cursor = f"{last_partition.path}\n{last.id}"
        elif stopped:
            next_cursor = stopped
        return PromisePage(promises=[r for _p, r in page], cursor=next_cursor)

    async def _scan(self, prefix: str) -> list[bytes]:
        values: list[bytes] = []
        start = prefix
        while True:
            items, more = await self.etcd_page(start, prefix, _PAGE)
            values.extend(i.value for i in items if i.value is not None)
            if not more or not items:
                return values
            start = items[-1].key + "\0"

    # -- tasks -----------------------------------------------------------------------------

    async def get_task(self, id: str) -> TaskRecord | None:
        store = self.node.holding_task(id)
        if store is not None:
            return await store.get_task(id)
        found = await self._read(id, "t")
        return None if found is None else decode_task(found[1])

    async def acquire_task(
        self, id: str, *, pid: str, ttl: int | None, now: int, force: bool = False
    ) -> TaskRecord | None:
        store = self.node.holding_task(id)
        if store is None:
            return None  # not in a partition owned here
        return await store.acquire_task(id, pid=pid, ttl=ttl, now=now, force=force)

    async def suspend_task(self, id: str, *, awaited: Sequence[str], now: int) -> bool:
        store = self.node.holding_task(id)
        if store is None:
            raise StoreError(f"invocation {id}: not in a partition this node owns")
        local = [p for p in awaited if p in store.replica.promises]
        foreign = [p for p in awaited if p not in store.replica.promises]
        for promise_id in foreign:
            record = await self.await_elsewhere(id, promise_id, now)
            if record is None or record.state.settled:
                return False
        if not foreign:
            return await store.suspend_task(id, awaited=local, now=now)
        return await store.run_for(id, op_suspend_across, id, local, foreign, now)

    async def await_elsewhere(
        self, task_id: str, promise_id: str, now: int
    ) -> PromiseRecord | None:
        """Record in the partition of ``promise_id`` that task ``task_id`` (of a partition
        owned here) awaits it; the promise as it is there (None: there is no such promise)."""
        partition = await self.locate(promise_id)
        if partition is None:
            return None
        home = self.node.holding_task(task_id)
        if home is not None and home.partition == partition:
            return await home.get_promise(promise_id, now=now)
        store = await self.node.owned_or_none(partition)
        if store is not None:
            return await store.run_for(promise_id, op_await, promise_id, task_id, now)
        answer = await self.node.peering.ask(
            partition, "await", {"promise": promise_id, "task": task_id, "now": now}
        )
        return record_from_json(answer["promise"])

    async def deliver(self, record: PromiseRecord, task_id: str) -> None:
        """Promise ``record`` (settled in another partition) was awaited by task
        ``task_id`` of a partition owned here."""
        store = self.node.holding_task(task_id)
        if store is None:
            raise StoreError(f"task {task_id}: not in a partition this node owns")
        resumed = await store.run_for(task_id, op_deliver, record.id, task_id)
        engine = self.node.engine
        engine.promise_changed(None, record)
        if resumed is not None and resumed.state is TaskState.PENDING:
            engine.resume(task_id)

    async def answer_await(self, promise_id: str, task_id: str, now: int) -> dict[str, Any]:
        """A peer's ``await``: run here (this node owns the promise's partition)."""
        store = self._local(promise_id)
        if store is None:
            partition = await self.locate(promise_id)
            store = None if partition is None else await self.node.owned_or_none(partition)
        if store is None:
            raise PromiseNotFoundError(f"no promise with id {promise_id!r} owned here")
        record = await store.run_for(promise_id, op_await, promise_id, task_id, now)
        return {"promise": promise_json(record)}

    async def runnable_tasks(
        self, *, after: str | None = None, limit: int = 1000
    ) -> Sequence[TaskRecord]:
        tasks = sorted(
            (
                t
                for s in self.node.open_partitions()
                for t in s.replica.tasks.values()
                if t.state in (TaskState.PENDING, TaskState.ACQUIRED)
                and (after is None or t.id > after)
            ),
            key=lambda t: t.id,
        )
        return tasks[:limit]

    # -- schedules (the namespace store) -----------------------------------------------

    async def create_schedule(self, record: ScheduleRecord) -> ScheduleCreated:
        return await self.node.namespace_call(self.node.ns.create_schedule(record))

    async def get_schedule(self, id: str) -> ScheduleRecord | None:
        return self.node.ns.replica.get_schedule(id)

    async def delete_schedule(self, id: str) -> bool:
        return await self.node.namespace_call(self.node.ns.delete_schedule(id))

    async def search_schedules(
        self, pattern: str, *, limit: int = 100, cursor: str | None = None
    ) -> SchedulePage:
        return await self.node.namespace_call(
            self.node.ns.search_schedules(pattern, limit=limit, cursor=cursor)
        )

    async def due_schedules(self, *, now: int, limit: int) -> Sequence[ScheduleRecord]:
        return self.node.ns.replica.due_schedules(now, limit)

    async def next_schedule_at(self) -> int | None:
        return self.node.ns.replica.next_schedule_at()

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
        """The slot's invocation first (idempotent: its id is the slot's), then the schedule
        moved on if no one moved it since; a crash between the two fires the same slot again,
        which finds the invocation made."""
        current = self.node.ns.replica.get_schedule(id)
        if current is None or current.next_run_at != expected:
            return None
        created = await self.create_invocation(invocation, pid=pid, ttl=ttl, now=now)
        await self.node.namespace_call(
            self.node.ns._transact(op_move_schedule, id, expected, next_run_at, last_run_at)
        )
        return created


def _due(store: PartitionStore, now: int) -> bool:
    deadline = store.replica.next_timeout()
    return store.is_open and deadline is not None and deadline <= now


def settle_answer(settled: PromiseSettled) -> dict[str, Any]:
    return {"promise": promise_json(settled.promise), "outcome": settled.outcome.value}
