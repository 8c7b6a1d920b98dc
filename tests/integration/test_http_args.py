"""Arguments sent over the HTTP API are decoded strictly, on a real ``dawait serve``: a
JSON string is no number and no bool (422 ``invalid_arguments``, one line naming the
function, the parameter, the type and what was sent, nothing stored), while an ISO string
is a datetime and an object a model. Python callers over the API (``Resonate(url=...)``)
keep their types. The same id with another call is a 409 saying what differs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from dawait import Resonate
from dawait.errors import InvocationConflictError, PromiseNotFoundError, SerializationError
from tests.integration.args_app import Line, Order
from tests.integration.served import TOKEN, Node, Nodes, at, client

APP = "tests.integration.args_app:app"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One node for the module (each test uses its own ids)."""
    nodes = Nodes(tmp_path_factory.mktemp("args"))
    try:
        yield nodes.start(
            "args", "--app", APP, "--port", "0", "--token", TOKEN, "--store", nodes.store
        )
    finally:
        nodes.kill_all()


async def post(node: Node, path: str, body: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(node.url + path, json=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def start(node: Node, id: str, function: str, *args: Any, **kwargs: Any) -> tuple[int, Any]:
    body = {"id": id, "function": function, "args": list(args), "kwargs": kwargs}
    return await post(node, "/invocations?wait=10", body)


async def refused(node: Node, id: str, function: str, *args: Any, **kwargs: Any) -> str:
    """The message of a 422 ``invalid_arguments``, checking nothing was stored."""
    status, body = await start(node, id, function, *args, **kwargs)
    assert (status, body["error"]) == (422, "invalid_arguments"), body
    async with client(node) as api:
        with pytest.raises(PromiseNotFoundError):
            await api.invocation(id)
    message: str = body["message"]
    assert "\n" not in message
    return message


async def test_a_string_is_not_a_number_nor_a_bool(node: Node) -> None:
    assert await refused(node, "s-int", "add", "1") == (
        """add(): parameter 'n' expects int, got str "1\""""
    )
    assert await refused(node, "s-kw", "add", 1, by="2") == (
        """add(): parameter 'by' expects int, got str "2\""""
    )
    assert await refused(node, "s-float", "add", 1.5) == (
        "add(): parameter 'n' expects int, got float 1.5"
    )
    assert await refused(node, "s-bool", "negate", "yes") == (
        """negate(): parameter 'on' expects bool, got str "yes\""""
    )
    assert await refused(node, "s-bool-int", "negate", 1) == (
        "negate(): parameter 'on' expects bool, got int 1"
    )


async def test_json_of_the_right_type_is_admitted(node: Node) -> None:
    status, body = await start(node, "ok-int", "add", 1, by=2)
    assert (status, body["state"], body["result"]) == (201, "resolved", 3), body
    status, body = await start(node, "ok-bool", "negate", False)
    assert (status, body["result"]) == (201, True), body
    status, body = await start(node, "ok-when", "weekday", "2026-01-01T00:00:00Z")
    assert (status, body["result"]) == (201, "Thursday 0:00:00"), body
    order = {"id": "o-1", "lines": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 3}]}
    status, body = await start(
        node, "ok-model", "shop.ship", {**order, "due": "2026-02-03T10:00:00+01:00"}
    )
    assert (status, body["result"]) == (201, "o-1: 5 due 2026-02-03"), body


async def test_a_misfit_inside_a_model_names_its_path(node: Node) -> None:
    message = await refused(
        node, "s-nested", "shop.ship", {"id": "o-2", "lines": [{"sku": "a", "qty": "2"}]}
    )
    assert message == (
        "shop.ship(): parameter 'order' expects Order: lines.0.qty: "
        """Input should be a valid integer, got str "2\""""
    )
    message = await refused(node, "s-when", "weekday", "next thursday")
    assert message.startswith("weekday(): parameter 'when' expects datetime: "), message
    assert """got str "next thursday\"""" in message
    assert await refused(node, "s-object", "shop.ship", "o-3") == (
        """shop.ship(): parameter 'order' expects Order, got str "o-3\""""
    )


async def test_the_client_and_the_cli_get_the_same_message(node: Node) -> None:
    async with client(node) as api:
        with pytest.raises(SerializationError) as raised:
            await api.start("c-int", "add", ["1"], {})
    assert str(raised.value) == """add(): parameter 'n' expects int, got str "1\""""
    ran = await at(node, "invoke", "c-cli", "add", '["1"]')
    assert (ran.code, ran.out) == (2, ""), str(ran)
    assert ran.err == """dawait: add(): parameter 'n' expects int, got str "1"\n""", str(ran)


async def test_python_callers_over_the_api_keep_their_types(node: Node) -> None:
    when = dt.datetime(2026, 1, 1, 9, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    order = Order(id="o-4", lines=[Line(sku="a", qty=4)], due=when)
    async with Resonate(url=node.url, token=TOKEN) as app:
        assert await app.run("py-when", "weekday", when) == "Thursday 2:00:00"
        assert await app.run("py-model", "shop.ship", order) == "o-4: 4 due 2026-01-01"
        assert await app.run("py-int", "add", 5) == 6


async def test_the_same_id_with_another_call_is_a_409_saying_what_differs(node: Node) -> None:
    order = {"id": "o-5", "lines": [{"sku": "a", "qty": 1}]}
    status, _body = await start(node, "order-5", "shop.ship", order)
    assert status == 201
    existing = """invocation 'order-5' already exists as shop.ship({"id":"o-5","lines":[{"sku":"a","qty":1}],"due":null}) v1"""  # noqa: E501
    status, body = await start(node, "order-5", "shop.ship", order)
    assert status == 200, body
    status, body = await start(node, "order-5", "shop.refund", order)
    assert (status, body["error"]) == (409, "conflict"), body
    assert body["message"] == (
        f"""{existing}; this call is shop.refund({{"id":"o-5","lines":[{{"sku":"a","qty":1}}],"due":null}}) v1, of another function"""  # noqa: E501
    )
    changed = {"id": "o-5", "lines": [{"sku": "a", "qty": 7}, {"sku": "b", "qty": 1}]}
    status, body = await start(node, "order-5", "shop.ship", changed)
    assert (status, body["error"]) == (409, "conflict"), body
    assert body["message"] == (
        f"{existing}; this call has other arguments: args[0].lines[0].qty is 7 (was 1); "
        """args[0].lines[1] is {"sku":"b","qty":1} (was absent)"""
    )
    huge = {"id": "o-5", "lines": [{"sku": "x" * 100_000, "qty": 1}]}
    status, body = await start(node, "order-5", "shop.ship", huge)
    assert status == 409, body
    assert len(body["message"]) < 400, body["message"]
    assert 'args[0].lines[0].sku is "xxxxxxxx' in body["message"]
    async with client(node) as api:
        with pytest.raises(InvocationConflictError, match=r"qty is 7 \(was 1\)"):
            await api.start("order-5", "shop.ship", [changed], {})


async def test_a_schedule_over_the_api_takes_its_arguments_strictly(node: Node) -> None:
    body = {"id": "every-minute", "cron": "* * * * *", "function": "add", "args": ["1"]}
    status, error = await post(node, "/schedules", body)
    assert (status, error["error"]) == (422, "invalid_arguments"), error
    assert error["message"] == "add(): parameter 'n' expects int, got str \"1\"", error
    async with client(node) as api:
        assert [s.id for s in (await api.schedules()).items if s.id == "every-minute"] == []
    status, created = await post(node, "/schedules", {**body, "args": [1]})
    assert status == 201, created
