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
from typing import Any

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

            async def met_the_full_disk() -> bool:
                return 'dawait_store_errors_total{kind="disk_full"}' in await _metrics(node.url)

            await eventually(met_the_full_disk, "the engine to meet the full disk", within=10)
            for k in range(8):  # none recorded the fault as its outcome
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
        await node.stop()
    logged = node.stderr()
    assert "Traceback" not in logged or logged.count("Traceback") <= 3, logged[-4000:]


async def _metrics(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        return await response.text()


@pytest.mark.parametrize("deleted", ["app.db-wal", "app.db"])
async def test_a_file_deleted_under_a_running_node_loses_nothing_across_a_kill(
    nodes: Nodes, tmp_path: Path, deleted: str
) -> None:
    """The WAL (or the database) deleted by a cleanup script: within about a second the node
    saves what its open handles hold, reopens and goes on; a kill -9 after loses nothing
    (all 60 results were gone after the kill before)."""
    db = tmp_path / "app.db"
    args = ("--app", APP, "--port", "0", "--store", f"sqlite:///{db}")
    node = nodes.start("n", *args)
    async with HttpClient(node.url, timeout=30) as api:
        for k in range(30):
            await api.start(f"before{k}", "add", [k, 1], {}, wait=10)
        (tmp_path / deleted).unlink()

        async def reopened() -> bool:
            return "reopen" in node.stderr() and (await _ready(node.url))[0] == 200

        await eventually(reopened, "the node to notice and reopen", within=10)
        for k in range(30):
            view, _ = await _start_retrying(api, f"after{k}", [k, 2])
            assert view.result == k + 2
    assert deleted in node.stderr()  # the error names the file
    node.process.kill()
    node.process.wait(10)
    again = nodes.start("again", *args)
    async with HttpClient(again.url, timeout=30) as api:
        for k in range(30):
            assert (await api.invocation(f"before{k}")).result == k + 1
            assert (await api.invocation(f"after{k}")).result == k + 2


async def _start_retrying(api: HttpClient, id: str, args: list[int]) -> Any:
    for _ in range(50):
        try:
            return await api.start(id, "add", args, {}, wait=10)
        except NotStartedError:  # 503 while it reopens: a client retries
            await asyncio.sleep(0.1)
    raise AssertionError(f"{id} never started")


async def test_a_read_only_or_damaged_file_at_start_is_said_in_words(
    nodes: Nodes, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        db = disk / "app.db"
        ok = nodes.start("ok", "--app", APP, "--port", "0", "--store", f"sqlite:///{db}")
        await ok.stop()
        remount = ["mount", "-o", "remount,ro", str(disk)]
        await asyncio.to_thread(subprocess.run, remount, check=True)
        node = nodes.spawn("ro", "--app", APP, "--port", "0", "--store", f"sqlite:///{db}")
        assert await node.exit_code(within=30) != 0
        assert f"{db}" in node.stderr()
        assert "read-only" in node.stderr()
        assert "Traceback" not in node.stderr()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 200)
    node = nodes.spawn("junk", "--app", APP, "--port", "0", "--store", f"sqlite:///{junk}")
    assert await node.exit_code(within=30) != 0
    assert f"{junk}: it is not a SQLite database" in node.stderr()
