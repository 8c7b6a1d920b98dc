"""A SIGKILL in the middle of deleting leaves no orphan, and the deletion finishes later.

``retention_worker.py`` runs 60 workflows of 200 steps on a SQLite file with a retention of
1 ms, then sweeps; it SIGKILLs itself right after 2 sweep transactions have committed (each
deletes at most ``SWEEP_RECORDS``, 1,000 records: about five whole trees of 201, then
part of the next). The file it leaves is read directly:

* no call is left without its caller (calls go in post-order, the root last);
* some trees are gone whole, one at most is partly deleted, the others are untouched,
  and every root left still has its task;

then a new process on the file finishes every deletion, and nothing is left.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from dawait.runtime._deletion import SWEEP_RECORDS
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
    killed = _run("run", str(db), "--trees", str(TREES), "--steps", str(STEPS), "--kill-after", "2")
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
    assert 0 < len(roots) < TREES  # whole trees went, not all
    assert TREES - len(roots) == 2 * SWEEP_RECORDS // (STEPS + 1)
    partly = [root for root in roots if calls.get(root, 0) < STEPS]
    assert len(partly) == 1  # where the second transaction's budget ran out
    tasks = {row[0] for row in _rows(db, "SELECT id FROM tasks")}
    assert tasks == set(roots)

    finished = _run("sweep", str(db))
    assert finished.returncode == 0, finished.stderr
    for table in ("promises", "tasks", "callbacks"):
        assert _rows(db, f"SELECT COUNT(*) FROM {table}") == [(0,)], table
