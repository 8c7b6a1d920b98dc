"""The dev overlay's pods, run here as local processes exactly as declared (tests/k8s/
manifests.py says what stands in for the cluster): etcd from the StatefulSet, then a node
from the Deployment, each waited for through its readinessProbe's path and port.

A workflow runs through the API Service's port; another waits on an external promise. The
node is stopped as the kubelet stops a pod (its preStop command, then SIGTERM) and must exit
0 within terminationGracePeriodSeconds. A second pod of the Deployment then finishes the
waiting workflow: nothing was lost. The declared ports are used as they are (2379, 2380,
8080 on 127.0.0.1); the test fails at once, naming the port, if one is taken."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from dawait.node._client import HttpClient
from tests.k8s.manifests import POD_IP, REPO, Manifest, Pod, find, pod, render
from tests.polling import eventually

READY_TIMEOUT = 30.0
"""Seconds a pod may take to pass its readinessProbe."""


def _require_free(port: int) -> None:
    with socket.socket() as sock:
        # As the servers bind: a port whose last connections are in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((POD_IP, port))
        except OSError:
            pytest.fail(
                f"port {port} of {POD_IP} is taken: the dev pods run on their declared ports"
            )


@contextlib.asynccontextmanager
async def running(spec: Pod, logs: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``spec`` as a process (in the repository: the image's WORKDIR holds examples/ as
    the repository does), ready by its readinessProbe; killed if still running at the end."""
    for port in spec.container["ports"]:
        _require_free(port["containerPort"])
    log = (logs / f"{spec.name}.log").open("wb")
    process = subprocess.Popen(  # noqa: ASYNC220 (started once; waited for in a thread)
        spec.command, env=spec.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        await _ready(spec, process, logs)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        log.close()


async def _ready(spec: Pod, process: subprocess.Popen[bytes], logs: Path) -> None:
    url = spec.probe_url("readinessProbe")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:

        async def passes() -> bool:
            if process.poll() is not None:
                log = (logs / f"{spec.name}.log").read_text()[-3000:]
                raise AssertionError(f"{spec.name} exited {process.returncode}:\n{log}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as response:
                    return response.status == 200
            return False

        await eventually(passes, f"{spec.name}'s readinessProbe at {url}", within=READY_TIMEOUT)


async def stop_like_the_kubelet(spec: Pod, process: subprocess.Popen[bytes]) -> None:
    """Run the preStop command, then SIGTERM: the process must exit 0 within
    terminationGracePeriodSeconds of the preStop's start, or the kubelet would SIGKILL it."""
    started = time.monotonic()
    hook = spec.pre_stop()
    if hook is not None:
        done = await asyncio.to_thread(subprocess.run, hook, env=spec.env, check=False)
        assert done.returncode == 0, f"{spec.name}: preStop {hook} exited {done.returncode}"
    process.send_signal(signal.SIGTERM)
    left = spec.terminate_grace - (time.monotonic() - started)
    try:
        code = await asyncio.to_thread(process.wait, max(left, 0.0))
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"{spec.name} still running {spec.terminate_grace} s after its preStop began"
        ) from None
    assert code == 0, f"{spec.name} exited {code} on SIGTERM"


def _service_url(manifests: list[Manifest], node: Pod) -> str:
    """Where the API Service sends its port: the pod's port its targetPort names."""
    port = find(manifests, "Service", "dawait")["spec"]["ports"][0]
    return f"http://{POD_IP}:{node.port(port['targetPort'])}"


async def test_dev_pods_run_as_declared_and_a_node_stops_without_losing_work(
    tmp_path: Path,
) -> None:
    manifests = render("dev")
    statefulset = find(manifests, "StatefulSet", "dawait-etcd")
    deployment = find(manifests, "Deployment", "dawait-node")
    etcd = pod(manifests, statefulset, "dawait-etcd-0", tmp_path)
    first = pod(manifests, deployment, "dawait-node-5d8f9-a1b2c", tmp_path, from_image=True)
    second = pod(manifests, deployment, "dawait-node-5d8f9-x9y8z", tmp_path, from_image=True)
    token = (tmp_path / first.name / "tokens" / "api-token").read_text()
    expense = {"id": "k8s-1", "employee": "ada", "description": "desk", "amount_cents": 25000}

    async with running(etcd, tmp_path) as etcd_process:
        async with running(first, tmp_path) as node:
            url = _service_url(manifests, first)
            async with HttpClient(url, token=token, timeout=30) as api:
                view, created = await api.start("k8s-hello", "greet", ["Ada"], {}, wait=20)
                assert (created, view.state, view.result) == (True, "resolved", "hello, ADA")
                waiting, _ = await api.start("k8s-expense", "approve_expense", [expense], {})
                assert waiting.state == "pending"
                listing = await api.nodes()
                assert [n.node_id for n in listing.items] == [first.name]
                assert listing.items[0].address == f"http://{POD_IP}:8080"
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            metrics = f"http://{POD_IP}:{annotations['prometheus.io/port']}"
            async with (
                aiohttp.ClientSession() as scraper,  # as Prometheus does: no token
                scraper.get(metrics + annotations["prometheus.io/path"]) as response,
            ):
                assert response.status == 200
                assert 'dawait_invocations_completed_total{function="greet"} 1.0' in (
                    await response.text()
                )
            await stop_like_the_kubelet(first, node)

        async with running(second, tmp_path) as node:
            async with HttpClient(_service_url(manifests, second), token=token, timeout=30) as api:
                await api.resolve("k8s-expense:1", {"approved": True, "by": "grace"})
                decision = await api.result("k8s-expense", wait=20)
                assert decision.state == "resolved", decision
                assert decision.result == {
                    "expense_id": "k8s-1",
                    "approved": True,
                    "note": "approved by grace",
                }
                assert (await api.result("k8s-hello", wait=1)).result == "hello, ADA"
            await stop_like_the_kubelet(second, node)
        # etcd stops gracefully on SIGTERM, then ends by the signal it caught.
        etcd_process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(etcd_process.wait, etcd.terminate_grace)
        assert code == -signal.SIGTERM, f"etcd exited {code}"
