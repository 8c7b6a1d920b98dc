"""Resonate's protocol on a node of a partitioned cluster: an SDK connected to any node works.

- **Requests go to the owner.** Each request that writes is answered by the owner of the
  partition its records live in (``place``: a new promise's, or the one an id is found in),
  forwarded as the peer call ``protocol`` and answered there by the same handlers as on a
  single node, over that partition (``HERE``). Ownership moving meanwhile is retried by
  ``Peering.ask``. Reads (``promise.get``, ``promise.search``) are answered by any node.
  A heartbeat is split by partition. An SDK's worker runs what is in the free family
  (any node may own it); what it calls in a dawait group lands in that group's partition,
  reached across partitions as dawait's own calls are (callbacks, outbox, delivery).
- **Dispatch, leases and timers follow ownership**: they are the owner's, as on one node
  (node/_poll.py); a node that takes a partition dispatches its pending tasks again.
- **Pushes reach the node holding the stream.** Each node publishes the groups it holds poll
  streams of (``q/{node_id}`` in the namespace, under its lease: gone with the node). A push
  with no stream here goes to those nodes (``push``): an anycast to one of them in turn, a
  unicast to each (the one holding that process delivers it). An anycast no node can take is
  held here and sent on once a node publishes its group.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from dawait.cluster._etcd import Write
from dawait.cluster._etcd_records import dumps
from dawait.cluster._partition_store import PartitionStore, op_await
from dawait.core._errors import StoreError
from dawait.core._ids import root_of
from dawait.core._partitions import FREE, Partition, partition_index
from dawait.core._promise import PromiseRecord, Settle, Value
from dawait.core._task import TaskRecord
from dawait.core._wire import Address, WireError, parse_address
from dawait.runtime._store import CreatePromise, PromiseSettled
from dawait.runtime._task_ops import (
    Fenced,
    Suspended,
    op_register_callback,
    op_task_fence_create,
    op_task_fence_settle,
    op_task_held,
    op_task_suspend,
)

if TYPE_CHECKING:
    from dawait.cluster._node import ClusterNode
    from dawait.node._protocol import Answer, Data, ProtocolApi

__all__ = ["ClusterProtocol"]

log = logging.getLogger("dawait.protocol")

R = TypeVar("R")

HERE: contextvars.ContextVar[PartitionStore | None] = contextvars.ContextVar(
    "dawait_protocol_partition", default=None
)
"""The partition the request being answered runs on (this node owns it)."""
VIA: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dawait_protocol_via", default=None
)
"""The node the request being answered came through (None: this one)."""

TASK_KINDS = frozenset(
    {"task.acquire", "task.fence", "task.suspend", "task.fulfill", "task.release"}
)
BY_PROMISE = {
    "promise.settle": "id",
    "promise.register_listener": "awaited",
    "promise.register_callback": "awaited",
}
PUBLISH_EVERY = 1.0
"""Seconds between looks at this node's poll groups (published when they change)."""
WHERE_SIZE = 10_000
"""Ids whose partition is remembered (an id's partition never changes; its owner may)."""


class _Missing:
    """No record with the request's id (answered 404 here)."""


MISSING = _Missing()


class ClusterProtocol:
    """``api``'s requests sent to their partitions' owners in ``node``'s cluster, and its
    pushes carried to the nodes holding their streams."""

    def __init__(self, api: ProtocolApi, node: ClusterNode) -> None:
        self.api = api
        self.node = node
        self.where: OrderedDict[str, Partition] = OrderedDict()
        self.turn = 0
        node.calls["protocol"] = self.answer
        node.calls["push"] = self.pushed
        api.hub.relay = self
        api.dispatch.serves = self.serves

    # -- requests --------------------------------------------------------------------------

    async def handle(self, kind: str, data: Data) -> Answer:
        """Answer request ``kind`` here or on the owner of its partition."""
        if kind == "task.heartbeat":
            return await self._heartbeat(data)
        where = await self._place(kind, data)
        if where is None:
            return await self.api.answer(kind, data)  # a read, or refused as it is
        if isinstance(where, _Missing):
            what = "task" if kind in TASK_KINDS else "promise"
            return 404, f"{kind}: no {what} with id {data.get(BY_PROMISE.get(kind, 'id'))!r}"
        status, out = await self.handle_in(where, kind, data)
        if status == 404:
            self.where.pop(str(data.get(BY_PROMISE.get(kind, "id"))), None)
        return status, out

    async def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """The peer call ``protocol``: a request for a partition this node owns."""
        partition = Partition.from_path(body["partition"])
        store = self.node.owned.get(partition)
        if store is None or not store.is_open:
            raise StoreError(f"partition {partition}: not owned by node {self.node.node_id}")
        via = body.get("via")
        status, out = await self._here(store, body["kind"], body["data"], via)
        return {"status": status, "data": out}

    async def _ask(self, partition: Partition, kind: str, data: Data) -> Any:
        body = {"kind": kind, "data": data, "via": self.node.node_id}
        return await self.node.peering.ask(partition, "protocol", body)

    async def _here(
        self, store: PartitionStore, kind: str, data: Data, via: str | None = None
    ) -> Answer:
        here, through = HERE.set(store), VIA.set(via)
        try:
            return await self.api.answer(kind, data)
        finally:
            HERE.reset(here)
            VIA.reset(through)

    @staticmethod
    def via() -> str | None:
        """The node the request being answered came through (the SDK's: where its poll
        stream is, most likely); None: this one."""
        return VIA.get()

    async def _place(self, kind: str, data: Data) -> Partition | _Missing | None:
        """The partition request ``kind`` writes in; None to answer it here."""
        if kind in ("promise.create", "task.create"):
            inner = data if kind == "promise.create" else _inner(data)
            if inner is None:
                return None
            try:
                request = self.api.create_request(inner, kind)
            except WireError:
                return None  # refused here, as on one node
            return self.place(request, self.api.with_task(request))
        key = BY_PROMISE.get(kind, "id" if kind in TASK_KINDS else None)
        id = None if key is None else data.get(key)
        if not isinstance(id, str):
            return None
        known = self.where.get(id)
        if known is not None:
            self.where.move_to_end(id)
            return known
        router = self.node.router
        found = await (router.locate_task(id) if kind in TASK_KINDS else router.locate(id))
        if found is None:
            return MISSING
        self.where[id] = found
        if len(self.where) > WHERE_SIZE:
            self.where.popitem(last=False)
        return found

    def place(self, request: CreatePromise, with_task: bool) -> Partition:
        """Where a new promise lives: an invocation's partition when it has a task, else the
        free family's."""
        if with_task:
            return self.node.partition_of_invocation(request)
        return Partition(FREE, partition_index(request.id, self.node.count))

    async def _heartbeat(self, data: Data) -> Answer:
        """Each partition's tasks renewed by its owner (what cannot be is left: the SDK
        heartbeats again in ttl/2)."""
        tasks = data.get("tasks")
        if not isinstance(tasks, list) or not isinstance(data.get("pid"), str):
            return await self.api.answer("task.heartbeat", data)  # refused as on one node
        by: dict[Partition, list[Any]] = {}
        for item in tasks:
            id = item.get("id") if isinstance(item, dict) else None
            where = await self._place("task.acquire", {"id": id})
            if isinstance(where, Partition):
                by.setdefault(where, []).append(item)
        results = await asyncio.gather(
            *(
                self.handle_in(p, "task.heartbeat", {**data, "tasks": items})
                for p, items in by.items()
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                log.info("a heartbeat could not reach its partition's owner: %r", result)
        return 200, {}

    async def handle_in(self, partition: Partition, kind: str, data: Data) -> Answer:
        """Request ``kind`` answered on ``partition``: here if this node owns it, else by
        its owner."""
        store = await self.node.owned_or_none(partition)
        if store is not None:
            return await self._here(store, kind, data)
        answer = await self._ask(partition, kind, data)
        return answer["status"], answer["data"]

    # -- the handlers' operations, on the partition answered for ----------------------------

    def store(self) -> PartitionStore:
        store = HERE.get()
        if store is None:
            raise StoreError("a Resonate request ran on no partition of this node")
        return store

    async def run(self, id: str, op: Callable[..., R], *args: object) -> R:
        """Run ``op`` about ``id`` on the partition answered for."""
        return await self.store().run_for(id, op, *args)

    async def fence_settle(
        self, id: str, version: int, promise_id: str, event: Settle, value: Value, now: int
    ) -> PromiseSettled | Fenced:
        """``op_task_fence_settle``; a promise of another partition is settled by its
        owner, once the fence held here. The engine hears of it either way."""
        home = self.store()
        if promise_id not in home.replica.promises:  # the task's tree is all in memory
            held = await home.run_for(id, op_task_held, id, version)
            if isinstance(held, Fenced):
                return held
            return await self.node.engine.settle(promise_id, event, value)
        settled = await home.run_for(
            id, op_task_fence_settle, id, version, promise_id, event, value, now
        )
        if not isinstance(settled, Fenced):
            self.node.peering.deliver_soon(home)  # what its outbox holds for others
            self.node.engine.on_settled(settled)
        return settled

    async def fence_create(
        self, id: str, version: int, request: CreatePromise, with_task: bool, now: int
    ) -> tuple[PromiseRecord, TaskRecord | None] | Fenced:
        """``op_task_fence_create``; a promise of another partition (an rpc to a dawait
        group) is created there, by its owner (which runs or dispatches it), once the fence
        held here."""
        home = self.store()
        if self.place(request, with_task) == home.partition:
            return await home.run_for(
                id, op_task_fence_create, id, version, request, with_task, now
            )
        held = await home.run_for(id, op_task_held, id, version)
        if isinstance(held, Fenced):
            return held
        router = self.node.router
        if with_task:
            created = await router.create_invocation(request, pid=None, ttl=None, now=now)
            return created.promise, None
        return (await router.create_promise(request, now=now)).promise, None

    async def suspend(
        self, id: str, version: int, awaited: Sequence[str], now: int
    ) -> Suspended | Fenced:
        """``op_task_suspend``, where awaited promises of other partitions get their callback
        there first (``await_elsewhere``); one settled there meanwhile is noticed here."""
        home = self.store()
        held = await home.run_for(id, op_task_held, id, version)
        if isinstance(held, Fenced):
            return held
        router = self.node.router
        local: list[str] = []
        foreign: list[str] = []
        for promise_id in awaited:
            if promise_id in home.replica.promises:
                local.append(promise_id)
                continue
            partition = await router.locate(promise_id)
            if partition is None:
                return Suspended(False, missing=promise_id)
            (local if partition == home.partition else foreign).append(promise_id)
        for promise_id in foreign:
            record = await router.await_elsewhere(id, promise_id, now)
            if record is None:
                return Suspended(False, missing=promise_id)
            if record.state.settled:
                return Suspended(False)
        return await home.run_for(id, op_task_suspend_across, id, version, local, foreign, now)

    async def register_callback(self, awaited: str, awaiter: str, now: int) -> PromiseRecord | None:
        """``op_register_callback`` for an awaiter task that may live in another partition."""
        home = self.store()
        if awaiter in home.replica.tasks or root_of(awaiter) == root_of(awaited):
            return await home.run_for(awaited, op_register_callback, awaited, awaiter, now)
        if await self.node.router.get_task(awaiter) is None:
            return await home.run_for(awaited, op_register_callback, awaited, awaiter, now)
        return await home.run_for(awaited, op_await, awaited, awaiter, now)

    # -- pushes ----------------------------------------------------------------------------

    def serves(self, group: str, name: str) -> bool:
        """Whether a node of the cluster runs ``name`` in ``group`` (all nodes agree)."""
        members = self.node.ns.view.members.values()
        return any(group in m.groups and name in m.versions for m in members)

    def _holders(self, group: str) -> list[str]:
        view = self.node.ns.view
        return sorted(
            node_id
            for node_id, groups in view.polls.items()
            if group in groups and node_id != self.node.node_id and node_id in view.members
        )

    def forward(self, address: Address, line: str, key: str) -> bool:
        holders = self._holders(address.group)
        if not holders:
            return False
        if address.anycast:
            self.turn += 1
            holders = [holders[self.turn % len(holders)]]
        for node_id in holders:
            member = self.node.ns.view.members[node_id]
            # A unicast goes to each: only the one holding that process's stream keeps it.
            body = {"address": str(address), "line": line, "key": key, "park": address.anycast}
            self.node.spawn(self._push(member.address, body), f"dawait-push:{key}")
        return True

    def forward_to(self, node_id: str, address: Address, line: str, key: str) -> bool:
        member = self.node.ns.view.members.get(node_id)
        if node_id == self.node.node_id or member is None:
            return False
        body = {"address": str(address), "line": line, "key": key, "park": True}
        self.node.spawn(self._push(member.address, body), f"dawait-push:{key}")
        return True

    async def _push(self, address: str, body: dict[str, Any]) -> None:
        try:
            await self.node.peering.peers.call(address, "push", body)
        except Exception as exc:  # executes are pushed again; listeners are registered again
            log.info("cannot push %s to %s: %r", body["key"], address, exc)

    async def pushed(self, body: dict[str, Any]) -> dict[str, Any]:
        """The peer call ``push``: a message for a stream here (never sent on again)."""
        address = parse_address(body["address"])
        if address is None:
            raise ValueError(f"push: {body['address']!r} is not a poll address")
        park = bool(body.get("park", True))
        hub = self.api.hub
        return {
            "delivered": hub.deliver(address, body["line"], body["key"], relay=False, park=park)
        }

    async def publish(self) -> None:
        """Keep this node's poll groups published (and send on what is held for a group
        another node now holds streams of)."""
        node, hub = self.node, self.api.hub
        clock = node.engine.clock
        while not node.stopped:
            try:
                groups = hub.groups()
                lease = node.ns.membership.lease
                if lease and groups != node.ns.view.polls.get(node.node_id, frozenset()):
                    key = node.ns.keys.polls(node.node_id)
                    value = dumps(sorted(groups)) if groups else None
                    await node.ns.etcd.commit([], [Write(key, value, lease)])
                for group in [g for g in hub.held if self._holders(g)]:
                    address = Address(anycast=True, group=group)
                    for key, line in hub.held.pop(group).items():
                        self.forward(address, line, key)
            except Exception as exc:
                log.info("node %s: cannot publish its poll groups yet: %r", node.node_id, exc)
            await clock.sleep_until(clock.now() + round(PUBLISH_EVERY * 1000))


def op_task_suspend_across(
    t: Any, id: str, version: int, local: Sequence[str], foreign: Sequence[str], now: int
) -> Suspended | Fenced:
    """``op_task_suspend`` on a partition (``t``: its recorder) for a task that also awaits
    ``foreign`` promises, their callbacks recorded in their partitions already: a redirect if
    one of them was noticed settled here meanwhile."""
    if any(t.noticed(id, promise_id) for promise_id in foreign):
        t.touch(t.keys.task(id))
        return Suspended(False)
    return op_task_suspend(t, id, version, local, now)


def _inner(data: Data) -> Data | None:
    action = data.get("action")
    inner = action.get("data") if isinstance(action, dict) else None
    return inner if isinstance(inner, dict) else None
