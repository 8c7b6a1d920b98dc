"""``SQLiteStore``: every record in one SQLite file, with pipelined group commit.

One connection, used on the event loop. Operations run as they arrive, inside the open
transaction; these statements only touch SQLite's page cache and take microseconds. Once
per loop iteration the transaction is committed into the write-ahead log, which writes
pages but does not fsync (``synchronous=NORMAL``); a thread then fsyncs the WAL file, and
the operations are answered only when an fsync that began after their commit has returned.
Meanwhile the loop goes on running and committing later operations, so one fsync covers
every commit made while the previous one ran. A lone operation (a single workflow, low
load) is fsynced inline: nothing would overlap with it, and the thread hop costs more than
the fsync itself.

Earlier designs, measured: a writer thread running every statement (~4 operations per
fsync, 2,000 steps/s); then COMMIT with ``synchronous=FULL`` on a committer thread, with
operations arriving meanwhile waiting for it (the committer thread spent most of each
commit waiting for the GIL: bench/sqlite_commit.py; figures in docs/design.md).

Reads wait like writes: they may have seen a commit that is not durable yet. With
``fsync=False`` no fsync happens at all: a process crash loses nothing, power loss may lose
the last commits. An fsync that fails (or a commit that meets an I/O error) marks the store
broken: what it covered may be lost, and Linux may have dropped the dirty pages, so every
unanswered and later operation gets a ``StoreError``, and the store reopens the file in the
background (as at start: what reached the disk is what it then reads), retrying with
backoff until it can; then it takes operations again by itself. Nothing acknowledged is
lost: an operation is acknowledged only once an fsync after it returned. The WAL file's
descriptor is opened with the connection, so a later shortage of descriptors cannot fail
an fsync.

An operation that fails after writing has the transaction rolled back and its neighbours
run again (a savepoint per operation cost two statements on every one of them).

The file is opened with ``locking_mode=EXCLUSIVE``: one process at a time owns it, and a
second one gets a ``StoreError`` naming the file instead of two engines racing.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from dawait.core._errors import StoreError
from dawait.runtime._clock import SystemClock
from dawait.runtime._metrics import EngineMetrics
from dawait.runtime._sqlite_health import DiskHealth, read_only
from dawait.runtime._sqlite_tables import SCHEMA, SCHEMA_VERSION, UPGRADES, SQLiteTables
from dawait.runtime._store_ops import Done, TablesStore, answer, fail, run_op

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

R = TypeVar("R")

log = logging.getLogger("dawait.sqlite")


_CLOCK = SystemClock()

_MAX_BATCH = 2048


class SQLiteStore(TablesStore):
    """Records in one SQLite file (WAL), with group commit; see the module docstring."""

    def __init__(self, path: str | Path, *, fsync: bool = True, reserve: int | None = None) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.health = DiskHealth(self, reserve)
        """Write faults and free space (``problem()``, ``refusal()``)."""
        self._conn: sqlite3.Connection | None = None
        self._tables: SQLiteTables | None = None
        self._syncer: concurrent.futures.ThreadPoolExecutor | None = None
        self._wal_fd: int | None = None
        self._batch: list[Done] = []
        self._writers: set[asyncio.Future[Any]] = set()
        """The operations of ``_batch`` that wrote (the others may run again alone)."""
        self._commit_scheduled = False
        self._changes_at_begin = 0
        self._committed_seq = 0
        """Write transactions committed (in the page cache) so far."""
        self._synced_seq = 0
        """Of those, how many are known durable (fsynced)."""
        self._syncing = False
        self._unanswered: collections.deque[tuple[int, list[Done], float | None]] = (
            collections.deque()
        )
        """Batches waiting for an fsync: (the commit they need durable, the batch, when
        their own commit started, None if they only read)."""
        self._broken: StoreError | None = None
        self._reopening: asyncio.Task[None] | None = None
        self._rescue: Callable[[sqlite3.Connection], None] | None = None
        """What to save through the old connection before it closes (``file_lost``)."""
        self.reopened = 0
        """Times the file was reopened after the store broke (for tests and metrics)."""
        self.metrics: EngineMetrics | None = None
        """Where commit latencies and batch sizes are counted, once an engine attaches."""
        self._idle: asyncio.Event | None = None
        self.batch_sizes: list[int] = []
        """Operations per commit, most recent last (kept short); for metrics and tests."""

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._syncer = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"dawait-sqlite:{self.path.name}"
        )
        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(self._syncer, self._connect)
        except BaseException:
            self._syncer.shutdown(wait=False)
            self._syncer = None
            raise
        self._tables = SQLiteTables(self._conn)
        self._broken = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.health.start()

    def problem(self) -> str | None:
        if self._broken is not None:
            return f"{self._broken} (reopening)"
        return self.health.write_error

    def refusal(self) -> str | None:
        return self.problem() or self.health.refusal()

    async def close(self) -> None:
        await self.health.stop()
        if self._reopening is not None:
            self._reopening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reopening
            self._reopening = None
        conn, syncer = self._conn, self._syncer
        if conn is None or syncer is None:
            return
        assert self._idle is not None
        while not self._idle.is_set() or self._batch:
            await self._idle.wait()
            await asyncio.sleep(0)
        self._conn = self._tables = self._syncer = None
        await asyncio.get_running_loop().run_in_executor(syncer, self._disconnect, conn)
        syncer.shutdown(wait=True)

    def _disconnect(self, conn: sqlite3.Connection) -> None:
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None
        conn.close()

    def _break(self, broken: StoreError) -> None:
        """Refuse operations, fail the unanswered ones, and reopen in the background."""
        if self._broken is None:
            log.error("%s; reopening it", broken)
        self._broken = broken
        self._synced_seq = self._committed_seq
        for _seq, batch, _started in self._unanswered:
            fail(batch, broken)
        self._unanswered.clear()
        if self._reopening is None:
            self._reopening = asyncio.get_running_loop().create_task(
                self._reopen(), name=f"dawait-sqlite-reopen:{self.path.name}"
            )

    async def _reopen(self) -> None:
        """Close the connection and open the file again (what is on disk, as at start),
        retrying with backoff until it opens; then take operations again."""
        loop = asyncio.get_running_loop()
        delay = 200  # ms
        failures = 0
        try:
            while True:
                await _CLOCK.sleep_until(_CLOCK.now() + delay)
                delay = min(delay * 2, 5000)
                conn, syncer = self._conn, self._syncer
                if syncer is None:
                    return  # closed meanwhile
                while self._syncing or self._commit_scheduled:  # the old one's last
                    await _CLOCK.sleep_until(_CLOCK.now() + 10)
                try:
                    self._conn = await loop.run_in_executor(syncer, self._swap, conn)
                except StoreError as exc:
                    self._conn = None
                    # Once per episode; then quietly, every few seconds.
                    (log.debug if failures else log.warning)("cannot reopen yet: %s", exc)
                    failures += 1
                    continue
                self._tables = SQLiteTables(self._conn)
                self._committed_seq = self._synced_seq = 0
                self._broken = None
                self.reopened += 1
                self.health.opened()
                log.warning("%s: reopened; taking operations again", self.path)
                assert self._idle is not None
                self._answer()
                return
        finally:
            self._reopening = None

    def file_lost(self, reason: str, rescue: Callable[[sqlite3.Connection], None]) -> None:
        """The database or its WAL is no longer the file at its path (deleted, replaced):
        refuse operations, save what the open connection holds (``rescue``), reopen."""
        if self._broken is not None:
            return
        log.error("%s; saving what the open file holds, then reopening", reason)
        self._rescue = rescue
        self._break(StoreError(f"{reason} (saving what it held and reopening)"))

    def _swap(self, conn: sqlite3.Connection | None) -> sqlite3.Connection:
        """On the syncer thread: the old connection closed (whatever it says), a new one."""
        if conn is not None:
            with contextlib.suppress(sqlite3.Error, OSError):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            rescue, self._rescue = self._rescue, None
            if rescue is not None:
                try:
                    rescue(conn)
                except (sqlite3.Error, OSError) as exc:
                    log.error("%s: could not save what the open file held: %s", self.path, exc)
            with contextlib.suppress(sqlite3.Error, OSError):
                self._disconnect(conn)
            self._wal_fd = None
        return self._connect()

    async def _transact(self, op: Callable[..., R], *args: object) -> R:
        if self._conn is None:
            raise StoreError(f"{self!r} is not open")
        if self._broken is not None:
            raise self._broken
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._run(op, args, future)
        return await future

    def _run(
        self, op: Callable[..., Any], args: tuple[object, ...], future: asyncio.Future[Any]
    ) -> None:
        """Run one operation now, in the open transaction; its future is answered once the
        transaction is durable."""
        conn, tables = self._conn, self._tables
        assert conn is not None
        assert tables is not None
        try:
            if not conn.in_transaction:
                conn.execute("BEGIN IMMEDIATE")
                self._changes_at_begin = conn.total_changes
        except sqlite3.Error as exc:
            future.set_exception(_store_error(self, exc))
            return
        changes = conn.total_changes
        done = run_op(tables, op, args, future, lambda exc: _store_error(self, exc))
        self._batch.append(done)
        if conn.total_changes != changes:
            self._writers.add(future)
        if not done[1] and conn.total_changes != changes:
            self._undo_failed()
        if not self._commit_scheduled:
            self._commit_scheduled = True
            assert self._idle is not None
            self._idle.clear()
            # Commit after everything this loop iteration queued has joined the batch.
            asyncio.get_running_loop().call_soon(self._commit)

    def _undo_failed(self) -> None:
        """The last operation failed after writing: roll the transaction back and run the
        batch's other operations again without it.

        No savepoint per operation: they cost two statements each, and operations that
        fail mostly fail before writing anything. Nothing in the batch has been answered;
        the ones that succeeded run again in order (they are deterministic, so each gets
        its result again), the ones that failed keep their errors.
        """
        conn = self._conn
        assert conn is not None
        conn.execute("ROLLBACK")
        batch, self._batch = self._batch, []
        failed = [done for done in batch if not done[1]]
        for future, ok, _result, op, args in batch[:-1]:
            if ok:  # the same operations in the same order: the same results
                self._run(op, args, future)
        self._batch.extend(failed)

    def _commit(self) -> None:
        """Commit this loop turn's transaction into the WAL (no fsync: microseconds), then
        answer its operations once an fsync that started after it has returned."""
        self._commit_scheduled = False
        conn = self._conn
        batch, self._batch = self._batch, []
        writers, self._writers = self._writers, set()
        assert conn is not None
        started = _CLOCK.monotonic()
        wrote = conn.in_transaction and conn.total_changes != self._changes_at_begin
        if conn.in_transaction and self._broken is not None:
            # Ran just before the store broke: nothing of it may reach the file.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            fail(batch, self._broken)
            batch, wrote = [], False
        elif conn.in_transaction:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                error = _store_error(self, exc)
                # Reads need not fail with their neighbours' writes (a full disk refuses the
                # commit): they run again on their own, seeing nothing that was rolled back.
                reads = [d for d in batch if d[1] and d[0] not in writers]
                if isinstance(exc, sqlite3.OperationalError) and "I/O error" in str(exc):
                    self._break(error)  # what SQLite wrote is in doubt: read the file anew
                    reads = []
                rerun = {d[0] for d in reads}
                fail([d for d in batch if d[0] not in rerun], error)
                batch, wrote = [], False
                for future, _ok, _result, op, args in reads:
                    self._run(op, args, future)
        if wrote:
            if self.health.write_error is not None:
                self.health.wrote()
            self._committed_seq += 1
            self.batch_sizes.append(len(batch))
            if len(self.batch_sizes) > 4096:
                del self.batch_sizes[:2048]
            if self.metrics is not None:
                self.metrics.batch_sizes.observe(len(batch))
            if not self.fsync:
                self._synced_seq = self._committed_seq
        # Reads may have seen commits not yet durable: they wait for the same fsync.
        self._unanswered.append((self._committed_seq, batch, started if wrote else None))
        if self._synced_seq < self._committed_seq and not self._syncing and len(batch) == 1:
            # A lone operation: nothing would overlap with its fsync, and a thread hop
            # costs more than the fsync itself (sequential workflows: ~700 -> ~1,200
            # steps/s).
            self._sync_inline()
        self._answer()
        self._start_sync()

    def _sync_inline(self) -> None:
        target = self._committed_seq
        try:
            self._fsync_wal()
        except OSError as exc:
            self._sync_failed(exc)
        else:
            self._synced_seq = target

    def _start_sync(self) -> None:
        if self._syncing or self._synced_seq >= self._committed_seq or self._syncer is None:
            return
        self._syncing = True
        target = self._committed_seq
        done = asyncio.get_running_loop().run_in_executor(self._syncer, self._fsync_wal)
        done.add_done_callback(lambda f: self._synced(f, target))

    def _synced(self, done: asyncio.Future[None], target: int) -> None:
        self._syncing = False
        error = None if done.cancelled() else done.exception()
        if error is not None:
            self._sync_failed(error)
        else:
            self._synced_seq = max(self._synced_seq, target)
        self._answer()
        self._start_sync()

    def _fsync_wal(self) -> None:
        """Make every commit written to the WAL so far durable (WAL mode keeps the WAL
        file open and in place; checkpoints sync the database file themselves)."""
        if self._wal_fd is None:
            self._wal_fd = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
        os.fsync(self._wal_fd)

    def _sync_failed(self, error: BaseException) -> None:
        """An fsync failed: what it covered may be lost, and the kernel may have dropped
        the dirty pages, so no later fsync can be trusted either. Fail everything
        unanswered and refuse further operations until the file is reopened."""
        broken = StoreError(f"{self.path}: cannot make commits durable: fsync failed: {error}")
        broken.__cause__ = error
        self._break(broken)

    def _answer(self) -> None:
        """Answer the operations of every batch that is now durable."""
        unanswered = self._unanswered
        metrics = self.metrics
        while unanswered and unanswered[0][0] <= self._synced_seq:
            _seq, batch, started = unanswered.popleft()
            if metrics is not None and started is not None:
                metrics.commit_seconds.observe(_CLOCK.monotonic() - started)
            answer(batch)
        if (
            not unanswered
            and not self._syncing
            and not self._commit_scheduled
            and self._idle is not None
        ):
            self._idle.set()

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        try:
            self._prepare(conn)
            # Open now, while descriptors are plenty: the first fsync must not need one.
            self._wal_fd = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            conn.close()
            raise StoreError(f"cannot open {self.path}-wal: {exc.strerror or exc}") from exc
        except BaseException:
            conn.close()  # releases the lock at once, not when the error is collected
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}; this dawait reads up to "
                    f"{SCHEMA_VERSION}: upgrade dawait"
                )
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{self!r}: cannot switch {self.path} to WAL (got {mode!r})")
            conn.execute("PRAGMA synchronous = NORMAL")
            if version < SCHEMA_VERSION:
                tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
                upgrades = "".join(
                    statement
                    for v, (table, statement) in UPGRADES.items()
                    if version < v and table in tables
                )
                conn.executescript(
                    f"BEGIN IMMEDIATE; {upgrades} {SCHEMA} "
                    f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                )
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                raise StoreError(
                    f"{self.path} is in use by another process: one dawait app per SQLite file"
                ) from exc
            raise StoreError(f"cannot open {self.path}: {_in_words(self.path, exc)}") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open {self.path}: {_in_words(self.path, exc)}") from exc


def _in_words(path: Path, exc: sqlite3.Error) -> str:
    """What SQLite's error at open means, for the operator."""
    text = str(exc)
    if "not a database" in text:
        return f"it is not a SQLite database ({text})"
    if "malformed" in text:
        return f"the file is damaged ({text}): restore it from a backup"
    if read_only(path):
        return f"it is read-only (the file, its directory or its filesystem) ({text})"
    return text


def _store_error(store: SQLiteStore, exc: BaseException) -> StoreError:
    store.health.failed(exc)
    error = StoreError(f"{store.path}: {exc}")
    error.__cause__ = exc
    return error
