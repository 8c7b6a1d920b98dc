"""Why the SQLite store does not COMMIT on a thread: the GIL hand-back.

    .venv/bin/python bench/sqlite_commit.py [--ops-per-commit 40] [--commits 500]

Runs the store's own operations (a 3-step workflow's records: create, three steps, settle)
on one SQLite connection with ``synchronous=FULL``, and commits every
``--ops-per-commit`` operations on a worker thread, as the earlier design did. It times the
COMMIT as the worker sees it, first with nothing else running, then beside a busy Python
thread (what the event loop is under load), at the default 5 ms switch interval and at
0.5 ms. The COMMIT itself (pages and fsync, outside the GIL) costs the same in all three;
the difference is the wait for the GIL when SQLite hands control back.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from dawait.core._promise import PromiseState, Settle, Value
from dawait.runtime._sqlite_store import SQLiteStore
from dawait.runtime._sqlite_tables import SQLiteTables
from dawait.runtime._store import CreatePromise
from dawait.runtime._store_ops import op_create_invocation, op_create_promise, op_settle_promise

Op = tuple[Any, tuple[Any, ...]]


def workload(invocations: int) -> list[Op]:
    """The operations of ``invocations`` 3-step workflows, 64 at a time interleaved."""
    call = Value(data='{"func":"three_steps","args":[1],"kwargs":{}}', headers={})
    ops: list[Op] = []
    for i in range(invocations):
        root = f"c{i % 64}-{i // 64}"
        ops.append((op_create_invocation, (CreatePromise(id=root, param=call), "pid", None, 1)))
        for k in range(3):
            step = CreatePromise(
                id=f"{root}:{k}",
                param=Value(data='{"func":"step"}', headers={}),
                tags={"dawait:branch": root},
                state=PromiseState.RESOLVED,
                value=Value(data="2"),
            )
            ops.append((op_create_promise, (step, 1)))
        ops.append((op_settle_promise, (root, Settle.RESOLVE, Value(data="4"), 2)))
    return ops


def commit_ms(ops: list[Op], per_commit: int, busy: bool, switch: float) -> float:
    """The mean COMMIT time on the worker thread, in ms."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        SQLiteStore(path, fsync=True)._prepare(conn)
        conn.execute("PRAGMA synchronous = FULL")
        tables = SQLiteTables(conn)
        stop = threading.Event()

        def spin() -> None:
            while not stop.is_set():
                pass

        spinner = threading.Thread(target=spin, daemon=True)
        old = sys.getswitchinterval()
        sys.setswitchinterval(switch)
        if busy:
            spinner.start()

        def commit() -> float:
            started = time.perf_counter()
            conn.execute("COMMIT")
            return time.perf_counter() - started

        total, commits = 0.0, 0
        try:
            with concurrent.futures.ThreadPoolExecutor(1) as worker:
                for at in range(0, len(ops), per_commit):
                    conn.execute("BEGIN IMMEDIATE")
                    for op, args in ops[at : at + per_commit]:
                        op(tables, *args)
                    total += worker.submit(commit).result()
                    commits += 1
        finally:
            stop.set()
            sys.setswitchinterval(old)
            conn.close()
        return total / commits * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--ops-per-commit", type=int, default=40)
    parser.add_argument("--commits", type=int, default=500)
    args = parser.parse_args()
    ops = workload(args.commits * args.ops_per_commit // 5)
    print(f"COMMIT (synchronous=FULL) of {args.ops_per_commit} operations, on a worker thread")
    for label, busy, switch in (
        ("alone", False, 0.005),
        ("beside a busy thread, 5 ms switch interval", True, 0.005),
        ("beside a busy thread, 0.5 ms switch interval", True, 0.0005),
    ):
        print(f"  {label:48} {commit_ms(ops, args.ops_per_commit, busy, switch):6.2f} ms")


if __name__ == "__main__":
    main()
