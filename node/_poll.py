"""The push side of Resonate's protocol: poll streams (``GET /poll/{group}/{pid}``, server-sent
events) and the dispatch of tasks to the SDKs' workers, with their leases.

- **Streams.** A worker process connects as ``pid`` of ``group``. Each message is one
  ``data: <JSON>`` line and a blank line (LF only, no ``event:`` name: what both SDKs read).
  A stream is closed after ``STREAM_SECONDS`` (the Python SDK's listener dies if a stream
  outlives its 300 s client timeout; it reconnects about 1 s after a close), with a comment
  line every ``KEEPALIVE_SECONDS``. Messages for a process that is reconnecting wait for it
  ``LINGER_SECONDS``.
- **Addresses.** ``poll://uni@group/pid``: that process. ``poll://any@group``: one process of
  the group, in turn; ``poll://any@group/pid``: that one while connected, else any. An
  anycast with no process of its group connected is held (at most ``MAX_HELD`` per group)
  until one connects.
- **Dispatch.** A task for a worker is pushed as ``execute`` with its version; it is pushed
  again every ``REPUSH_MS`` while still pending, and when the lease of the worker that took
  it ends (the worker stopped heartbeating); a worker that took it at an older version is
  refused its writes. A timer's task is never pushed: the node resolves the timer at its
  deadline, which fulfils the task (the SDKs acquire a timer's task only to drop it).
  A node that finds a task acquired when it restarts or takes its partition gives the lease
  at least ``DEFAULT_TTL`` from then: the worker's heartbeats had nowhere to go meanwhile
  (else every failover would run the workflows under way twice).
- **Listeners** (``promise.register_listener``) are kept in memory: the SDKs register them
  again every 60 s while they wait, so a restarted node learns them again.

Memory is bounded by what is in flight: pending and leased tasks of workers, listeners,
streams and their queues; nothing here grows with history.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from dawait.core._param import call_target
from dawait.core._promise import PromiseRecord
from dawait.core._task import TaskRecord, TaskState
from dawait.core._wire import TAG_TARGET, Address, parse_address, promise_wire

if TYPE_CHECKING:
    from dawait.runtime._engine import Engine

__all__ = ["Dispatch", "PollHub"]

log = logging.getLogger("dawait.protocol")

STREAM_SECONDS = 120.0
KEEPALIVE_SECONDS = 15.0
LINGER_SECONDS = 30.0
MAX_QUEUED = 10_000
"""Messages one stream holds unsent; past that the oldest is dropped (re-pushes and
listener refreshes make up for it)."""
MAX_HELD = 10_000
MAX_STREAMS = 1_000
REPUSH_MS = 30_000
DEFAULT_TTL = 60_000


class Relay(Protocol):
    def forward(self, address: Address, line: str, key: str) -> bool:
        """Send a message to the nodes holding streams of its group; False if none does."""
        ...

    def forward_to(self, node_id: str, address: Address, line: str, key: str) -> bool:
        """Send a message to node ``node_id`` (the SDK sent its request there); False if
        that is this node."""
        ...


@dataclass(eq=False)
class _Stream:
    group: str
    pid: str
    queue: deque[str] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    connected: int = 0
    left_at: float | None = None

    def put(self, line: str) -> None:
        if len(self.queue) >= MAX_QUEUED:
            self.queue.popleft()
        self.queue.append(line)
        self.ready.set()


class PollHub:
    """The open poll streams, by group and pid, and where a message to an address goes."""

    def __init__(self, engine: Engine) -> None:
        self.clock = engine.clock
        self.streams: dict[tuple[str, str], _Stream] = {}
        self.turn: dict[str, int] = {}
        self.held: dict[str, OrderedDict[str, str]] = {}
        self.pushed = 0
        self.closing = False
        self.relay: Relay | None = None
        """In a cluster: where messages for streams of other nodes go."""

    def close(self) -> None:
        """End every poll stream now (the node stops: its SDKs reconnect elsewhere or
        once it is back) and refuse new ones."""
        self.closing = True
        for stream in self.streams.values():
            stream.ready.set()

    def send(
        self, raw: str, kind: str, data: dict[str, Any], key: str, via: str | None = None
    ) -> bool:
        """Push message ``kind`` to address ``raw`` (through node ``via``, in a cluster);
        False if nothing can receive it yet (``key`` names it while it waits)."""
        address = parse_address(raw)
        if address is None:
            log.warning("cannot push %s for %s to %r: not a poll:// address", kind, key, raw)
            return False
        line = json.dumps({"kind": kind, "head": {}, "data": data}, separators=(",", ":"))
        relay = self.relay
        if via is not None and relay is not None and relay.forward_to(via, address, line, key):
            return True
        return self.deliver(address, line, key)

    def deliver(
        self, address: Address, line: str, key: str, *, relay: bool = True, park: bool = True
    ) -> bool:
        """``send`` of an encoded message: to a stream here, else (``relay``) to the nodes
        holding streams of its group, else it waits here: an anycast for a process of its
        group, a unicast (``park``) ``LINGER_SECONDS`` for its process (connecting, maybe)."""
        stream = self._route(address)
        if stream is None:
            if relay and self.relay is not None and self.relay.forward(address, line, key):
                return True
            if address.anycast:
                self.hold(address.group, key, line)
            elif park and address.pid is not None and len(self.streams) < MAX_STREAMS:
                stream = self.streams[(address.group, address.pid)] = _Stream(
                    address.group, address.pid, left_at=self.clock.monotonic()
                )
                stream.put(line)
            return False
        stream.put(line)
        self.pushed += 1
        return True

    def hold(self, group: str, key: str, line: str) -> None:
        held = self.held.setdefault(group, OrderedDict())
        held[key] = line
        held.move_to_end(key)
        if len(held) > MAX_HELD:
            held.popitem(last=False)

    def groups(self) -> set[str]:
        """The groups of the streams here (connected, or lingering for a reconnection)."""
        self.sweep()
        return {group for group, _ in self.streams}

    def _route(self, address: Address) -> _Stream | None:
        if address.pid is not None:
            stream = self.streams.get((address.group, address.pid))
            if stream is not None and (stream.connected or not address.anycast):
                return stream
            if not address.anycast:
                return None
        live = [s for (g, _), s in self.streams.items() if g == address.group and s.connected]
        if not live:
            return None
        turn = self.turn.get(address.group, 0)
        self.turn[address.group] = turn + 1
        return live[turn % len(live)]

    def sweep(self) -> None:
        now = self.clock.monotonic()
        for key, stream in list(self.streams.items()):
            gone = not stream.connected and stream.left_at is not None
            if gone and now - (stream.left_at or now) > LINGER_SECONDS:
                del self.streams[key]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        group = request.match_info["group"].lower()
        pid = request.match_info["pid"]
        if self.closing:
            return web.json_response(
                {"error": "unavailable", "message": "the node is stopping"}, status=503
            )
        self.sweep()
        stream = self.streams.get((group, pid))
        if stream is None:
            if len(self.streams) >= MAX_STREAMS:
                return web.json_response(
                    {"error": "unavailable", "message": "too many poll streams"}, status=503
                )
            stream = self.streams[(group, pid)] = _Stream(group, pid)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        stream.connected += 1
        for line in self.held.pop(group, {}).values():
            stream.put(line)
        try:
            async for line in self._lines(stream):
                await response.write(line.encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            stream.connected -= 1
            if not stream.connected:
                stream.left_at = self.clock.monotonic()
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _lines(self, stream: _Stream) -> AsyncIterator[str]:
        ends = self.clock.monotonic() + STREAM_SECONDS
        yield ": dawait\n\n"  # the headers and a first byte: the client knows it is connected
        while (left := ends - self.clock.monotonic()) > 0 and not self.closing:
            if not stream.queue:
                stream.ready.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, KEEPALIVE_SECONDS)):
                        await stream.ready.wait()
                if self.closing:
                    return
                if not stream.queue:
                    yield ":\n\n"
                    continue
            yield f"data: {stream.queue.popleft()}\n\n"


class Dispatch:
    """The engine's ``Workers``: which invocations SDK workers run, their pushes, leases and
    listeners."""

    def __init__(self, engine: Engine, hub: PollHub) -> None:
        self.engine = engine
        self.hub = hub
        self.listeners: dict[str, dict[str, str | None]] = {}
        """Promise id -> the addresses to unblock when it settles, each with the node the
        listener came through (in a cluster; None: this one)."""
        self.ttls: dict[str, int] = {}
        """The lease each leased task was taken with (a heartbeat renews it by as much)."""
        self.grace: dict[str, int] = {}
        """Task id -> when the lease of a task found acquired ends at the earliest (see
        ``dispatch``)."""
        self.pushed: dict[str, int] = {}
        """Task id -> the version pushed (a look again is due): pushed once until then."""
        self._due: list[tuple[int, str, int]] = []
        """(when to look again, task id, version): a push to repeat, or a lease to check."""
        self._wake = asyncio.Event()
        self.serves: Callable[[str, str], bool] = self._serves_here
        """Whether dawait runs function ``name`` in ``group``: this node does (in a cluster,
        any node: each must place an invocation alike)."""

    # -- the engine's side -----------------------------------------------------------------

    def takes(self, tags: Mapping[str, str], param: str | None) -> bool:
        target = tags.get(TAG_TARGET)
        if target is None:
            return False
        address = parse_address(target)
        if address is None:
            return False
        if not address.anycast:
            return True
        name, _ = call_target(param)
        return name is None or not self.serves(address.group, name)

    def _serves_here(self, group: str, name: str) -> bool:
        return name in self.engine.registry.served([group])

    def dispatch(self, record: PromiseRecord, task: TaskRecord) -> None:
        if record.is_timer or task.state in (TaskState.FULFILLED, TaskState.SUSPENDED):
            return
        if self.pushed.get(task.id) == task.version:
            return  # pushed already; pushed again if still pending when it is looked at
        if task.state is TaskState.ACQUIRED:
            # A worker holds it, or did: this node has just taken its partition or restarted,
            # and the worker's heartbeats had nowhere to go meanwhile. Its lease counts anew.
            until = max(task.expires_at or 0, self.engine.clock.now() + DEFAULT_TTL)
            self.grace[task.id] = until
            self.check_at(until, task.id, task.version)
            return
        self.push(record, task)

    def settled(self, record: PromiseRecord) -> None:
        self.ttls.pop(record.id, None)
        self.pushed.pop(record.id, None)
        self.grace.pop(record.id, None)
        for address, via in sorted(self.listeners.pop(record.id, {}).items()):
            data = {"promise": promise_wire(record)}
            self.hub.send(address, "unblock", data, record.id, via)

    # -- pushes and leases -----------------------------------------------------------------

    def push(self, record: PromiseRecord, task: TaskRecord) -> None:
        target = record.tags.get(TAG_TARGET)
        if target is None:
            return
        data = {"task": {"id": task.id, "version": task.version}}
        self.pushed[task.id] = task.version
        self.hub.send(target, "execute", data, task.id)
        self.check_at(self.engine.clock.now() + REPUSH_MS, task.id, task.version)

    def leased(self, task: TaskRecord, ttl: int) -> None:
        """``task`` was taken (or its lease renewed): look again when its lease ends."""
        self.ttls[task.id] = ttl
        self.pushed.pop(task.id, None)
        self.grace.pop(task.id, None)
        if task.expires_at is not None:
            self.check_at(task.expires_at, task.id, task.version)

    def listen(self, promise_id: str, address: str, via: str | None = None) -> None:
        self.listeners.setdefault(promise_id, {})[address] = via

    def check_at(self, when: int, id: str, version: int) -> None:
        if not self._due or when < self._due[0][0]:
            self._wake.set()
        heapq.heappush(self._due, (when, id, version))

    async def run(self) -> None:
        """Repeat pushes of tasks still pending, and push again those whose lease ended."""
        clock = self.engine.clock
        while True:
            self._wake.clear()
            now = clock.now()
            while self._due and self._due[0][0] <= now:
                _, id, version = heapq.heappop(self._due)
                try:
                    await self._look_again(id, version, now)
                except Exception:
                    log.exception("task %s: could not check its dispatch", id)
            deadline = self._due[0][0] if self._due else None
            await self.engine.sleep_until(deadline, self._wake)

    async def _look_again(self, id: str, version: int, now: int) -> None:
        if self.pushed.get(id) == version:
            del self.pushed[id]
        grace = self.grace.get(id, 0)
        if grace <= now:
            self.grace.pop(id, None)
        if not self.engine.ownership.still_owns(id):
            self.ttls.pop(id, None)
            self.grace.pop(id, None)
            return  # its partition moved: its new owner dispatches it
        store = self.engine.store
        task = await store.get_task(id)
        if task is None or task.version != version:
            return  # taken again, resumed or deleted since: a later check covers it
        if task.state is TaskState.PENDING or (
            task.state is TaskState.ACQUIRED
            and task.expires_at is not None
            and task.expires_at <= now
            and grace <= now
        ):
            record = await store.get_promise(id)
            if record is not None and not record.state.settled:
                self.push(record, task)
        elif task.state is TaskState.ACQUIRED and task.expires_at is not None:
            self.check_at(max(task.expires_at, grace), id, version)  # renewed by heartbeats
