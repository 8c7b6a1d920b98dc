"""``EtcdStore``: every record in etcd, so that several nodes share one state.

The store operations are written once over a synchronous ``Tables`` interface
(runtime/_store_ops.py); etcd only offers asynchronous reads and compare-and-swap
transactions. So each node keeps a replica of the namespace in memory, and runs an
operation against the replica while recording what it touched; the operations of a loop
turn become one etcd transaction that commits only if nothing they read changed meanwhile.

The store is the composition of one object per job, each in its own module:

- ``_etcd_records``: the key layout and the records' JSON encoding;
- ``_etcd_membership`` (``membership``): the lease, and under it the namespace's lock or
  this node's membership record; the leader campaign;
- ``_etcd_replica`` (``mirror``): the replica, loaded from a snapshot and kept current by a
  watch, and what a cluster node hears of it (``Listener``);
- ``_etcd_recorder`` and ``_etcd_batches`` (``batches``): operations run on the replica
  into batches, sent as transactions, retried, and answered after a lost reply.

Reads by key are linearizable (their compares ride in the transaction); searches and scans
read the replica, which lags etcd by the watch's delay.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from dawait.cluster._etcd import Etcd, EtcdError, cancel_task
from dawait.cluster._etcd_batches import Batches
from dawait.cluster._etcd_membership import Membership
from dawait.cluster._etcd_records import ClusterView, Keys, Member
from dawait.cluster._etcd_replica import Listener, Replica
from dawait.runtime._clock import Clock, SystemClock
from dawait.runtime._deletion import DELETE_BATCH
from dawait.runtime._store_ops import TablesStore

if TYPE_CHECKING:
    from dawait.cluster._etcd_recorder import Batch
    from dawait.cluster._joint import Joint
    from dawait.runtime._memory_store import MemoryTables
    from dawait.runtime._store import PromiseSettled

__all__ = ["ETCD_MAX_PAYLOAD", "EtcdStore"]

log = logging.getLogger("dawait.etcd")

ETCD_MAX_PAYLOAD = 256 * 1024
"""Bytes of JSON per payload on etcd. A record holds two (its param and its value), each
escaped at most to twice its size in the record's JSON: 1 MiB and a little, which a batch
(``BATCH_BYTES``) or a joint transaction (``MAX_BYTES``) packs under etcd's default
``--max-request-bytes``, 1.5 MiB."""

R = TypeVar("R")


class EtcdStore(TablesStore):
    """Records in etcd under ``/dawait/{namespace}/``; see the module docstring."""

    sweep_at_once = False
    lists_from_etcd = False
    """Whether listings read the creation index in etcd (``o/``, cluster/_listing.py)
    rather than the replica."""
    max_payload = payload_ceiling = ETCD_MAX_PAYLOAD

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
        clock: Clock | None = None,
        prefix: str | None = None,
    ) -> None:
        """``node_id`` makes this a cluster node's namespace store: the node's membership
        record lives under the store's lease (its invocations live in partitions,
        cluster/_partition_store.py). ``clock`` times the
        retries, backoffs and lease renewals (the system clock by default). ``prefix``
        puts the records elsewhere than ``/dawait/{namespace}/`` (a cluster's partitions,
        its namespace records)."""
        if not namespace or "/" in namespace:
            raise ValueError(f"etcd namespace {namespace!r}: must be non-empty, without '/'")
        self.etcd = etcd if isinstance(etcd, Etcd) else Etcd(etcd)
        self.namespace = namespace
        self.keys = Keys(f"/dawait/{namespace}/" if prefix is None else prefix)
        self.max_ops = max_ops
        self.retry_for = retry_for
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_ttl = lease_ttl
        self.clock: Clock = SystemClock() if clock is None else clock
        self.exclusive = exclusive and node_id is None
        """Hold the namespace's lock (one node at a time). ``False`` lets several stores
        share a namespace with nothing but compare-and-swap between them (what cluster
        mode builds on; tests use it to exercise the compares)."""
        self.lock_key = self.keys.lock
        self.marker_key = self.keys.marker(self.owner)
        """Rewritten by every transaction of this store with that attempt's token (under
        its lease): after a reply is lost, a reload reads which attempt went through."""
        self.node_id = node_id
        self.address = address
        self.groups = tuple(groups)
        self.versions = dict(versions or {})
        """The functions this node runs, with their versions (its membership record)."""
        self.listener: Listener | None = None
        self.joint: Joint | None = None
        """Where this store's transactions join others' of the same loop turn (a cluster
        node's partitions: cluster/_joint.py); None: each is sent alone."""
        self.is_open = False
        self._unreachable: tuple[float, str] | None = None
        """Since when (monotonic) and why etcd has not answered; None while it does."""
        self.membership = Membership(self)
        self.mirror = Replica(self)
        self.batches = Batches(self)

    def __repr__(self) -> str:
        return f"EtcdStore({self.etcd!r}, namespace={self.namespace!r})"

    # -- what the others read of the parts -----------------------------------------------

    @property
    def replica(self) -> MemoryTables:
        """The records as this node's replica holds them."""
        return self.mirror.tables

    @property
    def view(self) -> ClusterView:
        """The cluster's records (members, leader) as the replica holds them."""
        return self.mirror.view

    @property
    def member(self) -> Member | None:
        """This node's membership record, once joined (cluster mode)."""
        return self.membership.member

    @property
    def pid(self) -> str | None:
        """This node incarnation's id (what its tasks carry), in cluster mode."""
        return self.membership.pid

    @property
    def transactions(self) -> int:
        """etcd transactions sent (operations per transaction shows the batching)."""
        return self.batches.transactions

    @property
    def lost_replies(self) -> int:
        """Transactions sent whose reply never came (each settled by the marker)."""
        return self.batches.lost_replies

    @property
    def _lease(self) -> int:
        return self.membership.lease

    @property
    def _watcher(self) -> asyncio.Task[None] | None:
        return self.mirror.watcher

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        if self.is_open:
            return
        await self.etcd.connect()
        await self.membership.take()
        await self.mirror.reload()
        self.membership.broken = None
        self.is_open = True
        self.membership.keep()

    async def rejoin(self) -> None:
        """After the lease was lost (a stall or partition past its TTL): a new lease, a new
        membership record and incarnation, the replica afresh. The caller has dropped every
        invocation it ran under the old one."""
        assert self.node_id is not None
        # This reload replaces theirs.
        for task in (self.membership.keeper, self.batches.reloader):
            if task is not None and task is not asyncio.current_task():
                await cancel_task(task)
        await self.batches.drain()
        await self.membership.take()
        await self.mirror.reload()
        self.membership.broken = None
        self.membership.keep()

    async def campaign(self) -> bool:
        """Become the leader if there is none: the leader key under this node's lease."""
        return await self.membership.campaign()

    async def close(self) -> None:
        if not self.is_open:
            return
        await self.batches.drain()
        self.is_open = False
        for task in (self.membership.keeper, self.batches.reloader):
            if task is not None:
                await cancel_task(task)
        # None of these may hang a shutdown on an unreachable etcd.
        await self.membership.release()
        for step in (self.mirror.stop_watch, self.etcd.close):
            try:
                await asyncio.wait_for(step(), 2)
            except TimeoutError:
                log.warning("%r: %s did not finish in 2 s", self, step.__name__)

    # -- whether etcd answers -------------------------------------------------------------

    def etcd_failed(self, error: EtcdError) -> None:
        """etcd did not answer (or refused): noted for ``problem`` until it answers."""
        if self._unreachable is None:
            self._unreachable = (self.clock.monotonic(), str(error))

    def etcd_answered(self) -> None:
        self._unreachable = None

    def problem(self) -> str | None:
        """Why this store cannot take work now (etcd unreachable, lease lost), or None."""
        if self._unreachable is not None:
            since, error = self._unreachable
            return f"etcd unreachable for {self.clock.monotonic() - since:.0f} s ({error})"
        if self.membership.broken is not None:
            return str(self.membership.broken)
        return None

    # -- operations -----------------------------------------------------------------------

    def committed(self, batch: Batch) -> None:
        """``batch`` committed (its revisions are in the replica)."""
        return None

    def deletion_keys(self, id: str) -> int:
        """Keys deleting (up to ``DELETE_BATCH`` calls of) ``id``'s tree may touch: two per
        call and a few of the root's (callbacks aside: a settled tree has none left)."""
        return 2 * DELETE_BATCH + 8

    def deadline_written(self, at: int) -> None:
        """A batch writes a retention deadline ``at`` (the replica indexes it here)."""
        return None

    def marker_token(self, attempt: int) -> bytes:
        """What this store's transaction marker holds after attempt number ``attempt``."""
        return f"{attempt}".encode()

    async def _transact(self, op: Callable[..., R], *args: object) -> R:
        return await self.batches.transact(op, *args)

    # Scans bounded by what one transaction can hold.

    async def expire_promises(self, *, now: int, limit: int) -> Sequence[PromiseSettled]:
        return await super().expire_promises(now=now, limit=min(limit, 16))
