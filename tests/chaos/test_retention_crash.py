"""A SIGKILL in the middle of deleting leaves no orphan, and the deletion finishes later.

``retention_worker.py`` runs 60 workflows of 200 steps on a SQLite file with a retention of
1 ms, then sweeps; it SIGKILLs itself right after 7 deletion operations have committed
(each tree takes 6: five of 40 calls, then the root; SQLite commits the operations of the
60 trees together). The file it leaves is read directly:

* no call is left without its caller (calls go in post-order, the root last);
* trees are partly deleted, each by whole operations (a multiple of 40 calls), none is
  gone yet, and every root still has its task;

then a new process on the file finishes every deletion, and nothing is left.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.chaos import retention_worker

WORKER = Path(retention_worker.__file__)
TREES = 60
STEPS = 200
WAIT = 120.0


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(WORKER), *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_kill_mid_deletion_leaves_no_orphan_and_the_deletion_finishes(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    killed = _run("run", str(db), "--trees", str(TREES), "--steps", str(STEPS), "--kill-after", "7")
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    orphans = _rows(
        db,
        "SELECT c.id FROM promises c WHERE c.branch IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM promises p WHERE p.id = c.branch)",
    )
    assert orphans == []
    calls = dict(
        _rows(db, "SELECT branch, COUNT(*) FROM promises WHERE branch IS NOT NULL GROUP BY branch")
    )
    roots = [row[0] for row in _rows(db, "SELECT id FROM promises WHERE branch IS NULL")]
    assert len(roots) == TREES  # none gone yet: a tree's root goes in its 6th transaction
    partly = [root for root in roots if calls.get(root, 0) < STEPS]
    assert partly, "the kill came before any deletion"
    assert all((STEPS - calls.get(root, 0)) % 40 == 0 for root in roots)  # whole operations
    tasks = {row[0] for row in _rows(db, "SELECT id FROM tasks")}
    assert tasks == set(roots)

    finished = _run("sweep", str(db))
    assert finished.returncode == 0, finished.stderr
    for table in ("promises", "tasks", "callbacks"):
        assert _rows(db, f"SELECT COUNT(*) FROM {table}") == [(0,)], table
