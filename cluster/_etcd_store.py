"""``EtcdStore``: every record in etcd, so that several nodes share one state.

The store operations are written once over a synchronous ``Tables`` interface
(runtime/_store_ops.py); etcd only offers asynchronous reads and compare-and-swap
transactions. So each node keeps a replica of the namespace in memory (``MemoryTables``),
loaded from a snapshot and kept current by a watch, and runs an operation against the
replica while recording what it touched. Once per loop turn the operations run so far
become one etcd transaction: for every key they touched, compare its revision with the one
the replica had, and if all still hold, write what they wrote. Their results are answered
only after etcd committed. A failed compare means another node changed a key first: the
replica is reloaded and the operations run again on the fresh state. While a transaction is
in flight, new operations wait for the next one.

Reads by key are linearizable (their compares ride in the transaction); searches and scans
read the replica, which lags etcd by the watch's delay.

If etcd cannot be reached the transaction is retried (with backoff) until ``retry_for``
runs out. An attempt whose reply was lost may still have gone through, so every transaction
also writes the store's marker key with a token for that attempt; the reload that follows
a lost reply (or any later failed compare) reads the marker and answers the attempt that
went through with its own results. etcd's ``--max-txn-ops`` (default 128) bounds a
transaction's compares and writes: a batch stops taking operations at ``max_ops``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from dawait.cluster._etcd import Compare, Etcd, EtcdError, KeyValue, Write
from dawait.core._errors import OwnershipLostError, StoreError
from dawait.core._promise import NO_TAGS, PromiseRecord, PromiseState, Value
from dawait.core._schedule import ScheduleRecord, schedule_from_row, schedule_row
from dawait.core._task import TaskRecord, TaskState, task_from_row, task_row
from dawait.runtime._clock import SystemClock
from dawait.runtime._memory_store import MemoryTables
from dawait.runtime._store import ACTING_FOR, PromiseSettled
from dawait.runtime._store_ops import (
    Done,
    TablesStore,
    answer,
    fail,
    op_acquire_task,
    run_op,
)

__all__ = ["ClusterView", "EtcdStore", "Listener", "Member"]

log = logging.getLogger("dawait.etcd")

R = TypeVar("R")

_CLOCK = SystemClock()


# -- records as JSON values ----------------------------------------------------------------


def _value(value: Value) -> list[Any]:
    return [value.data, None if value.headers is None else dict(value.headers)]


def _unvalue(raw: list[Any]) -> Value:
    return Value(data=raw[0], headers=raw[1])


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def encode_promise(r: PromiseRecord) -> bytes:
    return _dumps(
        {
            "id": r.id,
            "state": r.state.value,
            "param": _value(r.param),
            "value": _value(r.value),
            "timeout_at": r.timeout_at,
            "tags": dict(r.tags) if r.tags else None,
            "created_at": r.created_at,
            "settled_at": r.settled_at,
        }
    )


def decode_promise(raw: bytes) -> PromiseRecord:
    d = json.loads(raw)
    return PromiseRecord(
        id=d["id"],
        state=PromiseState(d["state"]),
        param=_unvalue(d["param"]),
        value=_unvalue(d["value"]),
        timeout_at=d["timeout_at"],
        tags=d["tags"] or NO_TAGS,
        created_at=d["created_at"],
        settled_at=d["settled_at"],
    )


def encode_task(t: TaskRecord) -> bytes:
    return _dumps(task_row(t))


def decode_task(raw: bytes) -> TaskRecord:
    return task_from_row(json.loads(raw))


def encode_schedule(s: ScheduleRecord) -> bytes:
    return _dumps(schedule_row(s))


def decode_schedule(raw: bytes) -> ScheduleRecord:
    return schedule_from_row(json.loads(raw))


class _Keys:
    """Where each record lives under the namespace's prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def promise(self, id: str) -> str:
        return f"{self.prefix}p/{id}"

    def task(self, id: str) -> str:
        return f"{self.prefix}t/{id}"

    def callback(self, promise_id: str, task_id: str) -> str:
        # Length-prefixed: ids may hold any character.
        return f"{self.prefix}c/{len(promise_id)}/{promise_id}{task_id}"

    def schedule(self, id: str) -> str:
        return f"{self.prefix}s/{id}"

    def member(self, node_id: str) -> str:
        return f"{self.prefix}n/{node_id}"

    def claim(self, task_id: str) -> str:
        return f"{self.prefix}o/{task_id}"

    @property
    def leader(self) -> str:
        return f"{self.prefix}leader"


# -- the cluster's own records: members, claims, the leader ---------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """A live node, as its membership record (under its lease) says."""

    node_id: str
    address: str
    """Where its HTTP API answers (``--advertise``)."""
    groups: tuple[str, ...]
    """The function groups it runs."""
    versions: dict[str, tuple[int, ...]]
    """The functions it runs (those registered in its app, in its groups), each with its
    registered versions."""
    pid: str
    """This incarnation of the node: what its tasks and claims carry."""
    started_at: int

    def encode(self) -> bytes:
        return _dumps(
            {
                "node_id": self.node_id,
                "address": self.address,
                "groups": list(self.groups),
                "versions": {f: list(v) for f, v in self.versions.items()},
                "pid": self.pid,
                "started_at": self.started_at,
            }
        )

    @property
    def functions(self) -> tuple[str, ...]:
        return tuple(sorted(self.versions))

    def serves(self, function: str, version: int | None) -> bool:
        """Whether this node runs ``function`` (at ``version``, when given)."""
        known = self.versions.get(function)
        return known is not None and (version is None or version in known)

    @classmethod
    def decode(cls, raw: bytes) -> Member:
        d = json.loads(raw)
        return cls(
            node_id=d["node_id"],
            address=d["address"],
            groups=tuple(d["groups"]),
            versions={f: tuple(v) for f, v in d["versions"].items()},
            pid=d["pid"],
            started_at=d["started_at"],
        )


@dataclass
class ClusterView:
    """Who is in the cluster, who owns which running invocation, who leads."""

    members: dict[str, Member] = field(default_factory=dict)
    claims: dict[str, str] = field(default_factory=dict)
    """Task id -> the pid (node incarnation) running it; only while the task is acquired."""
    leader: str | None = None
    """The leading node's id."""


class Listener(Protocol):
    """What a cluster node hears of changes other nodes made (through the watch)."""

    def promise_changed(self, old: PromiseRecord | None, new: PromiseRecord) -> None: ...
    def task_changed(self, task: TaskRecord) -> None: ...
    def schedules_changed(self) -> None: ...
    def members_changed(self) -> None: ...
    def claim_released(self, task_id: str) -> None: ...
    def reloaded(self) -> None: ...
    def lease_lost(self) -> None: ...


def apply_change(
    tables: MemoryTables,
    view: ClusterView,
    keys: _Keys,
    change: KeyValue,
    listener: Listener | None = None,
) -> None:
    """Bring the replica in line with one stored key (from a snapshot or the watch), and
    tell ``listener`` (the watch's changes only)."""
    kind, _, _rest = change.key[len(keys.prefix) :].partition("/")
    value = change.value
    if kind == "p" and value is not None:
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
    elif kind == "o":
        if value is None:
            view.claims.pop(_rest, None)
            if listener is not None:
                listener.claim_released(_rest)
        else:
            view.claims[_rest] = value.decode()
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


async def cancel_task(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again while it runs on.

    Python 3.11's ``asyncio.wait_for`` swallows a cancel that lands just as what it waits
    for completes (fixed in 3.12); aetcd waits that way while it sets up a watch, so one
    cancel could leave the watch running and its canceller waiting forever (seen here:
    CI hung in a reload).
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.cancelled() and task.exception() is not None:
        log.warning("%s ended with %r", task.get_name(), task.exception())


@dataclass(frozen=True, slots=True)
class _Fenced:
    """An operation an invocation's actor asked for: it needs that invocation's claim."""

    op: Callable[..., Any]
    fence: str

    def __call__(self, tables: Any, *args: object) -> Any:
        return self.op(tables, *args)


# -- one batch: operations run on the replica, recorded -----------------------------------


@dataclass
class _Batch:
    compares: dict[str, int] = field(default_factory=dict)
    """Every key touched, with its revision as the replica had it when first touched."""
    writes: dict[str, bytes | None] = field(default_factory=dict)
    leased: set[str] = field(default_factory=set)
    """Written keys attached to the store's lease (claims)."""
    done: list[Done] = field(default_factory=list)

    @property
    def size(self) -> int:
        return max(len(self.compares), len(self.writes))


class _Recorder:
    """``Tables`` over the replica that notes, in the open batch, each key read or written.

    Writes change the replica at once (later operations of the batch see them); if the
    batch's transaction fails, the replica is reloaded.
    """

    def __init__(self, store: EtcdStore) -> None:
        self.store = store
        self.t = store.replica
        self.keys = store.keys

    def _touch(self, key: str) -> None:
        compares = self.store.batch.compares
        if key not in compares:
            compares[key] = max(self.store.revisions.get(key, 0), 0)

    def _write(self, key: str, value: bytes | None, *, leased: bool = False) -> None:
        self._touch(key)
        self.store.batch.writes[key] = value
        if leased:
            self.store.batch.leased.add(key)
        else:
            self.store.batch.leased.discard(key)

    # promises

    def get_promise(self, id: str) -> PromiseRecord | None:
        self._touch(self.keys.promise(id))
        return self.t.get_promise(id)

    def insert_promise(self, record: PromiseRecord) -> bool:
        self._touch(self.keys.promise(record.id))
        if record.id in self.t.promises:
            return False
        self.put_promise(record, new=True)
        return True

    def put_promise(self, record: PromiseRecord, *, new: bool) -> None:
        self._write(self.keys.promise(record.id), encode_promise(record))
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
            self._touch(self.keys.promise(record.id))
        return due

    def next_timeout(self) -> int | None:
        return self.t.next_timeout()

    # tasks

    def get_task(self, id: str) -> TaskRecord | None:
        self._touch(self.keys.task(id))
        return self.t.get_task(id)

    def put_task(self, task: TaskRecord, *, new: bool) -> None:
        self._write(self.keys.task(task.id), encode_task(task))
        self.t.put_task(task, new=new)
        if self.store.member is not None:
            self._claim(task)

    def _claim(self, task: TaskRecord) -> None:
        """A claim lives exactly while its task is acquired: taken with the acquire (under
        this node's lease, so it ends with the node), dropped with the suspend or settle."""
        claims = self.store.view.claims
        key = self.keys.claim(task.id)
        if task.state is TaskState.ACQUIRED:
            if (
                task.pid is not None
                and task.pid == self.store.pid
                and claims.get(task.id) != task.pid
            ):
                self._write(key, task.pid.encode(), leased=True)
                claims[task.id] = task.pid
        elif task.id in claims:
            self._write(key, None)
            del claims[task.id]

    def runnable_tasks(self, after: str | None, limit: int) -> list[TaskRecord]:
        return self.t.runnable_tasks(after, limit)

    def invocation_promises(
        self, function: str | None, after: str | None, limit: int
    ) -> list[PromiseRecord]:
        return self.t.invocation_promises(function, after, limit)

    # callbacks

    def add_callback(self, promise_id: str, task_id: str) -> None:
        self._write(self.keys.callback(promise_id, task_id), _dumps([promise_id, task_id]))
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

    # schedules

    def get_schedule(self, id: str) -> ScheduleRecord | None:
        self._touch(self.keys.schedule(id))
        return self.t.get_schedule(id)

    def put_schedule(self, record: ScheduleRecord, *, new: bool) -> None:
        self._write(self.keys.schedule(record.id), encode_schedule(record))
        self.t.put_schedule(record, new=new)

    def delete_schedule(self, id: str) -> bool:
        key = self.keys.schedule(id)
        self._touch(key)
        if id not in self.t.schedules:
            return False
        self._write(key, None)
        return self.t.delete_schedule(id)

    def search_schedules(self, pattern: str, limit: int, after: str | None) -> list[ScheduleRecord]:
        return self.t.search_schedules(pattern, limit, after)

    def due_schedules(self, now: int, limit: int) -> list[ScheduleRecord]:
        due = self.t.due_schedules(now, limit)
        for record in due:
            self._touch(self.keys.schedule(record.id))
        return due

    def next_schedule_at(self) -> int | None:
        return self.t.next_schedule_at()


# -- the store ------------------------------------------------------------------------------


class EtcdStore(TablesStore):
    """Records in etcd under ``/dawait/{namespace}/``; see the module docstring."""

    def __init__(
        self,
        etcd: Etcd | str | Sequence[str],
        *,
        namespace: str = "default",
        max_ops: int = 120,
        retry_for: float = 30.0,
        owner: str | None = None,
        lease_ttl: int = 5,
        exclusive: bool = True,
        node_id: str | None = None,
        address: str = "",
        groups: Sequence[str] = ("default",),
        versions: dict[str, tuple[int, ...]] | None = None,
    ) -> None:
        """``node_id`` makes this a cluster node's store: the node's membership record and
        its claims live under the store's lease, and every store call an invocation's actor
        makes is fenced by that invocation's claim (``ACTING_FOR``)."""
        if not namespace or "/" in namespace:
            raise ValueError(f"etcd namespace {namespace!r}: must be non-empty, without '/'")
        self.etcd = etcd if isinstance(etcd, Etcd) else Etcd(etcd)
        self.namespace = namespace
        self.keys = _Keys(f"/dawait/{namespace}/")
        self.max_ops = max_ops
        self.retry_for = retry_for
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_ttl = lease_ttl
        self.exclusive = exclusive and node_id is None
        """Hold the namespace's lock (one node at a time). ``False`` lets several stores
        share a namespace with nothing but compare-and-swap between them (what cluster
        mode builds on; tests use it to exercise the compares)."""
        self.lock_key = f"{self.keys.prefix}lock"
        self.marker_key = f"{self.keys.prefix}x/{self.owner}"
        """Rewritten by every transaction of this store with that attempt's token (under
        its lease): after a reply is lost, a reload reads which attempt went through."""
        self._attempts = 0
        self.node_id = node_id
        self.address = address
        self.groups = tuple(groups)
        self.versions = dict(versions or {})
        """The functions this node runs, with their versions (its membership record)."""
        self.member: Member | None = None
        """This node's membership record, once joined (cluster mode)."""
        self.view = ClusterView()
        self.listener: Listener | None = None
        self._lease = 0
        self._lock_revision = 0
        self._keeper: asyncio.Task[None] | None = None
        self._broken: StoreError | None = None
        self.replica = MemoryTables()
        self.revisions: dict[str, int] = {}
        """Each key's mod revision as the replica has it; a key deleted since has its
        deletion's revision, negated (an older event for it must not bring it back)."""
        self.batch = _Batch()
        self._tables = _Recorder(self)
        self._waiting: list[tuple[Callable[..., Any], tuple[object, ...], asyncio.Future[Any]]] = []
        self._committing = False
        self._commit_scheduled = False
        self._held: list[KeyValue] = []
        """Watch events that arrived while a batch was open: applied once it is done."""
        self._watcher: asyncio.Task[None] | None = None
        self._reloader: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._open = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.transactions = 0
        """etcd transactions sent (operations per transaction shows the batching)."""
        self.lost_replies = 0
        """Transactions sent whose reply never came (each settled by the marker)."""
        self._dirty = False
        """A given-up batch's writes are in the replica: operations are refused until a
        reload replaces it."""
        self._unreachable: tuple[float, str] | None = None
        """Since when (monotonic) and why etcd has not answered; None while it does."""

    def __repr__(self) -> str:
        return f"EtcdStore({self.etcd!r}, namespace={self.namespace!r})"

    async def open(self) -> None:
        if self._open:
            return
        await self.etcd.connect()
        self._lease = await self.etcd.grant(self.lease_ttl)
        if self.node_id is not None:
            await self._join(self.node_id)
        elif self.exclusive:
            await self._lock()
        await self._reload()
        self._broken = None
        self._open = True
        self._keeper = asyncio.get_running_loop().create_task(
            self._keep_lease(), name=f"dawait-etcd-lease:{self.namespace}"
        )

    @property
    def pid(self) -> str | None:
        """This node incarnation's id (what its tasks and claims carry), in cluster mode."""
        return None if self.member is None else self.member.pid

    async def _join(self, node_id: str) -> None:
        """Put this node's membership record under the lease. A record left by an earlier
        run of the same node id (killed, lease not yet ended) is waited out."""
        key = self.keys.member(node_id)
        member = Member(
            node_id=node_id,
            address=self.address,
            groups=self.groups,
            versions=self.versions,
            pid=f"{node_id}:{self._lease:x}",
            started_at=_CLOCK.now(),
        )
        deadline = _CLOCK.monotonic() + self.lease_ttl + 2
        while True:
            joined, _revision = await self.etcd.commit(
                [Compare(key, 0)], [Write(key, member.encode(), self._lease)]
            )
            if joined:
                self.member = member
                return
            if _CLOCK.monotonic() > deadline:
                await self.etcd.revoke(self._lease)
                self._lease = 0
                raise StoreError(
                    f"{self!r}: node id {node_id!r} is in use by a live node (give each node "
                    "its own --node-id)"
                )
            await asyncio.sleep(0.25)
            # Nothing keeps this node's own lease alive before it joined, and waiting out
            # the old record (up to a TTL and more: etcd extends leases across its leader
            # elections, and a restored snapshot's leases start their TTL anew) could
            # outlast it.
            if not await self.etcd.keep_alive(self._lease):
                raise StoreError(f"{self!r}: this node's lease ended while it waited to join")

    async def rejoin(self) -> None:
        """After the lease was lost (a stall or partition past its TTL): a new lease, a new
        membership record and incarnation, the replica afresh. The caller has dropped every
        invocation it ran under the old one."""
        assert self.node_id is not None
        for task in (self._keeper, self._reloader):  # this reload replaces theirs
            if task is not None and task is not asyncio.current_task():
                await cancel_task(task)
        await self._drain()
        self._lease = await self.etcd.grant(self.lease_ttl)
        await self._join(self.node_id)
        await self._reload()
        self._broken = None
        self._keeper = asyncio.get_running_loop().create_task(
            self._keep_lease(), name=f"dawait-etcd-lease:{self.namespace}"
        )

    async def campaign(self) -> bool:
        """Become the leader if there is none: the leader key under this node's lease."""
        if self.member is None or self._broken is not None or not self._lease:
            return False  # never a leader key without a live lease: it would never expire
        key = self.keys.leader
        value = _dumps({"node_id": self.member.node_id, "pid": self.member.pid})
        won, _revision = await self.etcd.commit([Compare(key, 0)], [Write(key, value, self._lease)])
        return won

    async def _lock(self) -> None:
        """Hold the namespace: one node writes it at a time (until cluster mode places
        invocations on several), fenced by the lock key's revision in every transaction."""
        holder = _dumps({"owner": self.owner})
        taken, revision = await self.etcd.commit(
            [Compare(self.lock_key, 0)], [Write(self.lock_key, holder, self._lease)]
        )
        if not taken:
            await self.etcd.revoke(self._lease)
            self._lease = 0
            _revision, items = await self.etcd.snapshot(self.lock_key)
            current = json.loads(items[0].value or b"{}") if items else {}
            raise StoreError(
                f"{self!r}: the namespace is in use by {current.get('owner', 'another node')} "
                f"(one node per namespace; it frees within {self.lease_ttl} s of that node "
                "stopping)"
            )
        self._lock_revision = revision

    async def _keep_lease(self) -> None:
        """Renew the lease; once it may have expired, stop writing (another node may hold
        the namespace by now, and the transaction marker is gone)."""
        last = _CLOCK.monotonic()
        while self._open and self._broken is None:
            await asyncio.sleep(self.lease_ttl / 3)
            sent = _CLOCK.monotonic()  # the lease runs from when etcd got the renewal, at best
            try:
                # Short enough to try again within the TTL when one renewal gets no answer.
                left = await self.etcd.keep_alive(self._lease, timeout=self.lease_ttl / 3)
            except EtcdError as exc:
                log.warning("%r: %s", self, exc)
                self._failed(exc)
                left = -1
            else:
                self._unreachable = None
            now = _CLOCK.monotonic()
            if left > 0:
                last = sent
            elif left == 0 or now - last >= self.lease_ttl:
                self._lose_lock("its lease expired")
                return

    def _lock_lost(self) -> bool:
        """After a reload: whether this store's lock key (or membership record) is gone or
        another's."""
        if self.exclusive and self.revisions.get(self.lock_key) != self._lock_revision:
            self._lose_lock("its lock key changed or expired")
            return True
        if self.member is not None:
            current = self.view.members.get(self.member.node_id)
            if current is None or current.pid != self.member.pid:
                self._lose_lock("its membership record expired")
                return True
        return False

    def _failed(self, error: EtcdError) -> None:
        if self._unreachable is None:
            self._unreachable = (_CLOCK.monotonic(), str(error))

    def problem(self) -> str | None:
        """Why this store cannot take work now (etcd unreachable, lease lost), or None."""
        if self._unreachable is not None:
            since, error = self._unreachable
            return f"etcd unreachable for {_CLOCK.monotonic() - since:.0f} s ({error})"
        if self._broken is not None:
            return str(self._broken)
        return None

    def _lose_lock(self, why: str) -> None:
        if self._broken is not None:
            return
        if self.member is not None:
            self._broken = OwnershipLostError(
                f"{self!r}: node {self.member.node_id} lost its lease ({why}); it writes "
                "nothing more under it and drops what it was running"
            )
        else:
            self._broken = StoreError(
                f"{self!r}: lost the namespace ({why}); this node writes nothing more until "
                "the store is opened again"
            )
        log.error("%s", self._broken)
        if self.listener is not None:
            self.listener.lease_lost()

    async def close(self) -> None:
        if not self._open:
            return
        await self._drain()
        self._open = False
        for task in (self._keeper, self._reloader):
            if task is not None:
                await cancel_task(task)
        # None of these may hang a shutdown on an unreachable etcd.
        try:
            if self._lease and self._broken is None:
                # Free the namespace now rather than after the TTL.
                await asyncio.wait_for(self.etcd.revoke(self._lease), 2)
        except (EtcdError, TimeoutError) as exc:
            log.warning("%r: cannot free the namespace (it frees with its lease): %r", self, exc)
        self._lease = 0
        for step in (self._stop_watch, self.etcd.close):
            try:
                await asyncio.wait_for(step(), 2)
            except TimeoutError:
                log.warning("%r: %s did not finish in 2 s", self, step.__name__)

    async def _drain(self) -> None:
        while not self._idle.is_set() or self._waiting or self.batch.done:
            await self._idle.wait()
            await asyncio.sleep(0)

    # -- replica ------------------------------------------------------------------------

    async def _reload(self) -> dict[str, bytes | None]:
        """Load the namespace afresh and watch it from there; what each key holds."""
        await self._stop_watch()
        revision, items = await self.etcd.snapshot(self.keys.prefix)
        replica = MemoryTables()
        view = ClusterView()
        revisions: dict[str, int] = {}
        for item in items:
            apply_change(replica, view, self.keys, item)
            revisions[item.key] = item.mod_revision
        self.replica = replica
        self.view = view
        self.revisions = revisions
        self._dirty = False
        self._tables = _Recorder(self)
        self._held.clear()
        if self.listener is not None:
            self.listener.reloaded()
        self._watcher = asyncio.get_running_loop().create_task(
            self._watch(revision + 1), name=f"dawait-etcd-watch:{self.namespace}"
        )
        return {item.key: item.value for item in items}

    async def _stop_watch(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await cancel_task(watcher)

    async def _watch(self, start: int) -> None:
        try:
            async for change in self.etcd.watch(self.keys.prefix, start):
                if self._committing or self.batch.done:
                    self._held.append(change)
                else:
                    self._apply(change)
        except Exception as exc:
            if isinstance(exc, EtcdError):
                log.warning("%r: %s; reloading", self, exc)
            else:
                log.exception("%r: the watch failed; reloading", self)
            if self._reloader is None or self._reloader.done():
                self._reloader = asyncio.get_running_loop().create_task(
                    self._reload_later(), name=f"dawait-etcd-reload:{self.namespace}"
                )

    def _reloading(self) -> StoreError:
        return StoreError(f"{self!r}: reloading from etcd after a failed transaction")

    def _reload_soon(self) -> None:
        """A batch was given up: its writes are in the replica but not in etcd. Refuse
        every operation until the replica is loaded afresh."""
        self._dirty = True
        if self._reloader is None or self._reloader.done():
            self._reloader = asyncio.get_running_loop().create_task(
                self._reload_later(), name=f"dawait-etcd-reload:{self.namespace}"
            )

    async def _reload_later(self) -> None:
        """The watch broke (etcd unreachable, history compacted): load afresh once no
        batch is in flight (a batch reloads by itself when it needs to)."""
        delay = 0.1
        while self._open:
            await self._idle.wait()
            self._committing = True
            try:
                await self._reload()
            except EtcdError as exc:
                log.warning("%r: cannot reload: %s", self, exc)
                self._failed(exc)
            else:
                self._unreachable = None
                self._dirty = False
                return
            finally:
                self._committing = False
                self._after_batch()
            await asyncio.sleep(delay)  # back off while etcd is unreachable
            delay = min(delay * 2, 2.0)

    def _apply(self, change: KeyValue) -> None:
        if change.mod_revision <= abs(self.revisions.get(change.key, 0)):
            return  # our own write, applied when its transaction succeeded
        apply_change(self.replica, self.view, self.keys, change, self.listener)
        deleted = change.value is None
        self.revisions[change.key] = -change.mod_revision if deleted else change.mod_revision

    # -- operations -----------------------------------------------------------------------

    async def _transact(self, op: Callable[..., R], *args: object) -> R:
        if not self._open:
            raise StoreError(f"{self!r} is not open")
        if self._broken is not None:
            raise self._broken
        if self._dirty:
            raise self._reloading()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        if self.member is not None:
            fence = ACTING_FOR.get()
            if fence is not None:
                op = _Fenced(op, fence)
        if self._committing or self.batch.size >= self.max_ops:
            self._waiting.append((op, args, future))
        else:
            self._run(op, args, future)
        return await future

    def _run(
        self, op: Callable[..., Any], args: tuple[object, ...], future: asyncio.Future[Any]
    ) -> None:
        """Run one operation on the replica into the open batch, committed this loop turn."""
        self._record(op, args, future)
        if not self._commit_scheduled:
            self._commit_scheduled = True
            self._idle.clear()
            asyncio.get_running_loop().call_soon(self._commit)

    def _commit(self) -> None:
        self._commit_scheduled = False
        batch, self.batch = self.batch, _Batch()
        self._committing = True
        # Kept: the loop holds tasks weakly. close() waits for it through _drain().
        self._sender = asyncio.get_running_loop().create_task(
            self._send(batch), name=f"dawait-etcd-commit:{self.namespace}"
        )

    async def _send(self, batch: _Batch) -> None:
        try:
            await self._send_until_done(batch)
        finally:
            self._committing = False
            self._after_batch()

    async def _send_until_done(self, batch: _Batch) -> None:
        deadline = _CLOCK.monotonic() + self.retry_for
        delay = 0.05
        unsure: dict[bytes, _Batch] = {}
        """Attempts whose reply was lost, by marker token: any of them may yet go through
        (etcd can apply a transaction after its client gave up). At most one can: they all
        compare the keys they write."""
        stale = False
        while True:
            if self._broken is not None:
                fail(batch.done, self._broken)
                return
            if stale:
                # After a failed compare or a lost reply: read what etcd holds, then see.
                stored = await self._reload_quietly()
                if stored is None:
                    if _CLOCK.monotonic() > deadline:
                        fail(batch.done, StoreError(f"{self!r}: cannot reach etcd"))
                        self._reload_soon()
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                if self._lock_lost():
                    continue
                applied = unsure.get(stored.get(self.marker_key) or b"")
                if applied is not None:
                    self._succeeded(applied, None)
                    return
                batch = self._rerun(batch)
                stale = False
            self._attempts += 1
            token = f"{self._attempts}".encode()
            compares = [Compare(k, r) for k, r in batch.compares.items()]
            if self.exclusive:
                compares.append(Compare(self.lock_key, self._lock_revision))
            writes = [
                Write(k, v, self._lease if k in batch.leased else 0)
                for k, v in batch.writes.items()
            ]
            if writes:
                writes.append(Write(self.marker_key, token, self._lease))
            self.transactions += 1
            try:
                succeeded, revision = await self.etcd.commit(compares, writes)
                self._unreachable = None
            except EtcdError as exc:
                self._failed(exc)
                if _CLOCK.monotonic() > deadline:
                    fail(batch.done, StoreError(f"{self!r}: {exc}"))
                    self._reload_soon()
                    return
                log.warning("%r: %s; retrying", self, exc)
                self.lost_replies += 1
                if writes:
                    unsure[token] = batch
                stale = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if succeeded:
                self._succeeded(batch, revision)
                return
            # Another node (or a lost attempt of ours) changed something this batch read:
            # run it again on fresh state.
            stale = True

    async def _reload_quietly(self) -> dict[str, bytes | None] | None:
        try:
            return await self._reload()
        except EtcdError as exc:
            log.warning("%r: cannot reload: %s", self, exc)
            return None

    def _rerun(self, batch: _Batch) -> _Batch:
        """The batch's operations run again, in order, on the (reloaded) replica."""
        self.batch = _Batch()
        for future, _ok, _result, op, args in batch.done:
            if not future.done():
                self._record(op, args, future)
        rerun, self.batch = self.batch, _Batch()
        return rerun

    def _record(
        self, op: Callable[..., Any], args: tuple[object, ...], future: asyncio.Future[Any]
    ) -> None:
        """Run one operation on the replica, noting what it touched in the open batch."""
        if isinstance(op, _Fenced):
            refused = self._fence(op, args)
            if refused is not None:
                self.batch.done.append((future, False, refused, op, args))
                return
        self.batch.done.append(
            run_op(self._tables, op, args, future, lambda exc: StoreError(f"{self!r}: {exc}"))
        )

    def _fence(self, op: _Fenced, args: tuple[object, ...]) -> OwnershipLostError | None:
        """An actor's call goes through only while this node holds the invocation's claim
        (compared in the transaction); the actor's first acquire may take a free claim."""
        holder = self.view.claims.get(op.fence)
        taking = op.op is op_acquire_task and args[0] == op.fence and holder is None
        if holder != self.pid and not taking:
            owner = "nobody" if holder is None else holder.partition(":")[0]
            return OwnershipLostError(
                f"invocation {op.fence}: this node ({self.pid}) no longer owns it (owned by "
                f"{owner}); it drops it"
            )
        self._tables._touch(self.keys.claim(op.fence))
        return None

    def _succeeded(self, batch: _Batch, revision: int | None) -> None:
        if revision is not None:
            for key, value in batch.writes.items():
                self.revisions[key] = revision if value is not None else -revision
        answer(batch.done)

    def _after_batch(self) -> None:
        held, self._held = self._held, []
        for change in held:
            try:
                self._apply(change)
            except Exception:  # one bad record must not stall every waiting operation
                log.exception("%r: cannot apply the change of %s", self, change.key)
        waiting, self._waiting = self._waiting, []
        if self._dirty:
            refused = self._reloading()
            for _op, _args, future in waiting:
                if not future.done():
                    future.set_exception(refused)
            waiting = []
        for op, args, future in waiting:
            if self.batch.size >= self.max_ops:
                self._waiting.append((op, args, future))
            else:
                self._run(op, args, future)
        if not self._commit_scheduled and not self._committing:
            self._idle.set()

    # -- scans bounded by what one transaction can hold ------------------------------------

    async def expire_promises(self, *, now: int, limit: int) -> Sequence[PromiseSettled]:
        return await super().expire_promises(now=now, limit=min(limit, 16))
