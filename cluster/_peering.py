"""Between nodes: what a cluster node asks of the owners of other partitions, and answers
for its own (cluster/_peer.py carries it over HTTP).

* ``ask``: a request for a partition owned elsewhere (retried while ownership moves);
  ``answer``: a peer's request, run here through the engine (a start runs here, a settle
  wakes what waits here).
* ``awaiting``: an invocation here waits on a promise of another partition: the callback is
  recorded there at once (and again, durably, when the invocation suspends).
* The outbox (``deliver_soon``): a settled promise that a task of another partition awaited
  is delivered to that partition's owner until acknowledged, then its record deleted; a new
  owner of the partition delivers what is left.
* ``watch``/``settled``: something here that is not an invocation (an API long-poll, a
  handle's ``result()``) waits on a promise owned elsewhere: its owner notifies this node
  when it settles; asked again every ``WATCH_EVERY`` seconds while anything waits.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from dawait.cluster._etcd_records import Member
from dawait.cluster._partition_store import PartitionStore, op_ack
from dawait.cluster._peer import (
    PeerClient,
    PeerError,
    decode_request,
    encode_created,
    encode_invocation,
    promise_json,
    record_from_json,
)
from dawait.cluster._router import settle_answer
from dawait.core._errors import PromiseNotFoundError, StoreError
from dawait.core._partitions import Partition
from dawait.core._promise import PromiseRecord, Settle, Value
from dawait.runtime._store import ACTING_FOR

if TYPE_CHECKING:
    from dawait.cluster._node import ClusterNode

__all__ = ["OWNER_WAIT", "Peering"]

log = logging.getLogger("dawait.cluster")

WATCH_EVERY = 2.0
"""Seconds between asks of a watched promise's owner (a notification lost, an owner changed)."""
OWNER_WAIT = 5.0
"""Seconds a request for a partition waits for its owner to have taken it."""


class Peering:
    """What ``node`` asks of other owners and answers for its own partitions."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.peers = PeerClient()
        self._watching: set[str] = set()
        """Promises of other nodes' partitions this node waits on (``watch``)."""
        self._watchers: dict[str, set[str]] = {}
        """Promise id -> the nodes to notify when it settles here."""
        self._delivering: set[tuple[str, str]] = set()

    def awaiting(self, task_id: str, promise_id: str) -> None:
        """An invocation here waits on ``promise_id``: if it lives in another partition,
        record the callback there now (its settle then reaches this node at once)."""
        store = self.node.holding_task(task_id)
        if store is None or promise_id in store.replica.promises:
            return
        self.node.spawn(self._await(task_id, promise_id), f"dawait-await:{promise_id}")

    async def _await(self, task_id: str, promise_id: str) -> None:
        try:
            token = ACTING_FOR.set(None)
            try:
                record = await self.node.router.await_elsewhere(
                    task_id, promise_id, self.node.engine.clock.now()
                )
            finally:
                ACTING_FOR.reset(token)
        except Exception as exc:  # the suspend records it again, durably
            log.warning("invocation %s: cannot await %s yet: %s", task_id, promise_id, exc)
            return
        if record is not None and record.state.settled:
            self.node.engine.promise_changed(None, record)

    def watch(self, promise_id: str) -> None:
        """Something here waits on ``promise_id``: unless it lives here, ask its owner to say
        when it settles (asked again every ``WATCH_EVERY`` seconds while anything waits: the
        owner may change or forget)."""
        if self.node.holding_promise(promise_id) is not None or promise_id in self._watching:
            return
        self._watching.add(promise_id)
        self.node.spawn(self._watch(promise_id), f"dawait-watch:{promise_id}")

    async def _watch(self, promise_id: str) -> None:
        clock = self.node.engine.clock
        try:
            while self.node.engine.waited_on(promise_id) and not self.node.stopped:
                try:
                    partition = await self.node.router.locate(promise_id)
                    if partition is None or partition in self.node.owned:
                        return
                    body = {"promise": promise_id, "node": self.node.node_id}
                    answer = await self.ask(partition, "watch", body)
                    record = record_from_json(answer["promise"])
                    if record.state.settled:
                        self.node.engine.promise_changed(None, record)
                        return
                except Exception as exc:
                    log.info("node %s: cannot watch %s yet: %s", self.node.node_id, promise_id, exc)
                await clock.sleep_until(clock.now() + round(WATCH_EVERY * 1000))
        finally:
            self._watching.discard(promise_id)

    def settled(self, record: PromiseRecord) -> None:
        """The engine here settled ``record``: tell the nodes watching it."""
        nodes = self._watchers.pop(record.id, None)
        if not nodes:
            return
        for node_id in nodes:
            member = self.node.ns.view.members.get(node_id)
            if member is not None and node_id != self.node.node_id:
                self.node.spawn(self._notify(member, record), f"dawait-notify:{record.id}")

    async def _notify(self, member: Member, record: PromiseRecord) -> None:
        try:
            await self.peers.call(member.address, "notify", {"promise": promise_json(record)})
        except Exception as exc:  # it asks again within WATCH_EVERY
            log.info("node %s: cannot notify %s: %s", self.node.node_id, member.node_id, exc)

    async def ask(self, partition: Partition, call: str, body: dict[str, Any]) -> Any:
        """Ask the owner of ``partition`` (another node) to ``call``; retried while
        ownership moves, for up to ``OWNER_WAIT`` seconds."""
        clock = self.node.engine.clock
        deadline = clock.monotonic() + OWNER_WAIT
        body = {"partition": partition.path, **body}
        while True:
            owner = self.node.owner_id(partition)
            member = None if owner is None else self.node.ns.view.members.get(owner)
            if owner == self.node.node_id:
                store = await self.node.owned_or_none(partition)
                if store is not None:
                    return await self.answer(call, body)
            elif member is not None:
                try:
                    return await self.peers.call(member.address, call, body)
                except PeerError as exc:
                    if clock.monotonic() > deadline:
                        raise
                    log.info("node %s: %s; trying again", self.node.node_id, exc)
            elif clock.monotonic() > deadline:
                raise StoreError(f"partition {partition}: no live node can own it")
            await clock.sleep_until(clock.now() + 100)

    async def answer(self, call: str, body: dict[str, Any]) -> dict[str, Any]:
        """Answer a peer's request (node/_http.py routes it here, authenticated)."""
        engine = self.node.engine
        token = ACTING_FOR.set(None)
        try:
            if call == "start":
                created = await engine.start_invocation(decode_request(body["request"]))
                return encode_invocation(created)
            if call == "create":
                return encode_created(await engine.create_promise(decode_request(body["request"])))
            if call == "settle":
                data, headers = body["value"]
                settled = await engine.settle(
                    body["id"], Settle(body["event"]), Value(data=data, headers=headers)
                )
                return settle_answer(settled)
            if call == "await":
                return await self.node.router.answer_await(
                    body["promise"], body["task"], body["now"]
                )
            if call == "settled":
                await self.node.router.deliver(record_from_json(body["promise"]), body["task"])
                return {}
            if call == "watch":
                promise_id = body["promise"]
                record = await self.node.router.get_promise(
                    promise_id, now=engine.timers.expiry_now()
                )
                if record is None:
                    raise PromiseNotFoundError(f"no promise with id {promise_id!r}")
                if not record.state.settled:
                    self._watchers.setdefault(promise_id, set()).add(body["node"])
                return {"promise": promise_json(record)}
            if call == "cancel":
                return settle_answer(await engine.cancel(body["id"]))
            if call == "delete":
                return {"deleted": await self.node.router.delete_tree(body["id"])}
            if call == "time":  # for a peer's measure of its clock offset
                return {"now": engine.clock.now()}
            if call == "notify":
                engine.promise_changed(None, record_from_json(body["promise"]))
                return {}
            handler = self.node.calls.get(call)
            if handler is not None:
                return await handler(body)
        finally:
            ACTING_FOR.reset(token)
        raise ValueError(f"unknown peer call {call!r}")

    def deliver_soon(self, store: PartitionStore) -> None:
        """Deliver what ``store``'s outbox holds (and is not being delivered)."""
        for promise_id, task_id in list(store.outbox):
            if (promise_id, task_id) not in self._delivering:
                self._delivering.add((promise_id, task_id))
                self.node.spawn(
                    self._deliver(store, promise_id, task_id), f"dawait-deliver:{promise_id}"
                )

    async def _deliver(self, store: PartitionStore, promise_id: str, task_id: str) -> None:
        clock = self.node.engine.clock
        delay = 100
        try:
            while not self.node.stopped and store.is_open and (promise_id, task_id) in store.outbox:
                record = store.replica.get_promise(promise_id)
                if record is None:
                    return
                try:
                    home = await self.node.router.locate_task(task_id)
                    if home is not None:
                        body = {"promise": promise_json(record), "task": task_id}
                        await self.ask(home, "settled", body)
                    await store.run_for(promise_id, op_ack, promise_id, task_id)
                    return
                except Exception as exc:
                    log.warning(
                        "node %s: cannot deliver %s to %s yet: %s",
                        self.node.node_id,
                        promise_id,
                        task_id,
                        exc,
                    )
                await clock.sleep_until(clock.now() + delay)
                delay = min(delay * 2, 5000)
        finally:
            self._delivering.discard((promise_id, task_id))
