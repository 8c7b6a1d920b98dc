"""What only the SQLite file does: survive close and reopen, refuse a second process and a
newer schema, commit concurrent operations together, and answer only once fsynced."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest

from dawait.core._promise import (
    TAG_BRANCH,
    TAG_RETENTION,
    TAG_TIMER,
    PromiseState,
    Settle,
    create_promise,
)
from dawait.core._task import TaskRecord, TaskState
from dawait.errors import PromiseNotFoundError, StoreError
from dawait.runtime import SQLiteStore
from dawait.runtime._sqlite_store import SCHEMA_VERSION
from dawait.runtime._store import CreatePromise, PromiseCreated
from dawait.runtime._store_ops import Tables
from tests.integration.store_contract.support import ONE, TWO, a_schedule, all_pages, fire
from tests.polling import eventually


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "s.db"


@pytest.fixture
async def sqlite_store(db: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(db)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


OPEN_IN_ANOTHER_PROCESS = """
import asyncio, sys
from dawait.errors import StoreError
from dawait.runtime import SQLiteStore

async def main():
    store = SQLiteStore(sys.argv[1])
    try:
        await store.open()
    except StoreError as exc:
        print(f"StoreError: {exc}")
        return
    await store.close()
    print("opened")

asyncio.run(main())
"""


async def open_in_another_process(db: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        OPEN_IN_ANOTHER_PROCESS,
        str(db),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    return stdout.decode().strip()


async def test_everything_survives_close_and_reopen(db: Path) -> None:
    first = SQLiteStore(db)
    await first.open()
    await first.create_invocation(
        CreatePromise(id="wf", param=ONE, tags={TAG_BRANCH: "wf"}), pid="w1", ttl=None, now=0
    )
    await first.create_promise(
        CreatePromise(id="wf.1", timeout_at=100, tags={TAG_BRANCH: "wf", TAG_TIMER: "true"}),
        now=1,
    )
    await first.create_promise(
        CreatePromise(id="wf.0", state=PromiseState.RESOLVED, value=TWO), now=1
    )
    assert await first.suspend_task("wf", awaited=["wf.1"], now=2)
    before = [await first.get_promise(id) for id in ("wf", "wf.0", "wf.1")]
    await first.close()

    second = SQLiteStore(db)
    await second.open()
    try:
        assert [await second.get_promise(id) for id in ("wf", "wf.0", "wf.1")] == before
        assert await second.get_task("wf") == TaskRecord(id="wf", state=TaskState.SUSPENDED)
        assert await second.next_timeout() == 100
        assert [p.id for p in await second.branch_promises("wf")] == ["wf.1"]
        # The callback survived too: the timer still wakes the workflow.
        (fired,) = await second.expire_promises(now=100, limit=10)
        assert fired.resumed == [TaskRecord(id="wf", state=TaskState.PENDING, version=1)]
    finally:
        await second.close()


async def test_a_second_process_is_refused_while_the_file_is_open(
    sqlite_store: SQLiteStore, db: Path
) -> None:
    await sqlite_store.create_promise(CreatePromise(id="p"), now=0)

    answer = await open_in_another_process(db)

    assert answer.startswith("StoreError:")
    assert str(db) in answer
    # The first process is not disturbed.
    assert await sqlite_store.get_promise("p") is not None


async def test_another_process_may_open_the_file_once_it_is_closed(db: Path) -> None:
    store = SQLiteStore(db)
    await store.open()
    await store.close()

    assert await open_in_another_process(db) == "opened"


READ_SCHEMA_VERSION_AT_ONCE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=0)
print(conn.execute("PRAGMA user_version").fetchone()[0])
"""


def write_schema_version(db: Path, version: int) -> None:
    conn = sqlite3.connect(db)
    try:
        conn.execute(f"PRAGMA user_version = {version}")
    finally:
        conn.close()


async def test_a_file_with_a_newer_schema_is_refused(db: Path) -> None:
    write_schema_version(db, SCHEMA_VERSION + 1)

    with pytest.raises(StoreError, match="schema version") as refused:
        await SQLiteStore(db).open()

    assert str(db) in str(refused.value)


async def test_a_refused_file_is_left_free_for_others(db: Path) -> None:
    write_schema_version(db, SCHEMA_VERSION + 1)
    with pytest.raises(StoreError) as refused:
        await SQLiteStore(db).open()

    # Another process (say, the newer dawait that owns the file) opens it at once.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        READ_SCHEMA_VERSION_AT_ONCE,
        str(db),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()

    assert refused.value is not None
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().strip() == str(SCHEMA_VERSION + 1)


async def test_a_closed_store_refuses_operations(db: Path) -> None:
    store = SQLiteStore(db)
    await store.open()
    await store.close()

    with pytest.raises(StoreError, match="not open"):
        await store.get_promise("p")


async def test_close_waits_for_operations_in_flight(db: Path) -> None:
    store = SQLiteStore(db)
    await store.open()

    *created, _ = await asyncio.gather(
        *(store.create_promise(CreatePromise(id=f"p{n}"), now=0) for n in range(20)),
        store.close(),
    )

    assert all(result.created for result in created)
    reopened = SQLiteStore(db)
    await reopened.open()
    try:
        assert len(await all_pages(reopened, "*", limit=100)) == 20
    finally:
        await reopened.close()


async def test_concurrent_operations_share_commits(sqlite_store: SQLiteStore) -> None:
    before = len(sqlite_store.batch_sizes)

    created = await asyncio.gather(
        *(sqlite_store.create_promise(CreatePromise(id=f"p{n:03}"), now=0) for n in range(200))
    )

    commits = sqlite_store.batch_sizes[before:]
    assert all(result.created for result in created)
    assert sum(commits) == 200
    assert len(commits) < 200
    assert await all_pages(sqlite_store, "p*", limit=1000) == [f"p{n:03}" for n in range(200)]


async def test_a_failing_operation_does_not_undo_its_neighbours(db: Path) -> None:
    store = SQLiteStore(db)
    await store.open()
    before = len(store.batch_sizes)
    calls: list[Awaitable[object]] = []
    for n in range(50):
        calls.append(store.create_promise(CreatePromise(id=f"ok{n:02}"), now=0))
        calls.append(store.settle_promise(f"missing{n}", event=Settle.RESOLVE, value=ONE, now=0))

    results = await asyncio.gather(*calls, return_exceptions=True)

    # Fewer commits than calls: some commit held a failing call next to a succeeding one.
    assert len(store.batch_sizes[before:]) < len(calls)
    failures = results[1::2]
    assert all(isinstance(failure, PromiseNotFoundError) for failure in failures)
    await store.close()

    reopened = SQLiteStore(db)
    await reopened.open()
    try:
        assert await all_pages(reopened, "*", limit=1000) == [f"ok{n:02}" for n in range(50)]
    finally:
        await reopened.close()


_real_fsync = os.fsync


class _HeldFsync:
    """``os.fsync`` as the store sees it: each call waits until ``release`` and records
    which file it synced."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.synced: list[str] = []
        self.error: OSError | None = None

    def __call__(self, fd: int) -> None:
        self.synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        self.entered.set()
        if not self.release.wait(timeout=30):
            raise AssertionError("fsync was never released")
        if self.error is not None:
            raise self.error
        _real_fsync(fd)


async def test_no_operation_is_answered_before_its_commit_is_fsynced(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(db)
    await store.open()
    fsync = _HeldFsync()
    monkeypatch.setattr("dawait.runtime._sqlite_store.os.fsync", fsync)
    try:
        writes = [
            asyncio.ensure_future(store.create_promise(CreatePromise(id=f"p{n}"), now=0))
            for n in range(10)
        ]
        assert await asyncio.to_thread(fsync.entered.wait, 30)
        # Committed to the WAL and visible to the store's own connection, but not durable:
        # neither these writes nor a read that may have seen them is answered. (A few
        # loop turns: the read's commit is over after the first.)
        read = asyncio.ensure_future(store.get_promise("p0"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not any(write.done() for write in writes)
        assert not read.done()
        assert fsync.synced
        assert all(path == f"{db}-wal" for path in fsync.synced)

        fsync.release.set()
        assert all(created.created for created in await asyncio.gather(*writes))
        assert (await read) is not None
    finally:
        fsync.release.set()
        await store.close()


async def test_a_failed_fsync_fails_what_it_covered_and_the_store_reopens_by_itself(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While broken, every operation fails and ``problem()`` says why; once fsync works
    again the store has reopened the file by itself, with everything acknowledged."""
    store = SQLiteStore(db)
    await store.open()
    await store.create_promise(CreatePromise(id="before"), now=0)
    fsync = _HeldFsync()
    fsync.error = OSError(5, "Input/output error")
    fsync.release.set()
    monkeypatch.setattr("dawait.runtime._sqlite_store.os.fsync", fsync)
    # Reopening fails too while the fault lasts (as the file would).
    monkeypatch.setattr(store, "_connect", _failing_connect)
    try:
        results = await asyncio.gather(
            *(store.create_promise(CreatePromise(id=f"p{n}"), now=0) for n in range(5)),
            return_exceptions=True,
        )

        assert all(isinstance(result, StoreError) for result in results)
        assert "fsync failed" in str(results[0])
        assert "Input/output error" in str(results[0])
        with pytest.raises(StoreError, match="fsync failed"):
            await store.get_promise("before")
        problem = store.problem()
        assert problem is not None
        assert "fsync failed" in problem
        await asyncio.sleep(1.0)
        assert store.reopened == 0
        assert store.problem() is not None

        monkeypatch.undo()  # the fault is gone

        async def healthy() -> bool:
            return store.problem() is None

        await eventually(healthy, "the store to reopen", within=10)
        assert store.reopened == 1
        assert await store.get_promise("before") is not None
        created = await store.create_promise(CreatePromise(id="after"), now=0)
        assert created.created
    finally:
        monkeypatch.undo()
        await store.close()
    reopened = SQLiteStore(db)
    await reopened.open()
    try:
        assert await reopened.get_promise("before") is not None
        assert await reopened.get_promise("after") is not None
    finally:
        await reopened.close()


def _failing_connect() -> None:
    raise StoreError("cannot open (injected)")


async def test_an_operation_failing_after_writing_leaves_nothing_and_spares_its_batch(
    db: Path,
) -> None:
    store = SQLiteStore(db)
    await store.open()

    def write_then_fail(tables: Tables, id: str) -> None:
        tables.insert_promise(create_promise(None, id=id, now=0).record)
        raise ValueError(f"{id} failed after writing")

    calls: list[Awaitable[object]] = []
    for n in range(20):
        calls.append(store.create_promise(CreatePromise(id=f"ok{n:02}"), now=0))
        calls.append(store._transact(write_then_fail, f"bad{n:02}"))
    results = await asyncio.gather(*calls, return_exceptions=True)

    assert all(isinstance(created, PromiseCreated) and created.created for created in results[::2])
    failures = results[1::2]
    assert all(isinstance(failure, StoreError) for failure in failures)
    assert "bad00 failed after writing" in str(failures[0])
    assert await all_pages(store, "*", limit=1000) == [f"ok{n:02}" for n in range(20)]
    await store.close()

    reopened = SQLiteStore(db)
    await reopened.open()
    try:
        assert await all_pages(reopened, "*", limit=1000) == [f"ok{n:02}" for n in range(20)]
    finally:
        await reopened.close()


async def test_schedules_survive_close_and_reopen(db: Path) -> None:
    first = SQLiteStore(db)
    await first.open()
    await first.create_schedule(a_schedule("s", next_run_at=60_000))
    await first.create_schedule(a_schedule("t", next_run_at=None, cron="0 0 29 2 *"))
    await fire(first, "s", expected=60_000, slot=60_000, next_run_at=120_000)
    before = [await first.get_schedule(id) for id in ("s", "t")]
    await first.close()

    second = SQLiteStore(db)
    await second.open()
    try:
        assert [await second.get_schedule(id) for id in ("s", "t")] == before
        assert await second.next_schedule_at() == 120_000
    finally:
        await second.close()


async def test_a_version_1_file_gains_schedules_retention_and_listing_in_place(
    db: Path,
) -> None:
    store = SQLiteStore(db)
    await store.open()
    await store.create_promise(CreatePromise(id="p", param=ONE), now=1)
    await store.close()
    # What dawait with schema version 1 left behind: no schedules table, no delete_at, no
    # creation index.
    conn = sqlite3.connect(db)
    try:
        conn.execute("DROP TABLE schedules")
        conn.execute("DROP INDEX promises_retention")
        conn.execute("DROP INDEX promises_created")
        conn.execute("ALTER TABLE promises DROP COLUMN delete_at")
        conn.execute("PRAGMA user_version = 1")
    finally:
        conn.close()

    upgraded = SQLiteStore(db)
    await upgraded.open()
    try:
        assert (await upgraded.get_promise("p")) is not None
        await upgraded.create_schedule(a_schedule())
        assert await upgraded.get_schedule("s") == a_schedule()
        kept = CreatePromise(id="q", tags={TAG_RETENTION: "1000"})
        await upgraded.create_promise(kept, now=1)
        await upgraded.settle_promise("q", event=Settle.RESOLVE, value=ONE, now=5)
        assert await upgraded.next_deletion() == 1005
    finally:
        await upgraded.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "promises_created" in indexes
    finally:
        conn.close()


async def test_a_version_4_file_gains_the_promise_of_sdk_schedules(db: Path) -> None:
    store = SQLiteStore(db)
    await store.open()
    await store.create_schedule(a_schedule())
    await store.close()
    conn = sqlite3.connect(db)  # as dawait with schema version 4 left it
    try:
        conn.execute("ALTER TABLE schedules DROP COLUMN promise")
        conn.execute("PRAGMA user_version = 4")
    finally:
        conn.close()
    upgraded = SQLiteStore(db)
    await upgraded.open()
    try:
        assert await upgraded.get_schedule("s") == a_schedule()  # kept, no promise
        sdk = a_schedule("r", promise='{"id":"{{.id}}-{{.timestamp}}"}')
        await upgraded.create_schedule(sdk)
        assert await upgraded.get_schedule("r") == sdk
    finally:
        await upgraded.close()
