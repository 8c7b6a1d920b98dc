"""Retries: leaf steps and durable functions under their retry policies."""

from __future__ import annotations

import collections

import pytest

from dawait import Constant, Context, Never, Resonate
from dawait.errors import CanceledError
from dawait.testing import FakeClock
from tests.integration.semantics.support import holds
from tests.polling import eventually


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
