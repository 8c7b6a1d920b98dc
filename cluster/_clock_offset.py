"""A bounded clock offset in the cluster (as CockroachDB's ``--max-offset``).

Every ``EVERY`` seconds a node asks each live peer for its wall clock over the peer RPC
(``time``) and takes the peer's offset as its answer less the midpoint of the round trip,
the round trip's half being the error. Its own offset from the majority is the median of
the offsets, its own (0) counted. With three or more nodes, a node whose offset is beyond
``max_offset`` plus the error stands aside: it gives up its lease at once (its partitions,
their timers and the leadership go to the others, who take them as after a crash), answers
``/readyz`` 503 with the offset measured, takes no new work, and rejoins once back within
the bound. A joining node measures before it takes any partition. With fewer than three
nodes there is no majority: the offset is measured and shown only.
Every node exports its offset (``dawait_clock_offset_seconds``) and ``GET /nodes`` shows it.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from typing import TYPE_CHECKING

from dawait.cluster._etcd import EtcdError
from dawait.core._errors import DawaitError

if TYPE_CHECKING:
    from dawait.cluster._node import ClusterNode

__all__ = ["DEFAULT_MAX_OFFSET", "ClockWatch"]

log = logging.getLogger("dawait.cluster")

DEFAULT_MAX_OFFSET = 0.5
"""Seconds a node's wall clock may be off the majority's before it stands aside."""
EVERY = 2.0
"""Seconds between two rounds of measurement."""
ASK_TIMEOUT = 2.0


class ClockWatch:
    """Measures ``node``'s wall-clock offset from its peers and stands it aside when out
    of bound (see the module docstring)."""

    def __init__(self, node: ClusterNode, max_offset: float = DEFAULT_MAX_OFFSET) -> None:
        self.node = node
        self.max_offset = max_offset
        self.offset: float | None = None
        """Seconds this node's clock is ahead of the majority's (None: not measured)."""
        self.error = 0.0
        """The measurement's error bound (half the median round trip), seconds."""
        self.out_of_bound: str | None = None
        """Why it stands aside now (None: it does not)."""

    async def run(self) -> None:
        clock = self.node.engine.clock
        while not self.node.stopped:
            try:
                await self.measure()
            except Exception as exc:  # a round that fails is a round without news
                log.debug("node %s: cannot measure clock offsets: %r", self.node.node_id, exc)
            await clock.sleep_until(clock.now() + round(EVERY * 1000))

    async def measure(self) -> None:
        node = self.node
        peers = [m for m in node.ns.view.members.values() if m.node_id != node.node_id]
        if not peers:
            self.offset = None
            return
        samples = await asyncio.gather(*(self._ask(m.address) for m in peers))
        found = [s for s in samples if s is not None]
        if not found:
            return
        self.offset = -_middle([0.0, *(offset for offset, _error in found)])
        self.error = statistics.median(error for _offset, error in found)
        voters = len(found) + 1
        beyond = abs(self.offset) - self.error > self.max_offset
        if voters >= 3 and beyond and self.out_of_bound is None:
            self.out_of_bound = (
                f"this node's clock is {self.offset * 1000:+.0f} ms off the majority of "
                f"{voters} nodes (measured to within {self.error * 1000:.0f} ms), beyond the "
                f"{self.max_offset * 1000:.0f} ms bound: it stands aside until it is back "
                "within it (fix its time sync)"
            )
            log.error("node %s: %s", node.node_id, self.out_of_bound)
            await self._stand_aside()
        elif self.out_of_bound is not None and (voters < 3 or not beyond):
            log.warning(
                "node %s: its clock is back within %.0f ms of the majority (%+.0f ms); it rejoins",
                node.node_id,
                self.max_offset * 1000,
                self.offset * 1000,
            )
            self.out_of_bound = None

    async def _ask(self, address: str) -> tuple[float, float] | None:
        """(the peer's offset from this clock, the error), in seconds; None: no answer."""
        clock = self.node.engine.clock
        sent_wall, sent = clock.now(), clock.monotonic()
        try:
            answer = await asyncio.wait_for(
                self.node.peering.peers.call(address, "time", {}), ASK_TIMEOUT
            )
        except (DawaitError, TimeoutError, OSError):
            return None
        trip = clock.monotonic() - sent
        midpoint = sent_wall / 1000 + trip / 2
        return float(answer["now"]) / 1000 - midpoint, trip / 2

    async def _stand_aside(self) -> None:
        """Give the lease up now: the others take what this node held."""
        ns = self.node.ns
        lease = ns.membership.lease
        ns.membership.lose(self.out_of_bound or "its clock is out of bound")
        if lease:
            try:
                await asyncio.wait_for(ns.etcd.revoke(lease), ASK_TIMEOUT)
            except (EtcdError, TimeoutError) as exc:
                log.warning(
                    "node %s: cannot give its lease up (it ends with its TTL): %r",
                    self.node.node_id,
                    exc,
                )


def _middle(offsets: list[float]) -> float:
    """The peers' offsets from this clock, its own (0) among them: their median, or with
    an even count (no majority) the middle one nearer this clock. Negated, this node's
    offset from the majority."""
    ordered = sorted(offsets)
    half = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[half]
    return min(ordered[half - 1], ordered[half], key=abs)
