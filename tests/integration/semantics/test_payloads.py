"""Typed payloads: arguments and results keep their annotated types across restarts."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest

from dawait import Context, Resonate
from dawait.errors import PayloadTooLargeError, PromiseNotFoundError
from dawait.testing import FakeClock
from tests.integration.semantics.payloads import PAYMENT, PLACED, Order, Receipt
from tests.integration.semantics.support import WAIT, Gate, promise_exists, sqlite_url
from tests.polling import eventually


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


async def test_the_payload_limit_holds_embedded_and_a_step_over_it_is_not_retried(
    store_url: str,
) -> None:
    calls: list[int] = []

    async def big(n: int) -> str:
        calls.append(n)
        return "x" * n

    async def wf(ctx: Context, n: int) -> str:
        try:
            return await ctx.run(big, n)
        except PayloadTooLargeError as exc:
            return f"caught: {exc}"

    async with Resonate(store_url, max_payload=1000) as app:
        assert app.max_payload == 1000
        app.register(wf)
        caught = await app.run("wf-big", wf, 999)
        assert caught.startswith("caught: the result of step ")
        assert ".big (wf-big:1): 1,001 bytes, over the store's payload limit of 1,000" in caught
        assert calls == [999]  # not retried: it would be as large again
        assert await app.run("wf-fits", wf, 998) == "x" * 998
        with pytest.raises(PayloadTooLargeError, match=r"the arguments of \S+\.wf \(wf-args\): "):
            await app.start("wf-args", wf, 10**1000)
        with pytest.raises(PromiseNotFoundError):
            await app.get("wf-args")
        with pytest.raises(ValueError, match="max_payload must be a number of bytes >= 1"):
            app.max_payload = 0
    assert Resonate(store_url).max_payload == 2 * 1024 * 1024
