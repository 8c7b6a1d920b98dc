"""Waiting for a condition in a test: poll it with a deadline, never sleep a fixed time.

``eventually`` polls an async check from a test's event loop; ``eventually_sync`` a plain one
from code that blocks (subprocess harnesses). A check may raise to fail at once (the process
it waits on exited, say); ``failure`` makes the error a timeout raises (with a report, or of
a harness's own type), from its message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

WAIT = 10.0
"""Seconds a condition may take before the test fails."""
POLL = 0.005
"""Seconds between two checks from an event loop."""
POLL_SYNC = 0.05
"""Seconds between two checks that block (each one is a file read or a request)."""


async def eventually(
    check: Callable[[], Awaitable[bool]],
    what: str,
    *,
    within: float = WAIT,
    every: float = POLL,
    failure: Callable[[str], BaseException] = AssertionError,
) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise failure(_timed_out(what, within))
        await asyncio.sleep(every)


def eventually_sync(
    check: Callable[[], bool],
    what: str,
    *,
    within: float = WAIT,
    every: float = POLL_SYNC,
    failure: Callable[[str], BaseException] = AssertionError,
) -> None:
    """``eventually`` for a blocking ``check``, from code without an event loop."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise failure(_timed_out(what, within))
        time.sleep(every)


def _timed_out(what: str, within: float) -> str:
    return f"timed out after {within:g} s waiting for {what}"
