"""A full disk never becomes a wrong result (issue 17): ``dawait serve`` on SQLite inside
a real small filesystem (a tmpfs this test mounts, as root, which CI is), filled by the test."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from dawait.errors import NotStartedError
from dawait.node._client import HttpClient
from tests.integration import served_app
from tests.integration.served import APP, Nodes
from tests.polling import eventually

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@contextlib.contextmanager
def small_disk(where: Path, size: str = "4m") -> Iterator[Path]:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the filesystem is full; its path."""
    filler = disk / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as out:
        while True:
            try:
                out.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    for size in (4096, 512, 1):  # the last bytes too
        with contextlib.suppress(OSError), filler.open("ab", buffering=0) as out:
            while True:
                out.write(b"\0" * size)
    return filler


async def _ready(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/readyz") as response:
        return response.status, await response.text()


async def test_a_full_disk_leaves_in_flight_invocations_pending_and_they_finish_after(
    nodes: Nodes, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        store = f"sqlite:///{disk / 'app.db'}?reserve=512KiB"
        node = nodes.start("n", "--app", APP, "--port", "0", "--store", store)
        async with HttpClient(node.url, timeout=30) as api:
            for k in range(8):  # each: a step, a 500 ms durable sleep, two more steps
                await api.start(f"load{k}", "load", [k], {})
            await api.start("napper", "nap", [1.0], {})
            filler = fill(disk)

            # Readiness says so (within the second between looks at free space), and new
            # work is refused with the reason (503: the client's "try again later").
            async def unready() -> bool:
                return (await _ready(node.url))[0] == 503

            await eventually(unready, "the node to say it is not ready", within=5)
            assert "app.db" in (await _ready(node.url))[1]
            with pytest.raises(NotStartedError, match="takes no new") as refused:
                await api.start("late", "add", [1, 2], {})
            assert "app.db" in str(refused.value)
            await asyncio.sleep(2.0)  # the in-flight ones meet the full disk meanwhile
            for k in range(8):
                assert (await api.invocation(f"load{k}")).state in ("pending", "resolved")

            filler.unlink()  # space returns: no restart

            async def ready() -> bool:
                return (await _ready(node.url))[0] == 200

            await eventually(ready, "the node to be ready again", within=15)
            for k in range(8):
                done = await api.result(f"load{k}", wait=20)
                assert (done.state, done.result) == ("resolved", served_app.load_result(k))
                again, created = await api.start(f"load{k}", "load", [k], {}, wait=5)
                assert not created
                assert again.result == served_app.load_result(k)
            assert (await api.result("napper", wait=20)).state == "resolved"
            added, _ = await api.start("late", "add", [1, 2], {}, wait=20)
            assert added.result == 3
            metrics = await _metrics(node.url)
        await node.stop()
    assert 'dawait_store_errors_total{kind="disk_full"}' in metrics
    logged = node.stderr()
    assert "Traceback" not in logged or logged.count("Traceback") <= 3, logged[-4000:]


async def _metrics(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        return await response.text()
