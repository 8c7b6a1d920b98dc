"""DBOS side of the benchmark: N async workflows of 3 async steps on SQLite.

Run by the DBOS venv's python (never imports dawait); prints one JSON object.
Usage: python dbos_workload.py --mode concurrent|sequential --workflows 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import threading
import time
from importlib.metadata import version
from typing import Any

# Keep DBOS local: Conductor is used only with DBOS__CLOUD=true or a conductor_key.
os.environ.pop("DBOS__CLOUD", None)

import sqlalchemy as sa
from dbos import DBOS, DBOSConfig

_counts = {"statement": 0, "begin": 0, "commit": 0}
_counts_lock = threading.Lock()


def _count_transactions() -> None:
    """Count statements, BEGINs and COMMITs on every SQLite connection (diagnostic)."""

    def trace(stmt: str) -> None:
        head = stmt.lstrip()[:6].upper()
        with _counts_lock:
            _counts["statement"] += 1
            if head.startswith("BEGIN"):
                _counts["begin"] += 1
            elif head.startswith("COMMIT"):
                _counts["commit"] += 1

    @sa.event.listens_for(sa.engine.Engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.set_trace_callback(trace)


@DBOS.step()
async def step(x: int) -> int:
    return x + 1


@DBOS.workflow()
async def workflow(x: int) -> int:
    return await step(await step(await step(x)))


async def _one(x: int) -> int:
    handle = await DBOS.start_workflow_async(workflow, x)
    return await handle.get_result()


async def _run(mode: str, n: int) -> tuple[float, float]:
    """Run the timed section; return (wall seconds, process CPU seconds)."""
    assert await _one(0) == 3  # warm-up
    cpu0, t0 = time.process_time(), time.perf_counter()
    if mode == "concurrent":
        # All started at once, as dawait's concurrent run does.
        handles = await asyncio.gather(*(DBOS.start_workflow_async(workflow, i) for i in range(n)))
        results = await asyncio.gather(*(h.get_result() for h in handles))
    else:
        results = [await _one(i) for i in range(n)]
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert results == [i + 3 for i in range(n)]
    return elapsed, cpu


def _pragmas(dbos: DBOS) -> dict[str, Any]:
    """Read PRAGMAs from a connection of DBOS's own system-database engine."""
    engine: sa.Engine = dbos._sys_db.engine
    with engine.connect() as conn:
        return {
            p: conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("synchronous", "journal_mode")
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("concurrent", "sequential"), default="concurrent")
    ap.add_argument("--workflows", type=int, default=2000)
    ap.add_argument("--count-tx", action="store_true", help="count SQL statements and transactions")
    args = ap.parse_args()
    if args.count_tx:
        _count_transactions()

    with tempfile.TemporaryDirectory(prefix="dbos-bench-") as tmp:
        config: DBOSConfig = {
            "name": "dawait-bench",
            "system_database_url": f"sqlite:///{tmp}/dbos.sqlite",
            "log_level": "WARNING",
            "enable_otlp": False,
        }
        dbos = DBOS(config=config)
        DBOS.launch()
        try:
            tx0 = dict(_counts)
            seconds, cpu_seconds = asyncio.run(_run(args.mode, args.workflows))
            tx = {k: _counts[k] - tx0[k] for k in _counts}
            pragmas = _pragmas(dbos)
        finally:
            DBOS.destroy()

    n = args.workflows
    sync_names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    out: dict[str, Any] = {
        "peer": "dbos",
        "version": version("dbos"),
        "mode": args.mode,
        "workflows": n,
        "steps": 3 * n,
        "seconds": round(seconds, 4),
        "workflows_per_s": round(n / seconds, 1),
        "steps_per_s": round(3 * n / seconds, 1),
        "cpu_seconds": round(cpu_seconds, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "sqlite_synchronous": sync_names.get(pragmas["synchronous"], pragmas["synchronous"]),
        "sqlite_journal_mode": pragmas["journal_mode"],
        "python": sys.version.split()[0],
    }
    if args.count_tx:  # timed section only
        for kind, count in tx.items():
            out[f"{kind}s_per_workflow"] = round(count / n, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
