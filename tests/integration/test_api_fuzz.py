"""Fuzzing the node's HTTP API: no request gets a 5xx, every error is a JSON
``{error, message, field?}``, and ``/openapi.json`` is a valid OpenAPI 3.1 document.

schemathesis generates requests from the served document, in all its phases (examples,
coverage, fuzzing, and stateful sequences through the links it infers, like
``POST /invocations`` then ``GET /invocations/{id}/result``), valid and schema-violating
alike, and checks the answers against the document. Hypothesis adds what the document does
not describe: any method on any path, odd ids, unknown query parameters, wrong content types,
garbage, deep and large bodies, and arguments of every shape for the functions the node
serves. Inputs that once got a 5xx are pinned as plain cases at the end.

The node runs in a thread with its own event loop (schemathesis and ``http.client`` block),
on 127.0.0.1:0, over a real SQLite file, with a token. Seeds are fixed and no example
database is kept, so every run sends the same requests.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import http.client
import json
import logging
import queue
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pydantic
import pytest
import schemathesis
import schemathesis.engine as st_engine
import schemathesis.engine.events as st_events
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate as validate_openapi

from dawait import Context, Resonate
from dawait.node._backend import NodeBackend
from dawait.node._http import DEFAULT_MAX_BODY, NodeApi
from tests.integration.test_http_api import make_app as make_http_app

TOKEN = "fuzz-token"
BEARER = f"Bearer {TOKEN}"
SEED = 20261125
ERROR_KEYS = {"error", "message", "field"}

FUZZ = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

DOCUMENTED = [
    ("POST", "/invocations"),
    ("GET", "/invocations"),
    ("GET", "/invocations/{id}"),
    ("GET", "/invocations/{id}/result"),
    ("POST", "/invocations/{id}/cancel"),
    ("DELETE", "/invocations/{id}"),
    ("GET", "/invocations/{id}/tree"),
    ("POST", "/promises"),
    ("GET", "/promises"),
    ("GET", "/promises/{id}"),
    ("DELETE", "/promises/{id}"),
    ("POST", "/promises/{id}/resolve"),
    ("POST", "/promises/{id}/reject"),
    ("POST", "/promises/{id}/cancel"),
    ("POST", "/schedules"),
    ("GET", "/schedules"),
    ("GET", "/schedules/{id}"),
    ("DELETE", "/schedules/{id}"),
    ("GET", "/nodes"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
]
BODY_ROUTES = [path for method, path in DOCUMENTED if method == "POST" and "cancel" not in path]


# -- the app the node serves ---------------------------------------------------------------


class Address(pydantic.BaseModel):
    street: str
    zip: str = pydantic.Field(pattern=r"^\d{5}$")


def make_app() -> Resonate:
    """The HTTP API tests' app (order, approve, retrying, boom), plus arguments of more
    shapes for the fuzzer."""
    app = make_http_app()

    @app.register(name="ship")
    async def ship(ctx: Context, to: Address, at: dt.datetime, note: str | None = None) -> str:
        await ctx.sleep(dt.timedelta(milliseconds=1))
        return f"{to.street} {at.isoformat()} {note}"

    @app.register(name="echo")
    async def echo(ctx: Context, value: Any) -> Any:
        return value

    return app


FUNCTIONS = ["order", "ship", "approve", "echo", "boom", "retrying"]


# -- what every answer must be -------------------------------------------------------------


def error_body_problem(status: int, content_type: str, content: bytes, method: str) -> str | None:
    """Why this answer breaks the error contract, or None."""
    if status < 400 or method == "HEAD":
        return None
    if not content_type.startswith("application/json"):
        return f"a {status} error is {content_type or 'untyped'}, not JSON"
    try:
        body = json.loads(content)
    except ValueError:
        return f"a {status} error body is not JSON"
    if not isinstance(body, dict) or not {"error", "message"} <= body.keys() <= ERROR_KEYS:
        return f"a {status} error body is not {{error, message, field?}}"
    if not (isinstance(body["error"], str) and body["error"]):
        return "its error is not a non-empty string"
    if not isinstance(body["message"], str):
        return "its message is not a string"
    if "field" in body and not isinstance(body["field"], str):
        return "its field is not a string"
    return None


@dataclass(frozen=True)
class Reply:
    sent: str
    method: str
    status: int
    headers: dict[str, str]
    content: bytes
    logged: list[str]
    """What the node logged at ERROR while answering (a traceback for each 5xx)."""

    def check(self) -> Reply:
        """Below 500, and an error is ``{error, message, field?}``."""
        shown = f"{self.sent[:2000]}\n-> {self.status} {self.content[:1000]!r}"
        log = "\n".join(self.logged)[-3000:] or "-"
        assert self.status < 500, f"{shown}\nnode log:\n{log}"
        content_type = self.headers.get("content-type", "")
        problem = error_body_problem(self.status, content_type, self.content, self.method)
        assert problem is None, f"{problem}\n{shown}"
        return self

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass
class ServedNode:
    url: str
    port: int
    logged: list[str] = field(default_factory=list)

    def send(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One request on a fresh connection, ``target`` sent as it is."""
        headers = {"Authorization": BEARER, **(headers or {})}
        before = len(self.logged)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.putrequest(method, target, skip_accept_encoding=True)
            for name, value in headers.items():
                connection.putheader(name, value)
            if body is not None:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            status, got, content = response.status, response.getheaders(), response.read()
        finally:
            connection.close()
        shown = f"{method} {target} {headers} {(body or b'')[:500]!r}"
        return Reply(
            shown,
            method,
            status,
            {name.lower(): value for name, value in got},
            content,
            self.logged[before:],
        )

    def call(self, method: str, target: str, body: Any = None) -> Reply:
        """A JSON request, its answer checked."""
        raw = None if body is None else json.dumps(body).encode()
        return self.send(method, target, raw, {"Content-Type": "application/json"}).check()


class _Tracebacks(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(self.format(record))


async def _serve(store: str, ready: queue.Queue[Any]) -> None:
    app = make_app()
    app.use_store(store)
    stop = asyncio.Event()
    async with app:
        api = NodeApi(NodeBackend(app), token=TOKEN, max_body=DEFAULT_MAX_BODY)
        runner = web.AppRunner(api.web_app(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
            ready.put((asyncio.get_running_loop(), stop, port))
            await stop.wait()
        finally:
            await runner.cleanup()


SEEDED: dict[str, list[dict[str, Any]]] = {
    "/invocations": [
        {"id": "o-1", "function": "order", "args": [{"sku": "lamp", "count": 1}]},
        {"id": "a-1", "function": "approve", "args": ["ann"]},  # waits on approval-ann
    ],
    "/promises": [{"id": "p-1", "timeout": 3600, "data": {"k": 1}}],
    "/schedules": [{"id": "s-1", "cron": "0 0 1 1 *", "function": "echo", "args": [1]}],
}


def seed(node: ServedNode) -> None:
    """Records for the ids the requests below draw first to find."""
    for path, bodies in SEEDED.items():
        for body in bodies:
            assert node.call("POST", path, body).status == 201, (path, body)
    assert node.call("GET", "/invocations/o-1/result?wait=10").json()["state"] == "resolved"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNode]:
    db = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    ready: queue.Queue[Any] = queue.Queue()

    def run() -> None:
        try:
            asyncio.run(_serve(f"sqlite:///{db}?fsync=false", ready))
        except BaseException as exc:
            ready.put(exc)
            raise

    thread = threading.Thread(target=run, name="fuzzed-node", daemon=True)
    thread.start()
    started = ready.get(timeout=30)
    if isinstance(started, BaseException):
        raise started
    loop, stop, port = started
    served = ServedNode(f"http://127.0.0.1:{port}", port)
    tracebacks = _Tracebacks(served.logged)
    logging.getLogger("dawait").addHandler(tracebacks)
    try:
        seed(served)
        yield served
    finally:
        logging.getLogger("dawait").removeHandler(tracebacks)
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def document(node: ServedNode) -> dict[str, Any]:
    reply = node.call("GET", "/openapi.json")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/json")
    doc: dict[str, Any] = reply.json()
    return doc


# -- the document --------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate_openapi(document)
    assert document["openapi"].startswith("3.1")
    served = [
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    ]
    assert sorted(served) == sorted(DOCUMENTED), "the routes changed: update DOCUMENTED"
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if operation.get("security"):
                assert "401" in responses, f"{method} {path}"
            for status, response in responses.items():
                if int(status) >= 400:
                    assert response["content"] == error, f"{method} {path} {status}"


# -- schemathesis, from the document -------------------------------------------------------


@schemathesis.check
def error_body_is_json(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    """4xx bodies are ``{error, message, field?}``."""
    content_type = next(
        (v[0] for k, v in response.headers.items() if k.lower() == "content-type" and v), ""
    )
    problem = error_body_problem(
        response.status_code, content_type, response.content, case.method.upper()
    )
    if problem is not None:
        raise AssertionError(problem)
    return None


CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "error_body_is_json",
]


def run_schemathesis(url: str, document: dict[str, Any]) -> list[str]:
    """All of schemathesis' phases over the whole document, as ``st run`` runs them: each
    failing request, with the checks it failed, the answer and a curl to replay it.

    (Its pytest plugin, ``@schema.parametrize()``, does not run on pytest 9: it sets the
    removed ``Node._nodeid``.)"""
    config = schemathesis.Config.from_dict(
        {
            "base-url": url,
            "headers": {"Authorization": BEARER},
            "seed": SEED,
            "request-timeout": 30,
            "generation": {
                "mode": "all",
                "max-examples": 25,
                "deterministic": True,
                "database": "none",
            },
            "checks": {"enabled": False} | {name: {"enabled": True} for name in CHECKS},
        }
    )
    schema = schemathesis.openapi.from_dict(document, config=config)
    failed: dict[str, list[str]] = {}
    answers: dict[str, str] = {}
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, st_events.FatalError):
            raise event.exception
        if isinstance(event, st_events.NonFatalError):
            failed.setdefault(f"{event.label}: schemathesis failed: {event.value!r}", [])
        if not isinstance(event, st_events.ScenarioFinished):
            continue
        for case_id, checks in event.recorder.checks.items():
            for check in checks:
                info = check.failure_info
                if check.status != st_engine.Status.FAILURE or info is None:
                    continue
                key = f"{event.label}\n{info.code_sample[:3000]}"
                failed.setdefault(key, []).append(f"{check.name}: {info.failure.title}")
                interaction = event.recorder.interactions.get(case_id)
                if interaction is not None and interaction.response is not None:
                    answer = interaction.response
                    answers[key] = f"-> {answer.status_code} {answer.content[:500]!r}"
    return [
        f"{key}\n{answers.get(key, '')}\n" + "; ".join(sorted(set(names)))
        for key, names in failed.items()
    ]


def test_a_wait_past_the_cap_is_refused(node: ServedNode) -> None:
    result = node.call("GET", "/invocations/a-1/result?wait=300.5")
    start = node.call(
        "POST", "/invocations?wait=301", {"id": "w-1", "function": "echo", "args": [1]}
    )
    for reply in (result, start):
        assert reply.status == 422
        assert reply.json()["field"] == "wait"
        assert "between 0 and 300" in reply.json()["message"]
    assert node.call("GET", "/invocations/w-1").status == 404


SCHEMATHESIS_WAIT = 2


def with_short_waits(document: dict[str, Any]) -> dict[str, Any]:
    """The document with every ``wait`` parameter capped at ``SCHEMATHESIS_WAIT`` seconds.

    A long-poll on a pending invocation (the seeded ``a-1`` waits on a promise nobody
    settles) lasts as long as it was asked, up to 300 s: longer than the run's read timeout.
    The cap at 300 itself is checked by ``test_a_wait_past_the_cap_is_refused``."""
    narrowed = copy.deepcopy(document)
    for operations in narrowed["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "wait":
                    parameter["schema"]["maximum"] = SCHEMATHESIS_WAIT
    return narrowed


def test_schemathesis_finds_no_5xx_and_nothing_off_the_document(
    node: ServedNode, document: dict[str, Any]
) -> None:
    failures = run_schemathesis(node.url, with_short_waits(document))
    assert not failures, f"{len(failures)} failing requests:\n\n" + "\n\n".join(failures)


# -- hypothesis, beyond the document -------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def nested(depth: int, array: bool) -> bytes:
    """A JSON document ``depth`` arrays or objects deep."""
    if array:
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"null" + b"}" * depth


bodies = st.one_of(
    st.none(),
    st.binary(max_size=64),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.builds(nested, st.sampled_from([2_000, 20, 50_000]), st.booleans()),
    st.integers(min_value=DEFAULT_MAX_BODY - 64, max_value=DEFAULT_MAX_BODY + 64).map(
        lambda size: b'"' + b"a" * (size - 2) + b'"'
    ),
)

ids = st.one_of(
    st.sampled_from(["o-1", "approval-ann", "p-1", "s-1", "o-1:1", ".", "..", "%", "%zz", " "]),
    st.text(min_size=1, max_size=40),
    # past the 512 characters an id may have, within the request line aiohttp reads
    st.text(alphabet="abc-_.~", min_size=600, max_size=3000),
)

query = st.lists(
    st.tuples(
        st.sampled_from(["state", "function", "limit", "cursor", "wait", "id", "x"]),
        st.sampled_from(["", "0", "-1", "1000", "1001", "nan", "inf", "1e309", "pending", "*"])
        | st.text(max_size=20),
    ),
    max_size=4,
)

content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/octet-stream",
    ]
)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
ODD_PATHS = ["/{id}", "/invocations/{id}/{id}", "/promises/{id}/", "//invocations", "/"]


@st.composite
def any_request(draw: st.DrawFn) -> tuple[str, str, bytes | None, dict[str, str]]:
    kind = draw(st.integers(0, 9))
    if kind < 4:
        method, template = "POST", draw(st.sampled_from(BODY_ROUTES))
    elif kind < 8:
        method, template = draw(st.sampled_from(DOCUMENTED))
    else:
        method = draw(st.sampled_from(METHODS))
        template = draw(st.sampled_from([path for _, path in DOCUMENTED] + ODD_PATHS))
    safe = draw(st.sampled_from(["", "/", "/%:@!$&'()*+,;="]))
    path = template.replace("{id}", urllib.parse.quote(draw(ids), safe=safe))
    params = draw(query)
    target = path + ("?" + urllib.parse.urlencode(params) if params else "")
    headers = {"Authorization": draw(st.sampled_from([BEARER, BEARER, BEARER, "", "Bearer x"]))}
    content_type = draw(content_types)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return method, target, draw(bodies), headers


@FUZZ
@given(request=any_request())
def test_any_request_answers_without_a_5xx(
    node: ServedNode, request: tuple[str, str, bytes | None, dict[str, str]]
) -> None:
    node.send(*request).check()


@st.composite
def invocation_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": draw(st.text(min_size=1, max_size=30).filter(lambda s: ":" not in s)),
        "function": draw(st.sampled_from(FUNCTIONS) | st.text(min_size=1, max_size=10)),
    }
    item = st.fixed_dictionaries({"sku": st.text(max_size=5), "count": st.integers()})
    address = st.fixed_dictionaries({"street": st.text(max_size=5), "zip": st.text(max_size=6)})
    at = st.datetimes().map(lambda d: d.isoformat()) | st.text(max_size=10)
    args = st.one_of(
        st.lists(json_values, max_size=3),
        st.tuples(item).map(list),
        st.tuples(address, at).map(list),
    )
    if draw(st.booleans()):
        body["args"] = draw(args)
    if draw(st.booleans()):
        names = st.sampled_from(["times", "note", "value", "who", "x"])
        body["kwargs"] = draw(st.dictionaries(names, json_values, max_size=3))
    if draw(st.booleans()):
        body["version"] = draw(st.integers(min_value=-2, max_value=2**64) | json_values)
    return body


@FUZZ
@given(body=invocation_bodies())
def test_starting_any_call_answers_without_a_5xx(node: ServedNode, body: dict[str, Any]) -> None:
    reply = node.call("POST", "/invocations", body)
    if reply.status in (200, 201):
        target = "/invocations/" + urllib.parse.quote(reply.json()["id"], safe="")
        node.call("GET", target + "/result?wait=0.05")
        node.call("GET", target + "/tree")
        node.call("GET", target)


@FUZZ
@given(
    id=st.text(min_size=1, max_size=20),
    timeout=st.none() | st.floats(min_value=0, max_value=1e9) | st.floats(),
    data=json_values,
    outcome=st.sampled_from(["resolve", "reject", "cancel"]),
    value=json_values,
)
def test_promises_of_any_shape_answer_without_a_5xx(
    node: ServedNode, id: str, timeout: float | None, data: Any, outcome: str, value: Any
) -> None:
    quoted = urllib.parse.quote(id, safe="")
    node.call("POST", "/promises", {"id": id, "timeout": timeout, "data": data})
    body = {"value": value} if outcome == "resolve" else {"error": str(value)}
    node.call("POST", f"/promises/{quoted}/{outcome}", None if outcome == "cancel" else body)
    node.call("GET", f"/promises/{quoted}")
    node.call("GET", "/promises?" + urllib.parse.urlencode({"id": id}))


# -- inputs that got a 5xx once, pinned ----------------------------------------------------


@pytest.mark.parametrize("path", [p.replace("{id}", "p-1") for p in BODY_ROUTES])
@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_a_4xx(node: ServedNode, path: str, depth: int) -> None:
    reply = node.send("POST", path, nested(depth, True), {"Content-Type": "application/json"})
    assert 400 <= reply.check().status < 500


@pytest.mark.parametrize(
    "timeout",
    [
        1e12,  # past the year 9999
        5.061530002319527e16,  # past a 64-bit count of milliseconds
        1.7976931348623157e308,  # infinite once in milliseconds
    ],
)
def test_a_timeout_past_any_date_is_refused_or_kept_readable(
    node: ServedNode, timeout: float
) -> None:
    id = f"far-{timeout:g}"
    created = node.call("POST", "/promises", {"id": id, "timeout": timeout}).status
    got = node.call("GET", "/promises/" + urllib.parse.quote(id, safe="")).status
    assert (created, got) in {(201, 200), (422, 404), (400, 404)}
    assert node.call("GET", "/promises?" + urllib.parse.urlencode({"id": id})).status == 200


def test_a_request_line_too_long_for_aiohttp_is_a_4xx(node: ServedNode) -> None:
    # aiohttp's parser answers this before the API sees it (in text, not the API's JSON):
    # only the status is the node's to keep below 500.
    assert 400 <= node.send("GET", "/invocations/" + "a" * 9000).status < 500


def test_every_listing_still_answers_after_the_fuzzing(node: ServedNode) -> None:
    for target in ("/invocations?limit=1000", "/promises?limit=1000", "/schedules?limit=1000"):
        assert node.call("GET", target).status == 200, target
    assert node.logged == [], "the node logged errors:\n" + "\n\n".join(node.logged[:3])
