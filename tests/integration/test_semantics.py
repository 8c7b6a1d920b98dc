"""The SDK's semantics as a user sees them: results, ids, replay, retries, timeouts,
cancellation, typed payloads, recorded errors, external promises, timers and the promise API.

Restarts are simulated by closing an app and opening a new ``Resonate`` on the same SQLite
file. Durations run on a ``FakeClock`` wherever a test waits for one.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pydantic
import pytest

from dawait import Constant, Context, Never, Resonate
from dawait.errors import (
    CanceledError,
    NonDeterminismError,
    PromiseAlreadySettledError,
    PromiseNotFoundError,
    PromiseTimeoutError,
    StepError,
    StoreError,
)
from dawait.runtime import MemoryStore, PromiseRecord
from dawait.testing import FakeClock
from tests.polling import eventually

WAIT = 10.0
"""Seconds any single wait in these tests may take before the test fails."""


# -- payload types (module level, so annotations resolve) ------------------------------------


@dataclasses.dataclass(frozen=True)
class Order:
    id: str
    amount: int
    placed_at: dt.datetime


class Receipt(pydantic.BaseModel):
    order_id: str
    payment_id: uuid.UUID
    charged_at: dt.datetime
    items: list[str]


class OutOfStockError(Exception):
    """A user's exception type, importable from this module."""


class Outer:
    class NestedError(Exception):
        """An exception type nested in a class."""


# -- helpers ----------------------------------------------------------------------------------


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


async def holds(value: bool) -> bool:
    """``value`` as a check for ``eventually`` (the lambda re-evaluates it each poll)."""
    return value


async def promise_exists(app: Resonate, id: str) -> bool:
    try:
        await app.promises.get(id)
    except PromiseNotFoundError:
        return False
    return True


class Gate:
    """A step that blocks until the app closes, unless opened: the workflow stops there."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.open = False
        self.passed = 0

    async def step(self) -> None:
        self.reached.set()
        if not self.open:
            await asyncio.Event().wait()
        self.passed += 1

    async def wait_reached(self) -> None:
        await asyncio.wait_for(self.reached.wait(), WAIT)
        self.reached.clear()


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else sqlite_url(tmp_path)


@pytest.fixture
async def app() -> AsyncIterator[Resonate]:
    async with Resonate(evict_after=60) as app:
        yield app


# -- results and handles ----------------------------------------------------------------------


async def test_run_returns_the_result_and_the_same_id_returns_it_without_running(
    store_url: str,
) -> None:
    calls = collections.Counter[str]()

    def add(a: int, b: int) -> int:
        calls["add"] += 1
        return a + b

    async def wf(ctx: Context, n: int) -> int:
        calls["wf"] += 1
        return await ctx.run(add, n, 1) * 10

    async with Resonate(store_url) as app:
        app.register(wf)
        assert await app.run("job", wf, 4) == 50
        assert await app.run("job", wf, 4) == 50
        assert calls == {"wf": 1, "add": 1}


async def test_same_id_again_after_a_restart_returns_the_stored_result(tmp_path: Path) -> None:
    calls = collections.Counter[str]()

    def add(a: int, b: int) -> int:
        calls["add"] += 1
        return a + b

    async def wf(ctx: Context, n: int) -> int:
        calls["wf"] += 1
        return await ctx.run(add, n, 1)

    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        assert await app.run("job", wf, 1) == 2
    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        assert await app.run("job", wf, 1) == 2
    assert calls == {"wf": 1, "add": 1}


async def test_start_gives_a_handle_with_result_done_and_cancel(app: Resonate) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def hold() -> None:
        started.set()
        await release.wait()

    async def wf(ctx: Context) -> str:
        await ctx.run(hold)
        return "done"

    app.register(wf)
    handle = await app.start("job", wf)
    assert handle.id == "job"
    await asyncio.wait_for(started.wait(), WAIT)
    assert await handle.done() is False
    release.set()
    assert await asyncio.wait_for(handle.result(), WAIT) == "done"
    assert await handle.done() is True
    await handle.cancel()  # canceling a finished invocation does nothing
    assert await handle.result() == "done"
    assert (await app.promises.get("job")).state == "resolved"


async def test_start_twice_attaches_to_the_running_invocation(app: Resonate) -> None:
    release = asyncio.Event()
    calls = collections.Counter[str]()

    async def slow() -> int:
        calls["slow"] += 1
        await release.wait()
        return 7

    async def wf(ctx: Context) -> int:
        calls["wf"] += 1
        return await ctx.run(slow)

    app.register(wf)
    first = await app.start("job", wf)
    second = await app.start("job", wf)
    release.set()
    assert await asyncio.wait_for(asyncio.gather(first.result(), second.result()), WAIT) == [7, 7]
    assert calls == {"wf": 1, "slow": 1}


async def test_get_returns_a_handle_of_an_existing_invocation(app: Resonate) -> None:
    async def wf(ctx: Context) -> int:
        return 3

    app.register(wf)
    await app.run("job", wf)
    handle = await app.get("job")
    assert handle.id == "job"
    assert await handle.result() == 3
    assert await handle.done() is True


async def test_get_of_an_unknown_id_raises_promise_not_found(app: Resonate) -> None:
    with pytest.raises(PromiseNotFoundError, match="nope"):
        await app.get("nope")


# -- ids ------------------------------------------------------------------------------------


async def test_ids_are_assigned_when_the_call_is_made_not_when_it_finishes(
    app: Resonate,
) -> None:
    b_done = asyncio.Event()
    order: list[str] = []

    async def a() -> str:
        await b_done.wait()  # a finishes after b
        order.append("a")
        return "A"

    async def b() -> str:
        order.append("b")
        b_done.set()
        return "B"

    async def wf(ctx: Context) -> list[str]:
        first, second = ctx.run(a), ctx.run(b)
        assert (first.id, second.id) == ("wf:1", "wf:2")
        return list(await asyncio.gather(first, second))

    app.register(wf)
    assert await app.run("wf", wf) == ["A", "B"]
    assert order == ["b", "a"]
    found = {p.id: (p.param["func"], p.value) for p in await app.promises.search("wf:*")}
    assert found == {"wf:1": (a.__qualname__, "A"), "wf:2": (b.__qualname__, "B")}


async def test_durable_children_number_their_own_calls(app: Resonate) -> None:
    seen: dict[str, list[str]] = {}

    def step(n: int) -> int:
        return n

    async def grandchild(ctx: Context) -> int:
        call = ctx.run(step, 1)
        seen[ctx.id] = [call.id]
        return await call

    async def child(ctx: Context, n: int) -> int:
        calls = [ctx.run(step, n), ctx.run(grandchild), ctx.run(step, n + 1)]
        seen[ctx.id] = [c.id for c in calls]
        return sum(await asyncio.gather(*calls))

    async def wf(ctx: Context) -> int:
        one = ctx.run(child, 10)
        two = ctx.run(step, 5)
        seen[ctx.id] = [one.id, two.id]
        return await one + await two

    app.register(wf)
    assert await app.run("wf", wf) == 10 + 1 + 11 + 5
    assert seen == {
        "wf": ["wf:1", "wf:2"],
        "wf:1": ["wf:1.1", "wf:1.2", "wf:1.3"],
        "wf:1.2": ["wf:1.2.1"],
    }
    ids = [p.id for p in await app.promises.search("wf:*")]
    assert ids == ["wf:1", "wf:1.1", "wf:1.2", "wf:1.2.1", "wf:1.3", "wf:2"]


async def test_awaiting_a_call_twice_runs_it_once(app: Resonate) -> None:
    calls = 0

    def step() -> int:
        nonlocal calls
        calls += 1
        return calls

    async def wf(ctx: Context) -> list[int]:
        call = ctx.run(step)
        return [await call, await call]

    app.register(wf)
    assert await app.run("wf", wf) == [1, 1]
    assert calls == 1


async def test_a_new_invocation_gets_its_arguments_as_their_annotated_types(
    app: Resonate,
) -> None:
    seen: list[tuple[type, type]] = []

    async def place(ctx: Context, order: Order, quantity: int) -> str:
        seen.append((type(order), type(quantity)))
        return order.id

    async def parent(ctx: Context) -> str:
        plain_order = {"id": "o-2", "amount": 1, "placed_at": "2024-05-01T12:30:00Z"}
        return await ctx.rpc("place", plain_order, "3")

    app.register(place, name="place")
    app.register(parent)
    plain = {"id": "o-1", "amount": 1, "placed_at": "2024-05-01T12:30:00Z"}
    assert await app.run("direct", place, plain, "2") == "o-1"
    assert await app.run("parent", parent) == "o-2"
    assert seen == [(Order, int), (Order, int)]


# -- replay after a restart -----------------------------------------------------------------


async def test_a_workflow_stopped_midway_resumes_on_reopen_without_rerunning_steps(
    tmp_path: Path,
) -> None:
    gate = Gate()
    calls = collections.Counter[str]()

    def charge(amount: int) -> str:
        calls["charge"] += 1
        return f"pay-{amount}"

    def ship(payment: str) -> str:
        calls["ship"] += 1
        return f"shipped {payment}"

    async def wf(ctx: Context, amount: int) -> str:
        calls["wf"] += 1
        payment = await ctx.run(charge, amount)
        await ctx.run(gate.step)
        return await ctx.run(ship, payment)

    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        handle = await app.start("order", wf, 5)
        await gate.wait_reached()
        assert await handle.done() is False

    gate.open = True
    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        handle = await app.get("order")
        assert await asyncio.wait_for(handle.result(), WAIT) == "shipped pay-5"
    assert calls == {"wf": 2, "charge": 1, "ship": 1}
    assert gate.passed == 1


async def test_a_durable_child_stopped_midway_resumes_on_reopen(tmp_path: Path) -> None:
    gate = Gate()
    calls = collections.Counter[str]()

    def step(n: int) -> int:
        calls[f"step {n}"] += 1
        return n

    async def child(ctx: Context) -> int:
        first = await ctx.run(step, 1)
        await ctx.run(gate.step)
        return first + await ctx.run(step, 2)

    async def wf(ctx: Context) -> int:
        total = await ctx.run(child)
        return total + await ctx.run(step, 3)

    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        await app.start("wf", wf)
        await gate.wait_reached()
        assert (await app.promises.get("wf:1")).state == "pending"

    gate.open = True
    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        assert await asyncio.wait_for((await app.get("wf")).result(), WAIT) == 6
        states = {p.id: p.state for p in await app.promises.search("wf*")}
    assert calls == {"step 1": 1, "step 2": 1, "step 3": 1}
    assert states == dict.fromkeys(["wf", "wf:1", "wf:1.1", "wf:1.2", "wf:1.3", "wf:2"], "resolved")


async def test_a_pending_ctx_promise_survives_a_restart(tmp_path: Path) -> None:
    runs = 0

    async def wf(ctx: Context) -> str:
        nonlocal runs
        runs += 1
        return f"approved by {await ctx.promise()}"

    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        await app.start("wf", wf)
        await eventually(lambda: promise_exists(app, "wf:1"), "the promise record")

    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        await app.promises.resolve("wf:1", "ops")
        assert await asyncio.wait_for((await app.get("wf")).result(), WAIT) == "approved by ops"
    assert runs == 2


async def test_changed_call_order_on_replay_raises_non_determinism(tmp_path: Path) -> None:
    gate = Gate()

    def step_a() -> str:
        return "a"

    def step_b() -> str:
        return "b"

    async def v1(ctx: Context) -> str:
        await ctx.run(step_a)
        await ctx.run(step_b)
        await ctx.run(gate.step)
        return "v1"

    async def v2(ctx: Context) -> str:
        await ctx.run(step_b)
        await ctx.run(step_a)
        await ctx.run(gate.step)
        return "v2"

    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(v1, name="wf")
        await app.start("job", "wf")
        await gate.wait_reached()

    gate.open = True
    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(v2, name="wf")
        handle = await app.get("job")
        with pytest.raises(NonDeterminismError, match=r"job:1"):
            await asyncio.wait_for(handle.result(), WAIT)
    assert gate.passed == 0


async def test_an_invocation_keeps_the_version_it_started_with(tmp_path: Path) -> None:
    gate = Gate()

    def step_a() -> str:
        return "a"

    def step_b() -> str:
        return "b"

    async def v1(ctx: Context) -> str:
        first = await ctx.run(step_a)
        await ctx.run(gate.step)
        return f"v1 {first}{await ctx.run(step_b)}"

    async def v2(ctx: Context) -> str:
        first = await ctx.run(step_b)
        await ctx.run(gate.step)
        return f"v2 {first}{await ctx.run(step_a)}"

    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(v1, name="wf", version=1)
        await app.start("old", "wf")
        await gate.wait_reached()

    gate.open = True
    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(v1, name="wf", version=1)
        app.register(v2, name="wf", version=2)
        assert await asyncio.wait_for((await app.get("old")).result(), WAIT) == "v1 ab"
        assert await app.run("new", "wf") == "v2 ba"
        assert await app.run("pinned", v1) == "v1 ab"
        assert (await app.promises.get("new")).param["version"] == 2
        assert (await app.promises.get("pinned")).param["version"] == 1


async def test_a_result_is_decoded_with_the_type_of_the_version_that_produced_it(
    app: Resonate,
) -> None:
    async def v1(ctx: Context) -> Order:
        return Order(id="o-1", amount=1, placed_at=PLACED)

    async def v2(ctx: Context) -> Receipt:
        return Receipt(order_id="o-1", payment_id=PAYMENT, charged_at=PLACED, items=[])

    app.register(v1, name="wf", version=1)
    assert await app.run("old", v1) == Order(id="o-1", amount=1, placed_at=PLACED)
    app.register(v2, name="wf", version=2)
    result = await (await app.get("old")).result()
    assert type(result) is Order


# -- retries --------------------------------------------------------------------------------


async def test_a_failing_leaf_step_is_retried_with_the_policy(app: Resonate) -> None:
    attempts = 0

    def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError(f"attempt {attempts}")
        return "ok"

    async def wf(ctx: Context) -> str:
        return await ctx.options(retry_policy=Constant(delay=0.01, max_retries=5)).run(flaky)

    app.register(wf)
    assert await app.run("wf", wf) == "ok"
    assert attempts == 3
    assert (await app.promises.get("wf:1")).value == "ok"


async def test_a_leaf_step_gives_up_after_max_retries(app: Resonate) -> None:
    attempts = 0

    def broken() -> str:
        nonlocal attempts
        attempts += 1
        raise ConnectionError(f"attempt {attempts}")

    async def wf(ctx: Context) -> str:
        return await ctx.options(retry_policy=Constant(delay=0.01, max_retries=2)).run(broken)

    app.register(wf)
    with pytest.raises(ConnectionError, match="attempt 3"):
        await app.run("wf", wf)
    assert attempts == 3
    assert (await app.promises.get("wf:1")).state == "rejected"


async def test_non_retryable_errors_stop_at_once(app: Resonate) -> None:
    attempts = collections.Counter[str]()

    def bad_input(kind: str) -> str:
        attempts[kind] += 1
        raise ValueError(f"bad {kind}")

    async def wf(ctx: Context) -> list[str]:
        errors = []
        policy = Constant(delay=0.01, max_retries=5)
        for kind in ("options", "registered"):
            opts = ctx.options(retry_policy=policy)
            if kind == "options":
                opts = opts.options(non_retryable=(ValueError,))
            try:
                await opts.run(bad_input, kind)
            except ValueError as exc:
                errors.append(str(exc))
        return errors

    app.register(wf)
    app.register(bad_input, non_retryable=(ValueError,))
    assert await app.run("wf", wf) == ["bad options", "bad registered"]
    assert attempts == {"options": 1, "registered": 1}


async def test_never_does_not_retry(app: Resonate) -> None:
    attempts = 0

    def broken() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("down")

    async def wf(ctx: Context) -> None:
        await ctx.options(retry_policy=Never()).run(broken)

    app.register(wf)
    with pytest.raises(ConnectionError, match="down"):
        await app.run("wf", wf)
    assert attempts == 1


async def test_a_raising_durable_function_is_not_retried_by_default(app: Resonate) -> None:
    calls = collections.Counter[str]()

    async def child(ctx: Context) -> None:
        calls["child"] += 1
        raise RuntimeError("child failed")

    async def wf(ctx: Context) -> str:
        calls["wf"] += 1
        try:
            await ctx.run(child)
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    async def root_fails(ctx: Context) -> None:
        calls["root_fails"] += 1
        raise RuntimeError("root failed")

    app.register(wf)
    app.register(root_fails)
    assert await app.run("wf", wf) == "child failed"
    with pytest.raises(RuntimeError, match="root failed"):
        await app.run("other", root_fails)
    assert calls == {"wf": 1, "child": 1, "root_fails": 1}


async def test_a_durable_root_registered_with_a_retry_policy_is_retried(app: Resonate) -> None:
    calls = collections.Counter[str]()

    def once() -> str:
        calls["once"] += 1
        return "x"

    async def wf(ctx: Context) -> str:
        calls["wf"] += 1
        await ctx.run(once)
        if calls["wf"] < 3:
            raise RuntimeError("not yet")
        return "finally"

    app.register(wf, retry_policy=Constant(delay=0.01, max_retries=5))
    assert await app.run("wf", wf) == "finally"
    assert calls == {"wf": 3, "once": 1}


async def test_canceling_an_invocation_waiting_to_retry_stops_it(clock: FakeClock) -> None:
    attempts = 0

    async def wf(ctx: Context) -> str:
        nonlocal attempts
        attempts += 1
        raise RuntimeError(f"attempt {attempts}")

    async with Resonate(clock=clock) as app:
        app.register(wf, retry_policy=Constant(delay=100, max_retries=3))
        handle = await app.start("wf", wf)
        await eventually(lambda: holds(attempts == 1), "the first attempt")
        await handle.cancel()
        with pytest.raises(CanceledError):
            await handle.result()
        clock.advance(1000)
        await eventually(lambda: holds(app._engine.active == 0), "the invocation to leave memory")
    assert attempts == 1


async def test_a_durable_child_with_a_retry_policy_is_retried_without_rerunning_its_steps(
    app: Resonate,
) -> None:
    calls = collections.Counter[str]()

    def once() -> str:
        calls["once"] += 1
        return "x"

    async def child(ctx: Context) -> str:
        calls["child"] += 1
        value = await ctx.run(once)
        if calls["child"] < 2:
            raise RuntimeError("not yet")
        return value

    async def wf(ctx: Context) -> str:
        return await ctx.run(child)

    app.register(wf)
    app.register(child, retry_policy=Constant(delay=0.01, max_retries=5))
    assert await app.run("wf", wf) == "x"
    assert calls["child"] == 2
    assert calls["once"] == 1, "a recorded step ran again when its durable parent was retried"


# -- timeouts -------------------------------------------------------------------------------


async def test_a_step_past_its_timeout_raises_promise_timeout(clock: FakeClock) -> None:
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    async def wf(ctx: Context) -> str:
        try:
            return await ctx.options(timeout=5).run(slow)
        except PromiseTimeoutError as exc:
            return f"timed out: {exc}"

    async with Resonate(clock=clock) as app:
        app.register(wf)
        handle = await app.start("wf", wf)
        await asyncio.wait_for(started.wait(), WAIT)
        clock.advance(6)
        result = await asyncio.wait_for(handle.result(), WAIT)
        assert result.startswith("timed out")
        assert "wf:1" in result
        assert (await app.promises.get("wf:1")).state == "rejected_timedout"


async def test_a_childs_deadline_is_capped_by_its_parents(clock: FakeClock) -> None:
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    async def child(ctx: Context) -> str:
        return await ctx.run(slow)

    async def wf(ctx: Context) -> str:
        return await ctx.options(timeout=3600).run(child)

    async with Resonate(clock=clock) as app:
        app.register(wf, timeout=10)
        handle = await app.start("wf", wf)
        await asyncio.wait_for(started.wait(), WAIT)
        root = await app.promises.get("wf")
        assert root.timeout_at is not None
        assert (await app.promises.get("wf:1")).timeout_at == root.timeout_at
        clock.advance(11)
        with pytest.raises(PromiseTimeoutError):
            await asyncio.wait_for(handle.result(), WAIT)
        assert (await app.promises.get("wf")).state == "rejected_timedout"
        assert (await app.promises.get("wf:1")).state == "rejected_timedout"


async def test_a_leaf_step_times_out_at_its_parents_deadline(clock: FakeClock) -> None:
    started = asyncio.Event()
    outcome: list[str] = []

    async def slow() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("step cancelled")
            raise
        return "never"

    async def child(ctx: Context) -> str:
        return await ctx.options(timeout=3600).run(slow)

    async def wf(ctx: Context) -> str:
        try:
            return await ctx.run(child)
        except PromiseTimeoutError:
            return "child timed out"

    async with Resonate(clock=clock) as app:
        app.register(wf)
        app.register(child, timeout=10)
        handle = await app.start("wf", wf)
        await asyncio.wait_for(started.wait(), WAIT)
        clock.advance(11)
        assert await asyncio.wait_for(handle.result(), WAIT) == "child timed out"
        assert outcome == ["step cancelled"]
        assert (await app.promises.get("wf:1")).state == "rejected_timedout"


# -- cancellation ---------------------------------------------------------------------------


@pytest.mark.parametrize("awaiting", ["sleep", "promise"])
async def test_cancel_settles_canceled_and_the_code_gets_cancelled_error(
    app: Resonate, awaiting: str
) -> None:
    waiting = asyncio.Event()
    cleaned_up = asyncio.Event()
    seen: list[str] = []
    after: list[str] = []

    def later() -> None:
        after.append("ran")

    async def wf(ctx: Context) -> str:
        call = ctx.sleep(3600) if awaiting == "sleep" else ctx.promise()
        waiting.set()
        try:
            await call
        except asyncio.CancelledError:
            seen.append("CancelledError")
            raise
        finally:
            cleaned_up.set()
        await ctx.run(later)
        return "finished"

    app.register(wf)
    handle = await app.start("wf", wf)
    await asyncio.wait_for(waiting.wait(), WAIT)
    await handle.cancel()
    with pytest.raises(CanceledError):
        await asyncio.wait_for(handle.result(), WAIT)
    await asyncio.wait_for(cleaned_up.wait(), WAIT)
    assert seen == ["CancelledError"]
    assert (await app.promises.get("wf")).state == "rejected_canceled"
    assert await handle.done() is True
    assert after == []


async def test_cancel_of_an_evicted_invocation_keeps_it_from_resuming(clock: FakeClock) -> None:
    calls = collections.Counter[str]()

    def step(name: str) -> None:
        calls[name] += 1

    async def wf(ctx: Context) -> str:
        await ctx.run(step, "before")
        await ctx.sleep(60)
        await ctx.run(step, "after")
        return "finished"

    async with Resonate(clock=clock, evict_after=0) as app:
        app.register(wf)
        handle = await app.start("wf", wf)

        async def evicted() -> bool:
            return await promise_exists(app, "wf:2") and app._engine.active == 0

        await eventually(evicted, "the sleeping invocation to leave memory")
        await handle.cancel()
        clock.advance(61)

        async def timer_fired() -> bool:
            return (await app.promises.get("wf:2")).state == "resolved"

        await eventually(timer_fired, "the timer to fire")
        await eventually(lambda: holds(app._engine.active == 0), "the engine to be idle")
        with pytest.raises(CanceledError):
            await handle.result()
        assert calls == {"before": 1}


# -- typed payloads -------------------------------------------------------------------------

PLACED = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
PAYMENT = uuid.UUID("12345678-1234-5678-1234-567812345678")


def load_order(order_id: str) -> Order:
    return Order(id=order_id, amount=42, placed_at=PLACED)


def charged_at() -> dt.datetime:
    return PLACED + dt.timedelta(minutes=5)


def payment_id() -> uuid.UUID:
    return PAYMENT


def make_receipt(order: Order, payment: uuid.UUID, at: dt.datetime) -> Receipt:
    return Receipt(order_id=order.id, payment_id=payment, charged_at=at, items=["book"])


async def test_typed_arguments_and_results_round_trip_after_a_restart(tmp_path: Path) -> None:
    async def checkout(ctx: Context, order: Order, when: dt.datetime) -> Receipt:
        assert isinstance(order, Order)
        assert isinstance(when, dt.datetime)
        return make_receipt(order, PAYMENT, when)

    order = Order(id="o-1", amount=3, placed_at=PLACED)
    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(checkout)
        first = await app.run("checkout", checkout, order, PLACED)
    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(checkout)
        again = await app.run("checkout", checkout, order, PLACED)
        via_handle = await (await app.get("checkout")).result()
    expected = Receipt(order_id="o-1", payment_id=PAYMENT, charged_at=PLACED, items=["book"])
    assert first == again == via_handle == expected
    assert isinstance(again, Receipt)
    assert isinstance(again.payment_id, uuid.UUID)
    assert isinstance(again.charged_at, dt.datetime)


async def test_step_results_have_their_types_when_replayed_after_a_restart(
    tmp_path: Path,
) -> None:
    gate = Gate()
    seen: list[tuple[Any, ...]] = []

    async def wf(ctx: Context, order_id: str) -> str:
        order = await ctx.run(load_order, order_id)
        at = await ctx.run(charged_at)
        payment = await ctx.run(payment_id)
        receipt = await ctx.run(make_receipt, order, payment, at)
        now, rnd, uid = await ctx.now(), await ctx.random(), await ctx.uuid()
        seen.append((order, at, payment, receipt, now, rnd, uid))
        await ctx.run(gate.step)
        return receipt.order_id

    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        await app.start("wf", wf, "o-9")
        await gate.wait_reached()
    gate.open = True
    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        assert await asyncio.wait_for((await app.get("wf")).result(), WAIT) == "o-9"

    assert len(seen) == 2
    first, replayed = seen
    assert replayed == first
    order, at, payment, receipt, now, rnd, uid = replayed
    assert type(order) is Order
    assert type(order.placed_at) is dt.datetime
    assert type(at) is dt.datetime
    assert at.tzinfo is not None
    assert type(payment) is uuid.UUID
    assert type(receipt) is Receipt
    assert type(now) is dt.datetime
    assert type(rnd) is float
    assert type(uid) is uuid.UUID


async def test_now_random_and_uuid_are_the_same_on_replay(clock: FakeClock) -> None:
    runs: list[tuple[dt.datetime, float, uuid.UUID]] = []

    async def wf(ctx: Context) -> str:
        values = (await ctx.now(), await ctx.random(), await ctx.uuid())
        runs.append(values)
        await ctx.sleep(10)
        return str(values[2])

    async with Resonate(clock=clock, evict_after=0) as app:
        app.register(wf)
        started_at = dt.datetime.fromtimestamp(clock.now() / 1000, dt.UTC)
        handle = await app.start("wf", wf)

        async def evicted() -> bool:
            return await promise_exists(app, "wf:4") and app._engine.active == 0

        await eventually(evicted, "the sleeping invocation to leave memory")
        clock.advance(10)
        result = await asyncio.wait_for(handle.result(), WAIT)
    assert len(runs) == 2, "the invocation was expected to replay after its sleep"
    assert runs[0] == runs[1]
    assert runs[0][0] == started_at
    assert result == str(runs[0][2])


# -- recorded errors ------------------------------------------------------------------------


async def test_recorded_errors_are_reraised_with_their_type_after_a_restart(
    tmp_path: Path,
) -> None:
    gate = Gate()
    seen: list[tuple[type[BaseException], str]] = []
    calls = collections.Counter[str]()

    def reserve(sku: str) -> None:
        calls["reserve"] += 1
        raise OutOfStockError(f"no {sku} left")

    def nested() -> None:
        calls["nested"] += 1
        raise Outer.NestedError("deep")

    async def wf(ctx: Context) -> str:
        try:
            await ctx.options(retry_policy=Never()).run(reserve, "sku-1")
        except OutOfStockError as exc:
            seen.append((type(exc), str(exc)))
        try:
            await ctx.options(retry_policy=Never()).run(nested)
        except Outer.NestedError as exc:
            seen.append((type(exc), str(exc)))
        await ctx.run(gate.step)
        raise OutOfStockError("gave up")

    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        await app.start("wf", wf)
        await gate.wait_reached()
    gate.open = True
    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        with pytest.raises(OutOfStockError, match="gave up"):
            await asyncio.wait_for((await app.get("wf")).result(), WAIT)
    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        with pytest.raises(OutOfStockError, match="gave up"):
            await app.run("wf", wf)
    once = [(OutOfStockError, "no sku-1 left"), (Outer.NestedError, "deep")]
    assert seen == once * 2
    assert calls == {"reserve": 1, "nested": 1}


async def test_an_error_type_that_cannot_be_imported_replays_as_step_error(
    tmp_path: Path,
) -> None:
    class LocalError(Exception):
        """Defined in a function: it cannot be looked up by name."""

    gate = Gate()
    seen: list[BaseException] = []

    def fail() -> None:
        raise LocalError("local trouble")

    async def wf(ctx: Context) -> None:
        try:
            await ctx.options(retry_policy=Never()).run(fail)
        except (LocalError, StepError) as exc:
            seen.append(exc)
        await ctx.run(gate.step)

    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        await app.start("wf", wf)
        await gate.wait_reached()
    gate.open = True
    async with Resonate(sqlite_url(tmp_path)) as app:
        app.register(wf)
        await asyncio.wait_for((await app.get("wf")).result(), WAIT)

    assert len(seen) == 2
    assert type(seen[0]) is LocalError
    replayed = seen[1]
    assert isinstance(replayed, StepError)
    assert replayed.type_name.endswith("LocalError")
    assert "LocalError" in str(replayed)
    assert "local trouble" in str(replayed)
    assert "wf:1" in str(replayed)


# -- ctx.promise ----------------------------------------------------------------------------


async def test_ctx_promise_returns_at_once_and_is_resolved_from_outside(
    app: Resonate,
) -> None:
    ids: list[str] = []
    made = asyncio.Event()

    async def wf(ctx: Context) -> Any:
        approval = ctx.promise()
        ids.append(approval.id)
        made.set()
        return await approval

    app.register(wf)
    handle = await app.start("wf", wf)
    await asyncio.wait_for(made.wait(), WAIT)
    assert ids == ["wf:1"]
    await eventually(lambda: promise_exists(app, "wf:1"), "the promise record")
    assert (await app.promises.get("wf:1")).state == "pending"
    await app.promises.resolve("wf:1", {"approved": True})
    assert await asyncio.wait_for(handle.result(), WAIT) == {"approved": True}


async def test_a_later_step_can_settle_the_promise_it_is_given(store_url: str) -> None:
    async with Resonate(store_url) as app:

        async def approve(promise_id: str) -> None:
            await app.promises.resolve(promise_id, "yes")

        async def wf(ctx: Context) -> Any:
            approval = ctx.promise()
            await ctx.run(approve, approval.id)
            return await approval

        app.register(wf)
        assert await asyncio.wait_for(app.run("wf", wf), WAIT) == "yes"


async def test_a_later_durable_call_can_settle_the_promise_it_is_given(store_url: str) -> None:
    async with Resonate(store_url, evict_after=60) as app:

        async def approve(promise_id: str) -> None:
            await app.promises.reject(promise_id, OutOfStockError("denied"))

        async def notify(ctx: Context, promise_id: str) -> None:
            await ctx.run(approve, promise_id)

        async def wf(ctx: Context) -> str:
            approval = ctx.promise(id="approval-7")
            assert approval.id == "approval-7"
            await ctx.run(notify, approval.id)
            try:
                await approval
            except OutOfStockError as exc:
                return f"rejected: {exc}"
            return "resolved"

        app.register(wf)
        assert await asyncio.wait_for(app.run("wf", wf), WAIT) == "rejected: denied"
        assert (await app.promises.get("approval-7")).state == "rejected"


async def test_a_rejected_ctx_promise_raises_in_the_workflow(app: Resonate) -> None:
    made = asyncio.Event()

    async def wf(ctx: Context) -> str:
        approval = ctx.promise()
        made.set()
        try:
            await approval
        except ValueError as exc:
            return f"ValueError: {exc}"
        return "resolved"

    app.register(wf)
    handle = await app.start("wf", wf)
    await asyncio.wait_for(made.wait(), WAIT)
    await eventually(lambda: promise_exists(app, "wf:1"), "the promise record")
    await app.promises.reject("wf:1", ValueError("no budget"))
    assert await asyncio.wait_for(handle.result(), WAIT) == "ValueError: no budget"


async def test_a_ctx_promise_past_its_timeout_raises_promise_timeout(clock: FakeClock) -> None:
    async def wf(ctx: Context) -> str:
        try:
            await ctx.promise(timeout=dt.timedelta(days=3))
        except PromiseTimeoutError:
            return "timed out"
        return "settled"

    async with Resonate(clock=clock) as app:
        app.register(wf)
        handle = await app.start("wf", wf)
        await eventually(lambda: promise_exists(app, "wf:1"), "the promise record")
        clock.advance(dt.timedelta(days=3, seconds=1).total_seconds())
        assert await asyncio.wait_for(handle.result(), WAIT) == "timed out"
        assert (await app.promises.get("wf:1")).state == "rejected_timedout"


# -- ctx.sleep ------------------------------------------------------------------------------


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


# -- rpc and detached -----------------------------------------------------------------------


async def test_rpc_runs_a_registered_function_as_its_own_invocation(app: Resonate) -> None:
    async def price(ctx: Context, order: Order) -> Order:
        return dataclasses.replace(order, amount=order.amount * 2)

    async def wf(ctx: Context) -> Order:
        call = ctx.rpc("pricing", Order(id="o", amount=21, placed_at=PLACED))
        assert call.id == "wf:1"
        priced = await call
        assert type(priced) is Order
        return priced

    app.register(wf)
    app.register(price, name="pricing")
    result = await app.run("wf", wf)
    assert result == Order(id="o", amount=42, placed_at=PLACED)
    child = await app.promises.get("wf:1")
    assert child.param["func"] == "pricing"
    assert child.state == "resolved"
    assert await (await app.get("wf:1")).result() == result


async def test_an_rpc_child_that_sleeps_resumes_its_evicted_parent(clock: FakeClock) -> None:
    async def nap(ctx: Context, seconds: int) -> str:
        await ctx.sleep(seconds)
        return f"slept {seconds}"

    async def wf(ctx: Context) -> str:
        return await ctx.rpc("nap", 60)

    async with Resonate(clock=clock, evict_after=0) as app:
        app.register(wf)
        app.register(nap, name="nap")
        handle = await app.start("wf", wf)

        async def both_evicted() -> bool:
            return await promise_exists(app, "wf:1.1") and app._engine.active == 0

        await eventually(both_evicted, "parent and child to leave memory")
        clock.advance(60)
        assert await asyncio.wait_for(handle.result(), WAIT) == "slept 60"


async def test_a_detached_invocation_outlives_its_parent(app: Resonate) -> None:
    release = asyncio.Event()

    async def hold() -> str:
        await release.wait()
        return "released"

    async def background(ctx: Context, n: int) -> str:
        return f"{n}: {await ctx.run(hold)}"

    async def wf(ctx: Context) -> str:
        return ctx.detached(background, 5).id

    app.register(wf)
    app.register(background)
    child_id = await asyncio.wait_for(app.run("wf", wf), WAIT)
    assert child_id == "wf:1"
    child = await app.get(child_id)
    assert await child.done() is False
    release.set()
    assert await asyncio.wait_for(child.result(), WAIT) == "5: released"


async def test_awaiting_a_detached_call_gives_its_result(app: Resonate) -> None:
    async def background(ctx: Context, n: int) -> int:
        return n + 1

    async def wf(ctx: Context) -> int:
        return await ctx.detached("background", 41)

    app.register(wf)
    app.register(background, name="background")
    assert await asyncio.wait_for(app.run("wf", wf), WAIT) == 42


# -- app.promises ---------------------------------------------------------------------------


async def test_promises_create_get_resolve_and_search(app: Resonate) -> None:
    created = await app.promises.create("p-1", data={"q": 1})
    assert created.id == "p-1"
    assert created.pending
    assert created.param == {"q": 1}
    assert (await app.promises.create("p-1", data={"q": 2})).param == {"q": 1}
    await app.promises.create("p-2")
    await app.promises.create("other")

    resolved = await app.promises.resolve("p-1", {"ok": True})
    assert resolved.state == "resolved"
    assert resolved.value == {"ok": True}
    assert (await app.promises.get("p-1")).value == {"ok": True}
    assert (await app.promises.resolve("p-1", {"ok": True})).state == "resolved"
    with pytest.raises(PromiseAlreadySettledError, match="p-1"):
        await app.promises.resolve("p-1", {"ok": False})
    with pytest.raises(PromiseAlreadySettledError, match="p-1"):
        await app.promises.reject("p-1", "late")

    assert [p.id for p in await app.promises.search("p-*")] == ["p-1", "p-2"]
    assert [p.id for p in await app.promises.search("*", state="pending")] == ["other", "p-2"]
    assert [p.id for p in await app.promises.search("*", state="resolved")] == ["p-1"]
    assert [p.id for p in await app.promises.search("*", limit=1)] == ["other"]


async def test_resolving_again_with_an_equal_value_is_fine(app: Resonate) -> None:
    await app.promises.create("p")
    await app.promises.resolve("p", {"a": 1, "b": 2})
    again = await app.promises.resolve("p", {"b": 2, "a": 1})
    assert again.value == {"a": 1, "b": 2}


async def test_promises_reject_and_cancel(app: Resonate) -> None:
    await app.promises.create("r")
    await app.promises.create("c")
    rejected = await app.promises.reject("r", OutOfStockError("none"))
    assert rejected.state == "rejected"
    assert isinstance(rejected.error, OutOfStockError)
    assert str(rejected.error) == "none"
    canceled = await app.promises.cancel("c")
    assert canceled.state == "rejected_canceled"
    assert isinstance(canceled.error, CanceledError)
    assert (await app.promises.cancel("c")).state == "rejected_canceled"
    with pytest.raises(PromiseAlreadySettledError):
        await app.promises.resolve("c", 1)
    with pytest.raises(PromiseNotFoundError, match="missing"):
        await app.promises.get("missing")
    with pytest.raises(PromiseNotFoundError, match="missing"):
        await app.promises.resolve("missing", 1)


async def test_a_promise_with_a_timeout_times_out(clock: FakeClock) -> None:
    async with Resonate(clock=clock) as app:
        await app.promises.create("p", timeout=30)
        clock.advance(31)
        info = await app.promises.get("p")
        assert info.state == "rejected_timedout"
        assert isinstance(info.error, PromiseTimeoutError)
