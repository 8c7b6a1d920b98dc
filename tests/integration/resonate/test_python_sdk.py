"""Resonate's official Python SDK (``resonate-sdk`` 0.8.1, in its own Python 3.12 venv that
``scripts/check.sh`` makes: ``.tools/resonate-py``) runs real worker processes against a real
``dawait serve`` node over 127.0.0.1: the node is their server (``POST /``, ``GET /poll``).

What a user of the SDK sees: steps, an idempotent rerun, a durable sleep, rpc to another
group, an external promise resolved from another process, a worker SIGKILLed mid-step
(its workflow finishes on another worker without rerunning completed steps), retries then
failure, 200 concurrent runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.etcd import EtcdCluster
from tests.integration.resonate.conftest import answer_of
from tests.integration.served import APP, TOKEN, Node, Nodes, client, wait_until

WORKER = Path(__file__).with_name("py_worker.py")


class Sdk:
    """Worker and client processes of the SDK against one node; all killed at the end."""

    def __init__(self, python: Path, node: Node, dir: Path) -> None:
        self.python = python
        self.node = node
        self.dir = dir
        self.effects = dir / "sdk-effects.log"
        self.workers: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, "RESONATE_TOKEN": TOKEN}

    def worker(self, group: str, url: str | None = None) -> subprocess.Popen[bytes]:
        """A worker of ``group`` connected to the node (or to ``url``)."""
        log = (self.dir / f"worker-{group}-{len(self.workers)}.err").open("wb")
        url = url or self.node.url
        process = subprocess.Popen(
            [str(self.python), str(WORKER), "worker", url, group, str(self.effects)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        self.workers.append(process)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"ready"
        return process

    async def call(self, *args: str) -> dict[str, Any]:
        """Run ``py_worker.py ARGS`` against the node: the JSON line it prints."""
        argv = [str(self.python), str(WORKER), args[0], self.node.url, *args[1:]]
        return await answer_of(argv, self.env)

    async def rpc(self, group: str, id: str, function: str, *args: Any) -> dict[str, Any]:
        return await self.call("rpc", group, id, function, json.dumps(list(args)))

    def ran(self, name: str) -> list[tuple[str, int]]:
        """(id, pid) of every run of step ``name`` so far."""
        if not self.effects.exists():
            return []
        lines = [line.split() for line in self.effects.read_text().splitlines()]
        return [(id, int(pid)) for kind, id, pid in lines if kind == name]

    def stop(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


@pytest.fixture
def node(nodes: Nodes) -> Node:
    return nodes.start_with("n")


@pytest.fixture
def sdks(sdk: Path, node: Node, tmp_path: Path) -> Iterator[Sdk]:
    running = Sdk(sdk, node, tmp_path)
    try:
        yield running
    finally:
        running.stop()


async def test_steps_a_rerun_a_sleep_and_rpc_to_another_group(sdks: Sdk, node: Node) -> None:
    sdks.worker("w")
    sdks.worker("other")
    assert await sdks.rpc("w", "py-steps", "steps", 3) == {"resolved": [0, 2, 4]}
    assert [id for id, _ in sdks.ran("double")] == ["py-steps:1", "py-steps:2", "py-steps:3"]
    # The same id again: the recorded result, no step runs again.
    assert await sdks.rpc("w", "py-steps", "steps", 3) == {"resolved": [0, 2, 4]}
    assert len(sdks.ran("double")) == 3
    assert await sdks.rpc("w", "py-sleep", "sleeper", 300) == {"resolved": "slept"}
    assert await sdks.rpc("w", "py-calls", "calls", "other", 5) == {"resolved": 15}
    (triple,) = sdks.ran("triple")
    assert triple[1] == sdks.workers[1].pid  # ran on the worker of group "other"
    # dawait's own API sees the SDK's invocations and their calls.
    async with client(node) as http:
        view = await http.invocation("py-steps")
        assert (view.state, view.function, view.result) == ("resolved", "steps", [0, 2, 4])
        # Deleted after the app's retention (7 days by default), as dawait's own roots.
        root, step = await http.promise("py-steps"), await http.promise("py-steps:1")
        assert root.tags["dawait:retention"] == str(7 * 24 * 3600 * 1000)
        assert "dawait:retention" not in step.tags
        tree = await http.tree("py-calls")
        assert [(c.id, c.state) for c in tree.children] == [("py-calls:1", "resolved")]
        sleep = await http.promise("py-sleep:1")
        assert sleep.state == "resolved"
        assert sleep.tags.get("resonate:timer") == "true"


async def test_an_external_promise_resolved_from_another_process(sdks: Sdk) -> None:
    sdks.worker("w")
    waiting = asyncio.ensure_future(sdks.rpc("w", "py-approve", "approval", "ann"))
    await wait_until("the workflow to wait on its promise", lambda: bool(sdks.ran("waiting")))
    ((promise_id, _),) = sdks.ran("waiting")
    assert promise_id == "py-approve:1"
    assert await sdks.call("resolve", promise_id, json.dumps("yes")) == {"state": "resolved"}
    assert await waiting == {"resolved": {"who": "ann", "decision": "yes"}}


async def test_a_worker_sigkilled_mid_step_finishes_on_another(sdks: Sdk) -> None:
    first = sdks.worker("k")
    run = asyncio.ensure_future(sdks.rpc("k", "py-survives", "survives", 1500))
    await wait_until("the long step to start", lambda: bool(sdks.ran("slow")))
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    second = sdks.worker("k")  # the lease of the first ends (2 s): the task comes here
    assert await run == {"resolved": [2, 1500, 4]}
    # Completed steps are not run again; the interrupted one is (steps are at-least-once).
    assert sdks.ran("double") == [("py-survives:1", first.pid), ("py-survives:3", second.pid)]
    assert sdks.ran("slow") == [("py-survives:2", first.pid), ("py-survives:2", second.pid)]
    assert sdks.ran("slow-done") == [("py-survives:2", second.pid)]


async def test_retries_then_failure(sdks: Sdk, node: Node) -> None:
    sdks.worker("w")
    answer = await sdks.rpc("w", "py-fails", "retries_then_fails", 2)
    assert answer == {"rejected": "Flaky", "message": "failed (of 2)"}
    assert len(sdks.ran("fails")) == 3  # the first try and two retries
    async with client(node) as http:
        assert (await http.invocation("py-fails")).state == "rejected"


async def test_200_concurrent_runs(sdks: Sdk, node: Node) -> None:
    sdks.worker("w")
    sdks.worker("w")
    assert await sdks.call("many", "w", "py-many-", "200") == {"right": 200}
    runs = sdks.ran("double")
    assert len(runs) == 400
    assert len(set(runs)) == 400
    assert {pid for _, pid in runs} == {p.pid for p in sdks.workers}  # both took a share


async def test_dawait_and_the_sdk_call_each_other(sdks: Sdk, node: Node) -> None:
    """A dawait workflow's ctx.options(target=...).rpc runs a function a Python SDK worker
    registered; an SDK workflow's rpc to the node's group runs a function dawait registered."""
    sdks.worker("pyw")
    async with client(node) as http:
        await http.start("dw-1", "via_worker", ["pyw", 7], {})
        result = await http.result("dw-1", wait=30)
        assert (result.state, result.result) == ("resolved", 21)
        tree = await http.tree("dw-1")
        assert [(c.id, c.function, c.state) for c in tree.children] == [
            ("dw-1:1", "triple", "resolved")
        ]
    ((id, pid),) = sdks.ran("triple")
    assert (id, pid) == ("dw-1:1", sdks.workers[0].pid)
    # The other way: served_app's `add` is registered in the node's group, "default".
    assert await sdks.rpc("default", "py-add", "add", 2, 3) == {"resolved": 5}
    async with client(node) as http:
        assert (await http.tree("py-add")).children[0].function == "plus"  # dawait's own step


async def test_a_schedule_fires_on_a_worker_until_deleted(sdks: Sdk, node: Node) -> None:
    sdks.worker("w")
    cron = "* * * * * *"  # every second
    assert await sdks.call("schedule", "w", "py-every", cron, "tick") == {"created": "py-every"}
    got = await sdks.call("schedule-get", "py-every")
    assert got == {
        "id": "py-every",
        "cron": cron,
        "promiseId": "{{.id}}-{{.timestamp}}",
        "promiseTags": {"resonate:target": "poll://any@w"},
    }
    await wait_until("two firings", lambda: len(sdks.ran("tick")) >= 2)
    ids = [id for id, _ in sdks.ran("tick")]
    assert all(id.startswith("py-every-") for id in ids)
    assert len(set(ids)) == len(ids)  # one promise per slot
    async with client(node) as http:
        assert (await http.schedule("py-every")).function == "tick"  # a dawait schedule
        assert (await http.invocation(ids[0])).state == "resolved"
    assert await sdks.call("schedule-delete", "py-every") == {"deleted": "py-every"}
    fired = len(sdks.ran("tick"))
    await asyncio.sleep(2.5)
    assert len(sdks.ran("tick")) <= fired + 1  # one slot may have been under way
    assert "404" in (await sdks.call("schedule-get", "py-every"))["error"]


async def test_a_result_over_the_payload_limit_fails_its_step(
    sdk: Path, nodes: Nodes, tmp_path: Path
) -> None:
    node = nodes.start_with("small", "--max-payload", "64KiB")
    sdks = Sdk(sdk, node, tmp_path)
    try:
        sdks.worker("w")
        answer = await sdks.rpc("w", "py-big", "too_big", 100_000)
        assert "the value of promise py-big:1" in answer["resolved"], answer
        assert "over the store's payload limit of 65,536 bytes" in answer["resolved"], answer
        async with client(node) as http:
            assert (await http.promise("py-big:1")).state == "rejected"
    finally:
        sdks.stop()


async def test_on_a_node_with_an_etcd_store(
    sdk: Path, nodes: Nodes, etcd: EtcdCluster, tmp_path: Path
) -> None:
    endpoint = etcd.endpoints[0].removeprefix("http://")
    store = f"etcd://{endpoint}?namespace=sdk-{os.getpid()}"
    node = nodes.start("e", "--app", APP, "--port", "0", "--token", TOKEN, "--store", store)
    sdks = Sdk(sdk, node, tmp_path)
    try:
        sdks.worker("w")
        assert await sdks.rpc("w", "etcd-steps", "steps", 2) == {"resolved": [0, 2]}
        assert await sdks.rpc("w", "etcd-sleep", "sleeper", 200) == {"resolved": "slept"}
    finally:
        sdks.stop()


async def test_a_node_sigkilled_under_a_running_workflow_loses_nothing(
    sdk: Path, nodes: Nodes, tmp_path: Path
) -> None:
    node = nodes.start_with("n1")
    port = node.url.rsplit(":", 1)[1]
    sdks = Sdk(sdk, node, tmp_path)
    try:
        sdks.worker("w")
        run = asyncio.ensure_future(sdks.rpc("w", "py-node-dies", "survives", 1500))
        await wait_until("the long step to start", lambda: bool(sdks.ran("slow")))
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(timeout=10)
        # The same store, the same address: the SDKs reconnect and carry on.
        again = nodes.start_with("n2", "--port", port)
        sdks.node = again
        assert await run == {"resolved": [2, 1500, 4]}
        assert [id for id, _ in sdks.ran("double")] == ["py-node-dies:1", "py-node-dies:3"]
        async with client(again) as http:
            assert (await http.invocation("py-node-dies")).state == "resolved"
    finally:
        sdks.stop()
