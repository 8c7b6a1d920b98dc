"""``Resonate(url=...)``: a service that only starts and awaits workflows, over a node's HTTP
API on 127.0.0.1, executing nothing itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from dawait import Context, Resonate
from dawait.errors import (
    CanceledError,
    InvocationConflictError,
    NotStartedError,
    PromiseAlreadySettledError,
    PromiseNotFoundError,
    ScheduleNotFoundError,
    SerializationError,
    UnknownFunctionError,
)
from dawait.node._backend import NodeBackend
from dawait.node._client import ApiError
from dawait.node._http import NodeApi

TOKEN = "t0ken"


@dataclass
class Total:
    amount: int
    currency: str


class Declined(Exception):
    pass


runs: list[str] = []


async def add_tax(amount: int) -> int:
    runs.append("add_tax")
    return amount + amount // 10


async def total(ctx: Context, amount: int, currency: str = "EUR") -> Total:
    return Total(await ctx.run(add_tax, amount), currency)


async def decline(ctx: Context) -> None:
    raise Declined("card declined")


async def wait_for_approval(ctx: Context) -> str:
    answer: str = await ctx.promise(id=f"approval-{ctx.id}")
    return answer


@pytest.fixture
async def url() -> AsyncIterator[str]:
    node = Resonate()
    for fn in (total, decline, wait_for_approval):
        node.register(fn)
    async with node:
        runner = web.AppRunner(NodeApi(NodeBackend(node), token=TOKEN).web_app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        yield f"http://127.0.0.1:{port}"
        await runner.cleanup()


async def test_a_client_app_runs_nothing_itself_and_gets_typed_results(url: str) -> None:
    client = Resonate(url=url, token=TOKEN)
    assert repr(client) == f"Resonate(url={url!r})"
    with pytest.raises(TypeError, match="runs nothing itself"):
        client.store  # noqa: B018  (a client has no store, and builds no engine)
    client.register(total)  # only to type the result
    async with client:
        runs.clear()
        result = await client.run("t1", total, 200, currency="USD")
        assert result == Total(220, "USD")
        again = await client.run("t1", total, 200, currency="USD")
        assert again == Total(220, "USD")
        assert runs == ["add_tax"]  # ran once, on the node
        handle = await client.get("t1")
        assert await handle.done()
    async with Resonate(url=url, token=TOKEN) as plain:  # registers nothing: plain JSON
        untyped = await plain.run("t1", "total", 200, currency="USD")
        assert untyped == {"amount": 220, "currency": "USD"}


async def test_errors_come_back_as_dawait_errors_and_recorded_types(url: str) -> None:
    async with Resonate(url=url, token=TOKEN) as client:
        with pytest.raises(Declined, match="card declined"):
            await client.run("d1", "decline")
        with pytest.raises(UnknownFunctionError):
            await client.run("x1", "nope")
        with pytest.raises(SerializationError):
            await client.run("x2", "total", "not a number")
        await client.run("t2", "total", 1)
        with pytest.raises(InvocationConflictError):
            await client.run("t2", "total", 2)
        with pytest.raises(PromiseNotFoundError):
            await client.get("missing")


async def test_promises_cancel_and_schedules_through_the_client(url: str) -> None:
    async with Resonate(url=url, token=TOKEN) as client:
        handle = await client.start("w1", "wait_for_approval")
        assert not await handle.done()
        await client.promises.resolve("approval-w1", "yes")
        assert await handle.result() == "yes"
        with pytest.raises(PromiseAlreadySettledError):
            await client.promises.resolve("approval-w1", "no")
        created = await client.promises.create("p1", timeout=60, data={"a": 1})
        assert (created.state, created.param) == ("pending", {"a": 1})
        await client.promises.reject("p1", "no")
        assert (await client.promises.get("p1")).state == "rejected"
        assert [p.id for p in await client.promises.search("p*")] == ["p1"]

        second = await client.start("w2", "wait_for_approval")
        await second.cancel()
        with pytest.raises(CanceledError):
            await second.result()

        info = await client.schedules.create("nightly", "0 3 * * *", "total", 5)
        assert (info.function, info.args) == ("total", [5])
        assert [s.id for s in await client.schedules.search()] == ["nightly"]
        assert await client.schedules.delete("nightly")
        assert not await client.schedules.delete("nightly")
        with pytest.raises(ScheduleNotFoundError):
            await client.schedules.get("nightly")


async def test_a_wrong_token_or_an_unreachable_node_is_a_clear_error(url: str) -> None:
    async with Resonate(url=url, token="wrong") as client:
        with pytest.raises(ApiError, match="missing or wrong bearer token") as refused:
            await client.run("t3", "total", 1)
        assert refused.value.status == 401
    async with Resonate(url="http://127.0.0.1:9", token=TOKEN) as client:
        with pytest.raises(NotStartedError, match="cannot reach the node"):
            await client.run("t4", "total", 1)


def test_a_client_app_takes_no_store() -> None:
    with pytest.raises(ValueError, match="takes no store"):
        Resonate("sqlite:///app.db", url="http://127.0.0.1:1")
