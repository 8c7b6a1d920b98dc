"""Retention under steady load: store size over time, throughput and CPU, with and
without a short retention, on SQLite and on etcd, in one run.

    .venv/bin/python bench/retention.py [--seconds 90] [--retention 5s] [--trials 3]
        [--rate 400] [--stores sqlite,etcd]

Each setting is one ``dawait serve`` node (bench/http_app.py) on a fresh store: a SQLite
file, or a throwaway local etcd (bench/_etcd.py; the leader compacts every 10 s). 3-step
workflows are started through the API.

- **Saturated:** 200 in flight for ``--seconds``; every 5 s the store's size is sampled
  (the SQLite file with its WAL; etcd's ``dbSize`` and ``dbSizeInUse`` from ``etcdctl
  endpoint status``). Throughput is over the second half of the run, once deletion keeps
  pace with what settles. Settings alternate, ``--trials`` times each; prints the size over
  time of the last pair, whether it plateaued (growth over the last third of the run), and
  the median (and best) throughput with retention as a ratio to the one without (the
  issue's bound: at most 10 % less), with every trial's figure.
- **At a fixed rate** (``--rate`` starts per second, below saturation; 0: skip) for
  ``--seconds`` / 2: CPU per invocation of the node and of etcd over the second half, and
  the latency of a start (p50, p99), with and without retention.

On this 2-core machine the load client, the node and etcd share the cores, so the
saturated figures move with whatever else runs: compare settings of one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: ``bench.`` imports from the repository root

from bench._etcd import Etcd  # noqa: E402
from bench._ports import free_ports  # noqa: E402
from bench.http_api import Node as Server  # noqa: E402
from dawait.node._client import HttpClient  # noqa: E402

CONCURRENCY = 200
SAMPLE_EVERY = 5.0


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Offered:
    """A run at a fixed rate: what it cost per invocation."""

    store: str
    retention: str
    rate: float = 0.0
    """Invocations finished per second (over the second half)."""
    cpu_ms: dict[str, float] = field(default_factory=dict)
    """Process ("node", "etcd") -> CPU milliseconds per invocation."""
    p50_ms: float = 0.0
    p99_ms: float = 0.0


@dataclass
class Run:
    store: str
    retention: str
    samples: list[tuple[float, int, float, float]] = field(default_factory=list)
    """(seconds, invocations finished, store size MB, in use MB)."""

    def rate(self, since: float) -> float:
        """Invocations per second after ``since`` seconds."""
        later = [s for s in self.samples if s[0] >= since]
        (t0, n0, *_), (t1, n1, *_) = later[0], later[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def growth(self, since: float) -> float:
        """MB per 1,000 invocations after ``since`` seconds."""
        later = [s for s in self.samples if s[0] >= since]
        (_t0, n0, s0, _u0), (_t1, n1, s1, _u1) = later[0], later[-1]
        return (s1 - s0) * 1000 / (n1 - n0) if n1 > n0 else 0.0


def etcd_sizes(etcd: Etcd) -> tuple[float, float]:
    ran = subprocess.run(
        ["etcdctl", f"--endpoints={etcd.endpoint}", "endpoint", "status", "-w", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, "ETCDCTL_API": "3"},
        check=True,
    )
    status = json.loads(ran.stdout)[0]["Status"]
    return status["dbSize"] / 1e6, status.get("dbSizeInUse", status["dbSize"]) / 1e6


def sqlite_size(db: Path) -> tuple[float, float]:
    total = sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())
    return total / 1e6, total / 1e6


async def load(
    run: Run, node: Server, seconds: float, measure: Callable[[], tuple[float, float]]
) -> None:
    """Keep ``CONCURRENCY`` workflows in flight for ``seconds`` (each client starts the next
    as soon as its last has finished), sampling the store's size (``measure``: MB, MB in
    use) every ``SAMPLE_EVERY``."""
    done = 0
    started = time.monotonic()
    async with HttpClient(node.url, timeout=60, connections=CONCURRENCY) as client:

        async def worker(k: int) -> None:
            nonlocal done
            n = 0
            while time.monotonic() - started < seconds:
                await client.start(f"w{k}-{n}", "three_steps", [n], {}, wait=30)
                n += 1
                done += 1

        async def sampler() -> None:
            while True:
                run.samples.append((time.monotonic() - started, done, *measure()))
                await asyncio.sleep(SAMPLE_EVERY)

        sampling = asyncio.create_task(sampler())
        await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
        sampling.cancel()
    run.samples.append((time.monotonic() - started, done, *measure()))


async def offer(
    offered: Offered, node: Server, seconds: float, rate: float, pids: dict[str, int]
) -> None:
    """Start ``rate`` workflows per second for ``seconds`` (each start waits for its
    result); CPU of ``pids`` and latency over the second half."""
    latencies: list[float] = []
    finished = 0
    async with HttpClient(node.url, timeout=60, connections=0) as client:

        async def one(n: int) -> None:
            nonlocal finished
            sent = time.monotonic()
            await client.start(f"r{n}", "three_steps", [n], {}, wait=30)
            latencies.append(time.monotonic() - sent)
            finished += 1

        tasks: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        sent = 0
        half: tuple[float, int, int, dict[str, float]] | None = None
        while (now := time.monotonic()) - started < seconds:
            while sent < (now - started) * rate:
                task = asyncio.create_task(one(sent))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            if half is None and now - started >= seconds / 2:
                half = (now, finished, len(latencies), {k: cpu_seconds(p) for k, p in pids.items()})
            await asyncio.sleep(0.005)
        assert half is not None
        end, done, cpu = time.monotonic(), finished, {k: cpu_seconds(p) for k, p in pids.items()}
        await asyncio.gather(*tasks)
    since, done_then, measured_from, cpu_then = half
    count = max(done - done_then, 1)
    offered.rate = count / (end - since)
    offered.cpu_ms = {k: (cpu[k] - cpu_then[k]) * 1000 / count for k in pids}
    later = sorted(latencies[measured_from:])
    offered.p50_ms = later[len(later) // 2] * 1000
    offered.p99_ms = later[int(len(later) * 0.99)] * 1000


async def run_once(store: str, retention: str, seconds: float, rate: float = 0.0) -> Run | Offered:
    """One node on a fresh ``store`` (``sqlite`` or ``etcd``) with ``--retention``:
    saturated (``Run``), or at ``rate`` starts per second (``Offered``)."""
    run = Run(store, retention)
    offered = Offered(store, retention)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        app = ("--app", "bench.http_app:app", "--retention", retention)
        measure: Callable[[], tuple[float, float]]
        pids: dict[str, int] = {}
        if store == "sqlite":
            db = Path(tmp) / "bench.db"
            where = ("--port", "0", "--store", f"sqlite:///{db}")
            measure = functools.partial(sqlite_size, db)
        else:
            etcd = stack.enter_context(Etcd(Path(tmp) / "etcd"))
            assert etcd.process is not None
            pids["etcd"] = etcd.process.pid
            [port] = free_ports(1)
            where = (
                "--etcd", etcd.endpoint, "--namespace", "retention", "--node-id", "n0",
                "--port", str(port), "--etcd-compact-every", "10",
            )  # fmt: skip
            measure = functools.partial(etcd_sizes, etcd)
        node = Server.serve(Path(tmp) / "n0", *app, *where)
        try:
            node.wait_listening()
            if rate:
                await offer(offered, node, seconds, rate, {"node": node.process.pid, **pids})
            else:
                await load(run, node, seconds, measure)
        except BaseException:
            print(f"the node failed; its output ends:\n{node.tail()}", file=sys.stderr)
            raise
        finally:
            node.process.terminate()
            node.process.wait(timeout=30)
    return offered if rate else run


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--retention", default="5s")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--rate", type=float, default=400)
    parser.add_argument("--stores", default="sqlite,etcd")
    args = parser.parse_args()
    half, last_third = args.seconds / 2, args.seconds * 2 / 3
    for store in args.stores.split(","):
        kept_runs: list[Run] = []
        swept_runs: list[Run] = []
        for _trial in range(args.trials):
            for runs, retention in ((kept_runs, "forever"), (swept_runs, args.retention)):
                run = await run_once(store, retention, args.seconds)
                assert isinstance(run, Run)
                runs.append(run)
        kept = [r.rate(half) for r in kept_runs]
        swept = [r.rate(half) for r in swept_runs]
        ratio = _median(swept) / _median(kept)
        print(
            f"{store}: {_median(swept):,.0f} invocations/s with --retention {args.retention}, "
            f"{_median(kept):,.0f} without (medians): {ratio:.2f}x ({(1 - ratio) * 100:+.1f} % "
            f"cost; best {max(swept) / max(kept):.2f}x; trials with "
            f"{', '.join(f'{r:,.0f}' for r in swept)}, without "
            f"{', '.join(f'{r:,.0f}' for r in kept)}); growth over the last third "
            f"{swept_runs[-1].growth(last_third):.3f} MB/1,000 with, "
            f"{kept_runs[-1].growth(last_third):.3f} without"
        )
        last_kept, last_swept = kept_runs[-1], swept_runs[-1]
        print(f"    {'s':>5} {'with: n':>9} {'MB':>7} {'in use':>7}   {'without: n':>10} {'MB':>7}")
        for (t, n, mb, used), (_t, n2, mb2, _u2) in zip(
            last_swept.samples, last_kept.samples, strict=False
        ):
            print(f"    {t:5.0f} {n:9,} {mb:7.1f} {used:7.1f}   {n2:10,} {mb2:7.1f}")
        if not args.rate:
            continue
        for retention in ("forever", args.retention, "forever", args.retention):
            at = await run_once(store, retention, args.seconds / 2, args.rate)
            assert isinstance(at, Offered)
            cost = ", ".join(f"{k} {ms:.3f} ms" for k, ms in at.cpu_ms.items())
            print(
                f"    at {args.rate:.0f}/s, --retention {retention:>7}: {at.rate:,.0f}/s done; "
                f"CPU per invocation {cost} (total {sum(at.cpu_ms.values()):.3f} ms); "
                f"start latency p50 {at.p50_ms:.0f} ms, p99 {at.p99_ms:.0f} ms"
            )


if __name__ == "__main__":
    asyncio.run(main())
