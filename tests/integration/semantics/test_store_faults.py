"""A store error is never an application outcome (issue 17): faults injected at the store
boundary (every operation fails while the store is "full"), on the real engine."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

from dawait import Context, Never, Resonate
from dawait.errors import StoreError
from dawait.runtime import MemoryStore
from dawait.runtime._store_ops import op_create_promise, op_settle_promise
from tests.integration.semantics.support import WAIT
from tests.polling import eventually

R = TypeVar("R")


class FullStore(MemoryStore):
    """Fails operations with SQLite's disk-full message: all of them while ``full``, and
    the next ``times`` writes (creates and settles) about an id in ``refused_ids``."""

    def __init__(self) -> None:
        super().__init__()
        self.full = False
        self.refused = 0
        self.refused_ids: set[str] = set()
        self.times = 0

    def refuse(self, *ids: str, times: int = 1) -> None:
        self.refused_ids, self.times = set(ids), times

    def _about_refused(self, args: tuple[object, ...]) -> bool:
        ids = {getattr(arg, "id", arg) for arg in args}
        return self.times > 0 and bool(ids & self.refused_ids)

    async def _transact(self, op: Callable[..., R], *args: object) -> R:
        write = op in (op_create_promise, op_settle_promise)
        if self.full or (write and self._about_refused(args)):
            self.refused += 1
            self.times -= not self.full
            raise StoreError("app.db: database or disk is full")
        return await super()._transact(op, *args)


async def test_a_step_whose_record_fails_is_not_an_outcome_even_when_the_code_catches_it() -> None:
    store = FullStore()
    ran: list[int] = []

    async def charge(amount: int) -> str:
        ran.append(amount)
        return f"charged {amount}"

    async def order(ctx: Context, amount: int) -> str:
        try:
            return await ctx.options(retry_policy=Never()).run(charge, amount)
        except Exception as exc:  # the kind of code that would record a wrong result
            return f"gave up: {exc}"

    async with Resonate(store=store) as app:
        app.register(order)
        # The step's record does not fit; the small write after it (the result) would.
        store.refuse("o1:1")
        handle = await app.start("o1", order, 5)
        assert await asyncio.wait_for(handle.result(), 20) == "charged 5"
        assert app.local.engine.metrics.store_errors["disk_full"] >= 1
        assert app.local.engine.metrics.events["store_retries"] >= 1
    assert ran  # at least once; more when the fault hit between the step and its record


async def test_an_invocation_whose_result_cannot_be_written_finishes_once_it_can() -> None:
    store = FullStore()

    async def plus(a: int, b: int) -> int:
        return a + b

    async def add(ctx: Context, a: int, b: int) -> int:
        return await ctx.run(plus, a, b)

    async with Resonate(store=store) as app:
        app.register(add)
        store.refuse("a1", times=1_000_000)  # the step's record goes in, the result not
        handle = await app.start("a1", add, 1, 2)
        await eventually(_more_than(store, 2), "the engine to retry", within=WAIT)
        info = await _get(store, app, "a1")
        assert info.state == "pending"
        store.refuse()
        assert await asyncio.wait_for(handle.result(), 20) == 3
        # A start of the same id answers the real result, not a store error.
        assert await app.run("a1", add, 1, 2) == 3


async def test_recovery_and_timers_survive_a_store_failing_at_start() -> None:
    """A node started on a full disk: recovery and the timer loop keep trying and carry on
    by themselves once the store answers (they used to die at the first error)."""
    store = FullStore()

    async def nap(ctx: Context) -> str:
        await ctx.sleep(dt.timedelta(milliseconds=300))
        return "rested"

    async with Resonate(store=store, evict_after=0) as app:
        app.register(nap)
        await app.start("n1", nap)
    store.full = True
    async with Resonate(store=store) as app:
        app.register(nap)
        await eventually(_more_than(store, 2), "recovery to retry", within=WAIT)
        store.full = False
        handle = await app.get("n1")
        assert await asyncio.wait_for(handle.result(), 20) == "rested"


def _more_than(store: FullStore, refused: int) -> Callable[[], Any]:
    async def check() -> bool:
        return store.refused > refused

    return check


async def _get(store: FullStore, app: Resonate, id: str) -> Any:
    refused, store.refused_ids = store.refused_ids, set()
    try:
        return await app.promises.get(id)
    finally:
        store.refused_ids = refused
