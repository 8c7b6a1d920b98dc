"""The project's small interface to etcd, over ``aetcd`` (asyncio, gRPC).

Everything dawait asks of etcd goes through ``Etcd``: a consistent snapshot of a prefix, a
transaction of compares and writes that reports the store revision, and a watch of a
prefix from a revision. Keeping the surface this small keeps ``aetcd`` replaceable (the
design brief's ``etcd3-py`` failed here: its asyncio watch and keep-alive streams break on
aiohttp >= 3.10.6).

Several endpoints become one gRPC target (``ipv4:a:p1,b:p2,...``): gRPC's ``pick_first``
connects to the first reachable member and moves to another when that connection drops.

``cancel_task`` ends a task that may be waiting inside ``aetcd`` (see why there).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aetcd
import aetcd.exceptions
import grpc
from aetcd import rpc

from dawait.core._errors import StoreError

__all__ = [
    "Compare",
    "Etcd",
    "EtcdError",
    "KeyValue",
    "Range",
    "Write",
    "cancel_task",
    "parse_endpoints",
]

log = logging.getLogger("dawait.etcd")


class EtcdError(StoreError):
    """etcd could not be reached or refused a request; ``too_large``: refused for its size
    (it would be refused again)."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes | None
    """None for a deletion (in watch events)."""
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Compare:
    """``key`` was last modified at ``mod_revision`` (0: the key does not exist)."""

    key: str
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Range:
    """A read: the key ``key``, or with ``prefix`` every key under it, or with ``within``
    every key from ``key`` on under that prefix (at most ``limit``, in key order; 0: no
    limit)."""

    key: str
    prefix: bool = False
    limit: int = 0
    within: str | None = None


@dataclass(frozen=True, slots=True)
class Write:
    """Put ``value`` at ``key`` (attached to ``lease`` if not 0); None deletes it, and with
    ``prefix`` every key under it."""

    key: str
    value: bytes | None
    lease: int = 0
    prefix: bool = False


def parse_endpoints(endpoints: str | Sequence[str]) -> list[tuple[str, int]]:
    """``http://127.0.0.1:2379,http://...`` (or a list) to ``[(host, port), ...]``."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    parsed: list[tuple[str, int]] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        split = urlsplit(item if "://" in item else f"http://{item}")
        if split.scheme not in ("http", "") or not split.hostname:
            raise ValueError(f"etcd endpoint {item!r}: expected http://HOST:PORT")
        try:
            port = split.port or 2379
        except ValueError:
            raise ValueError(f"etcd endpoint {item!r}: the port is not a number") from None
        parsed.append((split.hostname, port))
    if not parsed:
        raise ValueError("no etcd endpoint given")
    return parsed


class Etcd:
    """A connection to one etcd cluster."""

    def __init__(self, endpoints: str | Sequence[str], *, timeout: float = 5.0) -> None:
        self.endpoints = parse_endpoints(endpoints)
        self.timeout = timeout
        *first, (last_host, last_port) = self.endpoints
        # aetcd builds the target as f"{host}:{port}"; a multi-address target lets gRPC
        # fail over between members.
        host = "ipv4:" + "".join(f"{h}:{p}," for h, p in first) + last_host if first else last_host
        # Replies are not bounded (gRPC's 4 MiB default would refuse a read of a few
        # large records); etcd bounds what is written, so what is read back.
        self._client = aetcd.Client(
            host=host,
            port=last_port,
            timeout=timeout,
            options={"grpc.max_receive_message_length": -1},
        )

    def __repr__(self) -> str:
        return f"Etcd({','.join(f'{h}:{p}' for h, p in self.endpoints)})"

    async def connect(self) -> None:
        try:
            await self._client.connect()
        except aetcd.exceptions.ClientError as exc:
            raise EtcdError(f"{self!r}: cannot connect: {exc}") from exc

    async def close(self) -> None:
        await self._client.close()

    async def snapshot(self, prefix: str) -> tuple[int, list[KeyValue]]:
        """Every key under ``prefix`` at one revision, and that revision."""
        key = prefix.encode()
        request = rpc.RangeRequest(key=key, range_end=_prefix_end(key))
        response = await self._call(self._stub().Range, request)
        items = [KeyValue(kv.key.decode(), kv.value, kv.mod_revision) for kv in response.kvs]
        return response.header.revision, items

    async def read(self, keys: Sequence[str]) -> tuple[int, list[KeyValue | None]]:
        """The keys ``keys`` at one revision (None where absent), and that revision: one
        request however many keys."""
        revision, found = await self.ranges([Range(key) for key in keys])
        return revision, [items[0] if items else None for items, _more in found]

    async def ranges(
        self, ranges: Sequence[Range]
    ) -> tuple[int, list[tuple[list[KeyValue], bool]]]:
        """What each of ``ranges`` holds at one revision (its keys, and whether a limit left
        more out), and that revision: one request however many."""
        ops = []
        for wanted in ranges:
            key = wanted.key.encode()
            if wanted.within is not None:
                end = _prefix_end(wanted.within.encode())
            else:
                end = _prefix_end(key) if wanted.prefix else b""
            ops.append(
                rpc.RequestOp(
                    request_range=rpc.RangeRequest(key=key, range_end=end, limit=wanted.limit)
                )
            )
        response = await self._call(self._stub().Txn, rpc.TxnRequest(success=ops))
        found = [
            (
                [
                    KeyValue(kv.key.decode(), kv.value, kv.mod_revision)
                    for kv in reply.response_range.kvs
                ],
                bool(reply.response_range.more),
            )
            for reply in response.responses
        ]
        return int(response.header.revision), found

    async def page(self, start: str, prefix: str, limit: int) -> tuple[list[KeyValue], bool]:
        """Up to ``limit`` keys under ``prefix`` from ``start`` on (inclusive), in key order;
        and whether there are more."""
        end = _prefix_end(prefix.encode())
        request = rpc.RangeRequest(key=start.encode(), range_end=end, limit=limit)
        response = await self._call(self._stub().Range, request)
        items = [KeyValue(kv.key.decode(), kv.value, kv.mod_revision) for kv in response.kvs]
        return items, bool(response.more)

    async def commit(
        self, compares: Sequence[Compare], writes: Sequence[Write]
    ) -> tuple[bool, int]:
        """Apply ``writes`` if every compare holds; (whether it did, the store revision)."""
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    result=rpc.Compare.EQUAL,
                    target=rpc.Compare.MOD,
                    key=c.key.encode(),
                    mod_revision=c.mod_revision,
                )
                for c in compares
            ],
            success=[_request_op(w) for w in writes],
        )
        response = await self._call(self._stub().Txn, request)
        return bool(response.succeeded), int(response.header.revision)

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[KeyValue]:
        """Each change under ``prefix`` from ``start_revision`` on, in revision order."""
        key = prefix.encode()
        try:
            watch = await self._client.watch(
                key, range_end=_prefix_end(key), start_revision=start_revision
            )
        except aetcd.exceptions.ClientError as exc:
            raise EtcdError(f"{self!r}: cannot watch {prefix!r}: {exc}") from exc
        try:
            async for event in watch:
                kv = event.kv
                deleted = event.kind == aetcd.EventKind.DELETE
                yield KeyValue(kv.key.decode(), None if deleted else kv.value, kv.mod_revision)
        except aetcd.exceptions.ClientError as exc:
            raise EtcdError(f"{self!r}: the watch of {prefix!r} ended: {exc}") from exc
        finally:
            await watch.cancel()

    async def compact(self, revision: int) -> bool:
        """Drop etcd's history before ``revision`` (every key keeps its current value);
        False if it was compacted that far already."""
        request = rpc.CompactionRequest(revision=revision, physical=False)
        try:
            await self._call(self._stub().Compact, request)
        except EtcdError as exc:
            if "compacted" in str(exc):
                return False
            raise
        return True

    async def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; its id."""
        stub = self._lease_stub()
        response = await self._call(stub.LeaseGrant, rpc.LeaseGrantRequest(TTL=ttl))
        return int(response.ID)

    async def keep_alive(self, lease: int, timeout: float | None = None) -> int:
        """Renew ``lease`` once; the seconds it has left (0: it has expired). Gives up after
        ``timeout`` seconds (the connection's timeout by default)."""
        timeout = self.timeout if timeout is None else timeout
        try:
            reply = await asyncio.wait_for(self._client.refresh_lease(lease), timeout)
        except (aetcd.exceptions.ClientError, grpc.aio.AioRpcError) as exc:
            raise EtcdError(f"{self!r}: cannot renew lease {lease:x}: {exc}") from exc
        except TimeoutError as exc:
            raise EtcdError(f"{self!r}: lease {lease:x}: no answer within {timeout} s") from exc
        return 0 if reply is None else int(reply.TTL)

    async def revoke(self, lease: int) -> None:
        """End ``lease`` now: the keys attached to it are deleted."""
        stub = self._lease_stub()
        await self._call(stub.LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease))

    def _lease_stub(self) -> Any:
        stub = self._client.leasestub
        if stub is None:
            raise EtcdError(f"{self!r} is not connected")
        return stub

    def _stub(self) -> Any:
        stub = self._client.kvstub
        if stub is None:
            raise EtcdError(f"{self!r} is not connected")
        return stub

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout, metadata=self._client.metadata)
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            too_large = "too large" in details or exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            raise EtcdError(f"{self!r}: {exc.code().name}: {details}", too_large=too_large) from exc
        except TimeoutError as exc:
            raise EtcdError(f"{self!r}: no answer within {self.timeout} s") from exc


def _request_op(write: Write) -> Any:
    key = write.key.encode()
    if write.value is None:
        end = _prefix_end(key) if write.prefix else b""
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key, range_end=end))
    put = rpc.PutRequest(key=key, value=write.value, lease=write.lease)
    return rpc.RequestOp(request_put=put)


def _prefix_end(key: bytes) -> bytes:
    """The end of the range of keys starting with ``key`` (etcd's ``WithPrefix``)."""
    end = bytearray(key)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


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
