"""Resonate's protocol on a real node, request by request: the envelope, errors, fencing by
version, leases, timers, the poll stream's framing and where pushes go."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from http.client import HTTPConnection
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.served import TOKEN, Node, Nodes, client
from tests.polling import eventually

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def node(nodes: Nodes) -> Node:
    return nodes.start_with("n")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


def b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


async def send(
    http: aiohttp.ClientSession, node: Node, kind: str, data: Any
) -> tuple[int, int, Any]:
    """(HTTP status, head.status, data) of one request."""
    corr = f"c-{uuid.uuid4().hex}"
    envelope = {"kind": kind, "head": {"corrId": corr, "version": "2026-04-01"}, "data": data}
    async with http.post(node.url + "/", json=envelope) as response:
        body = await response.json()
    assert body["kind"] == kind, body
    assert body["head"]["corrId"] == corr, body
    assert body["head"]["version"] == "2026-04-01"
    return response.status, body["head"]["status"], body["data"]


def targeted(id: str, group: str, **tags: str) -> dict[str, Any]:
    return {
        "id": id,
        "timeoutAt": 4102444800000,
        "param": {"data": b64({"func": "f", "args": [1], "kwargs": {}, "version": 1})},
        "tags": {"resonate:target": f"poll://any@{group}", **tags},
    }


async def test_errors_are_envelopes_naming_what_was_wrong(
    http: aiohttp.ClientSession, node: Node
) -> None:
    status, head, data = await send(http, node, "promise.frobnicate", {})
    assert (status, head) == (200, 400)
    assert data == "unknown request kind 'promise.frobnicate'"
    status, head, data = await send(http, node, "promise.get", {})
    assert (status, head, data) == (200, 400, "promise.get: data.id is missing")
    status, head, data = await send(http, node, "promise.get", {"id": "nope"})
    assert (status, head, data) == (404, 404, "promise.get: no promise with id 'nope'")
    bad = {"id": "p", "timeoutAt": 1, "param": {"data": "not base64!"}}
    status, head, data = await send(http, node, "promise.create", bad)
    assert head == 400
    assert "data.param.data must be base64 of JSON text" in data
    async with http.post(node.url + "/", data=b"{oops") as response:
        body = await response.json()
    assert body["head"]["status"] == 400
    assert "not JSON" in body["data"]
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.post(node.url + "/", json={"kind": "promise.get"}) as response:
            assert response.status == 401
        async with anonymous.get(node.url + "/poll/g/p") as response:
            assert response.status == 401
    # Nothing of the bad requests was stored.
    status, head, _ = await send(http, node, "promise.get", {"id": "p"})
    assert head == 404


async def test_promise_records_in_the_shape_both_sdks_accept(
    http: aiohttp.ClientSession, node: Node
) -> None:
    data = {"id": "shape", "timeoutAt": 4102444800000, "param": {"data": b64([1])}, "tags": {}}
    _, head, created = await send(http, node, "promise.create", data)
    record = created["promise"]
    assert head == 200
    assert record["value"] == {}
    assert "settledAt" not in record
    assert record["param"] == {"data": b64([1])}
    assert isinstance(record["createdAt"], int)
    settle = {"id": "shape", "state": "resolved", "value": {"data": b64({"ok": True})}}
    _, head, settled = await send(http, node, "promise.settle", settle)
    assert head == 200
    assert settled["promise"]["state"] == "resolved"
    assert settled["promise"]["settledAt"] >= record["createdAt"]
    # Settled again another way: its record, unchanged (as Resonate's server answers).
    again = {"id": "shape", "state": "rejected", "value": {}}
    _, head, same = await send(http, node, "promise.settle", again)
    assert head == 200
    assert same["promise"]["state"] == "resolved"
    # dawait's API reads the same value as JSON.
    async with client(node) as api:
        assert (await api.promise("shape")).value == {"ok": True}


async def test_an_invocations_result_cannot_be_forged(
    http: aiohttp.ClientSession, node: Node
) -> None:
    async with client(node) as api:
        await api.start("inv-1", "approve", ["ann"], {})
    forged = {"id": "inv-1", "state": "resolved", "value": {"data": b64("forged")}}
    _, head, data = await send(http, node, "promise.settle", forged)
    assert head == 403
    assert "settled by the engine that runs it" in data


async def test_schedules_their_errors_and_the_record_both_sdks_accept(
    http: aiohttp.ClientSession, node: Node
) -> None:
    schedule = {
        "id": "every", "cron": "0 * * * *", "promiseId": "{{.id}}-{{.timestamp}}",
        "promiseTimeout": 60_000, "promiseParam": {"data": b64({"func": "f", "args": []})},
        "promiseTags": {"resonate:target": "poll://any@w"},
    }  # fmt: skip
    _, head, data = await send(http, node, "schedule.create", {**schedule, "promiseTags": {}})
    assert (head, data) == (400, "schedule.create: promiseTags must include a resonate:target tag")
    _, head, data = await send(http, node, "schedule.create", {**schedule, "cron": "61 * * * *"})
    assert head == 400
    assert data.startswith("schedule.create: cron expression '61 * * * *'")
    _, head, data = await send(
        http, node, "schedule.create", {**schedule, "promiseId": "a:{{.id}}"}
    )
    assert head == 400
    assert "promiseId 'a:{{.id}}' makes ids that cannot be" in data
    status, head, created = await send(http, node, "schedule.create", schedule)
    assert (status, head) == (200, 200)
    record = created["schedule"]
    assert {k: record[k] for k in schedule} == schedule
    assert record["nextRunAt"] % 3_600_000 == 0  # the next whole hour
    assert isinstance(record["createdAt"], int)
    assert "lastRunAt" not in record  # the TypeScript SDK takes it absent or a number
    _, head, again = await send(http, node, "schedule.create", {**schedule, "cron": "* * * * *"})
    assert (head, again["schedule"]["cron"]) == (200, "0 * * * *")  # the existing one
    _, head, got = await send(http, node, "schedule.get", {"id": "every"})
    assert (head, got) == (200, {"schedule": record})
    _, head, found = await send(
        http, node, "schedule.search", {"tags": {"resonate:target": "poll://any@w"}}
    )
    assert (head, [s["id"] for s in found["schedules"]]) == (200, ["every"])
    _, head, found = await send(http, node, "schedule.search", {"tags": {"resonate:target": "x"}})
    assert found["schedules"] == []
    assert (await send(http, node, "schedule.delete", {"id": "every"}))[1:] == (200, {})
    status, head, data = await send(http, node, "schedule.delete", {"id": "every"})
    assert (status, head, data) == (404, 404, "schedule.delete: no schedule with id 'every'")
    status, head, data = await send(http, node, "schedule.get", {"id": "every"})
    assert (status, head) == (404, 404)


async def test_tasks_are_fenced_by_version_and_leased(
    http: aiohttp.ClientSession, node: Node
) -> None:
    _, head, _ = await send(http, node, "promise.create", targeted("t1", "nobody"))
    assert head == 200
    acquire = {"id": "t1", "version": 0, "pid": "p1", "ttl": 60000}
    _, head, got = await send(http, node, "task.acquire", acquire)
    assert head == 200
    assert got["task"]["version"] == 1
    assert got["task"]["state"] == "acquired"
    assert got["task"]["resumes"] == []
    assert got["promise"]["id"] == "t1"
    # A second worker with the version it was pushed is refused: the first holds it.
    _, head, _ = await send(http, node, "task.acquire", {**acquire, "pid": "p2"})
    assert head == 409
    step = {"id": "t1:1", "timeoutAt": 4102444800000, "tags": {"resonate:branch": "t1"}}
    fence = {"id": "t1", "version": 0, "action": {"kind": "promise.create", "data": step}}
    _, head, _ = await send(http, node, "task.fence", fence)
    assert head == 409  # an old version writes nothing
    _, head, _ = await send(http, node, "promise.get", {"id": "t1:1"})
    assert head == 404
    _, head, fenced = await send(http, node, "task.fence", {**fence, "version": 1})
    assert head == 200
    assert fenced["preload"] == []
    assert fenced["action"]["head"]["status"] == 200
    assert fenced["action"]["data"]["promise"]["id"] == "t1:1"
    heartbeat = {"pid": "p1", "tasks": [{"id": "t1", "version": 1}, {"id": "gone", "version": 3}]}
    assert (await send(http, node, "task.heartbeat", heartbeat))[1:] == (200, {})
    # Released, it is taken again at the version it now has; the old holder is fenced out.
    assert (await send(http, node, "task.release", {"id": "t1", "version": 1}))[1] == 200
    _, head, again = await send(http, node, "task.acquire", {**acquire, "version": 1})
    assert head == 200
    assert again["task"]["version"] == 2
    assert [p["id"] for p in again["preload"]] == ["t1:1"]
    settle = {"id": "t1", "state": "resolved", "value": {"data": b64(7)}}
    fulfill = {"id": "t1", "version": 1, "action": {"kind": "promise.settle", "data": settle}}
    assert (await send(http, node, "task.fulfill", fulfill))[1] == 409
    _, head, done = await send(http, node, "task.fulfill", {**fulfill, "version": 2})
    assert head == 200
    assert done["promise"]["state"] == "resolved"
    # A task.create of an existing id whose task has ended.
    create = {
        "pid": "p3",
        "ttl": 1000,
        "action": {"kind": "promise.create", "data": targeted("t1", "x")},
    }
    _, head, answered = await send(http, node, "task.create", create)
    assert head == 200  # as Resonate's server: a fulfilled task is answered, with its result
    assert answered["task"]["state"] == "fulfilled"
    assert answered["promise"]["state"] == "resolved"


async def test_suspend_redirects_when_an_awaited_promise_has_settled(
    http: aiohttp.ClientSession, node: Node
) -> None:
    create = {
        "pid": "p1",
        "ttl": 60000,
        "action": {"kind": "promise.create", "data": targeted("s1", "g")},
    }
    _, head, created = await send(http, node, "task.create", create)
    assert head == 200
    assert created["task"]["version"] == 0
    assert (await send(http, node, "task.create", {**create, "pid": "p2"}))[1] == 409  # held
    external = {"id": "s1:1", "timeoutAt": 4102444800000, "tags": {"resonate:external": "true"}}
    fence = {"id": "s1", "version": 0, "action": {"kind": "promise.create", "data": external}}
    assert (await send(http, node, "task.fence", fence))[1] == 200
    settle = {"id": "s1:1", "state": "resolved", "value": {"data": b64("ok")}}
    assert (await send(http, node, "promise.settle", settle))[1] == 200
    callback = {"kind": "promise.register_callback", "data": {"awaited": "s1:1", "awaiter": "s1"}}
    suspend = {"id": "s1", "version": 0, "actions": [callback]}
    status, head, redirect = await send(http, node, "task.suspend", suspend)
    assert (status, head) == (300, 300)
    assert redirect["preload"] == []  # the calls of branch s1 (its promise has a branch of its own)


async def test_pushes_go_to_the_group_a_timer_resolves_by_itself_listeners_hear(
    http: aiohttp.ClientSession, node: Node
) -> None:
    lines: asyncio.Queue[str] = asyncio.Queue()

    async def listen() -> None:
        async with http.get(node.url + "/poll/workers/pid-1") as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            async for raw in response.content:
                lines.put_nowait(raw.decode())

    stream = asyncio.ensure_future(listen())
    try:

        async def message() -> dict[str, Any]:
            while True:
                line = await asyncio.wait_for(lines.get(), 10)
                if line.startswith("data: "):
                    assert (await asyncio.wait_for(lines.get(), 10)) == "\n"  # LF framing
                    parsed: dict[str, Any] = json.loads(line[len("data: ") :])
                    return parsed

        await asyncio.sleep(0.2)
        assert (await send(http, node, "promise.create", targeted("d1", "workers")))[1] == 200
        assert await message() == {
            "kind": "execute",
            "head": {},
            "data": {"task": {"id": "d1", "version": 0}},
        }
        listener = {"awaited": "d1", "address": "poll://uni@workers/pid-1"}
        assert (await send(http, node, "promise.register_listener", listener))[1] == 200
        settle = {"id": "d1", "state": "rejected_canceled", "value": {}}
        assert (await send(http, node, "promise.settle", settle))[1] == 403  # an invocation's
        async with client(node) as api:
            await api.cancel("d1")
        unblock = await message()
        assert unblock["kind"] == "unblock"
        assert unblock["data"]["promise"]["state"] == "rejected_canceled"
        # A timer: no push (the node resolves it at its deadline).
        now = (await send(http, node, "promise.get", {"id": "d1"}))[2]["promise"]["createdAt"]
        timer = targeted("d2", "workers", **{"resonate:timer": "true"})
        timer.update(timeoutAt=now + 300, param={})
        assert (await send(http, node, "promise.create", timer))[1] == 200

        async def resolved() -> bool:
            record = (await send(http, node, "promise.get", {"id": "d2"}))[2]["promise"]
            return bool(record["state"] == "resolved")

        await eventually(resolved, "the timer to resolve", within=10, every=0.05)
        pushed = []
        while not lines.empty():
            pushed.append(lines.get_nowait())
        assert not [line for line in pushed if line.startswith("data:")]
    finally:
        stream.cancel()


KINDS = [
    "promise.get", "promise.create", "promise.settle", "promise.register_listener",
    "promise.register_callback", "promise.search", "task.create", "task.acquire",
    "task.fence", "task.suspend", "task.fulfill", "task.release", "task.heartbeat",
    "schedule.create", "schedule.get", "schedule.delete", "schedule.search",
]  # fmt: skip
FIELDS = [
    "id", "timeoutAt", "param", "value", "tags", "state", "awaited", "awaiter", "address",
    "limit", "cursor", "pid", "ttl", "version", "action", "actions", "tasks", "data", "kind",
    "cron", "promiseId", "promiseTimeout", "promiseParam", "promiseTags",
]  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=4)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    kind=st.sampled_from(KINDS),
    data=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6),
)
def test_no_request_makes_the_node_fail(shared: Node, kind: str, data: dict[str, Any]) -> None:
    """Whatever the data, an answer that names the problem: never a 500, never a crash."""
    body = json.dumps({"kind": kind, "head": {"corrId": "c"}, "data": data}).encode()
    port = int(shared.url.rsplit(":", 1)[1])
    connection = HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/", body, {"Authorization": f"Bearer {TOKEN}"})
        answer = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    assert answer["head"]["status"] != 500, (kind, data, answer)
    if answer["head"]["status"] >= 400:
        assert isinstance(answer["data"], str), answer
        assert answer["data"], answer
    assert shared.process.poll() is None


async def test_a_stopping_node_ends_its_poll_streams(
    http: aiohttp.ClientSession, node: Node
) -> None:
    """SIGTERM with an SDK listening: the stream ends and the node exits at once, not after
    its grace period (60 s by default) waiting for a stream that never ends by itself."""
    async with http.get(node.url + "/poll/g/p") as response:
        assert (await response.content.readline()).startswith(b":")
        node.terminate()
        assert await asyncio.wait_for(response.content.read(), 10) in (b"", b"\n")
    assert await node.exit_code(within=10) == 0
