"""The etcd store's batches: operations gathered into compare-and-swap transactions.

An operation runs against the replica at once (``Recorder``) into the open batch. Once per
loop turn the operations run so far become one etcd transaction: for every key they
touched, compare its revision with the one the replica had, and if all still hold, write
what they wrote. Their results are answered only after etcd committed. A failed compare
means another node changed a key first: the replica is reloaded and the operations run
again on the fresh state. While a transaction (or a reload) is in flight, new operations
wait for the next one.

If etcd cannot be reached the transaction is retried (with backoff) until ``retry_for``
runs out. An attempt whose reply was lost may still have gone through, so every transaction
also writes the store's marker key with a token for that attempt; the reload that follows
a lost reply (or any later failed compare) reads the marker and answers the attempt that
went through with its own results. etcd's ``--max-txn-ops`` (default 128) bounds a
transaction's compares and writes: a batch stops taking operations at ``max_ops``, and
once it wrote ``BATCH_BYTES`` (etcd's ``--max-request-bytes``, 1.5 MiB by default, bounds
a request). A transaction etcd refuses as too large is not retried: its operations fail.

An exclusive store (one writer: a namespace's lock, a partition's owner record) also
compares its lock key in every transaction, so that a writer that lost it commits nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from dawait.cluster._etcd import Compare, EtcdError, Write
from dawait.cluster._etcd_recorder import Batch, Recorder
from dawait.core._errors import StoreError
from dawait.runtime._deletion import op_delete_tree
from dawait.runtime._store_ops import answer, fail, run_op

if TYPE_CHECKING:
    from dawait.cluster._etcd_store import EtcdStore

__all__ = ["Batches"]

log = logging.getLogger("dawait.etcd")

R = TypeVar("R")

BATCH_BYTES = 192 * 1024
"""A batch takes no more operations once it wrote this many bytes: with the one that took
it past (at most two payloads, ``ETCD_MAX_PAYLOAD`` each, escaped) it stays under etcd's
default ``--max-request-bytes``, 1.5 MiB."""


class Batches:
    """The operations of ``store``: run into the open batch, sent as one transaction."""

    def __init__(self, store: EtcdStore) -> None:
        self.store = store
        self.batch = Batch()
        self.recorder = Recorder(store)
        self._waiting: list[tuple[Callable[..., Any], tuple[object, ...], asyncio.Future[Any]]] = []
        self._committing = False
        self._commit_scheduled = False
        self._sender: asyncio.Task[None] | None = None
        self.reloader: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._attempts = 0
        self.transactions = 0
        """etcd transactions sent (operations per transaction shows the batching)."""
        self.lost_replies = 0
        """Transactions sent whose reply never came (each settled by the marker)."""

    @property
    def holding(self) -> bool:
        """Whether a batch is open or in flight (watch events wait until it is done)."""
        return self._committing or bool(self.batch.done)

    async def drain(self) -> None:
        """Return once no operation is open, waiting or in flight."""
        while not self._idle.is_set() or self._waiting or self.batch.done:
            await self._idle.wait()
            await asyncio.sleep(0)

    # -- reloads in the batch's place ---------------------------------------------------

    def _reloading(self) -> StoreError:
        return StoreError(f"{self.store!r}: reloading from etcd after a failed transaction")

    def _reload_soon(self) -> None:
        """A batch was given up: its writes are in the replica but not in etcd. Refuse
        every operation until the replica is loaded afresh."""
        self.store.mirror.dirty = True
        self.reload_when_idle()

    def reload_when_idle(self) -> None:
        """Load the replica afresh (in the background) once no batch is in flight."""
        if self.reloader is None or self.reloader.done():
            self.reloader = asyncio.get_running_loop().create_task(
                self._reload_later(), name=f"dawait-etcd-reload:{self.store.namespace}"
            )

    async def _reload_later(self) -> None:
        """The watch broke (etcd unreachable, history compacted): load afresh once no
        batch is in flight (a batch reloads by itself when it needs to)."""
        store = self.store
        clock = store.clock
        delay = 100
        while store.is_open:
            await self._idle.wait()
            self._committing = True
            try:
                await store.mirror.reload()
            except EtcdError as exc:
                log.warning("%r: cannot reload: %s", store, exc)
                store.etcd_failed(exc)
            else:
                store.etcd_answered()
                store.mirror.dirty = False
                return
            finally:
                self._committing = False
                self._after_batch()
            await clock.sleep_until(clock.now() + delay)  # back off while etcd is unreachable
            delay = min(delay * 2, 2000)

    # -- operations -----------------------------------------------------------------------

    async def transact(self, op: Callable[..., R], *args: object) -> R:
        """Run ``op(tables, *args)`` in a batch; its result once etcd committed the batch."""
        store = self.store
        if not store.is_open:
            raise StoreError(f"{store!r} is not open")
        if store.membership.broken is not None:
            raise store.membership.broken
        if store.mirror.dirty:
            raise self._reloading()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        if self._committing or not self._fits(op, args):
            self._waiting.append((op, args, future))
        else:
            self._run(op, args, future)
        return await future

    def _fits(self, op: Callable[..., Any], args: tuple[object, ...]) -> bool:
        """Whether ``op`` may join the open batch: while it is below ``max_ops`` and
        ``BATCH_BYTES``, and a deletion only one with room for every key it may touch
        (``deletion_keys``)."""
        if self.batch.bytes >= BATCH_BYTES:
            return False
        if op is op_delete_tree:
            need = self.store.deletion_keys(str(args[0]))
            return self.batch.size + need <= self.store.max_ops or not self.batch.size
        return self.batch.size < self.store.max_ops

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
        batch, self.batch = self.batch, Batch()
        self._committing = True
        # Kept: the loop holds tasks weakly. close() waits for it through drain().
        self._sender = asyncio.get_running_loop().create_task(
            self._send(batch), name=f"dawait-etcd-commit:{self.store.namespace}"
        )

    async def _send(self, batch: Batch) -> None:
        try:
            await self._send_until_done(batch)
        finally:
            self._committing = False
            self._after_batch()

    async def _send_until_done(self, batch: Batch) -> None:
        store = self.store
        membership = store.membership
        clock = store.clock
        deadline = clock.monotonic() + store.retry_for
        delay = 50
        unsure: dict[bytes, Batch] = {}
        """Attempts whose reply was lost, by marker token: any of them may yet go through
        (etcd can apply a transaction after its client gave up). At most one can: they all
        compare the keys they write."""
        stale = False
        joint = store.joint  # the first attempt goes with the node's others of this turn
        while True:
            if membership.broken is not None:
                fail(batch.done, membership.broken)
                return
            if stale:
                # After a failed compare or a lost reply: read what etcd holds, then see.
                stored = await self._reload_quietly()
                if stored is None:
                    if clock.monotonic() > deadline:
                        fail(batch.done, StoreError(f"{store!r}: cannot reach etcd"))
                        self._reload_soon()
                        return
                    await clock.sleep_until(clock.now() + delay)
                    delay = min(delay * 2, 1000)
                    continue
                if membership.lost_after_reload():
                    continue
                applied = unsure.get(stored.get(store.marker_key) or b"")
                if applied is not None:
                    self._succeeded(applied, None)
                    return
                batch = self._rerun(batch)
                stale = False
            self._attempts += 1
            token = store.marker_token(self._attempts)
            compares = [Compare(k, r) for k, r in batch.compares.items()]
            if store.exclusive:
                compares.append(Compare(store.lock_key, membership.lock_revision))
            writes = [Write(k, v) for k, v in batch.writes.items()]
            writes.extend(Write(p, None, prefix=True) for p in batch.prefixes)
            if writes:
                writes.append(Write(store.marker_key, token, membership.lease))
            self.transactions += 1
            joined, joint = joint, None
            try:
                if joined is not None:
                    succeeded, revision = await joined.commit(compares, writes)
                else:
                    succeeded, revision = await store.etcd.commit(compares, writes)
                store.etcd_answered()
            except EtcdError as exc:
                if exc.too_large:  # refused, so not applied
                    if joined is not None:
                        continue  # sent with other partitions': alone it may fit
                    # As large again on every try: fail its operations now.
                    log.error("%r: %s (%d bytes)", store, exc, batch.bytes)
                    fail(batch.done, StoreError(f"{store!r}: {exc}"))
                    self._reload_soon()
                    return
                store.etcd_failed(exc)
                if clock.monotonic() > deadline:
                    fail(batch.done, StoreError(f"{store!r}: {exc}"))
                    self._reload_soon()
                    return
                log.warning("%r: %s; retrying", store, exc)
                self.lost_replies += 1
                if writes:
                    unsure[token] = batch
                stale = True
                await clock.sleep_until(clock.now() + delay)
                delay = min(delay * 2, 1000)
                continue
            if succeeded:
                self._succeeded(batch, revision)
                return
            if joined is not None:
                continue  # some transaction joined with it failed: send it alone to know
            # Another node (or a lost attempt of ours) changed something this batch read:
            # run it again on fresh state.
            stale = True

    async def _reload_quietly(self) -> dict[str, bytes | None] | None:
        try:
            return await self.store.mirror.reload()
        except EtcdError as exc:
            log.warning("%r: cannot reload: %s", self.store, exc)
            return None

    def _rerun(self, batch: Batch) -> Batch:
        """The batch's operations run again, in order, on the (reloaded) replica."""
        self.batch = Batch()
        for future, _ok, _result, op, args in batch.done:
            if not future.done():
                self._record(op, args, future)
        rerun, self.batch = self.batch, Batch()
        return rerun

    def _record(
        self, op: Callable[..., Any], args: tuple[object, ...], future: asyncio.Future[Any]
    ) -> None:
        """Run one operation on the replica, noting what it touched in the open batch."""
        store = self.store
        self.batch.done.append(
            run_op(self.recorder, op, args, future, lambda exc: StoreError(f"{store!r}: {exc}"))
        )

    def _succeeded(self, batch: Batch, revision: int | None) -> None:
        if revision is not None:
            revisions = self.store.mirror.revisions
            for key, value in batch.writes.items():
                revisions[key] = revision if value is not None else -revision
            self.store.committed(batch)
        answer(batch.done)

    def _after_batch(self) -> None:
        self.store.mirror.apply_held()
        waiting, self._waiting = self._waiting, []
        if self.store.mirror.dirty:
            refused = self._reloading()
            for _op, _args, future in waiting:
                if not future.done():
                    future.set_exception(refused)
            waiting = []
        for op, args, future in waiting:
            if self._waiting or not self._fits(op, args):  # in order: once one waits, all do
                self._waiting.append((op, args, future))
            else:
                self._run(op, args, future)
        if not self._commit_scheduled and not self._committing:
            self._idle.set()
