"""``ctx.sleep`` and eviction: sleeping invocations leave memory and resume when due."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pytest

from dawait import Context, Resonate
from dawait.errors import PromiseTimeoutError, StoreError
from dawait.runtime import MemoryStore, PromiseRecord
from dawait.testing import FakeClock
from tests.integration.semantics.support import WAIT, promise_exists, sqlite_url
from tests.polling import eventually


async def test_a_sleeping_invocation_leaves_memory_and_resumes_when_due(clock: FakeClock) -> None:
    calls = collections.Counter[str]()

    def step(name: str) -> str:
        calls[name] += 1
        return name

    async def wf(ctx: Context) -> str:
        before = await ctx.run(step, "before")
        await ctx.sleep(dt.timedelta(hours=24))
        after = await ctx.run(step, "after")
        return f"{before}+{after}"

    async with Resonate(clock=clock, evict_after=0) as app:
        app.register(wf)
        handle = await app.start("wf", wf)

        async def evicted() -> bool:
            return await promise_exists(app, "wf:2") and app._engine.active == 0

        await eventually(evicted, "the sleeping invocation to leave memory")
        timer = await app.promises.get("wf:2")
        assert timer.state == "pending"
        assert timer.timeout_at == dt.datetime.fromtimestamp(clock.now() / 1000 + 86400, dt.UTC)
        assert await handle.done() is False
        clock.advance(3600)
        assert await handle.done() is False
        clock.advance(23 * 3600)
        assert await asyncio.wait_for(handle.result(), WAIT) == "before+after"
    assert calls == {"before": 1, "after": 1}


@pytest.mark.parametrize("evict_after", [0, 60], ids=["evicted", "in-memory"])
async def test_a_sleep_that_came_due_while_closed_fires_on_reopen(
    tmp_path: Path, evict_after: float
) -> None:
    calls = collections.Counter[str]()
    clock = FakeClock()

    def step(name: str) -> str:
        calls[name] += 1
        return name

    async def wf(ctx: Context) -> str:
        await ctx.run(step, "before")
        await ctx.sleep(60)
        return await ctx.run(step, "after")

    async with Resonate(sqlite_url(tmp_path), clock=clock, evict_after=evict_after) as app:
        app.register(wf)
        await app.start("wf", wf)
        await eventually(lambda: promise_exists(app, "wf:2"), "the timer record")

    later = FakeClock(start=clock.now() + 61_000)
    async with Resonate(sqlite_url(tmp_path), clock=later, evict_after=evict_after) as app:
        app.register(wf)
        assert await asyncio.wait_for((await app.get("wf")).result(), WAIT) == "after"
        assert (await app.promises.get("wf:2")).state == "resolved"
    assert calls == {"before": 1, "after": 1}


async def test_gathered_sleeps_resume_as_each_comes_due(clock: FakeClock) -> None:
    runs = 0

    async def wf(ctx: Context) -> str:
        nonlocal runs
        runs += 1
        await asyncio.gather(ctx.sleep(5), ctx.sleep(10))
        return "both"

    async with Resonate(clock=clock, evict_after=0) as app:
        app.register(wf)
        handle = await app.start("wf", wf)

        async def evicted() -> bool:
            return await promise_exists(app, "wf:2") and app._engine.active == 0

        await eventually(evicted, "the first eviction")
        clock.advance(5)

        async def first_fired_and_evicted() -> bool:
            first = await app.promises.get("wf:1")
            return first.state == "resolved" and runs == 2 and app._engine.active == 0

        await eventually(first_fired_and_evicted, "the replay after the first timer")
        assert await handle.done() is False
        clock.advance(5)
        assert await asyncio.wait_for(handle.result(), WAIT) == "both"
    assert runs == 3


class HeldStore(MemoryStore):
    """A memory store that, once ``hold`` is set, holds the next caller of ``_gate`` (a read
    that has just been answered, as a cluster store's round trip to etcd takes time) until
    ``release`` is set; ``held`` says it is held."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def _gate(self) -> None:
        if self.hold:
            self.hold = False
            self.held.set()
            await self.release.wait()


class HeldDeadlineStore(HeldStore):
    """Holds the timer loop right after it read its next deadline."""

    async def next_timeout(self) -> int | None:
        deadline = await super().next_timeout()
        await self._gate()
        return deadline


async def test_a_sleep_that_begins_while_the_timer_loop_reads_its_deadline_still_fires(
    clock: FakeClock,
) -> None:
    """A timer created after the loop read the store's next deadline, but before it went to
    sleep on that (stale) deadline, must still wake it."""

    async def wf(ctx: Context) -> str:
        await ctx.sleep(5)
        return "woke"

    store = HeldDeadlineStore()
    async with Resonate(store=store, clock=clock, evict_after=60) as app:
        app.register(wf)
        await app.promises.create("first", timeout=1)
        first_due = clock.now() + 1000

        async def asleep_until_first() -> bool:
            return clock.next_deadline == first_due

        await eventually(asleep_until_first, "the timer loop to sleep until the first timer")
        store.hold = True
        clock.advance(1)  # the first timer fires; the loop reads the next deadline: none
        await asyncio.wait_for(store.held.wait(), WAIT)
        handle = await app.start("wf", wf)
        await eventually(lambda: promise_exists(app, "wf:1"), "the sleep's timer")
        store.release.set()
        clock.advance(5)
        assert await asyncio.wait_for(handle.result(), WAIT) == "woke"


class HeldBranchStore(HeldStore):
    """Holds an invocation's replay right after it read its records (its branch)."""

    async def branch_promises(self, branch: str) -> Sequence[PromiseRecord]:
        records = await super().branch_promises(branch)
        await self._gate()
        return records


async def test_a_promise_settled_while_a_replay_reads_its_records_still_wakes_it(
    clock: FakeClock,
) -> None:
    """A promise that settles after a replay read it as pending, but before the replay waits
    on it, must still wake the replay."""

    async def wf(ctx: Context) -> str:
        _, got = await asyncio.gather(ctx.sleep(5), ctx.promise())
        return f"got {got}"

    store = HeldBranchStore()
    async with Resonate(store=store, clock=clock, evict_after=0) as app:
        app.register(wf)
        handle = await app.start("wf", wf)

        async def evicted() -> bool:
            return await promise_exists(app, "wf:2") and app._engine.active == 0

        await eventually(evicted, "the waiting invocation to leave memory")
        store.hold = True
        clock.advance(5)  # the timer fires: the invocation replays and reads its records
        await asyncio.wait_for(store.held.wait(), WAIT)
        await app.promises.resolve("wf:2", "ok")
        store.release.set()
        assert await asyncio.wait_for(handle.result(), WAIT) == "got ok"


class FailingSuspendStore(MemoryStore):
    """A memory store whose first suspend fails (etcd out of reach past its retries, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = asyncio.Event()

    async def suspend_task(self, id: str, *, awaited: Sequence[str], now: int) -> bool:
        if not self.failed.is_set():
            self.failed.set()
            raise StoreError("the store is out of reach")
        return await super().suspend_task(id, awaited=awaited, now=now)


async def test_a_suspend_that_fails_leaves_the_invocation_running_in_memory(
    clock: FakeClock,
) -> None:
    """A store error while an idle invocation leaves memory does not stop the engine: the
    invocation stays in memory, and finishes once what it awaits settles."""

    async def wf(ctx: Context) -> str:
        return f"got {await ctx.promise()}"

    store = FailingSuspendStore()
    async with Resonate(store=store, clock=clock, evict_after=0) as app:
        app.register(wf)
        handle = await app.start("wf", wf)
        await asyncio.wait_for(store.failed.wait(), WAIT)
        await app.promises.resolve("wf:1", "ok")
        assert await asyncio.wait_for(handle.result(), WAIT) == "got ok"
        other = await app.start("other", wf)
        await eventually(lambda: promise_exists(app, "other:1"), "the second invocation's promise")
        await app.promises.resolve("other:1", "too")
        assert await asyncio.wait_for(other.result(), WAIT) == "got too"


async def test_an_evicted_invocation_times_out_at_its_deadline(clock: FakeClock) -> None:
    async def wf(ctx: Context) -> str:
        await ctx.sleep(3600)
        return "woke"

    async with Resonate(clock=clock, evict_after=0) as app:
        app.register(wf, timeout=10)
        handle = await app.start("wf", wf)

        async def evicted() -> bool:
            return await promise_exists(app, "wf:1") and app._engine.active == 0

        await eventually(evicted, "the sleeping invocation to leave memory")
        clock.advance(11)
        with pytest.raises(PromiseTimeoutError, match="wf"):
            await asyncio.wait_for(handle.result(), WAIT)
        assert (await app.promises.get("wf")).state == "rejected_timedout"


async def test_an_evicted_invocation_resumes_when_its_promise_is_resolved(
    clock: FakeClock,
) -> None:
    runs = 0

    async def wf(ctx: Context) -> str:
        nonlocal runs
        runs += 1
        return f"got {await ctx.promise()}"

    async with Resonate(clock=clock, evict_after=0) as app:
        app.register(wf)
        handle = await app.start("wf", wf)

        async def evicted() -> bool:
            return await promise_exists(app, "wf:1") and app._engine.active == 0

        await eventually(evicted, "the waiting invocation to leave memory")
        await app.promises.resolve("wf:1", "ok")
        assert await asyncio.wait_for(handle.result(), WAIT) == "got ok"
    assert runs == 2


async def test_a_sleeping_durable_child_is_evicted_and_resumes(clock: FakeClock) -> None:
    calls = collections.Counter[str]()

    def step(name: str) -> str:
        calls[name] += 1
        return name

    async def child(ctx: Context) -> str:
        await ctx.run(step, "child before")
        await ctx.sleep(30)
        return await ctx.run(step, "child after")

    async def wf(ctx: Context) -> str:
        result = await ctx.run(child)
        return f"{result} / {await ctx.run(step, 'parent after')}"

    async with Resonate(clock=clock, evict_after=0) as app:
        app.register(wf)
        handle = await app.start("wf", wf)

        async def evicted() -> bool:
            return await promise_exists(app, "wf:1.2") and app._engine.active == 0

        await eventually(evicted, "the sleeping invocation to leave memory")
        clock.advance(30)
        assert await asyncio.wait_for(handle.result(), WAIT) == "child after / parent after"
    assert calls == {"child before": 1, "child after": 1, "parent after": 1}
