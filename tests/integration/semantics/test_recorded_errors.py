"""Recorded errors: re-raised with their type on replay, or as ``StepError``."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import pytest

from dawait import Context, Never, Resonate
from dawait.errors import StepError
from tests.integration.semantics.payloads import Outer, OutOfStockError
from tests.integration.semantics.support import WAIT, Gate, sqlite_url


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
