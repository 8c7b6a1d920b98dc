"""HTTP benchmark: invocations started and awaited through a node's API by concurrent clients.

    .venv/bin/python bench/http_api.py [--store sqlite] [--store memory://] [--clients 64]
        [--await one|poll] [--warmup 2] [--duration 10] [--repeat 1] [--profile node.prof]
        [--json]

Starts a real node, ``dawait serve --app bench.http_app:app --port 0 --store ...``, as a
subprocess, then runs ``--clients`` client tasks in this process on one aiohttp session (a
pool of as many connections). Each one, again and again, starts a workflow of three async
steps and awaits its result, then checks it. ``--await one`` (the default) does both in one
request, ``POST /invocations?wait=30``, as ``Resonate(url=...).run`` does; ``--await poll``
sends ``POST /invocations`` then ``GET /invocations/{id}/result?wait=30``, as a handle's
``result()`` does.
What finishes in the ``--duration`` seconds after ``--warmup`` counts: invocations/s, and the
latency from the POST to the result (p50, p90, p99, max). Then the node gets SIGTERM.

``--store`` is ``sqlite`` (a fresh file in a temporary folder, fsync per commit: the default
store), ``memory``, or any store URL; repeat it to measure several in one run. ``--repeat N``
runs each store N times and judges the medians. ``--profile FILE`` runs the node under
cProfile and writes its stats there (the last run's; slower, so read only the shares).

Beside the figures it prints where the CPUs went over the measured window (the node, the
clients, idle, and the rest: the kernel, other processes, the hypervisor), so a run disturbed
by something else shows, and the store's commits from the node's /metrics.

Target on the 2-core machine: >= 1,000 invocations/s and p99 < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run as a script: ``bench.`` imports from the repository root

from bench.peers.dbos_peer import ensure_dbos_python  # noqa: E402

TARGET_PER_S = 1_000.0
TARGET_P99_MS = 100.0
APP = "bench.http_app:app"
FUNCTION = "three_steps"
DBOS_SERVER = HERE / "peers" / "dbos_http.py"
TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


@dataclass
class Window:
    """What the clients saw: each invocation's (start, end) on the perf_counter clock."""

    done: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class Report:
    server: str
    """``dawait``, or the peer: ``dbos``."""
    version: str
    """The server's version, as it announced it when ready (the peer's)."""
    store: str
    """As given to --store (``sqlite`` is a fresh file with fsync per commit); the peer's
    is always ``sqlite``."""
    mode: str
    """``one``: POST /invocations?wait=30; ``poll``: POST, then GET .../result?wait=30."""
    clients: int
    seconds: float
    invocations: int
    per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    node_cpu: float
    """The node's CPU time over the measured window, in cores."""
    bench_cpu: float
    """This process' (the clients') CPU time over the window, in cores."""
    idle: float
    """Idle cores over the window: the node and the clients waiting on each other."""
    rest: float
    """The cores neither idle nor the node's nor the clients': the kernel (loopback TCP,
    writeback, for SQLite the fsyncs), other processes and the hypervisor. Above ~0.2,
    something else ran and the figures are not to be trusted."""
    commits_per_s: float
    """Store commits (each one fsync) per second, from the node's /metrics."""
    commit_ms: float
    """Their mean time from start to fsynced, as the node measures it."""
    ops_per_commit: float
    """Store operations per commit (group commit)."""


@dataclass(frozen=True)
class Sample:
    """Counters read at one end of the measured window."""

    node_cpu: float
    bench_cpu: float
    idle: float
    metrics: dict[str, float]


class Node:
    """A server subprocess: ``dawait serve`` on a store, or the DBOS peer."""

    def __init__(self, command: list[str], folder: Path) -> None:
        self.log = folder / "node.log"
        self.out = folder / "node.out"
        with self.out.open("wb") as out, self.log.open("wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=log)
        self.url = ""
        self.version = ""

    def tail(self, lines: int = 30) -> str:
        """The last ``lines`` of what the server wrote (its log, then its output)."""
        text = [*self.log.read_text(errors="replace").splitlines()]
        text += self.out.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    @classmethod
    def dawait(cls, store: str, folder: Path, profile: str | None) -> Node:
        return cls.serve(folder, "--app", APP, "--port", "0", "--store", store, profile=profile)

    @classmethod
    def serve(cls, folder: Path, *args: str, profile: str | None = None) -> Node:
        """``dawait serve ARGS``, its output in ``folder`` (made if missing)."""
        folder.mkdir(parents=True, exist_ok=True)
        dawait = Path(sys.executable).parent / "dawait"
        prefix = [sys.executable, "-m", "cProfile", "-o", profile] if profile else []
        return cls([*prefix, str(dawait), "serve", *args], folder)

    @classmethod
    def dbos(cls, folder: Path, *where: str) -> Node:
        """DBOS behind the same endpoint on aiohttp: on a SQLite file in ``folder``, or as
        ``where`` says (``--database-url URL --executor-id ID``, bench/peers/dbos_http.py)."""
        python = ensure_dbos_python("aiohttp")
        where = where or ("--folder", str(folder))
        return cls([python, str(DBOS_SERVER), *where], folder)

    def wait_listening(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.out.read_text().splitlines():
                if line.startswith(("dawait node listening on ", "peer listening on ")):
                    self.url, _, rest = line.split(" listening on ", 1)[1].partition(" ")
                    self.version = rest.strip("()").rpartition(" ")[2]
                    return self.url
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server did not start:\n{self.log.read_text()[-3000:]}")

    def cpu_seconds(self) -> float:
        return process_seconds(self.process.pid)

    def stop(self) -> int:
        """SIGTERM, and its exit code once it stopped gracefully (SIGKILL after 60 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def idle_seconds() -> float:
    """The machine's idle (and IO wait) time so far, summed over its cores."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (ticks[3] + ticks[4]) / TICKS


def process_seconds(pid: int | str) -> float:
    """The CPU time process ``pid`` used so far (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def invoke(
    session: aiohttp.ClientSession, url: str, id: str, x: int, one: bool, window: Window
) -> None:
    """Start invocation ``id``, wait for its result (in the same request if ``one``), check
    it, and note when both happened."""
    start = time.perf_counter()
    body = {"id": id, "function": FUNCTION, "args": [x]}
    try:
        post = {"wait": "30"} if one else None
        async with session.post(f"{url}/invocations", json=body, params=post) as response:
            if response.status != 201:
                window.errors.append(f"POST {id}: {response.status} {await response.text()}")
                return
            result: dict[str, Any] = await response.json()
        if post is None:
            wait = {"wait": "30"}
            async with session.get(f"{url}/invocations/{id}/result", params=wait) as response:
                result = await response.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        window.errors.append(f"{id}: {exc!r}")
        return
    if response.status not in (200, 201) or result.get("result") != x + 3:
        window.errors.append(f"GET {id}/result: {response.status} {result}")
        return
    window.done.append((start, time.perf_counter()))


async def client(
    session: aiohttp.ClientSession, url: str, name: str, until: float, one: bool, window: Window
) -> None:
    count = 0
    while time.perf_counter() < until:
        count += 1
        await invoke(session, url, f"{name}-{count}", count, one, window)


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The node's /metrics, unlabelled samples only: ``{name: value}``."""
    async with session.get(f"{url}/metrics") as response:
        if response.status == 404:  # the DBOS peer has none
            return {}
        text = await response.text()
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name and not line.startswith("#") and "{" not in name:
            values[name] = float(value)
    return values


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    if not ordered:
        return float("nan")
    rank = max(1, round(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


async def drive(
    node: Node, clients: int, warmup: float, duration: float, label: tuple[str, str], one: bool
) -> tuple[Report, Window]:
    window = Window()
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        # its own connection, not to queue behind the clients' for the pool's
        aiohttp.ClientSession(timeout=timeout) as monitor,
    ):
        begin = time.perf_counter()
        measured_from, measured_to = begin + warmup, begin + warmup + duration

        async def sample() -> Sample:
            return Sample(
                node_cpu=node.cpu_seconds(),
                bench_cpu=time.process_time(),
                idle=idle_seconds(),
                metrics=await scrape(monitor, node.url),
            )

        async def measure() -> tuple[Sample, Sample]:
            await asyncio.sleep(measured_from - time.perf_counter())
            first = await sample()
            await asyncio.sleep(measured_to - time.perf_counter())
            return first, await sample()

        async with asyncio.TaskGroup() as group:
            window_samples = group.create_task(measure())
            for n in range(clients):
                group.create_task(client(session, node.url, f"c{n}", measured_to, one, window))
    first, last = window_samples.result()

    def delta(name: str) -> float:
        return last.metrics.get(name, 0.0) - first.metrics.get(name, 0.0)

    commits = delta("dawait_store_commit_seconds_count")
    node_cpu = (last.node_cpu - first.node_cpu) / duration
    bench_cpu = (last.bench_cpu - first.bench_cpu) / duration
    idle = (last.idle - first.idle) / duration
    # An invocation counts for the rate when it ended in the window, and for the latency
    # when it also started in it (its latency was then not shaped by the warm-up).
    ended = [(s, e) for s, e in window.done if measured_from <= e <= measured_to]
    latencies = sorted((e - s) * 1000 for s, e in ended if s >= measured_from)
    return Report(
        server=label[0],
        version=node.version,
        store=label[1],
        mode="one" if one else "poll",
        clients=clients,
        seconds=duration,
        invocations=len(ended),
        per_s=round(len(ended) / duration, 1),
        p50_ms=round(percentile(latencies, 50), 2),
        p90_ms=round(percentile(latencies, 90), 2),
        p99_ms=round(percentile(latencies, 99), 2),
        max_ms=round(latencies[-1] if latencies else float("nan"), 2),
        errors=len(window.errors),
        node_cpu=round(node_cpu, 2),
        bench_cpu=round(bench_cpu, 2),
        idle=round(idle, 2),
        rest=round(max(CORES - node_cpu - bench_cpu - idle, 0.0), 2),
        commits_per_s=round(commits / duration, 1),
        commit_ms=round(1000 * delta("dawait_store_commit_seconds_sum") / commits, 2)
        if commits
        else 0.0,
        ops_per_commit=round(delta("dawait_store_batch_operations_sum") / commits, 1)
        if commits
        else 0.0,
    ), window


def store_url(store: str, folder: Path) -> str:
    if store == "sqlite":
        return f"sqlite:///{folder / 'bench.db'}"
    if store == "memory":
        return "memory://"
    return store


def bench_once(server: str, store: str, args: argparse.Namespace) -> Report:
    """One run against a fresh server: a dawait node on ``store``, or the DBOS peer."""
    with tempfile.TemporaryDirectory(prefix="dawait-bench-http-") as tmp:
        folder = Path(tmp)
        if server == "dbos":
            node = Node.dbos(folder)
        else:
            node = Node.dawait(store_url(store, folder), folder, args.profile)
        try:
            node.wait_listening()
            one = args.await_ == "one"
            label = (server, store)
            report, window = asyncio.run(
                drive(node, args.clients, args.warmup, args.duration, label, one)
            )
        finally:
            code = node.stop()
        if code != 0:
            print(f"{server} exited {code}:\n{node.log.read_text()[-3000:]}", file=sys.stderr)
        for error in window.errors[:5]:
            print(f"error: {error}", file=sys.stderr)
        return report


def table_row(r: Report) -> str:
    commits = (
        f"{r.commits_per_s:9.0f} {r.commit_ms:9.2f} {r.ops_per_commit:10.1f}"
        if r.commits_per_s
        else f"{'n/a':>9} {'n/a':>9} {'n/a':>10}"
    )
    return (
        f"{r.server:6} {r.store[:10]:10} {r.per_s:7.0f} {r.p50_ms:7.1f} {r.p90_ms:7.1f} "
        f"{r.p99_ms:7.1f} {r.max_ms:7.1f} {r.errors:6} {r.node_cpu:8.2f} {r.bench_cpu:9.2f} "
        f"{r.idle:5.2f} {r.rest:5.2f} {commits}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--store",
        action="append",
        help="sqlite (a temporary file; the default), memory, or a store URL; repeatable",
    )
    parser.add_argument(
        "--no-peer", action="store_true", help="do not measure DBOS (the peer) in this run"
    )
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument(
        "--await",
        dest="await_",
        choices=["one", "poll"],
        default="one",
        help="one: POST /invocations?wait=30; poll: POST, then GET .../result?wait=30",
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not measured")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each (median judged)")
    parser.add_argument("--profile", help="run the node under cProfile, stats to this file")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    args = parser.parse_args()

    servers = [("dawait", store) for store in args.store or ["sqlite"]]
    if not args.no_peer:
        servers.insert(0, ("dbos", "sqlite"))
    runs: dict[tuple[str, str], list[Report]] = {server: [] for server in servers}
    for _ in range(args.repeat):  # alternated, so a slow spell of the machine hits each
        for server, store in servers:
            runs[server, store].append(bench_once(server, store, args))
    if args.json:
        print(json.dumps([asdict(r) for reports in runs.values() for r in reports], indent=2))
        return
    requests = (
        "POST /invocations?wait=30"
        if args.await_ == "one"
        else "POST /invocations + GET result?wait=30"
    )
    print(
        f"{args.clients} clients, {requests} of a 3-step "
        f"workflow; {args.warmup:g} s warm-up, {args.duration:g} s measured"
        + (" (node under cProfile)" if args.profile else "")
        + "\n"
    )
    print(
        f"{'server':6} {'store':10} {'inv/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'errors':>6} {'node cpu':>8} {'bench cpu':>9} {'idle':>5} {'rest':>5} "
        f"{'commits/s':>9} {'commit ms':>9} {'ops/commit':>10}"
    )
    for reports in runs.values():
        for report in reports:
            print(table_row(report))
    print(
        f"\n(cpu, idle, rest: cores of the {CORES} over the measured window; rest is the kernel, "
        "other processes\n and the hypervisor: well above 0.2, something else ran; "
        "n/a: no store commit counted on /metrics, or none served)\n"
    )
    peer = runs.get(("dbos", "sqlite"))
    peer_per_s = statistics.median(r.per_s for r in peer) if peer else 0.0
    if peer:
        peer_p99 = statistics.median(r.p99_ms for r in peer)
        print(
            f"dbos {peer[0].version} sqlite: {peer_per_s:,.0f} invocations/s, p99 {peer_p99:.1f} ms"
        )
    for (server, store), reports in runs.items():
        if server != "dawait":
            continue
        per_s = statistics.median(r.per_s for r in reports)
        p99_ms = statistics.median(r.p99_ms for r in reports)
        rate = "ok" if per_s >= TARGET_PER_S else "MISSED"
        p99 = "ok" if p99_ms < TARGET_P99_MS else "MISSED"
        which = f" (medians of {len(reports)} runs)" if len(reports) > 1 else ""
        ratio = f"; {per_s / peer_per_s:.1f}x DBOS" if peer_per_s else ""
        print(
            f"dawait {store}{which}: >= {TARGET_PER_S:,.0f} invocations/s {rate} ({per_s:,.0f}); "
            f"p99 < {TARGET_P99_MS:.0f} ms {p99} ({p99_ms:.1f} ms){ratio}"
        )


if __name__ == "__main__":
    main()
