"""A cluster node: an app's engine on the partitions of a namespace it owns; it is the
engine's ``Ownership`` (runtime/_ownership.py) and the owner of its ``PartitionedStore``.

What it holds in etcd, under its own lease (``ns``: an ``EtcdStore`` over the namespace
records ``/dawait/{namespace}/N/``, replicated on every node: small, bounded by the number
of nodes and schedules): its membership record, the leader key when it leads, and the owner
record of each partition it owns (cluster/_partition_store.py).

* **Ownership.** Every node computes, from the membership records, which node should own
  each partition (core/_partitions.py: rendezvous over the nodes eligible for its family).
  It hands over the partitions it should no longer own (its actors there stop, the owner
  record goes) and takes the free ones it should own: one range read loads a partition,
  then its runnable invocations resume here. A dead node's owner records end with its
  lease; the others see its membership record go and take its partitions.
* **Placement** is ownership: an invocation runs on the owner of its partition.
* **Timers** of a partition fire on its owner; the **leader** (one node, the leader key under
  its lease) fires the schedules.
* **Between partitions** a node asks the owner (cluster/_peer.py, ``ask``); a settled promise
  that a task of another partition awaits goes out through the partition's outbox
  (``deliver_soon``) until the task's owner acknowledges it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from dawait.cluster._clock_offset import DEFAULT_MAX_OFFSET, ClockWatch
from dawait.cluster._etcd import Compare, EtcdError, Write, cancel_task
from dawait.cluster._etcd_records import LAYOUT, Member, dumps, partition_prefix
from dawait.cluster._etcd_store import EtcdStore
from dawait.cluster._joint import Joint
from dawait.cluster._partition_store import PartitionStore
from dawait.cluster._peer import PeerServer
from dawait.cluster._peering import OWNER_WAIT, Peering
from dawait.cluster._router import PartitionedStore
from dawait.core._errors import StoreError
from dawait.core._param import call_target
from dawait.core._partitions import (
    DEFAULT_PARTITIONS,
    FREE,
    Partition,
    check_partition_count,
    eligible,
    owner_of,
    partition_index,
)
from dawait.core._promise import PromiseRecord
from dawait.core._task import TaskRecord, TaskState
from dawait.runtime._store import ACTING_FOR, CreatePromise

if TYPE_CHECKING:
    from dawait.runtime._engine import Engine

__all__ = ["ClusterNode", "LayoutError"]

log = logging.getLogger("dawait.cluster")

R = TypeVar("R")

TAKE_PARALLEL = 16
"""Partitions taken at once (each is two etcd requests and a range read)."""


class LayoutError(StoreError):
    """The namespace in etcd is not laid out as this node expects."""


class ClusterNode:
    """Joins ``engine`` to the cluster whose namespace store is ``ns``."""

    def __init__(
        self,
        engine: Engine,
        ns: EtcdStore,
        *,
        partitions: int | None = None,
        compact_every: int = 300,
        max_offset: float = DEFAULT_MAX_OFFSET,
    ) -> None:
        if ns.node_id is None:
            raise ValueError(f"{ns!r} has no node id: it is not a cluster node's store")
        self.engine = engine
        self.ns = ns
        self.node_id = ns.node_id
        self.namespace = ns.namespace
        self.requested = None if partitions is None else check_partition_count(partitions)
        self.count = self.requested or DEFAULT_PARTITIONS
        """The namespace's partition count (from its meta record, once open)."""
        ns.listener = self
        self.leading = asyncio.Event()
        """Set while this node leads: it fires the schedules."""
        self.timers = asyncio.Event()
        """Set while this node is a member: it fires the timers of its partitions."""
        self.owned: dict[Partition, PartitionStore] = {}
        self.peering = Peering(self)
        self.calls: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {}
        """Peer calls the node layer answers (the Resonate protocol's)."""
        self.clock_watch = ClockWatch(self, max_offset)
        """This node's measured clock offset from its peers (it stands aside past the bound)."""
        self.joint = Joint(ns.etcd)
        self.router = PartitionedStore(self)
        engine.use_store(self.router)
        engine.use_ownership(self)
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.stopped = False
        self._taken = asyncio.Event()
        self._server: PeerServer | None = None
        self.compact_every = compact_every
        """Seconds of etcd history the leader keeps (0: it never compacts)."""
        self._seen: tuple[float, int] | None = None
        """(when, etcd's revision then): compacted to once ``compact_every`` has passed."""

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Join (the namespace store), check the layout, take this node's partitions."""
        if not self.ns.address:
            self._server = PeerServer(self.peering.answer)
            self.ns.address = await self._server.start()
        await self.ns.open()
        try:
            await self._check_layout()
        except BaseException:
            await self.ns.close()
            raise
        # A node joining with its clock off stands aside before it takes anything (and so
        # before it records a deadline); a lone node has no one to measure against.
        try:
            await self.clock_watch.measure()
        except Exception as exc:
            log.debug("node %s: cannot measure its clock offset yet: %r", self.node_id, exc)
        if self.clock_watch.out_of_bound is None:
            self.timers.set()
            await self.rebalance()

    async def close(self) -> None:
        """Hand every partition over, then leave (the lease revoked)."""
        self.stopped = True
        for task in list(self._tasks):
            await cancel_task(task)
        self.leading.clear()
        self.timers.clear()
        for partition in list(self.owned):
            await self._release(partition, drop=False)
        await self.peering.peers.close()
        await self.ns.close()
        if self._server is not None:
            await self._server.stop()
            self._server = None

    def start(self) -> None:
        self.stopped = False
        self.spawn(self._run(), "dawait-cluster")
        self.spawn(self.clock_watch.run(), "dawait-clock-offset")
        for store in self.open_partitions():
            self.peering.deliver_soon(store)

    async def stop(self) -> None:
        self.stopped = True
        for task in list(self._tasks):
            await cancel_task(task)
        self.leading.clear()

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "node %s: %s failed", self.node_id, task.get_name(), exc_info=task.exception()
            )

    async def _check_layout(self) -> None:
        """The namespace's meta record: made with this node's partition count if there is
        none; else its count must be this node's (when given), and its layout this code's."""
        etcd, prefix = self.ns.etcd, f"/dawait/{self.namespace}/"
        key = self.ns.keys.prefix + "meta"
        for _attempt in range(3):
            _revision, (meta,) = await etcd.read([key])
            if meta is not None and meta.value is not None:
                break
            old = [k for k in ("p/", "t/", "n/") if (await etcd.page(prefix + k, prefix + k, 1))[0]]
            if old:
                raise LayoutError(
                    f"etcd namespace {self.namespace!r} holds records of the unpartitioned "
                    f"layout 1 (under {prefix}{old[0]}); this node reads layout {LAYOUT}. "
                    f"Move them with `dawait migrate --etcd ENDPOINTS --namespace "
                    f"{self.namespace}` while no node runs, or use another namespace"
                )
            value = dumps({"layout": LAYOUT, "partitions": self.count})
            made, _revision = await etcd.commit([Compare(key, 0)], [Write(key, value)])
            if made:
                log.info("namespace %s: %d partitions", self.namespace, self.count)
                return
        else:
            raise LayoutError(f"etcd namespace {self.namespace!r}: cannot read its meta record")
        d = json.loads(meta.value)
        if d.get("layout") != LAYOUT:
            raise LayoutError(
                f"etcd namespace {self.namespace!r} has layout {d.get('layout')!r}; this node "
                f"reads layout {LAYOUT}"
            )
        count = int(d["partitions"])
        if self.requested is not None and self.requested != count:
            raise LayoutError(
                f"etcd namespace {self.namespace!r} has {count} partitions; this node was "
                f"started with {self.requested} (--partitions): a namespace's count is fixed "
                f"when it is made, so start it with {count}, or with none"
            )
        self.count = count

    # -- who owns what ----------------------------------------------------------------------

    @property
    def members(self) -> list[Member]:
        return sorted(self.ns.view.members.values(), key=lambda m: m.node_id)

    @property
    def leader(self) -> str | None:
        return self.ns.view.leader

    def problem(self) -> str | None:
        """Why this node cannot take work now (etcd unreachable, lease lost, its clock
        out of bound), or None."""
        if self.clock_watch.out_of_bound is not None:
            return self.clock_watch.out_of_bound
        for store in [self.ns, *self.owned.values()]:
            problem = store.problem()
            if problem is not None:
                return problem
        return None

    def group_of(self, function: str | None) -> str:
        """The group of ``function`` (as the app registers it; ``default`` if it does not)."""
        return self.engine.registry.group_of(function)

    def families(self) -> list[str]:
        """The families this node may own partitions of: its groups, and the free one."""
        return [*sorted(self.ns.groups), FREE]

    def all_families(self) -> list[str]:
        """Every family an id may be in."""
        groups = {g for m in self.ns.view.members.values() for g in m.groups}
        groups |= self.engine.registry.groups() | set(self.ns.groups)
        return [*sorted(groups), FREE]

    def every_partition(self) -> list[Partition]:
        return [Partition(f, i) for f in self.all_families() for i in range(self.count)]

    def candidates(self, family: str) -> list[str]:
        """The live nodes eligible to own the partitions of ``family``."""
        members = self.ns.view.members.values()
        if family == FREE:
            return sorted(m.node_id for m in members)
        offers = {
            m.node_id: frozenset(
                (f, v) for f, vs in m.versions.items() if self.group_of(f) == family for v in vs
            )
            for m in members
            if family in m.groups
        }
        return eligible(offers)

    def owners(self) -> dict[str, list[str | None]]:
        """Family -> the node that should own each of its partitions (what ``GET /nodes``
        shows a placement-aware client)."""
        table: dict[str, list[str | None]] = {}
        for family in self.all_families():
            candidates = self.candidates(family)
            table[family] = [owner_of(Partition(family, i), candidates) for i in range(self.count)]
        return table

    def function_groups(self) -> dict[str, str]:
        return {name: self.group_of(name) for name in self.engine.registry.names()}

    def owner_id(self, partition: Partition) -> str | None:
        return owner_of(partition, self.candidates(partition.family))

    def desired(self) -> set[Partition]:
        wanted: set[Partition] = set()
        for family in self.families():
            candidates = self.candidates(family)
            if self.node_id not in candidates:
                continue
            for index in range(self.count):
                partition = Partition(family, index)
                if owner_of(partition, candidates) == self.node_id:
                    wanted.add(partition)
        return wanted

    @property
    def balanced(self) -> bool:
        """Whether this node owns exactly the partitions it should (no move under way)."""
        return set(self.owned) == self.desired()

    def partition_of_invocation(self, request: CreatePromise) -> Partition:
        """An invocation's partition: its function's group's; the free family's when an
        SDK's worker runs it (any node may own it: none runs its code)."""
        index = partition_index(request.id, self.count)
        workers = self.engine.workers
        if workers is not None and workers.takes(request.tags, request.param.data):
            return Partition(FREE, index)
        function, _version = call_target(request.param.data)
        return Partition(self.group_of(function), index)

    def open_partitions(self) -> list[PartitionStore]:
        return [s for s in self.owned.values() if s.is_open and s.membership.broken is None]

    def holding_task(self, id: str) -> PartitionStore | None:
        index = partition_index(id, self.count)
        for family in self.families():
            store = self.owned.get(Partition(family, index))
            if store is not None and id in store.replica.tasks:
                return store
        return None

    def holding_promise(self, id: str) -> PartitionStore | None:
        index = partition_index(id, self.count)
        for family in self.families():
            store = self.owned.get(Partition(family, index))
            if store is not None and id in store.replica.promises:
                return store
        return None

    async def owned_or_none(self, partition: Partition) -> PartitionStore | None:
        """This node's store of ``partition`` if it owns it (waiting a little if it should
        and is taking it); None if another node should."""
        store = self.owned.get(partition)
        if store is not None and store.is_open:
            return store
        if self.owner_id(partition) != self.node_id:
            return None
        deadline = self.engine.clock.monotonic() + OWNER_WAIT
        while self.engine.clock.monotonic() < deadline:
            self._changed.set()
            self._taken.clear()
            taken = asyncio.ensure_future(self._taken.wait())
            try:
                await asyncio.wait({taken}, timeout=0.1)
            finally:
                taken.cancel()
            store = self.owned.get(partition)
            if store is not None and store.is_open:
                return store
            if self.owner_id(partition) != self.node_id:
                return None
        raise StoreError(f"partition {partition}: this node has not taken it yet; try again")

    # -- the engine's Ownership -------------------------------------------------------------

    def runs_here(self, id: str, function: str | None, version: int | None = None) -> bool:
        if function is not None:
            partition = Partition(self.group_of(function), partition_index(id, self.count))
            store = self.owned.get(partition)
            return store is not None and store.is_open and store.membership.broken is None
        store = self.holding_task(id)
        return store is not None and store.is_open and store.membership.broken is None

    def still_owns(self, id: str) -> bool:
        store = self.holding_task(id)
        return store is not None and store.is_open and store.membership.broken is None

    def awaiting(self, task_id: str, promise_id: str) -> None:
        self.peering.awaiting(task_id, promise_id)

    def watch(self, promise_id: str) -> None:
        self.peering.watch(promise_id)

    def settled(self, record: PromiseRecord) -> None:
        self.peering.settled(record)

    # -- taking and handing over ------------------------------------------------------------

    async def rebalance(self) -> int:
        """Hand over what this node should no longer own, take what it should; how many it
        should own and could not take yet."""
        if self.ns.member is None or self.ns.membership.broken is not None:
            return 0
        desired = self.desired()
        for partition in [p for p in self.owned if p not in desired]:
            await self._release(partition, drop=True)
        missing = [p for p in sorted(desired) if p not in self.owned]
        limit = asyncio.Semaphore(TAKE_PARALLEL)

        async def take(partition: Partition) -> bool:
            async with limit:
                return await self._take(partition)

        taken = await asyncio.gather(*(take(p) for p in missing))
        if any(taken):
            log.info(
                "node %s owns %d partitions (took %d)", self.node_id, len(self.owned), sum(taken)
            )
        return taken.count(False)

    async def _take(self, partition: Partition) -> bool:
        store = PartitionStore(
            self.ns.etcd,
            namespace=self.namespace,
            partition=partition,
            node=self.ns,
            on_lost=self._lost,
            retry_for=self.ns.retry_for,
        )
        store.metrics = self.router.metrics
        store.joint = self.joint
        store.elsewhere = self._elsewhere_of(partition)
        try:
            if not await store.take():
                return False
        except EtcdError as exc:
            log.warning("node %s: cannot take %s yet: %s", self.node_id, partition, exc)
            return False
        self.owned[partition] = store
        self._taken.set()
        if self.engine.running:
            self._resume(store)
        return True

    def _elsewhere_of(self, partition: Partition) -> Callable[[str], list[str]]:
        """For a new id of ``partition``: the keys its promise would have in the other
        families (an id is one invocation or promise in the whole namespace)."""

        def elsewhere(id: str) -> list[str]:
            return [
                f"{partition_prefix(self.namespace, Partition(family, partition.index))}p/{id}"
                for family in self.all_families()
                if family != partition.family
            ]

        return elsewhere

    def _resume(self, store: PartitionStore) -> None:
        """A partition was just taken: run what it has runnable, deliver its outbox."""
        for task in list(store.replica.tasks.values()):
            if task.state in (TaskState.PENDING, TaskState.ACQUIRED):
                self.engine.resume(task.id)
        self.peering.deliver_soon(store)
        # Wake what waits here on its settled promises, and the timer loop (new deadlines).
        self.engine.settled_since(store.replica.get_promise)

    async def _release(self, partition: Partition, *, drop: bool) -> None:
        store = self.owned.pop(partition, None)
        if store is None:
            return
        if drop:
            self.engine.drop(list(store.replica.tasks))
        await store.close()
        log.debug("node %s handed over %s", self.node_id, partition)

    def _lost(self, store: PartitionStore) -> None:
        """``store``'s partition was lost (its owner record ended or changed)."""
        if self.owned.get(store.partition) is store:
            del self.owned[store.partition]
        self.engine.drop(list(store.replica.tasks))
        self._changed.set()

    # -- the namespace store's watch (Listener) ---------------------------------------------

    def promise_changed(self, old: PromiseRecord | None, new: PromiseRecord) -> None:
        return None  # no promises in the namespace store

    def task_changed(self, task: TaskRecord) -> None:
        return None

    def schedules_changed(self) -> None:
        self.engine.schedules_changed()

    def members_changed(self) -> None:
        self._changed.set()

    def reloaded(self) -> None:
        self._changed.set()
        self.engine.schedules_changed()

    def lease_lost(self) -> None:
        self.leading.clear()
        self.timers.clear()
        for store in list(self.owned.values()):
            store.membership.lose("the node's lease ended")
        self.owned.clear()
        self.engine.drop_all()
        if not self.stopped:
            self.spawn(self._rejoin(), "dawait-rejoin")

    async def _rejoin(self) -> None:
        delay = 0.2
        while not self.stopped:
            if self.clock_watch.out_of_bound is not None:  # stands aside until back in bound
                clock = self.engine.clock
                await clock.sleep_until(clock.now() + 500)
                continue
            try:
                await self.ns.rejoin()
            except Exception as exc:  # etcd unreachable, the old record not yet expired...
                log.warning("node %s: cannot rejoin yet: %s", self.node_id, exc)
                clock = self.engine.clock
                await clock.sleep_until(clock.now() + round(delay * 1000))
                delay = min(delay * 2, 2.0)
                continue
            break
        if self.stopped:
            return
        log.warning("node %s rejoined as %s", self.node_id, self.ns.pid)
        self.timers.set()
        self._changed.set()

    # -- the loop: ownership, leadership -----------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._changed.clear()
            missing = 0
            healthy = self.ns.problem() is None and self.ns.member is not None
            if healthy:
                try:
                    missing = await self.rebalance()
                except Exception as exc:
                    log.warning("node %s: cannot rebalance yet: %s", self.node_id, exc)
                    missing = 1
                if self.ns.view.leader is None:
                    try:
                        if await self.ns.campaign():
                            self.ns.view.leader = self.node_id
                            log.info("node %s leads", self.node_id)
                    except EtcdError as exc:
                        log.warning("node %s: cannot campaign: %s", self.node_id, exc)
            if healthy and self.ns.view.leader == self.node_id:
                self.leading.set()
                await self._compact()
            else:
                self.leading.clear()
            for store in self.open_partitions():
                self.peering.deliver_soon(store)
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({changed}, timeout=0.2 if missing else self.ns.lease_ttl / 3)
            finally:
                changed.cancel()

    async def _compact(self) -> None:
        """The leader drops etcd's history older than ``compact_every`` seconds: nothing
        reads it (partitions have no watch; a watch of ``N/`` that falls behind reloads),
        and without it etcd's database grows with every write ever made."""
        if not self.compact_every:
            return
        now = self.engine.clock.monotonic()
        seen = self._seen
        if seen is not None and now - seen[0] < self.compact_every:
            return  # not due: no request at all
        try:
            if seen is not None and await self.ns.etcd.compact(seen[1]):
                log.info("node %s compacted etcd to revision %d", self.node_id, seen[1])
            revision, _ = await self.ns.etcd.read([self.ns.keys.prefix + "meta"])
            self._seen = (now, revision)
        except EtcdError as exc:
            log.warning("node %s: cannot compact etcd now: %s", self.node_id, exc)

    async def namespace_call(self, call: Awaitable[R]) -> R:
        """A call of the namespace store (schedules): never fenced by an invocation."""
        token = ACTING_FOR.set(None)
        try:
            return await call
        finally:
            ACTING_FOR.reset(token)

    def owner(
        self, id: str, function: str | None = None, version: int | None = None
    ) -> Member | None:
        """The node that owns (or should own) the partition invocation ``id`` of
        ``function`` lives in (None: no live node can)."""
        partition = Partition(self.group_of(function), partition_index(id, self.count))
        owner = self.owner_id(partition)
        return None if owner is None else self.ns.view.members.get(owner)
