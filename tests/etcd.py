"""Real etcd processes for tests: clusters of 1 or 3 members on 127.0.0.1, on free ports,
each member with its own data directory and log file under a directory the caller gives.

    with EtcdCluster(tmp_path, size=3) as cluster:   # started, healthy
        etcdctl(cluster.endpoints, "put", "k", "v")
        cluster.kill(0)                              # SIGKILL
        cluster.stop(1)                              # SIGTERM (SIGKILL after STOP_GRACE s)
        cluster.start(1)                             # same data dir, ports and flags
    # every process the cluster started has exited (stop_all)

Each member logs (zap, to its stderr) into ``<dir>/<name>/etcd.log``, appended to across
restarts; a member that does not become healthy raises ``EtcdError`` with the log's last lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.polling import eventually_sync

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
INSTALL = "apt-get update && apt-get install -y etcd-server etcd-client"
"""How to install both (Debian's packages, etcd 3.4)."""

START_TIMEOUT = 20.0
"""Seconds a member may take to answer ``/health`` with ``{"health": "true"}``."""
STOP_GRACE = 5.0
"""Seconds a member may take to exit after SIGTERM before it gets SIGKILL."""
POLL = 0.05
LOG_TAIL = 30
"""Lines of a member's log shown when it fails to start."""

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EtcdError(RuntimeError):
    """A member did not start (or exited at start)."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports of 127.0.0.1 free right now (all held until all are found)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def free_port() -> int:
    """A port of 127.0.0.1 free right now."""
    return free_ports(1)[0]


def _clean_env() -> dict[str, str]:
    """The environment without ETCD_*/ETCDCTL_* settings (etcd reads ETCD_* as flags)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("ETCD")}


def etcdctl(
    endpoints: Sequence[str], *args: str, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``etcdctl --endpoints=ENDPOINTS ARGS`` (v3 API); its exit code is not checked."""
    return subprocess.run(
        [ETCDCTL, f"--endpoints={','.join(endpoints)}", *args],
        env={**_clean_env(), "ETCDCTL_API": "3"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass(slots=True, kw_only=True)
class EtcdMember:
    """One member: its name, ports and directory, and its process while it runs."""

    name: str
    client_port: int
    peer_port: int
    dir: Path
    process: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)
    """Every process started for this member, in order."""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log(self) -> Path:
        return self.dir / "etcd.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"etcd member {self.name} was never started"
        return self.process.pid

    def log_tail(self, lines: int = LOG_TAIL) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def healthy(self) -> bool:
        """Whether ``/health`` says so (it needs a leader, so a quorum of the cluster)."""
        try:
            with _NO_PROXY.open(f"{self.endpoint}/health", timeout=1.0) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError):  # refused, 503 while there is no leader, half-written
            return False

    def send(self, signum: signal.Signals) -> None:
        assert self.running, f"etcd member {self.name} is not running"
        assert self.process is not None
        self.process.send_signal(signum)


def _end(processes: Iterable[subprocess.Popen[bytes]], grace: float) -> None:
    """End each process still running: SIGTERM (and SIGCONT, in case it is paused), then
    SIGKILL if it still runs ``grace`` seconds later. Every one has exited (and is reaped) after.

    One at a time, not all at once: a leader that gets SIGTERM first hands its leadership over
    to a live follower, and waits 7 s in vain when its followers are exiting too."""
    for process in processes:
        if process.poll() is not None:
            continue
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
            process.send_signal(signal.SIGCONT)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class EtcdCluster:
    """``size`` members (1 or 3, say) under ``dir``, one cluster (its own token).

    ``start_all()`` (or ``with``) starts them and waits until each is healthy; ``stop_all()``
    (or the end of the ``with``) ends every process it started, whatever happened before.
    """

    def __init__(self, dir: Path, size: int = 1) -> None:
        if size < 1:
            raise ValueError(f"an etcd cluster has at least one member, not {size}")
        self.dir = dir
        self.token = f"dawait-test-{uuid.uuid4().hex[:12]}"
        ports = free_ports(2 * size)
        self.members = [
            EtcdMember(
                name=f"m{i}",
                client_port=ports[2 * i],
                peer_port=ports[2 * i + 1],
                dir=dir / f"m{i}",
            )
            for i in range(size)
        ]
        self._processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Self:
        return self.start_all()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_all()

    @property
    def endpoints(self) -> list[str]:
        """The client URLs of all members (running or not), in order."""
        return [member.endpoint for member in self.members]

    @property
    def pids(self) -> list[int]:
        """Every process the cluster ever started."""
        return [process.pid for process in self._processes]

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{member.name}={member.peer_url}" for member in self.members)

    def start_all(self) -> Self:
        """Start every member that is not running; return once all are healthy."""
        try:
            starting = [member for member in self.members if not member.running]
            for member in starting:
                self._spawn(member)
            self._wait_healthy(starting)
        except BaseException:
            self.stop_all()
            raise
        return self

    def start(self, i: int, *, wait: bool = True) -> None:
        """Start member ``i`` again (same data dir, ports and flags); with ``wait``, return once
        it is healthy, which needs a quorum of members running."""
        member = self.members[i]
        assert not member.running, f"etcd member {member.name} is running"
        self._spawn(member)
        if wait:
            self.wait_healthy(i)

    def wait_healthy(self, i: int, *, timeout: float = START_TIMEOUT) -> None:
        self._wait_healthy([self.members[i]], timeout=timeout)

    def stop(self, i: int, *, grace: float = STOP_GRACE) -> None:
        """SIGTERM member ``i`` (SIGKILL after ``grace`` seconds); wait until it exits."""
        process = self.members[i].process
        if process is not None:
            _end([process], grace)

    def kill(self, i: int) -> None:
        """SIGKILL member ``i``; wait until it exits."""
        member = self.members[i]
        member.send(signal.SIGKILL)
        assert member.process is not None
        member.process.wait()

    def pause(self, i: int) -> None:
        """SIGSTOP member ``i``: it runs no more, but its sockets stay open."""
        self.members[i].send(signal.SIGSTOP)

    def resume(self, i: int) -> None:
        """SIGCONT member ``i``."""
        self.members[i].send(signal.SIGCONT)

    def stop_all(self, *, grace: float = STOP_GRACE) -> None:
        """End every process the cluster started (paused ones too); idempotent."""
        _end(self._processes, grace)

    def _spawn(self, member: EtcdMember) -> None:
        # A data dir with a member in it means a restart: etcd then ignores --initial-cluster*.
        state = "existing" if (member.data_dir / "member").exists() else "new"
        member.dir.mkdir(parents=True, exist_ok=True)
        args = [
            ETCD,
            f"--name={member.name}",
            f"--data-dir={member.data_dir}",
            f"--listen-client-urls={member.endpoint}",
            f"--advertise-client-urls={member.endpoint}",
            f"--listen-peer-urls={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            f"--initial-cluster-state={state}",
            f"--initial-cluster-token={self.token}",
            "--unsafe-no-fsync",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        with member.log.open("ab") as log:
            log.write(f"---- {' '.join(args)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                args,
                env=_clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        member.process = process
        member.pids.append(process.pid)
        self._processes.append(process)

    def _wait_healthy(self, members: list[EtcdMember], timeout: float = START_TIMEOUT) -> None:
        waiting = list(members)

        def all_healthy() -> bool:
            for member in list(waiting):
                if member.healthy():
                    waiting.remove(member)
                elif not member.running:
                    code = member.process.returncode if member.process else None
                    raise EtcdError(self._report(member, f"exited {code} at start"))
            return not waiting

        def not_healthy(message: str) -> EtcdError:
            problem = f"not healthy after {timeout} s"
            return EtcdError("\n".join(self._report(member, problem) for member in waiting))

        eventually_sync(
            all_healthy, "etcd to be healthy", within=timeout, every=POLL, failure=not_healthy
        )

    def _report(self, member: EtcdMember, problem: str) -> str:
        return (
            f"etcd member {member.name} ({member.endpoint}, pid {member.pid}): {problem}\n"
            f"-- last lines of {member.log}:\n{member.log_tail()}"
        )
