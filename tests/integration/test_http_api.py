"""The HTTP API over a real socket on 127.0.0.1: every endpoint, errors, auth, long-poll."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dawait import Constant, Context, Resonate
from dawait.node._backend import NodeBackend
from dawait.node._http import NodeApi
from dawait.runtime._metrics import ENGINE_EVENTS

TOKEN = "s3cret-token"


@dataclass
class Item:
    sku: str
    count: int


async def add(a: int, b: int) -> int:
    return a + b


def make_app() -> Resonate:
    app = Resonate()

    @app.register(name="order")
    async def order(ctx: Context, item: Item, times: int = 1) -> dict[str, Any]:
        total = await ctx.run(add, item.count, times)
        return {"sku": item.sku, "total": total}

    @app.register(name="approve")
    async def approve(ctx: Context, who: str) -> str:
        decision = await ctx.promise(id=f"approval-{who}")
        return f"{who}: {decision}"

    failures = {"left": 2}

    async def flaky() -> str:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("try again")
        return "ok"

    @app.register(name="retrying")
    async def retrying(ctx: Context) -> str:
        step: str = await ctx.options(retry_policy=Constant(delay=0.01)).run(flaky)
        return step

    @app.register(name="boom")
    async def boom(ctx: Context) -> None:
        raise ValueError("no way")

    return app


@dataclass
class Node:
    url: str
    session: aiohttp.ClientSession
    app: Resonate

    async def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:  # fmt: skip
        kwargs: dict[str, Any] = {
            "headers": {"Authorization": f"Bearer {TOKEN}", **(headers or {})}
        }
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.url + path, **kwargs) as response:
            text = await response.text()
            try:
                return response.status, await response.json(content_type=None)
            except ValueError:
                return response.status, text


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    app = make_app()
    async with app:
        api = NodeApi(NodeBackend(app), token=TOKEN, max_body=64 * 1024)
        runner = web.AppRunner(api.web_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        async with aiohttp.ClientSession() as session:
            yield Node(f"http://127.0.0.1:{port}", session, app)
        await runner.cleanup()


async def test_start_is_idempotent_201_then_200_then_409(node: Node) -> None:
    body = {"id": "o1", "function": "order", "args": [{"sku": "lamp", "count": 2}]}
    status, first = await node.call("POST", "/invocations", body)
    assert status == 201
    assert first["id"] == "o1"
    assert first["function"] == "order"
    status, again = await node.call("POST", "/invocations", body)
    assert (status, again["id"]) == (200, "o1")
    status, other = await node.call(
        "POST", "/invocations", {**body, "args": [{"sku": "x", "count": 1}]}
    )
    assert status == 409
    assert other["error"] == "conflict"


async def test_result_long_polls_until_the_invocation_finishes(node: Node) -> None:
    body = {"id": "o2", "function": "order", "args": [{"sku": "a", "count": 1}]}
    await node.call("POST", "/invocations", {**body, "kwargs": {"times": 4}})
    status, result = await node.call("GET", "/invocations/o2/result?wait=10")
    assert status == 200
    assert result == {
        "id": "o2",
        "state": "resolved",
        "result": {"sku": "a", "total": 5},
        "error": None,
    }
    status, view = await node.call("GET", "/invocations/o2")
    assert view["state"] == "resolved"
    assert view["kwargs"] == {"times": 4}


async def test_start_with_wait_answers_with_the_outcome_in_one_request(node: Node) -> None:
    body = {"id": "w1", "function": "order", "args": [{"sku": "a", "count": 1}]}
    status, view = await node.call("POST", "/invocations?wait=10", body)
    assert (status, view["state"], view["result"]) == (201, "resolved", {"sku": "a", "total": 2})
    status, again = await node.call("POST", "/invocations?wait=10", body)
    assert (status, again["result"]) == (200, {"sku": "a", "total": 2})

    # Not finished within the wait: the view says pending, and the invocation goes on.
    waiting = {"id": "w2", "function": "approve", "args": ["bob"]}
    status, view = await node.call("POST", "/invocations?wait=0.2", waiting)
    assert (status, view["state"]) == (201, "pending")
    await node.call("POST", "/promises/approval-bob/resolve", {"value": "ok"})
    status, view = await node.call("POST", "/invocations?wait=10", waiting)
    assert (status, view["state"], view["result"]) == (200, "resolved", "bob: ok")

    status, error = await node.call("POST", "/invocations?wait=soon", body)
    assert (status, error["error"], error["field"]) == (422, "invalid", "wait")


async def test_result_without_wait_reports_pending(node: Node) -> None:
    await node.call("POST", "/invocations", {"id": "a1", "function": "approve", "args": ["ann"]})
    status, result = await node.call("GET", "/invocations/a1/result")
    assert (status, result["state"]) == (200, "pending")
    waiter = asyncio.ensure_future(node.call("GET", "/invocations/a1/result?wait=30"))
    await asyncio.sleep(0)
    status, resolved = await node.call("POST", "/promises/approval-ann/resolve", {"value": "yes"})
    assert (status, resolved["state"]) == (200, "resolved")
    status, result = await waiter
    assert result["result"] == "ann: yes"


async def test_a_failed_invocation_reports_its_error(node: Node) -> None:
    await node.call("POST", "/invocations", {"id": "b1", "function": "boom"})
    status, result = await node.call("GET", "/invocations/b1/result?wait=10")
    assert status == 200
    assert result["state"] == "rejected"
    assert result["error"] == {"type": "builtins.ValueError", "message": "no way"}


async def test_cancel_tree_and_list(node: Node) -> None:
    await node.call("POST", "/invocations", {"id": "a2", "function": "approve", "args": ["bob"]})
    await node.call("POST", "/invocations", {"id": "o3", "function": "order",
                                              "args": [{"sku": "s", "count": 1}]})  # fmt: skip
    await node.call("GET", "/invocations/o3/result?wait=10")
    status, tree = await node.call("GET", "/invocations/o3/tree")
    assert status == 200
    assert tree["kind"] == "invocation"
    assert [(c["id"], c["kind"], c["function"], c["state"]) for c in tree["children"]] == [
        ("o3:1", "step", "add", "resolved")
    ]
    status, canceled = await node.call("POST", "/invocations/a2/cancel")
    assert (status, canceled["state"]) == (200, "rejected_canceled")
    status, page = await node.call("GET", "/invocations?state=resolved")
    assert [v["id"] for v in page["items"]] == ["o3"]
    status, page = await node.call("GET", "/invocations?function=approve")
    assert [v["id"] for v in page["items"]] == ["a2"]
    status, page = await node.call("GET", "/invocations?limit=1")
    assert len(page["items"]) == 1
    assert page["cursor"] is not None
    status, rest = await node.call("GET", f"/invocations?limit=10&cursor={page['cursor']}")
    assert {v["id"] for v in page["items"] + rest["items"]} == {"a2", "o3"}


async def test_delete_removes_a_settled_invocation_and_frees_its_id(node: Node) -> None:
    body = {"id": "del1", "function": "order", "args": [{"sku": "a", "count": 1}]}
    status, _ = await node.call("POST", "/invocations?wait=10", body)
    assert status == 201
    status, tree = await node.call("GET", "/invocations/del1/tree")
    step = tree["children"][0]["id"]
    status, refused = await node.call("DELETE", f"/promises/{step}")
    assert (status, refused["error"]) == (409, "not_deletable")
    assert "a call of 'del1'" in refused["message"]

    status, _ = await node.call("DELETE", "/invocations/del1")
    assert status == 204
    status, gone = await node.call("GET", "/invocations/del1")
    assert (status, gone["error"]) == (404, "not_found")
    assert (await node.call("GET", f"/promises/{step}"))[0] == 404
    assert (await node.call("DELETE", "/invocations/del1"))[0] == 404
    # The id is free: starting it again runs it again.
    status, again = await node.call("POST", "/invocations?wait=10", body)
    assert (status, again["state"]) == (201, "resolved")


async def test_delete_refuses_what_is_pending(node: Node) -> None:
    await node.call("POST", "/invocations", {"id": "del2", "function": "approve", "args": ["x"]})
    status, refused = await node.call("DELETE", "/invocations/del2")
    assert (status, refused["error"]) == (409, "not_deletable")
    assert "'del2' is pending" in refused["message"]
    assert (await node.call("GET", "/invocations/del2"))[1]["state"] == "pending"
    await node.call("POST", "/promises", {"id": "api-del"})
    assert (await node.call("DELETE", "/promises/api-del"))[0] == 409
    await node.call("POST", "/promises/api-del/resolve", {"value": 1})
    assert (await node.call("DELETE", "/promises/api-del"))[0] == 204
    assert (await node.call("GET", "/promises/api-del"))[0] == 404


async def test_promises_endpoints(node: Node) -> None:
    status, created = await node.call(
        "POST", "/promises", {"id": "p1", "timeout": 60, "data": {"k": 1}}
    )
    assert (status, created["state"], created["param"]) == (201, "pending", {"k": 1})
    status, _ = await node.call("POST", "/promises", {"id": "p1"})
    assert status == 200
    status, got = await node.call("GET", "/promises/p1")
    assert got["id"] == "p1"
    status, resolved = await node.call("POST", "/promises/p1/resolve", {"value": [1, 2]})
    assert (status, resolved["value"]) == (200, [1, 2])
    status, same = await node.call("POST", "/promises/p1/resolve", {"value": [1, 2]})
    assert (status, same["value"]) == (200, [1, 2])
    status, conflict = await node.call("POST", "/promises/p1/resolve", {"value": 3})
    assert (status, conflict["error"]) == (409, "already_settled")
    await node.call("POST", "/promises", {"id": "p2"})
    status, rejected = await node.call("POST", "/promises/p2/reject", {"error": "nope"})
    assert rejected["error"] == {"type": "Exception", "message": "nope"}
    await node.call("POST", "/promises", {"id": "p3"})
    status, canceled = await node.call("POST", "/promises/p3/cancel")
    assert canceled["state"] == "rejected_canceled"
    status, page = await node.call("GET", "/promises?id=p*&state=resolved")
    assert [p["id"] for p in page["items"]] == ["p1"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error", "field"),
    [
        ("POST", "/invocations", {"id": "x", "function": "nope"}, 404, "unknown_function", None),
        (
            "POST",
            "/invocations",
            {"id": "x", "function": "order", "args": [{"sku": 1}]},
            422,
            "invalid_arguments",
            None,
        ),
        ("POST", "/invocations", {"id": "x:1", "function": "order"}, 422, "invalid", "id"),
        ("POST", "/invocations", {"function": "order"}, 422, "invalid", "id"),
        (
            "POST",
            "/invocations",
            {"id": "x", "function": "order", "extra": 1},
            422,
            "invalid",
            "extra",
        ),
        ("GET", "/invocations/missing", None, 404, "not_found", None),
        ("GET", "/invocations/missing/result", None, 404, "not_found", None),
        ("GET", "/invocations/missing/tree", None, 404, "not_found", None),
        ("POST", "/invocations/missing/cancel", None, 404, "not_found", None),
        ("GET", "/invocations?limit=0", None, 422, "invalid", "limit"),
        ("GET", "/invocations?state=bogus", None, 422, "invalid", "state"),
        ("GET", "/invocations/x/result?wait=-1", None, 422, "invalid", "wait"),
        ("GET", "/promises/missing", None, 404, "not_found", None),
        ("POST", "/promises/missing/resolve", {"value": 1}, 404, "not_found", None),
        ("POST", "/promises", {"id": ""}, 422, "invalid", "id"),
        ("GET", "/nowhere", None, 404, "not_found", None),
        ("DELETE", "/invocations", None, 405, "method_not_allowed", None),
    ],
)  # fmt: skip
async def test_bad_input_gets_a_4xx_json_error(
    node: Node, method: str, path: str, body: Any, status: int, error: str, field: str | None
) -> None:
    got_status, got = await node.call(method, path, body)
    assert got_status == status
    assert got["error"] == error
    assert got["message"]
    if field is not None:
        assert got["field"] == field


async def test_malformed_json_is_400_and_a_large_body_413(node: Node) -> None:
    status, body = await node.call("POST", "/invocations", raw=b"{not json")
    assert (status, body["error"]) == (400, "malformed_json")
    big = b'{"id": "x", "function": "order", "args": ["' + b"a" * (70 * 1024) + b'"]}'
    status, body = await node.call("POST", "/invocations", raw=big)
    assert (status, body["error"]) == (413, "too_large")


async def test_auth_is_required_except_for_health(node: Node) -> None:
    async with node.session.get(node.url + "/invocations") as response:
        assert response.status == 401
        assert (await response.json())["error"] == "unauthorized"
    async with node.session.get(
        node.url + "/invocations", headers={"Authorization": "Bearer wrong"}
    ) as response:
        assert response.status == 401
    for path in ("/healthz", "/readyz"):
        async with node.session.get(node.url + path) as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ok"


async def test_metrics_and_openapi(node: Node) -> None:
    await node.call("POST", "/invocations", {"id": "m1", "function": "order",
                                              "args": [{"sku": "s", "count": 1}]})  # fmt: skip
    await node.call("GET", "/invocations/m1/result?wait=10")
    status, text = await node.call("GET", "/metrics")
    assert status == 200
    assert 'dawait_invocations_completed_total{function="order"} 1.0' in text
    assert "dawait_steps_total 1.0" in text
    assert "dawait_active_invocations" in text
    for name, _help in ENGINE_EVENTS.values():  # every event the engine counts
        assert f"{name}_total " in text, name
    status, spec = await node.call("GET", "/openapi.json")
    assert spec["openapi"].startswith("3.")
    assert "/invocations/{id}/result" in spec["paths"]
    assert "CreateInvocation" in spec["components"]["schemas"]


async def test_two_clients_starting_the_same_id_at_once_run_it_once(node: Node) -> None:
    body = {"id": "same", "function": "order", "args": [{"sku": "z", "count": 1}]}
    results = await asyncio.gather(*(node.call("POST", "/invocations", body) for _ in range(8)))
    assert sorted(status for status, _ in results) == [200] * 7 + [201]
    status, result = await node.call("GET", "/invocations/same/result?wait=10")
    assert (status, result["result"]) == (200, {"sku": "z", "total": 2})
    assert node.app._engine.metrics.by_function[("started", "order")] == 1


async def test_the_tree_counts_a_steps_attempts(node: Node) -> None:
    await node.call("POST", "/invocations", {"id": "r1", "function": "retrying"})
    status, result = await node.call("GET", "/invocations/r1/result?wait=10")
    assert (status, result["result"]) == (200, "ok")
    status, tree = await node.call("GET", "/invocations/r1/tree")
    assert [(c["function"], c["attempts"]) for c in tree["children"]] == [
        ("make_app.<locals>.flaky", 3)
    ]
    assert tree["attempts"] == 1


async def test_405_names_the_allowed_methods_and_nan_is_not_json(node: Node) -> None:
    async with node.session.delete(
        node.url + "/invocations", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as response:
        assert response.status == 405
        assert "POST" in response.headers["Allow"]
    status, body = await node.call("POST", "/promises", raw=b'{"id": "n", "data": NaN}')
    assert (status, body["error"]) == (400, "malformed_json")


@pytest.mark.parametrize("timeout", [False, "5", [1]])
async def test_a_timeout_must_be_a_number(node: Node, timeout: Any) -> None:
    status, body = await node.call("POST", "/promises", {"id": "t", "timeout": timeout})
    assert (status, body["error"], body["field"]) == (422, "invalid", "timeout")
    status, _ = await node.call("GET", "/promises/t")
    assert status == 404
