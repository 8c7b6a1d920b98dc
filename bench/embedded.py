"""Embedded benchmark: dawait (memory and SQLite) against DBOS (SQLite), measured in one run.

    .venv/bin/python bench/embedded.py [--workflows 2000] [--sleepers 100000] [--repeat 1]

Workload: N workflows of 3 trivial async steps, all started at once and awaited
(concurrent) or one after another (sequential). Every configuration runs in a fresh
subprocess, so peak RSS is its own. DBOS (latest from PyPI, SQLite system database) is
installed into .bench/dbos-venv on first use. Then 100,000 invocations each sleep one hour
on SQLite: resident memory while they sleep, and all of them completing once the (fake)
clock jumps past the hour. Prints a table and the ratios to DBOS; --json for raw reports.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peers.dbos_peer import run_dbos  # noqa: E402

TARGETS = {
    ("sqlite", "concurrent"): ("x DBOS steps/s", 20.0),
    ("sqlite", "sequential"): ("x DBOS steps/s", 5.0),
}
MEMORY_STEPS_TARGET = 10_000
SLEEPERS_RSS_TARGET_MB = 150


def run_dawait(*args: str) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "dawait_workload.py"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise RuntimeError(f"dawait workload {' '.join(args)} exited {proc.returncode}")
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


def best(reports: list[dict[str, Any]]) -> dict[str, Any]:
    return max(reports, key=lambda r: float(r["steps_per_s"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workflows", type=int, default=2000)
    parser.add_argument("--sleepers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration (best kept)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    n = str(args.workflows)
    rows: list[dict[str, Any]] = []
    for mode in ("concurrent", "sequential"):
        dbos = best([run_dbos(mode, args.workflows) for _ in range(args.repeat)])
        rows.append(dbos | {"store": "sqlite"})
        for store in ("memory", "sqlite"):
            runs = [
                run_dawait("steps", "--store", store, "--mode", mode, "--workflows", n)
                for _ in range(args.repeat)
            ]
            report = best(runs)
            report["x_dbos"] = round(report["steps_per_s"] / dbos["steps_per_s"], 1)
            rows.append(report)
    sleepers = run_dawait("sleepers", "--store", "sqlite", "--invocations", str(args.sleepers))

    if args.json:
        print(json.dumps({"steps": rows, "sleepers": sleepers}, indent=2))
        return
    print(f"{args.workflows} workflows x 3 async steps (best of {args.repeat})\n")
    header = (
        f"{'peer':8} {'store':7} {'mode':11} {'wf/s':>8} {'steps/s':>9} "
        f"{'peak RSS':>9} {'x DBOS':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = "" if row["peer"] == "dbos" else f"{row['x_dbos']:.1f}x"
        print(
            f"{row['peer']:8} {row['store']:7} {row['mode']:11} {row['workflows_per_s']:>8.0f} "
            f"{row['steps_per_s']:>9.0f} {row['peak_rss_mb']:>7.0f}MB {ratio:>7}"
        )
    dbos_version = next(r["version"] for r in rows if r["peer"] == "dbos")
    print(f"\nDBOS {dbos_version}, SQLite system database (synchronous=FULL, as dawait's default)")
    print("\ntargets:")
    for row in rows:
        key = (row["store"], row.get("mode", ""))
        if row["peer"] == "dawait" and key in TARGETS:
            _, target = TARGETS[key]
            verdict = "met" if row["x_dbos"] >= target else "MISSED"
            print(f"  sqlite {key[1]:11} >= {target:>4.0f}x DBOS: {row['x_dbos']:.1f}x {verdict}")
        if row["peer"] == "dawait" and row["store"] == "memory" and row["mode"] == "concurrent":
            verdict = "met" if row["steps_per_s"] >= MEMORY_STEPS_TARGET else "MISSED"
            print(
                f"  memory concurrent >= {MEMORY_STEPS_TARGET} steps/s: "
                f"{row['steps_per_s']:.0f} {verdict}"
            )
    s = sleepers
    verdict = (
        "met"
        if s["rss_growth_mb"] <= SLEEPERS_RSS_TARGET_MB
        and s["completed_after_clock_jump"] == s["invocations"]
        else "MISSED"
    )
    print(
        f"\n{s['invocations']} invocations sleeping 1 h (SQLite): RSS {s['rss_before_mb']:.0f} -> "
        f"{s['rss_asleep_mb']:.0f} MB while asleep (growth {s['rss_growth_mb']:.0f} MB, "
        f"target <= {SLEEPERS_RSS_TARGET_MB}), peak {s['peak_rss_mb']:.0f} MB; "
        f"{s['completed_after_clock_jump']}/{s['invocations']} completed after the clock jump "
        f"[{verdict}]; start {s['start_seconds']} s, wake+finish {s['wake_and_finish_seconds']} s"
    )


if __name__ == "__main__":
    main()
