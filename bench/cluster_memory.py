"""What a cluster node keeps per finished invocation, measured on its Python heap: one node
in this process (``app.join``) on a throwaway local etcd (bench/_etcd.py), ``--warm-up``
workflows of 3 steps, then ``--workflows`` more; the heap's growth between the two, per
1,000 finished invocations (tracemalloc, after a full collection), and the allocation sites
that grew most. RSS (bench/cluster.py) also counts the allocator's arenas and one-off
table resizes, which at a few thousand invocations are most of what it shows.

    .venv/bin/python bench/cluster_memory.py [--warm-up 2000] [--workflows 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: ``bench.`` imports from the repository root

from bench._etcd import Etcd  # noqa: E402
from bench.http_app import app, three_steps  # noqa: E402

CLIENTS = 64


async def finish(first: int, count: int) -> None:
    """Run workflows ``w{first}`` .. by ``CLIENTS`` at a time, each to its result."""
    ids = iter(range(first, first + count))

    async def client() -> None:
        for i in ids:
            if await app.run(f"w{i}", three_steps, i) != i + 3:
                raise RuntimeError(f"w{i}: wrong result")

    await asyncio.gather(*(client() for _ in range(CLIENTS)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-up", type=int, default=2000)
    parser.add_argument("--workflows", type=int, default=10000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Etcd(Path(tmp) / "etcd") as etcd:
        app.join(etcd.endpoints, namespace="memory", node_id="m0")
        async with app:
            await finish(0, args.warm_up)
            gc.collect()
            tracemalloc.start(8)
            before = tracemalloc.take_snapshot()
            await finish(args.warm_up, args.workflows)
            gc.collect()
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
    grown = after.compare_to(before, "traceback")
    per_1000 = 1000 / args.workflows
    total = sum(stat.size_diff for stat in grown)
    print(
        f"{args.workflows} invocations finished after a warm-up of {args.warm_up}: the Python "
        f"heap grew {total * per_1000 / 1e6:.3f} MB per 1,000 finished invocations"
    )
    for stat in grown[:5]:
        where = stat.traceback[-1]
        print(
            f"  {stat.size_diff * per_1000 / 1e3:8.1f} KB per 1,000 ({stat.count_diff:+} blocks) "
            f"at {where.filename}:{where.lineno}"
        )


if __name__ == "__main__":
    asyncio.run(main())
