"""``Joint``: one etcd request for what a node's partitions send in the same loop turn.

Each partition a node owns batches its own operations (cluster/_etcd_batches.py) into one
transaction per loop turn. With 64 partitions per group that would be dozens of small
transactions where one store alone sent one; so the node's partition stores hand their
first attempt to ``Joint``, which sends the transactions of one loop turn as one (all
compares, all writes; packed under etcd's per-transaction limit), and reads by key as one
request. A joint transaction that fails its compares says nothing of which partition's
failed: each is then sent again alone (``Batches`` does), so one lost partition costs the
others one more request, never a reload.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

from dawait.cluster._etcd import Compare, Etcd, EtcdError, KeyValue, Write

__all__ = ["Joint"]

MAX_OPS = 120
"""Compares (and writes) per joint transaction: below etcd's default --max-txn-ops, 128."""


class Joint:
    """Coalesces the transactions and reads of one loop turn (see the module docstring)."""

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd
        self._commits: list[tuple[list[Compare], list[Write], asyncio.Future[tuple[bool, int]]]]
        self._commits = []
        self._reads: list[tuple[list[str], asyncio.Future[list[KeyValue | None]]]] = []
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()
        """Requests in flight (the loop holds tasks weakly)."""
        self.sent = 0
        """Requests sent (transactions and reads)."""

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def commit(
        self, compares: Sequence[Compare], writes: Sequence[Write]
    ) -> tuple[bool, int]:
        """Like ``Etcd.commit``, sent with the others of this loop turn: True only if every
        transaction joined with it held (False: send it again alone to know)."""
        future: asyncio.Future[tuple[bool, int]] = asyncio.get_running_loop().create_future()
        self._commits.append((list(compares), list(writes), future))
        self._schedule()
        return await future

    async def read(self, keys: Sequence[str]) -> list[KeyValue | None]:
        """Like ``Etcd.read``, in one request with the others of this loop turn."""
        future: asyncio.Future[list[KeyValue | None]] = asyncio.get_running_loop().create_future()
        self._reads.append((list(keys), future))
        self._schedule()
        return await future

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="dawait-etcd-joint")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def _flush(self) -> None:
        self._scheduled = False
        commits, self._commits = self._commits, []
        reads, self._reads = self._reads, []
        group: list[tuple[list[Compare], list[Write], asyncio.Future[tuple[bool, int]]]] = []
        size = 0
        for commit in commits:
            ops = max(len(commit[0]), len(commit[1]))
            if group and size + ops > MAX_OPS:
                self._spawn(self._send(group))
                group, size = [], 0
            group.append(commit)
            size += ops
        if group:
            self._spawn(self._send(group))
        start = 0
        while start < len(reads):  # packed the same way
            end, size = start, 0
            while end < len(reads) and (end == start or size + len(reads[end][0]) <= MAX_OPS):
                size += len(reads[end][0])
                end += 1
            self._spawn(self._read(reads[start:end]))
            start = end

    async def _send(
        self, group: list[tuple[list[Compare], list[Write], asyncio.Future[tuple[bool, int]]]]
    ) -> None:
        compares = [c for commit in group for c in commit[0]]
        writes = [w for commit in group for w in commit[1]]
        self.sent += 1
        try:
            outcome = await self.etcd.commit(compares, writes)
        except EtcdError as exc:
            for _c, _w, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException as exc:  # cancelled with the node: the waiters go too
            for _c, _w, future in group:
                if not future.done():
                    future.set_exception(EtcdError(f"{self.etcd!r}: {exc!r}"))
            raise
        for _c, _w, future in group:
            if not future.done():
                future.set_result(outcome)

    async def _read(
        self, reads: list[tuple[list[str], asyncio.Future[list[KeyValue | None]]]]
    ) -> None:
        keys = [key for wanted, _future in reads for key in wanted]
        self.sent += 1
        try:
            _revision, found = await self.etcd.read(keys)
        except BaseException as exc:
            for _keys, future in reads:
                if not future.done():
                    future.set_exception(
                        exc if isinstance(exc, EtcdError) else EtcdError(f"{exc!r}")
                    )
            if not isinstance(exc, Exception):
                raise
            return
        at = 0
        for wanted, future in reads:
            if not future.done():
                future.set_result(found[at : at + len(wanted)])
            at += len(wanted)
