"""Waiting for a condition in a test: poll it with a deadline, never sleep a fixed time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

WAIT = 10.0
"""Seconds a condition may take before the test fails."""


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, *, within: float = WAIT
) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
