"""How the engine rides out a failing store (disk full, I/O error, read-only, etcd away).

A store error is never an application outcome: an invocation whose run met one (any store
call made for it, even one its code caught) records nothing of that run; its actor ends and
runs again from the store after a backoff (0.5 s doubling to ``MAX_BACKOFF``), so it
finishes once the store takes writes again, without a restart. Background loops
(recovery, timers, schedules, retention) survive store errors the same way: logged once per
episode, retried with backoff. Every store error met is counted by kind
(``dawait_store_errors{kind}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from dawait.core._errors import StoreError
from dawait.runtime._metrics import store_error_kind
from dawait.runtime._store import ACTING_FOR

if TYPE_CHECKING:
    from dawait.runtime._engine import Engine

__all__ = ["MAX_BACKOFF", "Faults"]

log = logging.getLogger("dawait.engine")

FIRST_BACKOFF = 500
"""Milliseconds before the first retry after a store error."""
MAX_BACKOFF = 10_000
"""The longest wait between retries (ms)."""


class Faults:
    """The engine's side of store errors (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._backoff: dict[str, int] = {}
        """Invocation id -> the wait before its next run (ms), while its runs meet errors."""
        self.failing: set[str] = set()
        """Background loops failing now, by what they do."""
        self._troubled = False
        self._loops: dict[str, asyncio.Task[None]] = {}

    def run_loops(
        self,
        group: asyncio.TaskGroup,
        loops: Mapping[str, tuple[str, Callable[[], Awaitable[Any]]]],
    ) -> None:
        """Start each background loop (task name -> what it does, one pass) in ``group``."""
        for name, (what, one_pass) in loops.items():
            self._loops[what] = group.create_task(self.keep_running(what, one_pass), name=name)

    def problem(self) -> str | None:
        """None while every background loop runs, else which one ended (it cannot end on
        an error it meets: only by a bug, which this makes visible in ``/readyz``)."""
        dead = [what for what, task in self._loops.items() if task.done()]
        return f"the engine's loop for {', '.join(dead)} has ended" if dead else None

    def admit(self) -> None:
        """Refuse a new invocation started from outside (not by a running one, whose
        children go on) while the store refuses new work: ``StoreError`` saying why."""
        if ACTING_FOR.get() is None and (refusal := self.engine.store.refusal()) is not None:
            raise StoreError(f"this node takes no new invocations now: {refusal}")

    @contextlib.contextmanager
    def noting(self) -> Iterator[None]:
        """Around a store call: a ``StoreError`` it raises is ``noted`` (and raised on)."""
        try:
            yield
        except StoreError as exc:
            self.noted(exc)
            raise

    def noted(self, error: StoreError) -> None:
        """``error`` happened in a store call: count it, and if the current task acts for
        an invocation, that invocation's run records nothing more (see ``Invocation``)."""
        self.engine.metrics.store_errors[store_error_kind(error)] += 1
        acting = ACTING_FOR.get()
        if acting is not None:
            actor = self.engine.actor(acting)
            if actor is not None and actor.store_error is None:
                actor.store_error = error

    def run_again_later(self, id: str, error: StoreError) -> None:
        """Invocation ``id``'s run ended on ``error``: run it again after a backoff."""
        delay = self._backoff.get(id, FIRST_BACKOFF)
        self._backoff[id] = min(delay * 2, MAX_BACKOFF)
        if not self._troubled:
            log.warning(
                "invocation %s: the store failed (%s); nothing recorded, running it again in "
                "%d ms (further ones logged at debug until the store answers)",
                id,
                error,
                delay,
            )
            self._troubled = True
        else:
            log.debug("invocation %s: the store failed (%s); again in %d ms", id, error, delay)
        self.engine.metrics.event("store_retries")
        self.engine.spawn(self._resume_after(id, delay), name=f"dawait-store-retry:{id}")

    async def _resume_after(self, id: str, delay: int) -> None:
        clock = self.engine.clock
        await clock.sleep_until(clock.now() + delay)
        if self.engine.ownership.still_owns(id):
            self.engine.resume(id)

    def ran(self, id: str) -> None:
        """Invocation ``id``'s run ended without a store error."""
        if self._backoff.pop(id, None) is not None and self._troubled and not self._backoff:
            log.info("the store answers again: invocations run as before")
            self._troubled = False

    async def keep_running(
        self, what: str, one_pass: Callable[[], Awaitable[None]], *, once: bool = False
    ) -> None:
        """Run ``one_pass`` of a background loop again and again, for as long as the engine
        runs (``once``: until one pass completes): an error is logged once until a pass
        succeeds again, and the pass retried with backoff."""
        clock = self.engine.clock
        delay = FIRST_BACKOFF
        while True:
            try:
                await one_pass()
            except Exception as exc:
                if isinstance(exc, StoreError):
                    self.engine.metrics.store_errors[store_error_kind(exc)] += 1
                if what not in self.failing:
                    log.exception("%s failed; trying again with backoff", what)
                    self.failing.add(what)
                self.engine.metrics.event("loop_errors")
                await clock.sleep_until(clock.now() + delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            delay = FIRST_BACKOFF
            if what in self.failing:
                log.info("%s works again", what)
                self.failing.discard(what)
            if once:
                return
