"""What keeps slow clients and a shortage of file descriptors from taking a node down.

- **Descriptors.** At start the soft ``RLIMIT_NOFILE`` is raised to the hard one
  (``raise_fd_limit``); of what that allows, the node keeps a reserve for its store, etcd,
  peers and logs, takes at most ``max_connections`` client connections (the excess is
  answered at once with 503 and closed, so that clients retry), and holds at most half of
  those in long-polls (a wait beyond that is answered at once, with ``Retry-After``).
- **Slow clients.** A connection must send a request's headers within ``header_timeout``
  of opening (or of its last response), and a body within ``body_timeout`` once its
  headers arrived; else it is closed (408 for a late body), so a slowloris cannot hold
  descriptors (deadlines checked twice a second: no timer per request). aiohttp has
  neither timeout of its own.
- **The accept log.** When ``accept()`` fails for want of descriptors, asyncio logs it with a
  traceback each time it retries; ``quiet_accept_errors`` logs it at most once per
  ``ACCEPT_LOG_EVERY`` seconds, with how often it happened.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from dawait.runtime._clock import SystemClock

__all__ = [
    "ACCEPT_LOG_EVERY",
    "BodyTimeout",
    "Guard",
    "Limits",
    "quiet_accept_errors",
    "raise_fd_limit",
]

log = logging.getLogger("dawait.http")

ACCEPT_LOG_EVERY = 10.0
"""Seconds between two logs of ``accept()`` failing for want of descriptors."""
RESERVED_FDS = 64
"""Descriptors kept, at the least, for the store, etcd, peers and logs."""
SWEEP_EVERY = 0.5
"""Seconds between two looks for connections past their deadline."""
IDLE_TIMEOUT = 75.0
"""Seconds a connection may stay idle between requests (aiohttp's keep-alive default)."""

_CLOCK = SystemClock()
_OUT_OF_RESOURCE = "socket.accept() out of system resource"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
)


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one (when allowed); the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the descriptor limit from %d to %d: %s", soft, target, exc)
    return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20


@dataclass(frozen=True, slots=True)
class Limits:
    """A node's limits on clients (``for_fds`` derives them from the descriptor limit)."""

    max_connections: int
    max_waits: int
    header_timeout: float = 10.0
    body_timeout: float = 30.0

    @classmethod
    def for_fds(
        cls,
        fds: int,
        *,
        max_connections: int | None = None,
        header_timeout: float = 10.0,
        body_timeout: float = 30.0,
    ) -> Limits:
        """Connections below ``fds`` less a reserve (an eighth, at least ``RESERVED_FDS``),
        unless ``max_connections`` says; long-polls half of them."""
        if max_connections is None:
            max_connections = max(8, fds - max(RESERVED_FDS, fds // 8))
        return cls(
            max_connections=max_connections,
            max_waits=max(1, max_connections // 2),
            header_timeout=header_timeout,
            body_timeout=body_timeout,
        )


class BodyTimeout(Exception):
    """A request's body did not arrive within ``body_timeout`` (answered 408, closed)."""


class Guard:
    """Applies ``limits`` to the connections of one aiohttp server (see ``install``)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.waiting = 0
        """Long-polls open now."""
        self.refused = 0
        """Connections answered 503 at once (over ``max_connections``)."""
        self.timed_out = 0
        """Connections closed for sending a request too slowly."""
        self._deadlines: dict[RequestHandler, float] = {}
        """When each connection waiting for a request's headers must have sent them
        (monotonic seconds); swept once a second, so no timer is made per request."""
        self._sweeper: asyncio.TimerHandle | None = None
        self._gone: dict[RequestHandler, asyncio.Future[None]] = {}
        self._open = 0

    def install(self, server: web.Server) -> None:
        """Watch ``server``'s connections as they open and close."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self._open += 1
            if self._open > self.limits.max_connections:
                self.refused += 1
                # Once aiohttp has set the connection up (closing it from inside its
                # set-up breaks aiohttp's handler).
                asyncio.get_running_loop().call_soon(self._refuse, transport)
                return
            self.expect_request(handler, self.limits.header_timeout)

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            self._open -= 1
            self._disarm(handler)
            gone = self._gone.pop(handler, None)
            if gone is not None and not gone.done():
                gone.set_result(None)
            lost(handler, exc)

        # aiohttp's RequestHandler calls these on its manager (the server) for every
        # connection; wrapping them is the one place to see connections open.
        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    def _refuse(self, transport: asyncio.Transport) -> None:
        body = (
            b'{"error": "unavailable", "message": "the node holds its most connections '
            b'(%d): retry"}' % self.limits.max_connections
        )
        transport.write(_BUSY % (len(body), body))
        transport.close()

    def expect_request(self, handler: RequestHandler, within: float) -> None:
        """Close ``handler``'s connection unless a request's headers arrive ``within``
        (give or take the second between sweeps)."""
        self._deadlines[handler] = _CLOCK.monotonic() + within
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_EVERY, self._sweep)

    def _sweep(self) -> None:
        now = _CLOCK.monotonic()
        late = [handler for handler, at in self._deadlines.items() if at <= now]
        for handler in late:
            del self._deadlines[handler]
            self.timed_out += 1
            transport = handler.transport
            if transport is not None:
                transport.abort()
        self._sweeper = None
        if self._deadlines:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_EVERY, self._sweep)

    def _disarm(self, handler: RequestHandler) -> None:
        self._deadlines.pop(handler, None)

    def request_began(self, request: web.Request) -> None:
        """Its headers arrived: the connection's deadline is lifted until it is answered."""
        self._disarm(request.protocol)

    def request_ended(self, request: web.Request) -> None:
        """Answered: the next request's headers are due within the idle and header times."""
        protocol = request.protocol
        transport = protocol.transport
        if transport is not None and not transport.is_closing():
            self.expect_request(protocol, IDLE_TIMEOUT + self.limits.header_timeout)

    async def read_body(self, request: web.Request) -> None:
        """Read the body within ``body_timeout`` (``BodyTimeout`` otherwise); one that came
        with the headers (most do) at once, without a timer."""
        if not request.body_exists or request.content.is_eof():
            return
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                await request.read()
        except TimeoutError:
            self.timed_out += 1
            raise BodyTimeout(
                f"the request body did not arrive within {self.limits.body_timeout:g} s"
            ) from None

    def gone(self, handler: RequestHandler) -> asyncio.Future[None]:
        """Done once ``handler``'s client has closed its connection (aiohttp lets a
        handler run on after that: a long-poll would hold its place until its wait ends)."""
        future = self._gone.get(handler)
        if future is None:
            future = self._gone[handler] = asyncio.get_running_loop().create_future()
            transport = handler.transport
            if transport is None or transport.is_closing():
                future.set_result(None)
        return future

    @property
    def waits_full(self) -> bool:
        """Whether ``max_waits`` long-polls are open (a new one is answered at once)."""
        return self.waiting >= self.limits.max_waits


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log ``accept()`` failing for want of descriptors at most once per
    ``ACCEPT_LOG_EVERY`` seconds (asyncio logs each retry, with a traceback)."""
    state = {"last": -ACCEPT_LOG_EVERY, "missed": 0}
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != _OUT_OF_RESOURCE:
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        state["missed"] += 1
        now = _CLOCK.monotonic()
        if now - state["last"] >= ACCEPT_LOG_EVERY:
            log.error(
                "cannot accept connections: %s (%d times in the last %g s; the node caps its "
                "connections below the descriptor limit, so something else holds them)",
                context.get("exception"),
                state["missed"],
                ACCEPT_LOG_EVERY,
            )
            state["last"], state["missed"] = now, 0

    loop.set_exception_handler(handler)
