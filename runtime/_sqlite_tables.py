"""The SQLite file's schema and its ``Tables``: records as rows, the store operations'
reads and writes as statements (``runtime/_store_ops.py`` runs the operations over them;
``SQLiteStore`` in ``_sqlite_store`` runs them on one connection with group commit)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from dawait.core._listing import InvocationQuery, ListCursor
from dawait.core._promise import NO_TAGS, PromiseRecord, PromiseState, Value
from dawait.core._schedule import (
    SCHEDULE_FIELDS,
    ScheduleRecord,
    schedule_from_row,
    schedule_row,
)
from dawait.core._task import TaskRecord, task_from_row, task_row

__all__ = ["SCHEMA", "SCHEMA_VERSION", "UPGRADES", "SQLiteTables"]

SCHEMA_VERSION = 5
"""1: promises, tasks, callbacks. 2: schedules (a version 1 file gains the table on open).
3: ``promises.delete_at``, the retention deadline, indexed (``UPGRADES``). 4: promises
indexed by creation time (listings are newest first). 5: ``schedules.promise``, the
promise a Resonate SDK's schedule fires."""

UPGRADES = {
    3: ("promises", "ALTER TABLE promises ADD COLUMN delete_at INTEGER;"),
    5: ("schedules", "ALTER TABLE schedules ADD COLUMN promise TEXT;"),
}
"""Version -> (a table, the statement that brings it from the version before): run before
``SCHEMA`` on an older file that has that table (else ``SCHEMA`` creates it whole)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS promises (
    id            TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    param_data    TEXT,
    param_headers TEXT,
    value_data    TEXT,
    value_headers TEXT,
    timeout_at    INTEGER,
    tags          TEXT,
    branch        TEXT,
    created_at    INTEGER NOT NULL,
    settled_at    INTEGER,
    delete_at     INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS promises_branch ON promises (branch) WHERE branch IS NOT NULL;
CREATE INDEX IF NOT EXISTS promises_due ON promises (timeout_at)
    WHERE state = 'pending' AND timeout_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS promises_created ON promises (created_at DESC, id);
CREATE INDEX IF NOT EXISTS promises_retention ON promises (delete_at)
    WHERE delete_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS tasks (
    id         TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    version    INTEGER NOT NULL,
    pid        TEXT,
    expires_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasks_runnable ON tasks (id) WHERE state IN ('pending', 'acquired');
CREATE TABLE IF NOT EXISTS callbacks (
    promise_id TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    PRIMARY KEY (promise_id, task_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS callbacks_task ON callbacks (task_id);
CREATE TABLE IF NOT EXISTS schedules (
    id          TEXT PRIMARY KEY,
    cron        TEXT NOT NULL,
    func        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    args        TEXT NOT NULL,
    next_run_at INTEGER,
    last_run_at INTEGER,
    created_at  INTEGER NOT NULL,
    promise     TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS schedules_due ON schedules (next_run_at)
    WHERE next_run_at IS NOT NULL;
"""
"""Every statement is ``IF NOT EXISTS``, so running it (after ``UPGRADES``) upgrades a file
of any older version."""

_PROMISE_COLUMNS = (
    "id, state, param_data, param_headers, value_data, value_headers, "
    "timeout_at, tags, branch, created_at, settled_at"
)
_INSERT_PROMISE = (
    f"INSERT INTO promises ({_PROMISE_COLUMNS}, delete_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)

_SCHEDULE_COLUMNS = ", ".join(SCHEDULE_FIELDS)
_SCHEDULE_MARKS = ",".join("?" * len(SCHEDULE_FIELDS))

_CALLS_BELOW = (
    "WITH RECURSIVE below AS (SELECT id, branch, param_data FROM promises WHERE branch = ? "
    "UNION ALL SELECT p.id, p.branch, p.param_data FROM promises p "
    "JOIN below b ON p.branch = b.id) SELECT * FROM below"
)
"""Every promise below one by branch, in one statement (the branch index, level by level)."""
_DELETE_ALL = (
    "DELETE FROM promises WHERE id IN ({marks})",
    "DELETE FROM callbacks WHERE promise_id IN ({marks})",
    "DELETE FROM tasks WHERE id IN ({marks})",
    "DELETE FROM callbacks WHERE task_id IN ({marks})",
)
_IN_CHUNK = 500
"""Ids per ``IN (...)``: below SQLite's limit of bound parameters."""


_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _dump_map(mapping: Mapping[str, str] | None) -> str | None:
    """JSON for headers: None stays NULL, an empty mapping stays ``{}``."""
    if mapping is None:
        return None
    return _dumps(dict(mapping)) if mapping else "{}"


def _dump_tags(tags: Mapping[str, str]) -> str | None:
    return _dumps(dict(tags)) if tags else None


def _promise_from_row(row: tuple[Any, ...]) -> PromiseRecord:
    (id, state, param_data, param_headers, value_data, value_headers) = row[:6]
    (timeout_at, tags, _branch, created_at, settled_at) = row[6:]
    return PromiseRecord(
        id=id,
        state=PromiseState(state),
        param=Value(
            data=param_data, headers=None if param_headers is None else json.loads(param_headers)
        ),
        value=Value(
            data=value_data, headers=None if value_headers is None else json.loads(value_headers)
        ),
        timeout_at=timeout_at,
        tags=json.loads(tags) if tags else NO_TAGS,
        created_at=created_at,
        settled_at=settled_at,
    )


def _glob_pattern(pattern: str) -> str:
    """SQLite GLOB for an id pattern whose only wildcard is ``*`` (GLOB is case-sensitive)."""
    return pattern.replace("[", "[[]").replace("?", "[?]")


def _promise_row(record: PromiseRecord) -> tuple[object, ...]:
    return (
        record.id,
        record.state.value,
        record.param.data,
        _dump_map(record.param.headers),
        record.value.data,
        _dump_map(record.value.headers),
        record.timeout_at,
        _dump_tags(record.tags),
        record.branch if record.branch != record.id else None,
        record.created_at,
        record.settled_at,
        record.delete_at,
    )


class SQLiteTables:
    """The ``Tables`` of one SQLite connection, used only on the writer thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get_promise(self, id: str) -> PromiseRecord | None:
        row = self.conn.execute(
            f"SELECT {_PROMISE_COLUMNS} FROM promises WHERE id = ?", (id,)
        ).fetchone()
        return None if row is None else _promise_from_row(row)

    def insert_promise(self, record: PromiseRecord) -> bool:
        cursor = self.conn.execute(
            f"{_INSERT_PROMISE} ON CONFLICT (id) DO NOTHING", _promise_row(record)
        )
        return cursor.rowcount == 1

    def put_promise(self, record: PromiseRecord, *, new: bool) -> None:
        if new:
            self.conn.execute(_INSERT_PROMISE, _promise_row(record))
        else:
            # Only settling (and keeping a root longer: its tags) changes a stored promise.
            self.conn.execute(
                "UPDATE promises SET state = ?, value_data = ?, value_headers = ?, "
                "settled_at = ?, tags = ?, delete_at = ? WHERE id = ?",
                (
                    record.state.value,
                    record.value.data,
                    _dump_map(record.value.headers),
                    record.settled_at,
                    _dump_tags(record.tags),
                    record.delete_at,
                    record.id,
                ),
            )

    def branch_promises(self, branch: str) -> list[PromiseRecord]:
        rows = self.conn.execute(
            f"SELECT {_PROMISE_COLUMNS} FROM promises WHERE branch = ?", (branch,)
        ).fetchall()
        return [_promise_from_row(row) for row in rows]

    def search_promises(
        self, pattern: str, state: PromiseState | None, limit: int, after: str | None
    ) -> list[PromiseRecord]:
        sql = f"SELECT {_PROMISE_COLUMNS} FROM promises WHERE id GLOB ?"
        args: list[object] = [_glob_pattern(pattern)]
        if state is not None:
            sql += " AND state = ?"
            args.append(state.value)
        if after is not None:
            sql += " AND id > ?"
            args.append(after)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [_promise_from_row(row) for row in self.conn.execute(sql, args)]

    def due_promises(self, now: int, limit: int) -> list[PromiseRecord]:
        rows = self.conn.execute(
            f"SELECT {_PROMISE_COLUMNS} FROM promises WHERE state = 'pending' "
            "AND timeout_at IS NOT NULL AND timeout_at <= ? ORDER BY timeout_at LIMIT ?",
            (now, limit),
        ).fetchall()
        return [_promise_from_row(row) for row in rows]

    def next_timeout(self) -> int | None:
        row = self.conn.execute(
            "SELECT MIN(timeout_at) FROM promises WHERE state = 'pending' "
            "AND timeout_at IS NOT NULL"
        ).fetchone()
        return None if row is None else row[0]

    def due_deletions(self, now: int, limit: int) -> list[str]:
        rows = self.conn.execute(
            "SELECT id FROM promises WHERE delete_at IS NOT NULL AND delete_at <= ? "
            "ORDER BY delete_at LIMIT ?",
            (now, limit),
        ).fetchall()
        return [row[0] for row in rows]

    def next_deletion(self) -> int | None:
        row = self.conn.execute(
            "SELECT MIN(delete_at) FROM promises WHERE delete_at IS NOT NULL"
        ).fetchone()
        return None if row is None else row[0]

    def get_task(self, id: str) -> TaskRecord | None:
        row = self.conn.execute(
            "SELECT id, state, version, pid, expires_at FROM tasks WHERE id = ?", (id,)
        ).fetchone()
        return None if row is None else task_from_row(row)

    def put_task(self, task: TaskRecord, *, new: bool) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO tasks (id, state, version, pid, expires_at) VALUES (?,?,?,?,?)",
            task_row(task),
        )

    def add_callback(self, promise_id: str, task_id: str) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO callbacks (promise_id, task_id) VALUES (?, ?)",
            (promise_id, task_id),
        )

    def pop_callbacks(self, promise_id: str) -> list[str]:
        rows = self.conn.execute(
            "DELETE FROM callbacks WHERE promise_id = ? RETURNING task_id", (promise_id,)
        ).fetchall()
        return [row[0] for row in rows]

    def drop_callbacks(self, task_id: str) -> None:
        self.conn.execute("DELETE FROM callbacks WHERE task_id = ?", (task_id,))

    def delete_promise(self, id: str) -> None:
        self.conn.execute("DELETE FROM promises WHERE id = ?", (id,))
        self.conn.execute("DELETE FROM callbacks WHERE promise_id = ?", (id,))

    def delete_task(self, id: str) -> None:
        self.conn.execute("DELETE FROM tasks WHERE id = ?", (id,))
        self.drop_callbacks(id)

    def delete_all(self, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            for sql in _DELETE_ALL:
                self.conn.execute(sql.format(marks=marks), chunk)

    def calls_below(self, id: str) -> list[tuple[str, str, str | None]]:
        return self.conn.execute(_CALLS_BELOW, (id,)).fetchall()

    def invocation_promises(
        self, query: InvocationQuery, after: ListCursor | None, limit: int
    ) -> list[PromiseRecord]:
        # Newest first down the promises_created index, each probed for its task.
        columns = ", ".join(f"p.{c}" for c in _PROMISE_COLUMNS.split(", "))
        sql = f"SELECT {columns} FROM promises p JOIN tasks t ON t.id = p.id WHERE 1"
        args: list[object] = []
        if after is not None:
            sql += " AND (p.created_at < ? OR (p.created_at = ? AND p.id > ?))"
            args += [after[0], *after]
        states = query.stored_states()
        if states is not None:
            sql += f" AND p.state IN ({','.join('?' * len(states))})"
            args += sorted(states)
        if query.created_after is not None:
            sql += " AND p.created_at >= ?"
            args.append(query.created_after)
        if query.created_before is not None:
            sql += " AND p.created_at < ?"
            args.append(query.created_before)
        if query.function:
            sql += " AND substr(json_extract(p.param_data, '$.func'), 1, ?) = ?"
            args += [len(query.function), query.function]
        sql += " ORDER BY p.created_at DESC, p.id LIMIT ?"
        args.append(limit)
        return [_promise_from_row(row) for row in self.conn.execute(sql, args)]

    def runnable_tasks(self, after: str | None, limit: int) -> list[TaskRecord]:
        rows = self.conn.execute(
            "SELECT id, state, version, pid, expires_at FROM tasks "
            "WHERE state IN ('pending', 'acquired') AND (? IS NULL OR id > ?) "
            "ORDER BY id LIMIT ?",
            (after, after, limit),
        ).fetchall()
        return [task_from_row(row) for row in rows]

    def get_schedule(self, id: str) -> ScheduleRecord | None:
        row = self.conn.execute(
            f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE id = ?", (id,)
        ).fetchone()
        return None if row is None else schedule_from_row(row)

    def put_schedule(self, record: ScheduleRecord, *, new: bool) -> None:
        if new:
            self.conn.execute(
                f"INSERT INTO schedules ({_SCHEDULE_COLUMNS}) VALUES ({_SCHEDULE_MARKS})",
                schedule_row(record),
            )
        else:
            # Only firing changes a stored schedule.
            self.conn.execute(
                "UPDATE schedules SET next_run_at = ?, last_run_at = ? WHERE id = ?",
                (record.next_run_at, record.last_run_at, record.id),
            )

    def delete_schedule(self, id: str) -> bool:
        return self.conn.execute("DELETE FROM schedules WHERE id = ?", (id,)).rowcount > 0

    def search_schedules(self, pattern: str, limit: int, after: str | None) -> list[ScheduleRecord]:
        rows = self.conn.execute(
            f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE id GLOB ? "
            "AND (? IS NULL OR id > ?) ORDER BY id LIMIT ?",
            (_glob_pattern(pattern), after, after, limit),
        ).fetchall()
        return [schedule_from_row(row) for row in rows]

    def due_schedules(self, now: int, limit: int) -> list[ScheduleRecord]:
        rows = self.conn.execute(
            f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE next_run_at IS NOT NULL "
            "AND next_run_at <= ? ORDER BY next_run_at, id LIMIT ?",
            (now, limit),
        ).fetchall()
        return [schedule_from_row(row) for row in rows]

    def next_schedule_at(self) -> int | None:
        row = self.conn.execute(
            "SELECT MIN(next_run_at) FROM schedules WHERE next_run_at IS NOT NULL"
        ).fetchone()
        return None if row is None else row[0]
