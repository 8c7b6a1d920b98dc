"""A cluster node: an app's engine on an ``EtcdStore`` shared with other nodes; it is the
engine's ``Ownership`` (runtime/_ownership.py).

The store does the coordination in etcd (membership record and claims under this node's
lease, fencing of every actor's writes by its claim); this class decides what runs where:

* **Placement.** An invocation runs on the live node, among those serving its function's
  group, with the highest rendezvous score for its root id (``runs_here``). Every node
  computes the same answer from its replica of the membership records; when views differ
  for a moment, the claim decides (only one node can hold it).
* **Takeover.** A node whose lease ends loses its membership record and its claims at once.
  The other nodes see that through the store's watch and take over the invocations that
  were acquired without a claim now, or are pending, and that place on them: their actors
  replay from the store.
* **Leader.** One node holds the leader key (under its lease) and fires timers, promise
  timeouts and schedules; the others campaign whenever the key is gone.
* **Notification.** A settled promise reaches an invocation on another node through the
  watch (its task becomes pending, or its waiter wakes); nothing is sent node to node, and a
  restarted node reads the same from the store.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from dawait.cluster._etcd import EtcdError, cancel_task
from dawait.cluster._etcd_records import Member
from dawait.cluster._etcd_store import EtcdStore
from dawait.core._ids import root_of
from dawait.core._param import call_target
from dawait.core._placement import rendezvous
from dawait.core._promise import PromiseRecord
from dawait.core._task import TaskRecord, TaskState

if TYPE_CHECKING:
    from dawait.runtime._engine import Engine

__all__ = ["ClusterNode"]

log = logging.getLogger("dawait.cluster")


class ClusterNode:
    """Joins ``engine`` to the cluster its ``store`` (in cluster mode) coordinates."""

    def __init__(self, engine: Engine, store: EtcdStore) -> None:
        if store.node_id is None:
            raise ValueError(f"{store!r} has no node id: it is not a cluster node's store")
        self.engine = engine
        self.store = store
        self.node_id = store.node_id
        store.listener = self
        self.leading = asyncio.Event()
        """Set while this node leads: it fires timers, promise timeouts and schedules."""
        engine.use_ownership(self)
        self._scan_soon: asyncio.Handle | None = None
        self._stopped = False
        self._view_changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle (after the engine opened the store) -------------------------------------

    def start(self) -> None:
        self._stopped = False
        self._spawn(self._lead(), "dawait-leader")
        self._scan()

    async def stop(self) -> None:
        self._stopped = True  # a lease lost from here on starts no rejoin
        for task in list(self._tasks):
            await cancel_task(task)
        self.leading.clear()

    def _spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "node %s: %s failed", self.node_id, task.get_name(), exc_info=task.exception()
            )

    # -- queries ---------------------------------------------------------------------------

    @property
    def members(self) -> list[Member]:
        return sorted(self.store.view.members.values(), key=lambda m: m.node_id)

    @property
    def leader(self) -> str | None:
        return self.store.view.leader

    def owner(
        self, id: str, function: str | None = None, version: int | None = None
    ) -> Member | None:
        """The node invocation ``id`` places on now (None: no live node serves it): among
        the live nodes that have its function (at its version, when known)."""
        if function is None:
            function, version = self._function(id)
            if function is None:
                return None
        members = self.store.view.members
        serving = [m.node_id for m in members.values() if m.serves(function, version)]
        owner = rendezvous(root_of(id), serving)
        return None if owner is None else members[owner]

    def runs_here(self, id: str, function: str | None, version: int | None = None) -> bool:
        """Whether ``id`` should run here: it places here and no other node runs it now."""
        owner = self.owner(id, function, version)
        if owner is None or owner.node_id != self.node_id:
            return False
        holder = self.store.view.claims.get(id)
        return holder is None or holder == self.store.pid

    def still_owns(self, id: str) -> bool:
        """Whether this node may still write for invocation ``id``."""
        return self.store.pid is not None and self.store.view.claims.get(id) == self.store.pid

    def _function(self, id: str) -> tuple[str | None, int | None]:
        """The function and version invocation ``id`` calls, from its stored record."""
        record = self.store.replica.promises.get(id)
        return (None, None) if record is None else call_target(record.param.data)

    # -- what runs here ----------------------------------------------------------------------

    def _consider(self, task: TaskRecord) -> None:
        """Run ``task`` here if it needs a runner and places here, or if this node holds it
        but runs nothing for it (its actor ended without suspending or settling it)."""
        holder = self.store.view.claims.get(task.id)
        acquired = task.state is TaskState.ACQUIRED
        unrun = task.state is TaskState.PENDING or (acquired and holder is None)
        mine = holder is not None and holder == self.store.pid
        if (unrun and self.runs_here(task.id, None)) or (
            acquired and mine and not self.engine.knows(task.id)
        ):
            self.engine.resume(task.id)

    def _scan(self) -> None:
        """Look at every task (membership changed: some may place here now)."""
        self._scan_soon = None
        if not self.engine.running:
            return
        for task in list(self.store.replica.tasks.values()):
            self._consider(task)

    def _scan_later(self) -> None:
        # Membership changes come in bursts (a node's record and its claims go together).
        if self._scan_soon is None:
            self._scan_soon = asyncio.get_running_loop().call_later(0.05, self._scan)

    # -- the store's watch (Listener) --------------------------------------------------------

    def promise_changed(self, old: PromiseRecord | None, new: PromiseRecord) -> None:
        self.engine.promise_changed(old, new)

    def task_changed(self, task: TaskRecord) -> None:
        if task.state is TaskState.PENDING and self.engine.running:
            self._consider(task)

    def schedules_changed(self) -> None:
        self.engine.schedules_changed()

    def members_changed(self) -> None:
        self._view_changed.set()
        self._scan_later()

    def claim_released(self, task_id: str) -> None:
        task = self.store.replica.tasks.get(task_id)
        if task is not None and self.engine.running:
            self._consider(task)

    def reloaded(self) -> None:
        self._view_changed.set()
        self.engine.settled_since(self.store.replica.promises.get)
        self._scan_later()

    def lease_lost(self) -> None:
        self.leading.clear()
        self.engine.drop_all()
        if not self._stopped:
            self._spawn(self._rejoin(), "dawait-rejoin")

    async def _rejoin(self) -> None:
        delay = 0.2
        while not self._stopped:
            try:
                await self.store.rejoin()
            except Exception as exc:  # etcd unreachable, the old record not yet expired...
                log.warning("node %s: cannot rejoin yet: %s", self.node_id, exc)
                clock = self.engine.clock
                await clock.sleep_until(clock.now() + round(delay * 1000))
                delay = min(delay * 2, 2.0)
                continue
            break
        if self._stopped:
            return
        log.warning("node %s rejoined as %s", self.node_id, self.store.pid)
        self._view_changed.set()
        self._scan()

    # -- leader -------------------------------------------------------------------------

    async def _lead(self) -> None:
        """Campaign whenever there is no leader; fire timers while leading."""
        while True:
            self._view_changed.clear()
            healthy = self.store.problem() is None and self.store.member is not None
            if healthy and self.store.view.leader is None:
                try:
                    if await self.store.campaign():
                        self.store.view.leader = self.node_id
                        log.info("node %s leads", self.node_id)
                except EtcdError as exc:
                    log.warning("node %s: cannot campaign: %s", self.node_id, exc)
            if healthy and self.store.view.leader == self.node_id:
                self.leading.set()
            else:
                self.leading.clear()
            self._scan()  # also now and then: nothing held here may sit without an actor
            # Not wait_for: on Python 3.11 it can swallow stop()'s cancel (see cancel_task).
            changed = asyncio.ensure_future(self._view_changed.wait())
            try:
                await asyncio.wait({changed}, timeout=self.store.lease_ttl / 3)
            finally:
                changed.cancel()
