"""Which invocations this process runs, and whether it fires timers: the engine asks its
``Ownership``. One process alone owns everything (``SoleOwnership``); a cluster node
(``dawait.cluster._node.ClusterNode``) answers from the partitions it owns and whether it
leads."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from dawait.core._promise import PromiseRecord

__all__ = ["Ownership", "SoleOwnership"]


class Ownership(Protocol):
    leading: asyncio.Event
    """Set while this process fires the schedules."""
    timers: asyncio.Event
    """Set while this process fires the timers and promise timeouts of what it owns."""

    def runs_here(self, id: str, function: str | None, version: int | None) -> bool:
        """Whether invocation ``id`` (of ``function`` at ``version``, when known) should run
        in this process."""
        ...

    def still_owns(self, id: str) -> bool:
        """Whether this process may still write for invocation ``id``."""
        ...

    def awaiting(self, task_id: str, promise_id: str) -> None:
        """Invocation ``task_id`` here has begun to wait on promise ``promise_id`` (a
        cluster node records the wait where the promise lives, if that is elsewhere)."""
        ...

    def watch(self, promise_id: str) -> None:
        """Something here waits for promise ``promise_id`` to settle (a cluster node asks
        the node that owns it, if another, to say when it does)."""
        ...

    def settled(self, record: PromiseRecord) -> None:
        """The engine here settled ``record`` (a cluster node tells those watching it)."""
        ...


class SoleOwnership:
    """One process runs every invocation and fires every timer."""

    def __init__(self) -> None:
        self.leading = asyncio.Event()
        self.leading.set()
        self.timers = self.leading

    def runs_here(self, id: str, function: str | None, version: int | None) -> bool:
        return True

    def still_owns(self, id: str) -> bool:
        return True

    def awaiting(self, task_id: str, promise_id: str) -> None:
        return None

    def watch(self, promise_id: str) -> None:
        return None

    def settled(self, record: PromiseRecord) -> None:
        return None
