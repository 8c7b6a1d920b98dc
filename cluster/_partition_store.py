"""``PartitionStore``: one partition's records, written by its owner alone.

A partition (core/_partitions.py) lives under ``/dawait/{namespace}/P/{family}/{index}/``:
its promises, tasks and callbacks as the etcd store lays them out (``p/``, ``t/``, ``c/``),
its owner's transaction marker (``x/``), and two records of its own:

* ``owner``: ``{node_id, pid, epoch}``, under the owner node's lease, so that it ends with
  the node (a crash, a stall past the TTL, a partition from etcd) or when the owner hands it
  over;
* ``epoch``: how many owners it has had, never deleted; every take increments it in the same
  transaction that writes ``owner``.

Across partitions (an invocation here awaiting a promise of another partition), two more
kinds, so that a delivery is never lost to a crash or a change of owner:

* ``b/{len}/{promise}{task}``, the *outbox*: in the promise's partition, written with the
  settle that pops a callback of a task in another partition; the owner delivers it to the
  task's partition's owner and deletes it once acknowledged (redelivered after a take);
* ``f/{len}/{task}{promise}``, a *notice*: in the task's partition, that the promise has
  settled; a suspend of the task that awaits it is refused (it goes on), and it is deleted
  when the task is fulfilled.

The owner loads the partition once when it takes it (one range read) and keeps it in
memory. Nobody else writes it, so there is no watch: requests about it from other nodes are
forwarded to the owner. Every transaction compares the owner key's revision as of the take
(as an exclusive ``EtcdStore`` compares its namespace lock), so once the owner's lease ended
or another node took the partition, no write of the old owner can commit; and each
transaction's marker carries the epoch it was written under.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from dawait.cluster._etcd import Compare, Etcd, KeyValue, Write, cancel_task
from dawait.cluster._etcd_batches import Batches
from dawait.cluster._etcd_membership import Membership
from dawait.cluster._etcd_recorder import Batch, Recorder
from dawait.cluster._etcd_records import decode_promise, decode_task, dumps, partition_prefix
from dawait.cluster._etcd_replica import Replica
from dawait.cluster._etcd_store import EtcdStore
from dawait.cluster._listing import index_unlisted
from dawait.cluster._partition_deletion import Deletions
from dawait.core._errors import (
    InvocationConflictError,
    OwnershipLostError,
    PromiseNotFoundError,
)
from dawait.core._ids import root_of
from dawait.core._param import describe_call, read_invocation
from dawait.core._partitions import Partition
from dawait.core._promise import PromiseRecord, PromiseState, Settle, Value, expire_promise
from dawait.core._task import TaskRecord, TaskState, resume_task
from dawait.runtime._deletion import DELETE_BATCH
from dawait.runtime._memory_store import MemoryTables
from dawait.runtime._store import (
    CreatePromise,
    InvocationCreated,
    PromiseCreated,
    PromiseSettled,
)
from dawait.runtime._store_ops import (
    op_acquire_task,
    op_create_invocation,
    op_create_promise,
    op_get_promise,
    op_settle_promise,
    op_suspend_task,
)

R = TypeVar("R")


def _get_task(t: Recorder, id: str) -> TaskRecord | None:
    return t.get_task(id)


if TYPE_CHECKING:
    from dawait.runtime._clock import Clock

__all__ = [
    "PartitionOwner",
    "PartitionStore",
    "op_ack",
    "op_await",
    "op_deliver",
    "op_suspend_across",
]

log = logging.getLogger("dawait.cluster")


class PartitionOwner:
    """Who holds a partition, as its ``owner`` record says."""

    def __init__(self, node_id: str, pid: str, epoch: int) -> None:
        self.node_id = node_id
        self.pid = pid
        self.epoch = epoch

    def encode(self) -> bytes:
        return dumps({"node_id": self.node_id, "pid": self.pid, "epoch": self.epoch})

    @classmethod
    def decode(cls, raw: bytes) -> PartitionOwner:
        d = json.loads(raw)
        return cls(d["node_id"], d["pid"], d["epoch"])

    def __repr__(self) -> str:
        return f"PartitionOwner({self.node_id!r}, epoch={self.epoch})"


class _Replica(Replica):
    """A partition's replica (no watch: the owner is its only writer), with its outbox and
    notices."""

    store: PartitionStore

    def new_tables(self) -> MemoryTables:
        return MemoryTables(deletions=False)  # the index is in etcd (``deletions``)

    async def reload(self) -> dict[str, bytes | None]:
        stored = await super().reload()
        store = self.store
        store.deletions.loaded(stored)
        store.outbox.clear()
        store.notices.clear()
        for key, value in stored.items():
            kind = key[len(store.keys.prefix) : len(store.keys.prefix) + 2]
            if value is None or kind not in ("b/", "f/"):
                continue
            first, second = json.loads(value)
            if kind == "b/":
                store.outbox.add((first, second))
            else:
                store.notices.setdefault(first, set()).add(second)
        store.roots.clear()
        for id in (*self.tables.promises, *self.tables.tasks):
            store.note(id)
        store.evict(list(store.roots))
        return stored


def _pair_key(prefix: str, kind: str, first: str, second: str) -> str:
    return f"{prefix}{kind}/{len(first)}/{first}{second}"


class _Recorder(Recorder):
    """The partition's ``Tables``: a callback of a task in another partition becomes an
    outbox record when its promise settles; a fulfilled task's notices go with it."""

    store: PartitionStore

    def pop_callbacks(self, promise_id: str) -> list[str]:
        local = []
        for task_id in super().pop_callbacks(promise_id):
            if task_id in self.t.tasks:
                local.append(task_id)
            else:
                self.add_outbox(promise_id, task_id)
        return local

    def add_outbox(self, promise_id: str, task_id: str) -> None:
        key = _pair_key(self.keys.prefix, "b", promise_id, task_id)
        self._write(key, dumps([promise_id, task_id]))
        self.store.outbox.add((promise_id, task_id))

    def drop_outbox(self, promise_id: str, task_id: str) -> None:
        if (promise_id, task_id) in self.store.outbox:
            self._write(_pair_key(self.keys.prefix, "b", promise_id, task_id), None)
            self.store.outbox.discard((promise_id, task_id))

    def add_notice(self, task_id: str, promise_id: str) -> None:
        known = self.store.notices.setdefault(task_id, set())
        if promise_id not in known:
            self._write(
                _pair_key(self.keys.prefix, "f", task_id, promise_id),
                dumps([task_id, promise_id]),
            )
            known.add(promise_id)

    def noticed(self, task_id: str, promise_id: str) -> bool:
        return promise_id in self.store.notices.get(task_id, ())

    def put_promise(self, record: PromiseRecord, *, new: bool) -> None:
        super().put_promise(record, new=new)
        self.store.note(record.id)

    def deletion_entry(self, record: PromiseRecord, old: PromiseRecord | None) -> bytes | None:
        return self.store.deletions.entry(record, old)

    def put_task(self, task: TaskRecord, *, new: bool) -> None:
        super().put_task(task, new=new)
        self.store.note(task.id)
        if task.state is TaskState.FULFILLED:
            for promise_id in self.store.notices.pop(task.id, ()):
                self._write(_pair_key(self.keys.prefix, "f", task.id, promise_id), None)


# -- the operations across partitions (run on a partition's _Recorder) ----------------------


def op_await(t: _Recorder, promise_id: str, task_id: str, now: int) -> PromiseRecord:
    """A task of another partition awaits ``promise_id``: its record as of ``now``, and a
    callback for the task unless it has settled."""
    record = t.get_promise(promise_id)
    if record is None:
        raise PromiseNotFoundError(f"no promise with id {promise_id!r}")
    record = expire_promise(record, now).record
    if not record.state.settled:
        t.add_callback(promise_id, task_id)
    return record


def op_deliver(t: _Recorder, promise_id: str, task_id: str) -> TaskRecord | None:
    """Promise ``promise_id`` (of another partition), awaited by task ``task_id`` here, has
    settled: note it, and resume the task if it is suspended (the task, then)."""
    task = t.get_task(task_id)
    if task is None or task.state is TaskState.FULFILLED:
        return None
    t.add_notice(task_id, promise_id)
    pending = resume_task(task)
    if pending is None:
        return None
    t.put_task(pending, new=False)
    t.drop_callbacks(task_id)
    return pending


def op_ack(t: _Recorder, promise_id: str, task_id: str) -> None:
    """The delivery of ``promise_id`` to ``task_id`` was acknowledged."""
    t.drop_outbox(promise_id, task_id)


def op_suspend_across(
    t: _Recorder, id: str, local: Sequence[str], foreign: Sequence[str], now: int
) -> bool:
    """``op_suspend_task`` for a task that also awaits promises of other partitions (their
    callbacks recorded there already): refused if any of those was noticed settled."""
    if any(t.noticed(id, promise_id) for promise_id in foreign):
        t.touch(t.keys.task(id))
        return False
    return op_suspend_task(t, id, local, now)


def _in_use(id: str, where: str, value: bytes) -> InvocationConflictError:
    """``id`` is in use at ``where`` (``{family}/{index}/p/{id}`` under the namespace's
    ``P/``)."""
    family = where.split("/")[0] or "free"
    record = decode_promise(value)
    call = read_invocation(record.param.data)
    what = f"an invocation of {call.func!r}, {describe_call(call)}" if call else "a promise"
    return InvocationConflictError(
        f"id {id!r} is in use by {what}, in family {family!r}: an id names one invocation or "
        "promise in the whole namespace, whatever its function's group"
    )


class PartitionStore(EtcdStore):
    """The records of ``partition``, for the node whose namespace store is ``node`` (its
    lease, its incarnation): see the module docstring."""

    membership: _Hold
    mirror: _Replica
    lists_from_etcd = True

    def __init__(
        self,
        etcd: Etcd,
        *,
        namespace: str,
        partition: Partition,
        node: EtcdStore,
        on_lost: Callable[[PartitionStore], None] | None = None,
        max_ops: int = 120,
        retry_for: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        if node.member is None:
            raise ValueError(f"{node!r} has not joined: a partition is owned by a member")
        prefix = partition_prefix(namespace, partition)
        super().__init__(
            etcd,
            namespace=namespace,
            prefix=prefix,
            owner=node.member.pid,
            lease_ttl=node.lease_ttl,
            exclusive=True,
            max_ops=max_ops,
            retry_for=retry_for,
            clock=node.clock if clock is None else clock,
        )
        self.partition = partition
        self.node = node
        self.on_lost = on_lost
        self.lock_key = f"{prefix}owner"
        self.epoch_key = f"{prefix}epoch"
        self.outbox: set[tuple[str, str]] = set()
        """(promise, task) deliveries to make, the task being of another partition."""
        self.notices: dict[str, set[str]] = {}
        """Task id -> the promises of other partitions it awaited that have settled."""
        self.roots: dict[str, set[str]] = {}
        """Root id -> the ids of its promises and tasks in memory (see ``evict``)."""
        self._pins: dict[str, int] = {}
        """Root id -> operations under way on it (it stays in memory meanwhile)."""
        self.evicted = 0
        """Ids whose records were dropped from memory so far."""
        self.elsewhere: Callable[[str], list[str]] | None = None
        """The keys a promise ``id`` would have in the namespace's other families (set by
        the node): a new root id is checked against them."""
        self.deletions = Deletions(self)
        self.membership = _Hold(self)
        self.mirror = _Replica(self, watch=False)
        self.batches = Batches(self)
        self.batches.recorder = _Recorder(self)

    def __repr__(self) -> str:
        return f"PartitionStore({self.namespace!r}, {self.partition})"

    @property
    def epoch(self) -> int:
        """The epoch this store writes under (0 before it took the partition)."""
        return self.membership.epoch

    # -- memory: what is in flight, not history -----------------------------------------
    #
    # An invocation tree's records (all of one root id) stay in memory while any of them is
    # in flight: a task not fulfilled (or with callbacks), a pending promise, a callback or
    # outbox record on one of its promises, an operation under way. Then they are dropped;
    # an operation on a dropped id reads it back from etcd first (``_by_id``).

    def note(self, id: str) -> None:
        self.roots.setdefault(root_of(id), set()).add(id)

    def _in_flight(self, root: str) -> bool:
        if self._pins.get(root):
            return True
        t = self.replica
        for id in self.roots.get(root, ()):
            task = t.tasks.get(id)
            if task is not None and (task.state is not TaskState.FULFILLED or id in t.awaiting):
                return True
            record = t.promises.get(id)
            if record is not None and record.state is PromiseState.PENDING:
                return True
            if id in t.callbacks:
                return True
        return any(root_of(promise_id) == root for promise_id, _task in self.outbox)

    def evict(self, roots: Iterable[str]) -> None:
        """Drop from memory the trees of ``roots`` that are no longer in flight."""
        t = self.replica
        revisions = self.mirror.revisions
        for root in roots:
            if root not in self.roots or self._in_flight(root):
                continue
            for id in self.roots.pop(root):
                t.promises.pop(id, None)
                t.tasks.pop(id, None)
                t.branches.pop(id, None)
                revisions.pop(self.keys.promise(id), None)
                revisions.pop(self.keys.task(id), None)
                self.evicted += 1

    def committed(self, batch: Batch) -> None:
        revisions = self.mirror.revisions
        roots = set()
        for key, value in batch.writes.items():
            kind, _, id = key[len(self.keys.prefix) :].partition("/")
            if value is None or kind in ("r", "o", "k"):  # no watch to order against: absent
                revisions.pop(key, None)  # is absent; and index keys are written blind
            if kind in ("p", "t"):
                roots.add(root_of(id))
        self.evict(roots)

    def deletion_keys(self, id: str) -> int:
        # The tree is in memory (read back first): what of it one transaction takes.
        return 2 * min(len(self.roots.get(root_of(id), ())), DELETE_BATCH) + 8

    def deadline_written(self, at: int) -> None:
        self.deletions.written(at)

    async def _by_id(
        self, id: str, op: Callable[..., R], *args: object, creating: bool = False
    ) -> R:
        """Run ``op`` about ``id``, reading its records back from etcd first if its tree was
        dropped from memory (none of its records is here). ``creating``: ``op`` may create
        ``id``, which must not be in use in another family."""
        root = root_of(id)
        await self.deletions.not_deleting(root)
        if creating:
            self.deletions.created(id)
        with self.pinned(root):
            if root not in self.roots:
                await self.read_back(id, unique=creating and root == id)
            return await self._transact(op, *args)

    def in_use(self, root: str) -> bool:
        """Whether an operation is under way on the tree of ``root``."""
        return bool(self._pins.get(root))

    @contextlib.contextmanager
    def pinned(self, root: str) -> Iterator[None]:
        """Keep the tree of ``root`` in memory meanwhile (an operation is under way on it)."""
        self._pins[root] = self._pins.get(root, 0) + 1
        try:
            yield
        finally:
            self._pins[root] -= 1
            if not self._pins[root]:
                del self._pins[root]
                self.evict([root])

    async def read_back(self, id: str, *, unique: bool = False) -> None:
        """Bring ``id``'s records into memory from etcd. ``unique``: also check that no other
        family has a promise ``id`` (in the same request), else ``InvocationConflictError``."""
        others = self.elsewhere(id) if unique and self.elsewhere is not None else []
        keys = [self.keys.promise(id), self.keys.task(id), *others]
        if self.joint is not None:
            promise, task, *found = await self.joint.read(keys)
        else:
            _revision, (promise, task, *found) = await self.etcd.read(keys)
        if promise is None or promise.value is None:
            for key, item in zip(others, found, strict=True):
                if item is not None and item.value is not None:
                    raise _in_use(id, key[len(f"/dawait/{self.namespace}/P/") :], item.value)
        self.hold([promise, task])

    def hold(self, items: Iterable[KeyValue | None]) -> None:
        """Bring stored promises and tasks (``p/``, ``t/`` keys) into memory, where absent."""
        t = self.replica
        for item in items:
            if item is None or item.value is None:
                continue
            if item.key[len(self.keys.prefix)] == "p":
                record = decode_promise(item.value)
                if (id := record.id) in t.promises:
                    continue
                t.put_promise(record, new=True)
            else:
                task = decode_task(item.value)
                if (id := task.id) in t.tasks:
                    continue
                t.put_task(task, new=True)
            self.mirror.revisions[item.key] = item.mod_revision
            self.note(id)

    async def delete_tree(self, id: str) -> int:
        return await self.deletions.delete_tree(id)

    def run_for(self, id: str, op: Callable[..., R], *args: object) -> Awaitable[R]:
        """Run store operation ``op(tables, *args)`` about ``id`` (what the router calls)."""
        return self._by_id(id, op, *args)

    async def create_promise(self, request: CreatePromise, *, now: int) -> PromiseCreated:
        return await self._by_id(request.id, op_create_promise, request, now, creating=True)

    async def create_invocation(
        self, request: CreatePromise, *, pid: str | None, ttl: int | None, now: int
    ) -> InvocationCreated:
        return await self._by_id(
            request.id, op_create_invocation, request, pid, ttl, now, creating=True
        )

    async def settle_promise(
        self, id: str, *, event: Settle, value: Value, now: int
    ) -> PromiseSettled:
        return await self._by_id(id, op_settle_promise, id, event, value, now)

    async def get_promise(self, id: str, *, now: int | None = None) -> PromiseRecord | None:
        return await self._by_id(id, op_get_promise, id, now)

    async def get_task(self, id: str) -> TaskRecord | None:
        return await self._by_id(id, _get_task, id)

    async def acquire_task(
        self, id: str, *, pid: str, ttl: int | None, now: int, force: bool = False
    ) -> TaskRecord | None:
        return await self._by_id(id, op_acquire_task, id, pid, ttl, now, force)

    async def suspend_task(self, id: str, *, awaited: Sequence[str], now: int) -> bool:
        return await self._by_id(id, op_suspend_task, id, awaited, now)

    def marker_token(self, attempt: int) -> bytes:
        # The epoch too: the records show which owner wrote each transaction.
        return dumps({"epoch": self.epoch, "attempt": attempt})

    async def holder(self) -> PartitionOwner | None:
        """The partition's owner as etcd has it now."""
        _revision, (found,) = await self.etcd.read([self.lock_key])
        return None if found is None or found.value is None else PartitionOwner.decode(found.value)

    async def take(self) -> bool:
        """Become the partition's owner and load its records; False, changing nothing, if
        another node (or an earlier run of this one whose lease has not ended) holds it."""
        if self.is_open:
            return True
        if not await self.membership.take_partition():
            return False
        stored = await self.mirror.reload()
        if self.membership.lost_after_reload():
            return False
        await index_unlisted(self, stored)
        self.membership.broken = None
        self.is_open = True
        return True

    async def open(self) -> None:
        if not await self.take():
            raise OwnershipLostError(f"{self!r}: held by {await self.holder()!r}")

    async def close(self) -> None:
        """Hand the partition over: finish the transactions in flight, then delete the owner
        record (if this store still holds it) so that the next owner takes it at once."""
        if not self.is_open:
            return
        await self.batches.drain()
        self.is_open = False
        if self.batches.reloader is not None:
            await cancel_task(self.batches.reloader)
        await self.membership.release()


class _Hold(Membership):
    """A partition store's hold: the partition's owner record, under the node's lease (kept
    alive by the node's namespace store, not here)."""

    store: PartitionStore

    def __init__(self, store: PartitionStore) -> None:
        super().__init__(store)
        self.epoch = 0

    async def take(self) -> None:
        raise NotImplementedError("a partition is taken with take_partition()")

    async def take_partition(self) -> bool:
        store = self.store
        node = store.node
        member = node.member
        if member is None or node.membership.broken is not None or not node.membership.lease:
            return False
        _revision, (owner, epoch) = await store.etcd.read([store.lock_key, store.epoch_key])
        if owner is not None:
            return False
        count = 0 if epoch is None or epoch.value is None else json.loads(epoch.value)["epoch"]
        taken = PartitionOwner(member.node_id, member.pid, count + 1)
        lease = node.membership.lease
        ok, revision = await store.etcd.commit(
            [
                Compare(store.lock_key, 0),
                Compare(store.epoch_key, 0 if epoch is None else epoch.mod_revision),
            ],
            [
                Write(store.lock_key, taken.encode(), lease),
                Write(store.epoch_key, dumps({"epoch": taken.epoch})),
            ],
        )
        if not ok:
            return False
        self.lease = lease
        self.lock_revision = revision
        self.epoch = taken.epoch
        self.broken = None
        log.info(
            "node %s took partition %s (epoch %d)", member.node_id, store.partition, taken.epoch
        )
        return True

    def keep(self) -> None:
        return None  # the node's namespace store renews the lease

    async def release(self) -> None:
        store = self.store
        if not self.lock_revision or self.broken is not None:
            return
        try:
            await store.etcd.commit(
                [Compare(store.lock_key, self.lock_revision)], [Write(store.lock_key, None)]
            )
        except Exception as exc:  # the record ends with the node's lease anyway
            log.warning("%r: cannot hand over now (it frees with the lease): %r", store, exc)
        self.lock_revision = 0

    def lose(self, why: str) -> None:
        store = self.store
        if self.broken is not None:
            return
        self.broken = OwnershipLostError(
            f"{store!r}: this node no longer owns the partition ({why}); it writes nothing "
            "more to it and drops what it was running there"
        )
        log.error("%s", self.broken)
        if store.on_lost is not None:
            store.on_lost(store)
