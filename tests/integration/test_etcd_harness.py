"""The etcd harness (tests/etcd.py) runs real etcd processes: members that answer, form one
cluster, keep a quorum through one failure and lose it with two, restart on their data, and
all exit at ``stop_all``. Every check goes through ``etcdctl``."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.etcd import EtcdCluster, EtcdError, etcdctl
from tests.polling import eventually_sync

WAIT = 15.0
"""Seconds a write may take to succeed once a quorum runs (an election may be due)."""


def shown(ran: subprocess.CompletedProcess[str]) -> str:
    return f"{' '.join(ran.args)} -> exit {ran.returncode}\n{ran.stdout}{ran.stderr}"


def put(endpoint: str, key: str, value: str, *, timeout: str = "5s") -> None:
    ran = etcdctl([endpoint], f"--command-timeout={timeout}", "put", key, value)
    assert (ran.returncode, ran.stdout) == (0, "OK\n"), shown(ran)


def put_eventually(endpoint: str, key: str, value: str) -> None:
    """Put through ``endpoint``, retrying failures for up to ``WAIT`` seconds."""
    ran: subprocess.CompletedProcess[str] | None = None

    def written() -> bool:
        nonlocal ran
        ran = etcdctl([endpoint], "--command-timeout=2s", "put", key, value)
        return ran.returncode == 0

    eventually_sync(
        written,
        f"a write of {key}",
        within=WAIT,
        every=0.1,
        failure=lambda message: AssertionError(f"{message}: {shown(ran) if ran else None}"),
    )


def get(endpoint: str, key: str, *, timeout: str = "5s") -> str:
    """The value of ``key`` (a linearizable read), "" if there is none."""
    ran = etcdctl([endpoint], f"--command-timeout={timeout}", "get", "--print-value-only", key)
    assert ran.returncode == 0, shown(ran)
    return ran.stdout.removesuffix("\n")


def harness_processes(cluster: EtcdCluster) -> list[int]:
    """Processes still there (zombies too) that the cluster started: its children, or any
    process whose command line names its directory."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        pid = int(proc.name)
        if str(cluster.dir).encode() in cmdline or (pid in cluster.pids and parent == os.getpid()):
            found.append(pid)
    return found


def test_one_member_put_get(etcd: EtcdCluster) -> None:
    assert len(etcd.endpoints) == 1
    assert etcd.members[0].healthy()
    put(etcd.endpoints[0], "harness/one", "hello")
    assert get(etcd.endpoints[0], "harness/one") == "hello"


def test_one_member_restart_pause_and_stop_all(tmp_path: Path) -> None:
    cluster = EtcdCluster(tmp_path, size=1)
    try:
        cluster.start_all()
        [endpoint] = cluster.endpoints
        put(endpoint, "harness/kept", "v1")

        cluster.stop(0)
        assert not cluster.members[0].running
        cluster.start(0)
        assert get(endpoint, "harness/kept") == "v1", "lost its data on restart"

        cluster.pause(0)
        ran = etcdctl([endpoint], "--command-timeout=1s", "get", "harness/kept")
        assert ran.returncode != 0, f"a paused member answered: {shown(ran)}"
        cluster.resume(0)
        assert get(endpoint, "harness/kept") == "v1"

        cluster.pause(0)  # stop_all must end a paused member too
        assert len(cluster.pids) == 2
        assert sorted(harness_processes(cluster)) == cluster.pids[1:]
    finally:
        cluster.stop_all()
    assert harness_processes(cluster) == []
    assert not cluster.members[0].healthy()


def test_a_member_that_cannot_start_raises_with_its_log(tmp_path: Path) -> None:
    cluster = EtcdCluster(tmp_path, size=3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", cluster.members[1].client_port))
        taken.listen()
        with pytest.raises(EtcdError, match=r"(?s)member m1 .* exited 1 at start.*in use"):
            cluster.start_all()
    assert len(cluster.pids) == 3
    assert harness_processes(cluster) == []  # the others were stopped


def test_three_members_are_one_cluster(etcd3: EtcdCluster) -> None:
    first, _, last = etcd3.endpoints
    put(first, "harness/three", "replicated")
    assert get(last, "harness/three") == "replicated"
    ran = etcdctl(etcd3.endpoints, "member", "list")
    assert ran.returncode == 0, shown(ran)
    assert len(ran.stdout.splitlines()) == 3, shown(ran)


def test_three_members_quorum(etcd3: EtcdCluster) -> None:
    a, b, c = etcd3.endpoints
    put(a, "harness/q", "all up")

    etcd3.kill(0)  # one down: the other two still make a quorum
    assert not etcd3.members[0].running
    put_eventually(c, "harness/q", "one down")
    assert get(b, "harness/q") == "one down"

    etcd3.stop(1)  # two down: no quorum, so no write
    ran = etcdctl([c], "--command-timeout=2s", "put", "harness/q", "two down")
    assert ran.returncode != 0, f"wrote without a quorum: {shown(ran)}"

    etcd3.start(0)
    etcd3.start(1)
    put_eventually(a, "harness/q", "back")
    assert [get(endpoint, "harness/q") for endpoint in etcd3.endpoints] == ["back"] * 3

    assert len(etcd3.pids) == 5  # 3 first, 2 restarts
    etcd3.stop_all()
    assert harness_processes(etcd3) == []
