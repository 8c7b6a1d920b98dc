"""The etcd store's hold on its namespace: a lease, and what lives under it.

Every store holds a lease and keeps it alive. Under it lives either the namespace's lock
(one node writes the namespace at a time, fenced by the lock key's revision in every
transaction) or, in cluster mode, this node's membership record (``Member``, waited out
when an earlier run of the same node id left one), and the owner records of the
partitions it owns (cluster/_partition_store.py); the leader key too,
once this node wins a campaign. Once the lease may have expired the store is broken: it
writes nothing more until it is opened again (or the node rejoins under a new lease).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

from dawait.cluster._etcd import Compare, EtcdError, Write
from dawait.cluster._etcd_records import Member, dumps
from dawait.core._errors import OwnershipLostError, StoreError

if TYPE_CHECKING:
    from dawait.cluster._etcd_store import EtcdStore

__all__ = ["Membership"]

log = logging.getLogger("dawait.etcd")


class Membership:
    """The lease of ``store``, and its lock or membership record under it."""

    def __init__(self, store: EtcdStore) -> None:
        self.store = store
        self.lease = 0
        self.lock_revision = 0
        self.member: Member | None = None
        """This node's membership record, once joined (cluster mode)."""
        self.keeper: asyncio.Task[None] | None = None
        self.broken: StoreError | None = None
        """Why this store writes nothing more (its lease may have expired), or None."""

    @property
    def pid(self) -> str | None:
        """This node incarnation's id (what its tasks carry), in cluster mode."""
        return None if self.member is None else self.member.pid

    async def take(self) -> None:
        """A new lease, and under it this node's membership record (cluster mode) or the
        namespace's lock."""
        store = self.store
        self.lease = await store.etcd.grant(store.lease_ttl)
        if store.node_id is not None:
            await self.join(store.node_id)
        elif store.exclusive:
            await self.lock()

    def keep(self) -> None:
        """Start renewing the lease in the background (until it may have expired)."""
        self.keeper = asyncio.get_running_loop().create_task(
            self._keep_lease(), name=f"dawait-etcd-lease:{self.store.namespace}"
        )

    async def join(self, node_id: str) -> None:
        """Put this node's membership record under the lease. A record left by an earlier
        run of the same node id (killed, lease not yet ended) is waited out."""
        store = self.store
        clock = store.clock
        key = store.keys.member(node_id)
        member = Member(
            node_id=node_id,
            address=store.address,
            groups=store.groups,
            versions=store.versions,
            pid=f"{node_id}:{self.lease:x}",
            started_at=clock.now(),
        )
        deadline = clock.monotonic() + store.lease_ttl + 2
        while True:
            joined, _revision = await store.etcd.commit(
                [Compare(key, 0)], [Write(key, member.encode(), self.lease)]
            )
            if joined:
                self.member = member
                return
            if clock.monotonic() > deadline:
                await store.etcd.revoke(self.lease)
                self.lease = 0
                raise StoreError(
                    f"{store!r}: node id {node_id!r} is in use by a live node (give each node "
                    "its own --node-id)"
                )
            await clock.sleep_until(clock.now() + 250)
            # Nothing keeps this node's own lease alive before it joined, and waiting out
            # the old record (up to a TTL and more: etcd extends leases across its leader
            # elections, and a restored snapshot's leases start their TTL anew) could
            # outlast it.
            if not await store.etcd.keep_alive(self.lease):
                raise StoreError(f"{store!r}: this node's lease ended while it waited to join")

    async def campaign(self) -> bool:
        """Become the leader if there is none: the leader key under this node's lease."""
        if self.member is None or self.broken is not None or not self.lease:
            return False  # never a leader key without a live lease: it would never expire
        key = self.store.keys.leader
        value = dumps({"node_id": self.member.node_id, "pid": self.member.pid})
        won, _revision = await self.store.etcd.commit(
            [Compare(key, 0)], [Write(key, value, self.lease)]
        )
        return won

    async def lock(self) -> None:
        """Hold the namespace: one node writes it at a time (until cluster mode places
        invocations on several), fenced by the lock key's revision in every transaction."""
        store = self.store
        holder = dumps({"owner": store.owner})
        taken, revision = await store.etcd.commit(
            [Compare(store.lock_key, 0)], [Write(store.lock_key, holder, self.lease)]
        )
        if not taken:
            await store.etcd.revoke(self.lease)
            self.lease = 0
            _revision, items = await store.etcd.snapshot(store.lock_key)
            current = json.loads(items[0].value or b"{}") if items else {}
            raise StoreError(
                f"{store!r}: the namespace is in use by {current.get('owner', 'another node')} "
                f"(one node per namespace; it frees within {store.lease_ttl} s of that node "
                "stopping)"
            )
        self.lock_revision = revision

    async def _keep_lease(self) -> None:
        """Renew the lease; once it may have expired, stop writing (another node may hold
        the namespace by now, and the transaction marker is gone)."""
        store = self.store
        clock = store.clock
        last = clock.monotonic()
        while store.is_open and self.broken is None:
            await clock.sleep_until(clock.now() + round(store.lease_ttl * 1000 / 3))
            sent = clock.monotonic()  # the lease runs from when etcd got the renewal, at best
            try:
                # Short enough to try again within the TTL when one renewal gets no answer.
                left = await store.etcd.keep_alive(self.lease, timeout=store.lease_ttl / 3)
            except EtcdError as exc:
                log.warning("%r: %s", store, exc)
                store.etcd_failed(exc)
                left = -1
            else:
                store.etcd_answered()
            now = clock.monotonic()
            if left > 0:
                last = sent
            elif left == 0 or now - last >= store.lease_ttl:
                self.lose("its lease expired")
                return

    def lost_after_reload(self) -> bool:
        """After a reload: whether this store's lock key (or membership record) is gone or
        another's."""
        store = self.store
        if store.exclusive and store.mirror.revisions.get(store.lock_key) != self.lock_revision:
            self.lose("its lock key changed or expired")
            return True
        if self.member is not None:
            current = store.mirror.view.members.get(self.member.node_id)
            if current is None or current.pid != self.member.pid:
                self.lose("its membership record expired")
                return True
        return False

    def lose(self, why: str) -> None:
        """The lease may have expired: write nothing more under it, and say so."""
        store = self.store
        if self.broken is not None:
            return
        if self.member is not None:
            self.broken = OwnershipLostError(
                f"{store!r}: node {self.member.node_id} lost its lease ({why}); it writes "
                "nothing more under it and drops what it was running"
            )
        else:
            self.broken = StoreError(
                f"{store!r}: lost the namespace ({why}); this node writes nothing more until "
                "the store is opened again"
            )
        log.error("%s", self.broken)
        if store.listener is not None:
            store.listener.lease_lost()

    async def release(self) -> None:
        """Free the namespace now rather than after the TTL (on close); never hangs on an
        unreachable etcd."""
        try:
            if self.lease and self.broken is None:
                await asyncio.wait_for(self.store.etcd.revoke(self.lease), 2)
        except (EtcdError, TimeoutError) as exc:
            log.warning(
                "%r: cannot free the namespace (it frees with its lease): %r", self.store, exc
            )
        self.lease = 0
