"""A throwaway one-member etcd on 127.0.0.1 for bench/cluster.py: free ports, a data folder
the caller gives, ``--unsafe-no-fsync`` (the benchmarks do not measure etcd's disk); it ends
with the ``with``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from bench._ports import free_ports

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
START_TIMEOUT = 20.0
"""Seconds etcd may take to answer ``/health`` with ``{"health": "true"}``."""

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Etcd:
    """``with Etcd(dir) as etcd:`` one healthy member at ``etcd.endpoints``."""

    def __init__(self, dir: Path) -> None:
        client, peer = free_ports(2)
        self.dir = dir
        self.endpoint = f"http://127.0.0.1:{client}"
        self.peer_url = f"http://127.0.0.1:{peer}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint]

    def __enter__(self) -> Etcd:
        self.dir.mkdir(parents=True, exist_ok=True)
        log = self.dir / "etcd.log"
        args = [
            ETCD, "--name=bench", f"--data-dir={self.dir / 'data'}",
            f"--listen-client-urls={self.endpoint}", f"--advertise-client-urls={self.endpoint}",
            f"--listen-peer-urls={self.peer_url}", f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster=bench={self.peer_url}", "--unsafe-no-fsync",
            "--logger=zap", "--log-outputs=stderr",
        ]  # fmt: skip
        # etcd reads ETCD_* variables as flags.
        env = {key: value for key, value in os.environ.items() if not key.startswith("ETCD")}
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                args, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"etcd did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def committed(self) -> int:
        """Raft proposals etcd has committed (one per write transaction), from /metrics."""
        with _NO_PROXY.open(f"{self.endpoint}/metrics", timeout=5.0) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("etcd_server_proposals_committed_total "):
                    return int(float(line.split()[1]))
        raise RuntimeError("etcd's /metrics has no etcd_server_proposals_committed_total")

    def _healthy(self) -> bool:
        try:
            with _NO_PROXY.open(f"{self.endpoint}/health", timeout=1.0) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError):  # refused, 503 while there is no leader, half-written
            return False
