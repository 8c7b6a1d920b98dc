"""``Joint``: one etcd request for what a node's partitions send at about the same time.

Each partition a node owns batches its own operations (cluster/_etcd_batches.py) into one
transaction per loop turn. With 64 partitions per group that would be dozens of small
transactions where one store alone sent one; so the node's partition stores hand their
first attempt to ``Joint``, which sends what they hand it as one transaction (all
compares, all writes; packed under etcd's limits of operations and bytes per request), and
reads (of keys and prefixes) as one request. It sends in waves: what comes within
``LINGER`` of the first goes together, and while a wave is in flight the next one
gathers, so the busier the node, the larger each transaction (measured with
bench/cluster.py: etcd transactions per step fell from 0.26 to about 0.05 on one node). A
joint transaction that fails its compares says nothing of which partition's failed: each
is then sent again alone (``Batches`` does), so one lost partition costs the others one
more request, never a reload. One refused as too large is sent again alone, too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

from dawait.cluster._etcd import Compare, Etcd, EtcdError, KeyValue, Range, Write

__all__ = ["Joint"]

_Commit = tuple[list[Compare], list[Write], "asyncio.Future[tuple[bool, int]]"]
_Found = list[tuple[list[KeyValue], bool]]
_Read = tuple[list[Range], "asyncio.Future[_Found]"]

LINGER = 0.002
"""Seconds a wave waits for more before it is sent: the node's partitions each send their
own batch, and at moderate load they come a few at a time (a local etcd commits in well
under a millisecond here; with fsync, as in production, a commit takes 2-10 ms anyway)."""
MAX_OPS = 120
"""Compares (and writes) per joint transaction: below etcd's default --max-txn-ops, 128."""
MAX_BYTES = 1280 * 1024
"""Bytes of keys and values per joint transaction (what one partition sends may be up to
this alone): below etcd's default --max-request-bytes, 1.5 MiB."""


class Joint:
    """Coalesces the transactions and reads of a node's partitions (see the module docstring)."""

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd
        self._commits: list[_Commit] = []
        self._reads: list[_Read] = []
        self._committing = False
        """A wave of joint transactions is in flight: the next waits for it (and so gathers
        what the partitions send meanwhile: the busier the node, the larger the batch)."""
        self._reading = False
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()
        """Requests in flight (the loop holds tasks weakly)."""
        self.sent = 0
        """Requests sent (transactions and reads)."""

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(LINGER, self._flush)

    async def commit(
        self, compares: Sequence[Compare], writes: Sequence[Write]
    ) -> tuple[bool, int]:
        """Like ``Etcd.commit``, sent with the others of its wave: True only if every
        transaction joined with it held (False: send it again alone to know)."""
        future: asyncio.Future[tuple[bool, int]] = asyncio.get_running_loop().create_future()
        self._commits.append((list(compares), list(writes), future))
        self._schedule()
        return await future

    async def read(self, keys: Sequence[str]) -> list[KeyValue | None]:
        """Like ``Etcd.read``, in one request with the others of its wave."""
        found = await self.ranges([Range(key) for key in keys])
        return [items[0] if items else None for items, _more in found]

    async def ranges(self, ranges: Sequence[Range]) -> _Found:
        """Like ``Etcd.ranges``, in one request with the others of its wave."""
        future: asyncio.Future[_Found] = asyncio.get_running_loop().create_future()
        self._reads.append((list(ranges), future))
        self._schedule()
        return await future

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="dawait-etcd-joint")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def _flush(self) -> None:
        self._scheduled = False
        if self._commits and not self._committing:
            commits, self._commits = self._commits, []
            self._committing = True
            self._spawn(self._wave(self._commit_groups(commits), "_committing"))
        if self._reads and not self._reading:
            reads, self._reads = self._reads, []
            self._reading = True
            self._spawn(self._wave(self._read_groups(reads), "_reading"))

    async def _wave(self, requests: list[Coroutine[Any, Any, None]], busy: str) -> None:
        """Send ``requests`` at once; what comes meanwhile waits for the next wave."""
        try:
            await asyncio.gather(*requests)
        finally:
            setattr(self, busy, False)
            if self._commits or self._reads:
                self._schedule()

    def _commit_groups(self, commits: list[_Commit]) -> list[Coroutine[Any, Any, None]]:
        """Packed under etcd's per-transaction limit."""
        sends = []
        group: list[_Commit] = []
        size = weight = 0
        for commit in commits:
            ops = max(len(commit[0]), len(commit[1]))
            written = sum(len(w.key) + len(w.value or b"") for w in commit[1])
            if group and (size + ops > MAX_OPS or weight + written > MAX_BYTES):
                sends.append(self._send(group))
                group, size, weight = [], 0, 0
            group.append(commit)
            size += ops
            weight += written
        if group:
            sends.append(self._send(group))
        return sends

    def _read_groups(self, reads: list[_Read]) -> list[Coroutine[Any, Any, None]]:
        sends = []
        start = 0
        while start < len(reads):  # packed the same way
            end, size = start, 0
            while end < len(reads) and (end == start or size + len(reads[end][0]) <= MAX_OPS):
                size += len(reads[end][0])
                end += 1
            sends.append(self._read(reads[start:end]))
            start = end
        return sends

    async def _send(self, group: list[_Commit]) -> None:
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

    async def _read(self, reads: list[_Read]) -> None:
        ranges = [wanted for group, _future in reads for wanted in group]
        self.sent += 1
        try:
            _revision, found = await self.etcd.ranges(ranges)
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
        for group, future in reads:
            if not future.done():
                future.set_result(found[at : at + len(group)])
            at += len(group)
