"""The dev overlay's pods, run here as local processes exactly as declared (tests/k8s/
manifests.py says what stands in for the cluster): etcd from the StatefulSet, then a node
from the Deployment, each waited for through its readinessProbe's path and port.

A workflow runs through the API Service's port; another waits on an external promise. The
node is stopped as the kubelet stops a pod (its preStop command, then SIGTERM) and must exit
0 within terminationGracePeriodSeconds. A second pod of the Deployment then finishes the
waiting workflow: nothing was lost.

Every declared port is mapped onto a free port of 127.0.0.1 (``local_ports``), so the test
runs beside a dawait node on 8080, an etcd on 2379 or another checkout's run of it. A second
test checks the mapping is complete: a port added to the manifests later that the mapping
missed fails it, instead of the pods binding that fixed port."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from dawait.node._client import HttpClient
from tests.k8s.manifests import (
    POD_IP,
    PORT_NUMBER,
    REPO,
    Manifest,
    Pod,
    declared_ports,
    find,
    local_ports,
    pod,
    render,
)
from tests.polling import eventually

READY_TIMEOUT = 30.0
"""Seconds a pod may take to pass its readinessProbe."""
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
PORTED = ("httpGet", "tcpSocket", "grpc")
"""The probe handlers that name a port."""


@contextlib.asynccontextmanager
async def running(spec: Pod, logs: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``spec`` as a process (in the repository: the image's WORKDIR holds examples/ as
    the repository does), ready by its readinessProbe; killed if still running at the end."""
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


def _service_url(manifests: list[Manifest], ports: dict[int, int]) -> str:
    """The API Service dialled on its port, which the mapping sends where kube-proxy would:
    to the local port of the pod's port its targetPort names."""
    port = find(manifests, "Service", "dawait")["spec"]["ports"][0]["port"]
    return f"http://{POD_IP}:{ports[port]}"


def _dev_pods(manifests: list[Manifest], ports: dict[int, int], volumes: Path) -> list[Pod]:
    """etcd's one pod, then two pods of the node's Deployment."""
    statefulset = find(manifests, "StatefulSet", "dawait-etcd")
    deployment = find(manifests, "Deployment", "dawait-node")
    return [
        pod(manifests, statefulset, "dawait-etcd-0", volumes, ports=ports),
        *(
            pod(manifests, deployment, name, volumes, ports=ports, from_image=True)
            for name in ("dawait-node-5d8f9-a1b2c", "dawait-node-5d8f9-x9y8z")
        ),
    ]


def test_every_declared_port_is_mapped_and_none_is_left_in_what_the_pods_run(
    tmp_path: Path,
) -> None:
    """The mapping covers every port number the manifests declare; after it, no declared
    number is left in a pod's command, environment or preStop hook, and every URL there
    names a mapped port (so an undeclared port in one fails too)."""
    manifests = render("dev")
    ports = local_ports(manifests)
    declared = declared_ports(manifests)
    unmapped = {number: where for number, where in declared.items() if number not in ports}
    assert not unmapped, f"declared ports not mapped onto free ones: {unmapped}"
    assert not set(ports.values()) & set(declared), ports
    for spec in _dev_pods(manifests, ports, tmp_path):
        # PATH and HOME are this machine's, and the test's folders are not the manifests'.
        env = [value for key, value in spec.env.items() if key not in ("PATH", "HOME")]
        text = " ".join([*spec.command, *env, *(spec.pre_stop() or [])])
        text = text.replace(str(tmp_path), "VOLUMES")
        left = sorted({int(n) for n in PORT_NUMBER.findall(text)} & set(declared))
        assert not left, f"{spec.name} still names declared ports {left}: {text}"
        dialled = {int(port) for port in re.findall(r"//[^/\s:]+:(\d+)", text)}
        assert dialled, f"{spec.name} names no URL: {text}"
        assert dialled <= set(ports.values()), f"{spec.name}: unmapped ports in {text}"
        probes = [spec.container[kind] for kind in PROBES if kind in spec.container]
        for handler in (probe[way] for probe in probes for way in PORTED if way in probe):
            assert spec.port(handler["port"]) in ports.values()


async def test_dev_pods_run_as_declared_and_a_node_stops_without_losing_work(
    tmp_path: Path,
) -> None:
    manifests = render("dev")
    ports = local_ports(manifests)
    deployment = find(manifests, "Deployment", "dawait-node")
    etcd, first, second = _dev_pods(manifests, ports, tmp_path)
    token = (tmp_path / first.name / "tokens" / "api-token").read_text()
    expense = {"id": "k8s-1", "employee": "ada", "description": "desk", "amount_cents": 25000}

    async with running(etcd, tmp_path) as etcd_process:
        async with running(first, tmp_path) as node:
            async with HttpClient(_service_url(manifests, ports), token=token, timeout=30) as api:
                view, created = await api.start("k8s-hello", "greet", ["Ada"], {}, wait=20)
                assert (created, view.state, view.result) == (True, "resolved", "hello, ADA")
                waiting, _ = await api.start("k8s-expense", "approve_expense", [expense], {})
                assert waiting.state == "pending"
                listing = await api.nodes()
                assert [n.node_id for n in listing.items] == [first.name]
                assert listing.items[0].address == f"http://{POD_IP}:{first.port('http')}"
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            metrics = f"http://{POD_IP}:{ports[int(annotations['prometheus.io/port'])]}"
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
            async with HttpClient(_service_url(manifests, ports), token=token, timeout=30) as api:
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
