"""The process that ``test_retention_crash`` SIGKILLs in the middle of deleting.

``python retention_worker.py run DB --trees N --steps S [--kill-after K]`` runs workflows
``t-0`` .. ``t-{N-1}`` of S steps each on the SQLite file DB with a retention of 1 ms, so
they are due for deletion once finished; with ``--kill-after K`` the process SIGKILLs
itself right after K sweep transactions (``op_sweep``) have committed (a real
SIGKILL at a chosen point: trees deleted partly, in the middle of a sweep). Without it, it
waits until the sweep has deleted every tree, then exits 0.

``python retention_worker.py sweep DB`` opens the app (its sweep resumes what the killed
run left) and exits 0 once no promise is left.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dawait import Context, Resonate
from dawait.runtime._deletion import op_sweep
from dawait.runtime._sqlite_store import SQLiteStore

WAIT = 60.0


async def step(k: int) -> int:
    return k


async def tree(ctx: Context, steps: int) -> int:
    total = 0
    for k in range(steps):
        total += await ctx.run(step, k)
    return total


def kill_after(commits: int) -> None:
    """SIGKILL this process once ``commits`` sweep transactions have committed."""
    original = SQLiteStore._transact
    done = 0

    async def transact(self: SQLiteStore, op: Callable[..., Any], *args: object) -> Any:
        nonlocal done
        result = await original(self, op, *args)
        if op is op_sweep:
            done += 1
            if done == commits:
                os.kill(os.getpid(), signal.SIGKILL)
        return result

    SQLiteStore._transact = transact  # type: ignore[method-assign]


async def left(app: Resonate) -> int:
    return len(await app.promises.search("*", limit=1))


async def until_empty(app: Resonate) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while await left(app):
        if loop.time() > deadline:
            raise SystemExit("timed out waiting for the sweep to delete everything")
        await asyncio.sleep(0.01)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["run", "sweep"])
    parser.add_argument("db", type=Path)
    parser.add_argument("--trees", type=int, default=50)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--kill-after", type=int, default=0)
    args = parser.parse_args()
    app = Resonate(store=f"sqlite:///{args.db}", retention=0.001)
    app.register(tree, name="tree")
    app.register(step, name="step")
    async with app:
        if args.mode == "run":
            if args.kill_after:
                kill_after(args.kill_after)
            # Deletions wait until every tree has finished: the sweep is held meanwhile.
            gate = app.local.engine.ownership.timers
            gate.clear()
            await asyncio.gather(*(app.run(f"t-{k}", tree, args.steps) for k in range(args.trees)))
            gate.set()
        await until_empty(app)


if __name__ == "__main__":
    asyncio.run(main())
