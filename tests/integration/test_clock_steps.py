"""Sleeps across steps of the wall clock (issue 17): a real ``dawait serve`` under
libfaketime (Debian ``faketime``, installed by the test command), its wall clock stepped by
rewriting the offset file while the monotonic clock runs on untouched."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from dawait.node._client import HttpClient
from tests.integration.served import APP, Nodes

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")

pytestmark = pytest.mark.skipif(
    not LIBFAKETIME.exists(), reason="libfaketime is missing: apt-get install faketime"
)


def step(offset_file: Path, offset: str) -> None:
    """Set the node's wall clock to real time ``offset`` (``+1h``, ``-1h``), atomically."""
    new = offset_file.with_name(offset_file.name + ".new")
    new.write_text(offset + "\n")
    os.replace(new, offset_file)


def faked(nodes: Nodes, offset_file: Path) -> object:
    offset_file.write_text("+0\n")
    env = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    store = f"sqlite:///{nodes.dir / 'app.db'}"
    return nodes.start("n", "--app", APP, "--port", "0", "--store", store, env=env)


async def test_a_sleep_is_not_delayed_by_the_wall_clock_stepping_back(nodes: Nodes) -> None:
    """It waited about an hour after a step back of one hour (NTP, a VM resume)."""
    offset = nodes.dir / "offset"
    node = faked(nodes, offset)
    async with HttpClient(node.url, timeout=30) as api:  # type: ignore[attr-defined]
        await api.start("back", "nap", [3.0], {})
        await asyncio.sleep(0.5)
        step(offset, "-1h")
        loop = asyncio.get_running_loop()
        began = loop.time()
        done = await api.result("back", wait=15)
        assert done.state == "resolved"
        assert loop.time() - began < 5.0


async def test_a_step_forward_fires_no_sleep_early(nodes: Nodes) -> None:
    """A sleep armed before a step of one hour forward still takes its time, a sleep armed
    after it takes its own, and neither fires the other."""
    offset = nodes.dir / "offset"
    node = faked(nodes, offset)
    loop = asyncio.get_running_loop()
    async with HttpClient(node.url, timeout=30) as api:  # type: ignore[attr-defined]
        began = loop.time()
        await api.start("before", "nap", [4.0], {})
        await asyncio.sleep(0.5)
        step(offset, "+1h")
        await api.start("after", "nap", [1.0], {})  # wakes the timer loop after the step
        after = await api.result("after", wait=10)
        assert after.state == "resolved"
        assert (await api.invocation("before")).state == "pending"
        assert loop.time() - began < 3.5
        before = await api.result("before", wait=10)
        assert before.state == "resolved"
        assert loop.time() - began >= 3.9
