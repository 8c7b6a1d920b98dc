"""Bad input gets a clear ``DawaitError`` (or ``ValueError``) naming the function or id,
and leaves nothing behind in the store."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from dawait import Context, Resonate
from dawait.errors import (
    DawaitError,
    InvocationConflictError,
    NotStartedError,
    PromiseNotFoundError,
    SerializationError,
    UnknownFunctionError,
)


@dataclasses.dataclass(frozen=True)
class Order:
    id: str
    amount: int


class Opaque:
    """Not JSON and not a pydantic-known type."""


async def place_order(ctx: Context, order: Order, at: dt.datetime | None = None) -> str:
    return order.id


def not_registered(x: int) -> int:
    return x


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
async def app(store_url: str) -> AsyncIterator[Resonate]:
    async with Resonate(store_url) as app:
        app.register(place_order)
        yield app


async def assert_store_empty(app: Resonate) -> None:
    assert [p.id for p in await app.promises.search("*")] == []


# -- unknown functions ----------------------------------------------------------------------


async def test_an_unregistered_function_is_an_unknown_function_error(app: Resonate) -> None:
    with pytest.raises(UnknownFunctionError, match="not_registered"):
        await app.run("job", not_registered, 1)
    with pytest.raises(UnknownFunctionError, match="'nope'"):
        await app.start("job", "nope", 1)
    await assert_store_empty(app)


async def test_an_unknown_version_is_an_unknown_function_error(app: Resonate) -> None:
    async def wf(ctx: Context) -> Any:
        return await ctx.options(version=2).rpc("place_order", Order(id="o", amount=1))

    app.register(wf)
    with pytest.raises(UnknownFunctionError, match=r"'place_order' is not registered at version 2"):
        await app.run("job", wf)


async def test_rpc_of_an_unknown_name_fails_the_workflow_naming_it(app: Resonate) -> None:
    async def wf(ctx: Context) -> Any:
        return await ctx.rpc("missing.fn", 1)

    app.register(wf)
    with pytest.raises(UnknownFunctionError, match=r"missing\.fn"):
        await app.run("job", wf)


# -- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("not an order",), {}, r"place_order: argument 'order'"),
        (({"id": "o"},), {}, r"place_order: argument 'order'"),
        ((Order(id="o", amount=1), "yesterday"), {}, r"place_order: argument 'at'"),
        ((Order(id="o", amount=1),), {"at": Opaque()}, r"place_order: argument 'at'"),
        ((), {}, r"place_order: .*missing a required argument: 'order'"),
        ((Order(id="o", amount=1), None, 3), {}, r"place_order: .*too many positional"),
        ((Order(id="o", amount=1),), {"color": "red"}, r"place_order: .*'color'"),
    ],
)
async def test_arguments_that_do_not_match_the_annotations_are_rejected(
    app: Resonate, args: tuple[Any, ...], kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(SerializationError, match=match):
        await app.run("job", place_order, *args, **kwargs)
    await assert_store_empty(app)


async def test_rpc_arguments_that_do_not_fit_fail_the_call_naming_the_function(
    app: Resonate,
) -> None:
    async def wf(ctx: Context) -> str:
        try:
            await ctx.rpc("place_order", "not an order")
        except SerializationError as exc:
            return str(exc)
        return "accepted"

    app.register(wf)
    message = await app.run("job", wf)
    assert "place_order: argument 'order'" in message
    assert [p.id for p in await app.promises.search("job:*")] == []


# -- results --------------------------------------------------------------------------------


async def test_a_step_result_that_cannot_be_encoded_is_a_serialization_error(
    app: Resonate,
) -> None:
    def opaque() -> Any:
        return Opaque()

    def wrong_type() -> int:
        return "forty-two"  # type: ignore[return-value]

    async def wf(ctx: Context, which: str) -> Any:
        return await ctx.run(opaque if which == "opaque" else wrong_type)

    app.register(wf)
    with pytest.raises(SerializationError, match=r"step .*opaque \(a:1\) result: .*Opaque"):
        await app.run("a", wf, "opaque")
    with pytest.raises(SerializationError, match=r"step .*wrong_type \(b:1\) result"):
        await app.run("b", wf, "wrong_type")
    for id in ("a:1", "b:1"):
        step = await app.promises.get(id)
        assert step.state == "rejected"
        assert isinstance(step.error, SerializationError)


async def test_a_workflow_result_that_cannot_be_encoded_is_a_serialization_error(
    app: Resonate,
) -> None:
    async def wf(ctx: Context) -> int:
        return "not an int"  # type: ignore[return-value]

    app.register(wf, name="typed_wf")
    with pytest.raises(SerializationError, match=r"typed_wf result"):
        await app.run("job", wf)
    assert (await app.promises.get("job")).state == "rejected"


# -- invocation conflicts -------------------------------------------------------------------


async def test_the_same_id_with_another_function_or_arguments_is_a_conflict_saying_what(
    app: Resonate,
) -> None:
    async def refund(ctx: Context, order: Order) -> str:
        return "refund"

    app.register(refund, name="refund")
    order = Order(id="o-1", amount=1)
    assert await app.run("job", place_order, order) == "o-1"
    before = await app.promises.get("job")
    existing = """invocation 'job' already exists as place_order({"id":"o-1","amount":1}) v1"""

    with pytest.raises(InvocationConflictError) as other_function:
        await app.run("job", refund, order)
    assert str(other_function.value) == (
        f"""{existing}; this call is refund({{"id":"o-1","amount":1}}) v1, of another function"""
    )
    with pytest.raises(InvocationConflictError) as other_arguments:
        await app.run("job", place_order, Order(id="o-2", amount=1))
    assert str(other_arguments.value) == (
        f"""{existing}; this call has other arguments: args[0].id is "o-2" (was "o-1")"""
    )
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(InvocationConflictError) as one_more:
        await app.run("job", place_order, order, at=when)
    assert str(one_more.value).endswith(
        """other arguments: at is "2026-01-01T00:00:00Z" (was absent)"""
    )
    with pytest.raises(InvocationConflictError) as huge:
        await app.run("job", place_order, Order(id="x" * 100_000, amount=2))
    assert str(huge.value).endswith(
        f"""other arguments: args[0].id is "{"x" * 58}… (was "o-1"); args[0].amount is 2 (was 1)"""
    )
    assert await app.promises.get("job") == before


async def test_an_id_used_by_a_plain_promise_is_a_conflict(app: Resonate) -> None:
    await app.promises.create("taken")
    with pytest.raises(InvocationConflictError, match=r"'taken'.*not an invocation"):
        await app.run("taken", place_order, Order(id="o", amount=1))
    assert (await app.promises.get("taken")).state == "pending"


async def test_a_conflict_is_detected_after_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    async with Resonate(url) as app:
        app.register(place_order)
        await app.run("job", place_order, Order(id="o-1", amount=1))
    async with Resonate(url) as app:
        app.register(place_order)
        with pytest.raises(InvocationConflictError, match=r"'job'.*args\[0\].id is \"o-2\""):
            await app.run("job", place_order, Order(id="o-2", amount=1))


# -- ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["a:b", ":", "", "x" * 513])
async def test_a_bad_root_id_is_a_value_error(app: Resonate, bad_id: str) -> None:
    with pytest.raises(ValueError, match="invocation id"):
        await app.run(bad_id, place_order, Order(id="o", amount=1))
    await assert_store_empty(app)


async def test_a_bad_promise_id_is_a_value_error(app: Resonate) -> None:
    with pytest.raises(ValueError, match="promise id"):
        await app.promises.create("")


async def test_a_promise_value_that_is_not_json_is_a_serialization_error(app: Resonate) -> None:
    with pytest.raises(SerializationError, match="promise p data"):
        await app.promises.create("p", data=Opaque())
    await assert_store_empty(app)
    await app.promises.create("q")
    with pytest.raises(SerializationError, match="promise q value"):
        await app.promises.resolve("q", Opaque())
    assert (await app.promises.get("q")).state == "pending"


# -- lifecycle ------------------------------------------------------------------------------


def _uses(app: Resonate) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    order = Order(id="o", amount=1)
    return [
        ("run", lambda: app.run("job", place_order, order)),
        ("start", lambda: app.start("job", place_order, order)),
        ("get", lambda: app.get("job")),
        ("promises.create", lambda: app.promises.create("p")),
        ("promises.get", lambda: app.promises.get("p")),
        ("promises.resolve", lambda: app.promises.resolve("p", 1)),
        ("promises.search", lambda: app.promises.search("*")),
    ]


async def test_running_an_invocation_before_open_is_not_started_error(store_url: str) -> None:
    app = Resonate(store_url)
    app.register(place_order)
    with pytest.raises(NotStartedError, match="open"):
        await app.run("job", place_order, Order(id="o", amount=1))
    with pytest.raises(NotStartedError, match="open"):
        await app.start("job", place_order, Order(id="o", amount=1))
    async with app:
        await assert_store_empty(app)


async def test_running_an_invocation_after_close_is_not_started_error(store_url: str) -> None:
    async with Resonate(store_url) as app:
        app.register(place_order)
    with pytest.raises(NotStartedError, match="open"):
        await app.run("job", place_order, Order(id="o", amount=1))


async def test_every_use_of_the_app_before_open_is_not_started_error(store_url: str) -> None:
    app = Resonate(store_url)
    app.register(place_order)
    failures = []
    for name, use in _uses(app):
        try:
            await use()
        except NotStartedError:
            continue
        except Exception as exc:
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
        else:
            failures.append(f"{name}: no error")
    assert failures == []


async def test_waiting_for_a_result_when_the_app_closes_raises_a_dawait_error() -> None:
    async def wf(ctx: Context) -> Any:
        return await ctx.promise()

    app = Resonate(evict_after=60)
    app.register(wf)
    await app.open()
    try:
        handle = await app.start("job", wf)
        waiting = asyncio.ensure_future(handle.result())
        await asyncio.sleep(0)
    finally:
        await app.close()
    with pytest.raises(DawaitError):
        await waiting


@pytest.mark.parametrize(
    "url",
    [
        "bogus://x",
        "postgres://localhost/db",
        "sqlite://host/app.db",
        "sqlite://",
        "sqlite:///app.db?journal=wal",
        "sqlite:///app.db?fsync=maybe",
    ],
)
def test_a_bad_store_url_is_a_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="store"):
        Resonate(store=url)


# -- registration and options ---------------------------------------------------------------


def test_register_rejects_bad_names_versions_and_timeouts() -> None:
    app = Resonate()

    async def wf(ctx: Context) -> None:
        return None

    with pytest.raises(ValueError, match="':'"):
        app.register(wf, name="a:b")
    with pytest.raises(ValueError, match="version"):
        app.register(wf, name="wf", version=0)
    with pytest.raises(ValueError, match="timeout"):
        app.register(wf, name="wf", timeout=0)

    async def other(ctx: Context) -> None:
        return None

    app.register(wf, name="wf")
    with pytest.raises(ValueError, match="'wf' version 1 is already registered"):
        app.register(other, name="wf")


async def test_bad_durations_in_a_workflow_fail_it_with_a_clear_error() -> None:
    async def wf(ctx: Context, which: str) -> None:
        if which == "negative sleep":
            await ctx.sleep(-1)
        elif which == "sleep type":
            await ctx.sleep("5")  # type: ignore[arg-type]
        else:
            await ctx.options(timeout=-1).run(not_registered, 1)

    async with Resonate() as app:
        app.register(wf)
        with pytest.raises(ValueError, match=r"ctx\.sleep"):
            await app.run("a", wf, "negative sleep")
        with pytest.raises(TypeError, match=r"ctx\.sleep"):
            await app.run("b", wf, "sleep type")
        with pytest.raises(ValueError, match=r"ctx\.options timeout"):
            await app.run("c", wf, "negative timeout")


def test_every_error_is_a_dawait_error() -> None:
    for error in (
        UnknownFunctionError,
        SerializationError,
        InvocationConflictError,
        NotStartedError,
        PromiseNotFoundError,
    ):
        assert issubclass(error, DawaitError)
