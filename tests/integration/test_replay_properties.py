"""Replay is deterministic: any interleaving of step completions and crashes gives the same
ids and the same results as a run that never crashed.

A crash here is the app stopping at an arbitrary moment (its actors cancelled wherever they
are) after some number of store writes; a fresh app on the same store then recovers. The
store is the only thing that survives, as with a killed process (see tests/chaos for real
SIGKILLs on SQLite).
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dawait import Context, Resonate
from dawait.core._promise import Settle, Value
from dawait.runtime import MemoryStore
from dawait.runtime._store import CreatePromise, PromiseCreated, PromiseSettled


class Crash(BaseException):
    """The process died: nothing after this point runs."""


class CrashingStore(MemoryStore):
    """A memory store that dies right after its ``crash_after``-th write: that write is
    kept, its writer never hears back, and every later operation fails until ``revive``."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.crash_after: int | None = None
        self.crashed = asyncio.Event()

    def revive(self, crash_after: int | None) -> None:
        self.crash_after = None if crash_after is None else self.writes + crash_after
        self.crashed = asyncio.Event()

    def _check_alive(self) -> None:
        if self.crashed.is_set():
            raise Crash

    def _written(self) -> None:
        self.writes += 1
        if self.crash_after is not None and self.writes >= self.crash_after:
            self.crashed.set()
            raise Crash

    async def _transact(self, op: Any, *args: object) -> Any:
        self._check_alive()
        return await super()._transact(op, *args)

    async def create_promise(self, request: CreatePromise, *, now: int) -> PromiseCreated:
        created = await super().create_promise(request, now=now)
        self._written()
        return created

    async def settle_promise(
        self, id: str, *, event: Settle, value: Value, now: int
    ) -> PromiseSettled:
        settled = await super().settle_promise(id, event=event, value=value, now=now)
        self._written()
        return settled


def build_app(store: MemoryStore, delays: list[int], runs: list[str]) -> Resonate:
    app = Resonate(store=store)

    async def leaf(index: int) -> int:
        runs.append(f"leaf{index}")
        for _ in range(delays[index % len(delays)]):
            await asyncio.sleep(0)
        return index * 10

    async def child(ctx: Context, base: int) -> list[int]:
        first = await ctx.run(leaf, base)
        second = await ctx.run(leaf, base + 1)
        return [first, second]

    @app.register(name="fan_out")
    async def fan_out(ctx: Context, width: int) -> dict[str, Any]:
        gathered = await asyncio.gather(*(ctx.run(leaf, i) for i in range(width)))
        nested = await ctx.run(child, 100)
        chance = await ctx.random()
        return {"gathered": list(gathered), "nested": nested, "chance": chance}

    return app


async def run_to_completion(
    width: int, delays: list[int], crashes: list[int]
) -> tuple[dict[str, Any], list[tuple[str, str, Any]], list[str]]:
    store = CrashingStore()
    runs: list[str] = []
    for crash_after in crashes:
        store.revive(crash_after)
        app = build_app(store, delays, runs)
        await app.open()
        try:
            handle = await app.start("wf", "fan_out", width)
            done = asyncio.ensure_future(handle.result())
            crashed = asyncio.ensure_future(store.crashed.wait())
            await asyncio.wait([done, crashed], return_when=asyncio.FIRST_COMPLETED)
            crashed.cancel()
            done.cancel()
        except Crash:
            pass  # died while starting
        await app.close()  # whatever still runs stops where it is
    store.revive(None)
    app = build_app(store, delays, runs)
    async with app:
        result = await app.run("wf", "fan_out", width)
        recorded = [(p.id, p.state, p.value) for p in await app.promises.search("wf*", limit=1000)]
    return result, recorded, runs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(min_value=1, max_value=5),
    delays=st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=5),
    crashes=st.lists(st.integers(min_value=1, max_value=12), max_size=4),
)
def test_any_interleaving_and_crashes_give_the_same_ids_and_results(
    width: int, delays: list[int], crashes: list[int]
) -> None:
    baseline, baseline_recorded, _ = asyncio.run(run_to_completion(width, delays, []))
    result, recorded, runs = asyncio.run(run_to_completion(width, delays, crashes))

    # The same calls got the same ids and outcomes (the random draw is the run's own).
    assert [(id, state) for id, state, _ in recorded] == [
        (id, state) for id, state, _ in baseline_recorded
    ]
    by_id = dict((id, value) for id, _, value in recorded)
    baseline_by_id = dict((id, value) for id, _, value in baseline_recorded)
    chance_id = f"wf:{width + 2}"
    assert {k: v for k, v in by_id.items() if k not in ("wf", chance_id)} == {
        k: v for k, v in baseline_by_id.items() if k not in ("wf", chance_id)
    }
    assert result["gathered"] == baseline["gathered"] == [i * 10 for i in range(width)]
    assert result["nested"] == baseline["nested"] == [1000, 1010]
    # The result saw exactly the random number that was recorded for its id.
    assert result["chance"] == by_id[chance_id]
    assert by_id["wf"] == result
    # Each leaf ran at least once and at most once per crash more.
    for index in [*range(width), 100, 101]:
        assert 1 <= runs.count(f"leaf{index}") <= 1 + len(crashes)
