"""Resonate's official TypeScript SDK (``@resonatehq/sdk`` 0.11.5, installed by
``scripts/check.sh`` in ``.tools/resonate-ts``; node 20 with a polyfill for
``Promise.withResolvers``) runs real worker processes against a real ``dawait serve`` node,
beside Python SDK workers: steps, an idempotent rerun, a durable sleep, rpc between the two
SDKs both ways, a worker SIGKILLed mid-step.

The TypeScript SDK checks the shape of every answer strictly, so these also hold dawait's
records to the shapes both SDKs accept.
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

from tests.integration.resonate.conftest import SDK_MODULES, SDK_PYTHON, answer_of
from tests.integration.resonate.test_python_sdk import Sdk
from tests.integration.served import TOKEN, Node, Nodes, client, wait_until

WORKER = Path(__file__).with_name("ts_worker.mjs")


class TsSdk:
    """TypeScript worker and client processes against one node; all killed at the end."""

    def __init__(self, node_js: str, node: Node, effects: Path) -> None:
        self.node_js = node_js
        self.node = node
        self.effects = effects
        self.workers: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, "RESONATE_TOKEN": TOKEN, "NODE_PATH": str(SDK_MODULES)}

    def worker(self, group: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [self.node_js, str(WORKER), "worker", self.node.url, group, str(self.effects)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=(self.effects.parent / f"ts-worker-{len(self.workers)}.err").open("wb"),
            stdin=subprocess.DEVNULL,
        )
        self.workers.append(process)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"ready"
        return process

    async def rpc(self, group: str, id: str, function: str, *args: Any) -> dict[str, Any]:
        return await self.call("rpc", group, id, function, json.dumps(list(args)))

    async def call(self, mode: str, *args: str) -> dict[str, Any]:
        """Run ``ts_worker.mjs MODE URL ARGS``: the JSON line it prints."""
        argv = [self.node_js, str(WORKER), mode, self.node.url, *args]
        return await answer_of(argv, self.env)

    def stop(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


@pytest.fixture
def node(nodes: Nodes) -> Node:
    return nodes.start_with("n")


@pytest.fixture
def sdks(node_js: str, node: Node, tmp_path: Path) -> Iterator[tuple[TsSdk, Sdk]]:
    py = Sdk(SDK_PYTHON, node, tmp_path)
    ts = TsSdk(node_js, node, py.effects)  # one effects file for both
    try:
        yield ts, py
    finally:
        ts.stop()
        py.stop()


async def test_steps_a_rerun_a_sleep_and_rpc_across_the_two_sdks(
    sdks: tuple[TsSdk, Sdk], node: Node
) -> None:
    ts, py = sdks
    ts.worker("tsw")
    py.worker("pyw")
    assert await ts.rpc("tsw", "ts-steps", "steps", 3) == {"resolved": [0, 2, 4]}
    assert [id for id, _ in py.ran("double")] == ["ts-steps:0", "ts-steps:1", "ts-steps:2"]
    assert await ts.rpc("tsw", "ts-steps", "steps", 3) == {"resolved": [0, 2, 4]}
    assert len(py.ran("double")) == 3  # the rerun ran nothing
    assert await ts.rpc("tsw", "ts-sleep", "sleeper", 300) == {"resolved": "slept"}
    # A TypeScript workflow calls a Python function, and a Python workflow a TypeScript one.
    assert await ts.rpc("tsw", "ts-calls", "calls", "pyw", 4) == {"resolved": 12}
    assert await py.rpc("pyw", "py-calls", "calls", "tsw", 5) == {"resolved": 15}
    assert {id: pid for id, pid in py.ran("triple")} == {
        "ts-calls:0": py.workers[0].pid,
        "py-calls:1": ts.workers[0].pid,
    }
    async with client(node) as http:
        view = await http.invocation("ts-steps")
        assert (view.state, view.result) == ("resolved", [0, 2, 4])


async def test_a_sigkilled_worker_s_workflow_finishes_on_another(
    sdks: tuple[TsSdk, Sdk],
) -> None:
    ts, py = sdks
    first = ts.worker("tsk")
    run = asyncio.ensure_future(ts.rpc("tsk", "ts-survives", "survives", 1500))
    await wait_until("the long step to start", lambda: bool(py.ran("slow")))
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    second = ts.worker("tsk")
    assert await run == {"resolved": [2, 1500, 4]}
    assert py.ran("double") == [("ts-survives:0", first.pid), ("ts-survives:2", second.pid)]
    assert py.ran("slow") == [("ts-survives:1", first.pid), ("ts-survives:1", second.pid)]


async def test_an_external_promise_resolved_through_dawait_and_200_runs(
    sdks: tuple[TsSdk, Sdk], node: Node
) -> None:
    ts, py = sdks
    ts.worker("tsw")
    ts.worker("tsw")
    waiting = asyncio.ensure_future(ts.rpc("tsw", "ts-approve", "approval", "ann"))
    await wait_until("the workflow to wait on its promise", lambda: bool(py.ran("waiting")))
    ((promise_id, _),) = py.ran("waiting")
    async with client(node) as http:
        await http.resolve(promise_id, "yes")  # dawait's own API settles the SDK's promise
    assert await waiting == {"resolved": {"who": "ann", "decision": "yes"}}
    assert await ts.call("many", "tsw", "ts-many-", "200") == {"right": 200}
    runs = py.ran("double")
    assert len(set(runs)) == len(runs) == 400
    assert {pid for _, pid in runs} == {p.pid for p in ts.workers}


async def test_retries_then_failure(sdks: tuple[TsSdk, Sdk], node: Node) -> None:
    ts, py = sdks
    ts.worker("tsw")
    answer = await ts.rpc("tsw", "ts-fails", "retriesThenFails", 2)
    assert answer == {"rejected": "Error", "message": "failed (of 2)"}
    assert len(py.ran("fails")) == 3  # the first try and two retries
    async with client(node) as http:
        view = await http.invocation("ts-fails")
        assert view.state == "rejected"
