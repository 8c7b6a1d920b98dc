"""The process that ``test_crash_recovery`` SIGKILLs: runs (or re-attaches to) N workflows.

``python crash_worker.py run DB EFFECTS [--count N] [--ready FILE]`` starts workflows
``wf-0`` .. ``wf-{N-1}`` with ``app.start`` (idempotent by id, so a restart re-attaches to the
invocations a killed run left), waits for all of them, prints ``{"pid", "results"}`` as JSON
and exits 0. ``--ready FILE`` writes the pid to FILE once the app is open, i.e. while the
engine is recovering what the previous run left pending.

``python crash_worker.py verify DB EFFECTS [--count N]`` runs ``app.run`` again for every id
with the same arguments and prints the results the same way: every one must come from the
store, without a step running.

Every step, when it starts, appends ``<workflow id> <step index> <pid>`` (padded to
``RECORD`` bytes with its newline) to EFFECTS with one ``os.write`` on an ``O_APPEND``
descriptor, then takes a few milliseconds, so kills land in the middle of steps. The step
returns its value and its pid, so a workflow's result names the process whose run of each
step was recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dawait import Context, Resonate

STEPS = 5
MODULUS = 1_000_003
RECORD = 32
"""Bytes per effect line. A write that crosses a page boundary is copied in two pieces: a
reader can see the first alone, and a SIGKILL between them leaves it torn. Records of a
size that divides the page size never cross one."""


def seed_of(index: int) -> int:
    """The argument of workflow ``wf-{index}``."""
    return 1000 + 17 * index


def next_value(acc: int, step: int) -> int:
    """What step ``step`` makes of ``acc``."""
    return (acc * 31 + 7 * step + 1) % MODULUS


def expected_value(index: int) -> int:
    """The value workflow ``wf-{index}`` must return."""
    acc = seed_of(index)
    for step in range(STEPS):
        acc = next_value(acc, step)
    return acc


def build_app(db: Path, effects: Path) -> tuple[Resonate, Callable[..., Any]]:
    app = Resonate(store=f"sqlite:///{db.resolve()}")

    @app.register(name="chaos.step")
    async def chaos_step(wf: str, step: int, acc: int) -> tuple[int, int]:
        pid = os.getpid()
        fd = os.open(effects, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{wf} {step} {pid}".ljust(RECORD - 1).encode() + b"\n")
        finally:
            os.close(fd)
        await asyncio.sleep(random.uniform(0.002, 0.012))
        return next_value(acc, step), pid

    @app.register(name="chaos.workflow")
    async def chaos_workflow(ctx: Context, seed: int) -> tuple[int, list[int]]:
        acc = seed
        pids: list[int] = []
        for step in range(STEPS):
            acc, pid = await ctx.run(chaos_step, ctx.invocation_id, step, acc)
            pids.append(pid)
        return acc, pids

    return app, chaos_workflow


async def run_all(args: argparse.Namespace) -> dict[str, object]:
    app, workflow = build_app(args.db, args.effects)
    ids = [f"wf-{index}" for index in range(args.count)]
    async with app:
        if args.ready is not None:
            args.ready.write_text(f"{os.getpid()}\n")
        if args.mode == "verify":
            values = [await app.run(id, workflow, seed_of(i)) for i, id in enumerate(ids)]
        else:
            handles = await asyncio.gather(
                *(app.start(id, workflow, seed_of(i)) for i, id in enumerate(ids))
            )
            values = await asyncio.gather(*(handle.result() for handle in handles))
    results = {id: [value, list(pids)] for id, (value, pids) in zip(ids, values, strict=True)}
    return {"pid": os.getpid(), "results": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("run", "verify"))
    parser.add_argument("db", type=Path)
    parser.add_argument("effects", type=Path)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--ready", type=Path, default=None)
    summary = asyncio.run(run_all(parser.parse_args()))
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
