"""Whether a SQLite store can write, told truthfully, and headroom before its disk is full.

- **Write errors.** A write refused for want of space, a read-only file or an I/O error
  makes the store's ``problem()`` say so (the node answers ``/readyz`` 503 with it). While
  it lasts, a probe write (one page: ``PRAGMA user_version``) is tried every second, so
  readiness comes back by itself once the store can write, with or without traffic.
- **Files checked.** Every second the database and its WAL at their paths must be the
  files the store opened (same device and inode). If one was deleted or replaced (a cleanup
  script, a volume re-attached), the store refuses operations, saves what its open handles
  hold (a checkpoint copies the deleted WAL into the database; a deleted or replaced
  database is copied whole, through the open connection, to a new file at its path, what
  was there renamed aside), reopens, and logs an error naming the file. Nothing
  acknowledged is lost, also across a kill -9 after.
- **Headroom.** Every second the free space of the file's filesystem is read
  (``statvfs``, not per write). Below ``reserve`` bytes the store refuses *new*
  invocations (``refusal()``: the engine asks it for starts made from outside), naming the
  free and reserved bytes, while running invocations go on writing their steps and
  results: in-flight work finishes instead of failing. The default reserve is 64 MiB, or a
  tenth of a smaller filesystem.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dawait.core._units import format_size
from dawait.runtime._clock import SystemClock
from dawait.runtime._sqlite_tables import SCHEMA_VERSION, SQLiteTables

if TYPE_CHECKING:
    from dawait.runtime._sqlite_store import SQLiteStore
    from dawait.runtime._sqlite_tables import SQLiteTables

__all__ = ["DEFAULT_RESERVE", "DiskHealth", "is_write_fault", "read_only"]

log = logging.getLogger("dawait.sqlite")

DEFAULT_RESERVE = 64 * 1024 * 1024
"""Free bytes kept on the store's filesystem: below them new invocations are refused."""
EVERY = 1000
"""Milliseconds between two looks at free space (and two probe writes while failing)."""

_CLOCK = SystemClock()
_WRITE_FAULTS = ("disk is full", "readonly", "read-only", "i/o error", "no space")


def is_write_fault(error: BaseException) -> bool:
    """Whether ``error`` says the file cannot be written (full, read-only, I/O)."""
    return isinstance(error, sqlite3.Error) and any(
        fault in str(error).lower() for fault in _WRITE_FAULTS
    )


def read_only(path: Path) -> bool:
    """Whether ``path`` (or its directory, or its filesystem) cannot be written."""
    try:
        if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    return (path.exists() and not os.access(path, os.W_OK)) or not os.access(path.parent, os.W_OK)


def _identity(path: Path | str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _save_wal(conn: sqlite3.Connection) -> None:
    """The WAL's path is gone but the connection still has it open: copy what it holds
    into the database (which a checkpoint syncs)."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _save_database(path: Path) -> Callable[[sqlite3.Connection], None]:
    """The database's path is gone or holds another file: write what the open connection
    reads to a new file there (what was at the path is kept aside, renamed)."""

    def save(conn: sqlite3.Connection) -> None:
        rescue = path.with_name(path.name + ".rescue")
        copy = sqlite3.connect(rescue)
        try:
            conn.backup(copy)
        finally:
            copy.close()
        fd = os.open(rescue, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        stamp = _CLOCK.now()
        for suffix in ("", "-wal", "-shm"):
            other = path.with_name(path.name + suffix)
            if other.exists():
                os.replace(other, other.with_name(f"{other.name}.replaced-{stamp}"))
        os.replace(rescue, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    return save


def _probe(tables: SQLiteTables, version: int) -> None:
    tables.conn.execute(f"PRAGMA user_version = {int(version)}")


class DiskHealth:
    """The write health and free space of ``store`` (see the module docstring)."""

    def __init__(self, store: SQLiteStore, reserve: int | None) -> None:
        self.store = store
        self.reserve = reserve
        """Bytes kept free (None: the default, 64 MiB or a tenth of the filesystem)."""
        self.write_error: str | None = None
        self.free: int | None = None
        """Free bytes on the filesystem at the last look (None: not looked yet)."""
        self._default_reserve: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._files: tuple[tuple[int, int] | None, tuple[int, int] | None] = (None, None)
        """The database's and the WAL's (device, inode) as opened."""

    def opened(self) -> None:
        """Note which files the store has open (at open and after a reopen)."""
        wal_fd = self.store._wal_fd
        wal = None
        if wal_fd is not None:
            stat = os.fstat(wal_fd)
            wal = (stat.st_dev, stat.st_ino)
        self._files = (_identity(self.store.path), wal)

    def _check_files(self) -> None:
        """The same files at their paths as were opened, else save and reopen."""
        database, wal = self._files
        path = self.store.path
        if database is not None and _identity(path) != database:
            gone = "was deleted" if not path.exists() else "was replaced by another file"
            self.store.file_lost(f"{path} {gone} under the node", _save_database(path))
        elif wal is not None and _identity(f"{path}-wal") != wal:
            self.store.file_lost(f"{path}-wal was deleted or replaced under the node", _save_wal)

    def start(self) -> None:
        self.opened()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._watch(), name=f"dawait-sqlite-health:{self.store.path.name}"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def failed(self, error: BaseException) -> None:
        """A write failed with ``error``: note it if it is a fault of the file."""
        if is_write_fault(error) and self.write_error is None:
            self.write_error = f"{self.store.path}: cannot write: {error}"
            log.error("%s (new invocations are refused until it can)", self.write_error)

    def wrote(self) -> None:
        """A write went through."""
        if self.write_error is not None:
            log.warning("%s: writes go through again", self.store.path)
            self.write_error = None

    def refusal(self) -> str | None:
        """Why new invocations are refused now (None: they are not)."""
        if self.write_error is not None:
            return self.write_error
        reserve = self._reserve()
        if self.free is not None and reserve is not None and self.free < reserve:
            return (
                f"{self.store.path}: {format_size(self.free)} free on its filesystem, below the "
                f"{format_size(reserve)} reserved (sqlite:///...?reserve=): new invocations are "
                "refused while running ones finish; free some space"
            )
        return None

    def _reserve(self) -> int | None:
        return self.reserve if self.reserve is not None else self._default_reserve

    async def _watch(self) -> None:
        while True:
            self._look()
            if self.store._broken is None:  # not while it reopens
                self._check_files()
            if self.write_error is not None:
                try:
                    await self.store._transact(_probe, SCHEMA_VERSION)
                except Exception:  # still failing: noted by the store, tried again
                    pass
                else:
                    self.wrote()
            await _CLOCK.sleep_until(_CLOCK.now() + EVERY)

    def _look(self) -> None:
        try:
            stat = os.statvfs(self.store.path.parent)
        except OSError:
            return
        self.free = stat.f_bavail * stat.f_frsize
        if self._default_reserve is None:
            self._default_reserve = min(DEFAULT_RESERVE, stat.f_blocks * stat.f_frsize // 10)
