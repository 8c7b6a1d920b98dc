"""Helpers of the semantics tests: the SQLite URL of a test's app, checks for
``eventually``, ``step`` and ``child`` (a step and a durable function that record what
ran), and ``Gate``, a step that stops a workflow where a test wants it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dawait import Context, Resonate
from dawait.errors import PromiseNotFoundError

WAIT = 10.0
"""Seconds any single wait in these tests may take before the test fails."""


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


runs: list[str] = []
"""What ``step`` ran, in order (a test clears it first)."""


async def step(x: int) -> int:
    runs.append(f"step {x}")
    return x + 1


async def child(ctx: Context, x: int) -> int:
    """A durable child with one step."""
    return await ctx.run(step, x * 10)


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
