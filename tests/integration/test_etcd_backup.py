"""The etcd backup and restore of docs/kubernetes.md, on real etcd processes and a real
node: ``etcdctl snapshot save`` from a live cluster, ``etcdctl snapshot restore`` into a new
member's data directory (etcd 3.4's command; 3.5's ``etcdutl`` takes the same flags), and a
node on the restored cluster finishes what the snapshot held. Work done after the snapshot is
not in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from dawait.errors import PromiseNotFoundError
from dawait.node._client import HttpClient
from tests.etcd import ETCDCTL, EtcdCluster, etcdctl, free_ports
from tests.integration.cluster_app import mixed_result
from tests.integration.served import TOKEN, Nodes, wait_until

APP = "tests.integration.cluster_app:app"


def _node_args(etcd: EtcdCluster, port: int) -> list[str]:
    return [
        "--app", APP, "--etcd", ",".join(etcd.endpoints), "--namespace", "restored",
        "--node-id", "n0", "--port", str(port), "--token", TOKEN, "--grace-period", "2",
    ]  # fmt: skip


async def test_a_restored_snapshot_holds_what_was_recorded_before_it(tmp_path: Path) -> None:
    nodes = Nodes(tmp_path)
    snapshot = tmp_path / "dawait.db"
    try:
        with EtcdCluster(tmp_path / "before", size=1) as before:
            node = nodes.start("before", *_node_args(before, free_ports(1)[0]))
            async with HttpClient(node.url, token=TOKEN, timeout=30) as api:
                done, _ = await api.start("done-1", "mixed", [1, 0.0], {}, wait=20)
                assert done.state == "resolved"
                await api.start("waits-7", "mixed", [7, 0.0], {})

                async def waiting() -> bool:
                    try:
                        return (await api.promise("ext-7")).state == "pending"
                    except PromiseNotFoundError:
                        return False

                await wait_until("waits-7 to await its promise", waiting, node=node)
                saved = etcdctl(before.endpoints, "snapshot", "save", str(snapshot))
                assert saved.returncode == 0, saved.stderr
                later, _ = await api.start("after-2", "mixed", [2, 0.0], {}, wait=20)
                assert later.state == "resolved"
            await node.stop()

        after = EtcdCluster(tmp_path / "after", size=1)
        member = after.members[0]
        restored = etcdctl(
            [], "snapshot", "restore", str(snapshot),
            f"--name={member.name}", f"--data-dir={member.data_dir}",
            f"--initial-cluster={after.initial_cluster}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--initial-cluster-token={after.token}",
        )  # fmt: skip
        assert restored.returncode == 0, f"{ETCDCTL} snapshot restore: {restored.stderr}"
        with after:
            node = nodes.start("after", *_node_args(after, free_ports(1)[0]))
            async with HttpClient(node.url, token=TOKEN, timeout=30) as api:
                assert (await api.result("done-1", wait=1)).result == mixed_result(1)
                await api.resolve("ext-7", 7)
                waited = await api.result("waits-7", wait=20)
                assert (waited.state, waited.result) == ("resolved", mixed_result(7))
                with pytest.raises(PromiseNotFoundError):
                    await api.result("after-2", wait=1)
            await node.stop()
    finally:
        nodes.kill_all()
