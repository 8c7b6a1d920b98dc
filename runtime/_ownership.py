"""Which invocations this process runs, and whether it fires timers: the engine asks its
``Ownership``. One process alone owns everything (``SoleOwnership``); a cluster node
(``dawait.cluster._node.ClusterNode``) answers from placement, claims and leadership."""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["Ownership", "SoleOwnership"]


class Ownership(Protocol):
    leading: asyncio.Event
    """Set while this process fires timers, promise timeouts and schedules."""

    def runs_here(self, id: str, function: str | None, version: int | None) -> bool:
        """Whether invocation ``id`` (of ``function`` at ``version``, when known) should run
        in this process."""
        ...

    def still_owns(self, id: str) -> bool:
        """Whether this process may still write for invocation ``id``."""
        ...


class SoleOwnership:
    """One process runs every invocation and fires every timer."""

    def __init__(self) -> None:
        self.leading = asyncio.Event()
        self.leading.set()

    def runs_here(self, id: str, function: str | None, version: int | None) -> bool:
        return True

    def still_owns(self, id: str) -> bool:
        return True
