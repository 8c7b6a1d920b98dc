"""The HTTP API of a node, on aiohttp: JSON in and out, validated by pydantic models.

Every error is a JSON body ``{error, message, field?}`` with a 4xx status (a 5xx only for a
fault of the node itself, without a traceback). With a token configured, every endpoint but
``/healthz`` and ``/readyz`` needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic
from aiohttp import web

from dawait._schedules import ScheduleInfo
from dawait.cluster._peer import PEER_PATH, peer_handler
from dawait.core._errors import DawaitError, ScheduleNotFoundError
from dawait.core._ids import check_id_pattern
from dawait.core._listing import InvocationQuery, decode_cursor, parse_states
from dawait.core._promise import PromiseRecord, PromiseState
from dawait.node import _api_models as m
from dawait.node._backend import NodeBackend
from dawait.node._error_codes import error_code
from dawait.node._forward import FORWARDED, NODE, Forwarder
from dawait.node._limits import BodyTimeout, Guard
from dawait.node._metrics import NodeMetrics
from dawait.node._openapi import Route, openapi_document
from dawait.node._protocol import ProtocolApi
from dawait.node._settings import DEFAULT_MAX_BODY
from dawait.node._views import invocation_view, promise_view, result_view, tree

__all__ = ["DEFAULT_MAX_BODY", "HttpError", "NodeApi"]

log = logging.getLogger("dawait.http")
FIRST = asyncio.FIRST_COMPLETED

MAX_WAIT_SECONDS = 300.0
_OPEN = frozenset({"/healthz", "/readyz"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpError(Exception):
    def __init__(self, status: int, error: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.field = field


def _error_response(
    status: int, error: str, message: str, field: str | None = None
) -> web.Response:
    body = m.ErrorBody(error=error, message=message, field=field)
    return web.json_response(body.model_dump(exclude_none=True), status=status)


def _json(model: pydantic.BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        body=model.model_dump_json(), status=status, content_type="application/json"
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _schedule_view(info: ScheduleInfo) -> m.ScheduleView:
    return m.ScheduleView(
        id=info.id,
        cron=info.cron,
        function=info.function,
        args=list(info.args),
        kwargs=dict(info.kwargs),
        next_run_at=info.next_run_at,
        last_run_at=info.last_run_at,
        created_at=info.created_at,
    )


def _field(error: pydantic.ValidationError) -> str | None:
    first = error.errors()[0] if error.errors() else None
    if first is None:
        return None
    return ".".join(str(part) for part in first["loc"]) or None


class NodeApi:
    """Routes, middlewares and handlers of one node's HTTP API."""

    def __init__(
        self,
        backend: NodeBackend,
        *,
        token: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        metrics: NodeMetrics | None = None,
        cluster_token: str | None = None,
        open_metrics: bool = False,
        guard: Guard | None = None,
    ) -> None:
        self.backend = backend
        self.guard = guard
        """Connection, long-poll and read-time limits (None: none, as in tests in-process)."""
        self.token = token
        self.open_paths = _OPEN | {"/metrics"} if open_metrics else _OPEN
        """Paths served without the token: health, and /metrics if ``open_metrics``."""
        self.cluster_token = cluster_token
        """What peers authenticate forwarded requests with (the API token if None)."""
        cluster = backend.app.cluster
        self.node_id = None if cluster is None else cluster.node_id
        self.forwarder = None if cluster is None else Forwarder(cluster_token or token)
        if cluster is not None:
            cluster.peering.peers.token = cluster_token or token
        self.max_body = max_body
        self.metrics = metrics or NodeMetrics(backend)
        self.routes = self._routes()
        self.protocol = ProtocolApi(backend.local)
        """Resonate's protocol (``POST /``, ``GET /poll/...``): the official SDKs' server."""

    def web_app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=self.max_body)
        for route in self.routes:
            app.router.add_route(route.method, route.path, route.handler)
        self.protocol.install(app)
        cluster = self.backend.app.cluster
        if cluster is not None:  # peers' requests: not part of the API (nor /openapi.json)
            app.router.add_route("POST", PEER_PATH + "{call}", peer_handler(cluster.peering.answer))
        return app

    # -- middlewares -----------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        guard = self.guard
        if guard is not None:
            guard.request_began(request)
        try:
            return await handler(request)
        except BodyTimeout as exc:
            response = _error_response(408, "timeout", str(exc))
            response.force_close()
            return response
        except HttpError as exc:
            return _error_response(exc.status, exc.error, exc.message, exc.field)
        except pydantic.ValidationError as exc:
            detail = exc.errors()[0]["msg"] if exc.errors() else str(exc)
            return _error_response(422, "invalid", detail, _field(exc))
        except DawaitError as exc:
            row = error_code(exc)
            if row is not None:
                return _error_response(row.status, row.code, str(exc))
            return _error_response(400, "invalid", str(exc))
        except web.HTTPRequestEntityTooLarge:
            return _error_response(
                413, "too_large", f"request body is larger than {self.max_body} bytes"
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
            response = _error_response(exc.status, code, exc.reason)
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except ValueError as exc:
            return _error_response(422, "invalid", str(exc))
        except RecursionError:
            return _error_response(422, "invalid", "a value is nested too deeply")
        except ConnectionResetError:  # the client hung up mid-request: not the node's fault
            log.debug("%s %s: the client closed the connection", request.method, request.path)
            return _error_response(400, "client_gone", "the client closed the connection")
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return _error_response(500, "internal", "the node failed to handle this request")
        finally:
            if guard is not None:
                guard.request_ended(request)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.token is not None and request.path not in self.open_paths:
            # The scheme is case-insensitive (RFC 7235); bytes that are not UTF-8 stay bytes
            # (aiohttp decodes with surrogateescape), so they only fail to match.
            scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
            secret = given.strip().encode("utf-8", "surrogateescape")
            accepted = [t for t in (self.token, self.cluster_token) if t is not None]
            # Every candidate compared, in constant time each.
            matches = [hmac.compare_digest(secret, t.encode()) for t in accepted]
            if scheme.lower() != "bearer" or not any(matches):
                raise HttpError(401, "unauthorized", "missing or wrong bearer token")
        if self.guard is not None:  # a slow body holds no handler (and no descriptor) long
            await self.guard.read_body(request)
        response = await handler(request)
        if self.node_id is not None and NODE not in response.headers:
            response.headers[NODE] = self.node_id
        return response

    # -- helpers ---------------------------------------------------------------------------

    async def _body(self, request: web.Request, model: type[pydantic.BaseModel]) -> Any:
        raw = await request.read()
        try:
            data = json.loads(raw or b"{}", parse_constant=_no_constant)
        except ValueError as exc:
            raise HttpError(400, "malformed_json", f"request body is not JSON: {exc}") from None
        except RecursionError:
            raise HttpError(400, "malformed_json", "request body is nested too deeply") from None
        return model.model_validate(data)

    @staticmethod
    def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
        raw = request.query.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise HttpError(422, "invalid", f"{name} must be an integer", name) from None
        if not low <= value <= high:
            raise HttpError(422, "invalid", f"{name} must be between {low} and {high}", name)
        return value

    @staticmethod
    def _query_pattern(request: web.Request) -> str:
        try:
            return check_id_pattern(request.query.get("id", "*"))
        except ValueError as exc:
            raise HttpError(422, "invalid", str(exc), "id") from None

    @staticmethod
    def _query_float(request: web.Request, name: str, high: float) -> float | None:
        raw = request.query.get(name)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise HttpError(422, "invalid", f"{name} must be a number of seconds", name) from None
        if not 0 <= value <= high:
            raise HttpError(422, "invalid", f"{name} must be between 0 and {high}", name)
        return value

    @staticmethod
    def _query_state(request: web.Request) -> PromiseState | None:
        raw = request.query.get("state")
        if raw is None:
            return None
        try:
            return PromiseState(raw)
        except ValueError:
            states = ", ".join(s.value for s in PromiseState)
            raise HttpError(422, "invalid", f"state must be one of {states}", "state") from None

    # -- invocations -----------------------------------------------------------------------

    async def create_invocation(self, request: web.Request) -> web.Response:
        wait = self._query_float(request, "wait", MAX_WAIT_SECONDS) or 0.0
        body: m.CreateInvocation = await self._body(request, m.CreateInvocation)
        cluster = self.backend.app.cluster
        if cluster is not None and self.forwarder is not None and FORWARDED not in request.headers:
            owner = cluster.owner(body.id, body.function, body.version)
            if owner is not None and owner.node_id != cluster.node_id:
                forwarded = await self.forwarder.forward(request, owner, wait)
                if forwarded is not None:
                    return forwarded
        record, created = await self.backend.start(
            body.id, body.function, body.args, body.kwargs, body.version
        )
        headers: dict[str, str] = {}
        if wait > 0 and not record.state.settled:
            # Start and await in one round trip (what Resonate(url=...).run does).
            record, headers = await self._long_poll(request, body.id, wait)
        response = _json(invocation_view(record), 201 if created else 200)
        response.headers.update(headers)
        return response

    async def get_invocation(self, request: web.Request) -> web.Response:
        record = await self.backend.invocation(request.match_info["id"])
        return _json(invocation_view(record))

    async def invocation_result(self, request: web.Request) -> web.Response:
        wait = self._query_float(request, "wait", MAX_WAIT_SECONDS) or 0.0
        record, headers = await self._long_poll(request, request.match_info["id"], wait)
        response = _json(result_view(record))
        response.headers.update(headers)
        return response

    async def _long_poll(
        self, request: web.Request, id: str, wait: float
    ) -> tuple[PromiseRecord, dict[str, str]]:
        """The invocation once settled or after ``wait``; at once, with ``Retry-After``,
        if the node holds its most long-polls (the client polls again later). A client
        that hangs up ends its wait."""
        guard = self.guard
        if guard is None or wait <= 0:
            return await self.backend.result(id, wait), {}
        if guard.waits_full:
            return await self.backend.result(id, 0.0), {"Retry-After": "1"}
        guard.waiting += 1
        try:
            return await self.backend.result(id, wait, guard.gone(request.protocol)), {}
        finally:
            guard.waiting -= 1

    async def cancel_invocation(self, request: web.Request) -> web.Response:
        record, canceled = await self.backend.cancel(request.match_info["id"])
        view = invocation_view(record)
        return _json(m.CanceledView(**dict(view), canceled=canceled))

    async def list_invocations(self, request: web.Request) -> web.Response:
        query = self._invocation_query(request)
        cursor = request.query.get("cursor")
        if cursor is not None:
            try:
                decode_cursor(cursor)
            except ValueError as exc:
                raise HttpError(422, "invalid", str(exc), "cursor") from None
        limit = self._query_int(request, "limit", 100, 1, m.MAX_PAGE)
        page = await self.backend.invocations(query, limit=limit, cursor=cursor)
        counts = None
        if request.query.get("count") in ("true", "1"):
            by_state, exact = await self.backend.count_invocations(query)
            counts = m.InvocationCounts(
                by_state=by_state,  # type: ignore[arg-type]  # every key a state's name
                total=sum(by_state.values()),
                exact=exact,
            )
        items = [invocation_view(r) for r in page.promises]
        return _json(m.InvocationPage(items=items, cursor=page.cursor, counts=counts))

    @classmethod
    def _invocation_query(cls, request: web.Request) -> InvocationQuery:
        """The filters of ``GET /invocations``: ``state`` (comma-separated; ``failed`` for
        every failure), ``function`` (a prefix), ``created_after`` / ``created_before``
        (ISO 8601), ``tag`` (``key=value``, repeated: all must match)."""
        states = None
        if (raw := request.query.get("state")) is not None:
            try:
                states = parse_states(raw)
            except ValueError as exc:
                raise HttpError(422, "invalid", f"state: {exc}", "state") from None
        tags = {}
        for tag in request.query.getall("tag", []):
            key, equals, value = tag.partition("=")
            if not key or not equals:
                raise HttpError(422, "invalid", f"tag {tag!r} is not key=value", "tag")
            tags[key] = value
        return InvocationQuery(
            states=states,
            function=request.query.get("function") or None,
            created_after=cls._query_time(request, "created_after"),
            created_before=cls._query_time(request, "created_before"),
            tags=tags,
        )

    @staticmethod
    def _query_time(request: web.Request, name: str) -> int | None:
        raw = request.query.get(name)
        if raw is None:
            return None
        try:
            when = dt.datetime.fromisoformat(raw)
        except ValueError:
            raise HttpError(
                422, "invalid", f"{name} must be an ISO 8601 time, e.g. 2026-12-04T10:00:00Z", name
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return int(when.timestamp() * 1000)

    async def invocation_tree(self, request: web.Request) -> web.Response:
        root, calls = await self.backend.tree(request.match_info["id"])
        return _json(tree(root, calls))

    # -- promises --------------------------------------------------------------------------

    async def create_promise(self, request: web.Request) -> web.Response:
        body: m.CreatePromise = await self._body(request, m.CreatePromise)
        record, created = await self.backend.create_promise(body.id, body.timeout, body.data)
        return _json(promise_view(record), 201 if created else 200)

    async def get_promise(self, request: web.Request) -> web.Response:
        return _json(promise_view(await self.backend.promise(request.match_info["id"])))

    async def resolve_promise(self, request: web.Request) -> web.Response:
        body: m.ResolvePromise = await self._body(request, m.ResolvePromise)
        record = await self.backend.resolve(request.match_info["id"], body.value)
        return _json(promise_view(record))

    async def reject_promise(self, request: web.Request) -> web.Response:
        body: m.RejectPromise = await self._body(request, m.RejectPromise)
        error = (
            m.ErrorInfo(type="Exception", message=body.error)
            if isinstance(body.error, str)
            else body.error
        )
        record = await self.backend.reject(request.match_info["id"], error.type, error.message)
        return _json(promise_view(record))

    async def delete_invocation(self, request: web.Request) -> web.Response:
        id = request.match_info["id"]
        await self.backend.invocation(id)  # 404 unless it is an invocation
        await self.backend.delete(id)
        return web.Response(status=204)

    async def delete_promise(self, request: web.Request) -> web.Response:
        await self.backend.delete(request.match_info["id"])
        return web.Response(status=204)

    async def cancel_promise(self, request: web.Request) -> web.Response:
        return _json(promise_view(await self.backend.cancel_promise(request.match_info["id"])))

    async def list_promises(self, request: web.Request) -> web.Response:
        records, cursor = await self.backend.promises(
            pattern=self._query_pattern(request),
            state=self._query_state(request),
            limit=self._query_int(request, "limit", 100, 1, m.MAX_PAGE),
            cursor=request.query.get("cursor"),
        )
        return _json(m.PromisePage(items=[promise_view(r) for r in records], cursor=cursor))

    # -- schedules -------------------------------------------------------------------------

    async def create_schedule(self, request: web.Request) -> web.Response:
        body: m.CreateSchedule = await self._body(request, m.CreateSchedule)
        schedules = self.backend.app.schedules
        self.backend.check_json_args(body.function, body.args, body.kwargs)
        existed = await self.backend.schedule_exists(body.id)
        info = await schedules.create(body.id, body.cron, body.function, *body.args, **body.kwargs)
        return _json(_schedule_view(info), 200 if existed else 201)

    async def list_schedules(self, request: web.Request) -> web.Response:
        infos = await self.backend.app.schedules.search(
            self._query_pattern(request),
            limit=self._query_int(request, "limit", 100, 1, m.MAX_PAGE),
        )
        return _json(m.ScheduleList(items=[_schedule_view(info) for info in infos]))

    async def get_schedule(self, request: web.Request) -> web.Response:
        info = await self.backend.app.schedules.get(request.match_info["id"])
        return _json(_schedule_view(info))

    async def delete_schedule(self, request: web.Request) -> web.Response:
        id = request.match_info["id"]
        if not await self.backend.app.schedules.delete(id):
            raise ScheduleNotFoundError(f"no schedule with id {id!r}")
        return web.Response(status=204)

    # -- nodes -----------------------------------------------------------------------------

    async def list_nodes(self, request: web.Request) -> web.Response:
        return _json(self.backend.nodes())

    # -- health ----------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return _json(m.Health(status="ok"))

    async def readyz(self, request: web.Request) -> web.Response:
        problem = await self.backend.readiness()
        if problem is not None:
            return _error_response(503, "unavailable", problem)
        return _json(m.Health(status="ok"))

    async def metrics_text(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document(self.routes))

    # -- the route table -------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        inv, prom = "invocations", "promises"
        return [
            Route("POST", "/invocations", self.create_invocation, inv,
                  "Start an invocation (idempotent by id); with ?wait=, also wait up to "
                  "that many seconds for its outcome", body=m.CreateInvocation, query=["wait"],
                  response=m.InvocationView, statuses={201: "started", 200: "already exists",
                  404: "unknown function", 409: "id used with another call",
                  422: "arguments do not fit"}),
            Route("GET", "/invocations", self.list_invocations, inv,
                  "List invocations, newest first", response=m.InvocationPage,
                  query=["state=states", "function", "created_after", "created_before", "tag",
                         "limit", "cursor", "count"]),
            Route("GET", "/invocations/{id}", self.get_invocation, inv, "An invocation",
                  response=m.InvocationView, statuses={404: "unknown id"}),
            Route("GET", "/invocations/{id}/result", self.invocation_result, inv,
                  "Its outcome, waiting up to ?wait= seconds (long-poll)",
                  response=m.ResultView, query=["wait"], statuses={404: "unknown id"}),
            Route("POST", "/invocations/{id}/cancel", self.cancel_invocation, inv,
                  "Cancel an invocation with what it awaits (not its detached calls)",
                  response=m.CanceledView,
                  statuses={404: "unknown id"}),
            Route("DELETE", "/invocations/{id}", self.delete_invocation, inv,
                  "Delete a settled invocation with every call it made (not its rpc and "
                  "detached invocations)",
                  statuses={204: "deleted", 404: "no invocation with that id",
                            409: "pending, or called by a pending invocation"}),
            Route("GET", "/invocations/{id}/tree", self.invocation_tree, inv,
                  "Its call tree with states and timings", response=m.TreeNode,
                  statuses={404: "unknown id"}),
            Route("POST", "/promises", self.create_promise, prom,
                  "Create a promise (idempotent by id)", body=m.CreatePromise,
                  response=m.PromiseView, statuses={201: "created", 200: "already exists"}),
            Route("GET", "/promises", self.list_promises, prom,
                  "Search promises by id pattern (* matches any run)",
                  response=m.PromisePage, query=["id", "state", "limit", "cursor"]),
            Route("GET", "/promises/{id}", self.get_promise, prom, "A promise",
                  response=m.PromiseView, statuses={404: "unknown id"}),
            Route("DELETE", "/promises/{id}", self.delete_promise, prom,
                  "Delete a settled promise (an invocation's: with every call it made)",
                  statuses={204: "deleted", 404: "unknown id",
                            409: "pending, or a call of an invocation"}),
            Route("POST", "/promises/{id}/resolve", self.resolve_promise, prom,
                  "Resolve a promise", body=m.ResolvePromise, response=m.PromiseView,
                  statuses={403: "an invocation, step or timer: settled by its engine",
                            404: "unknown id", 409: "settled with another outcome"}),
            Route("POST", "/promises/{id}/reject", self.reject_promise, prom,
                  "Reject a promise", body=m.RejectPromise, response=m.PromiseView,
                  statuses={403: "an invocation, step or timer: settled by its engine",
                            404: "unknown id", 409: "settled with another outcome"}),
            Route("POST", "/promises/{id}/cancel", self.cancel_promise, prom,
                  "Cancel a promise", response=m.PromiseView,
                  statuses={403: "an invocation, step or timer: settled by its engine",
                            404: "unknown id", 409: "settled with another outcome"}),
            Route("POST", "/schedules", self.create_schedule, "schedules",
                  "Create a cron schedule (idempotent by id)", body=m.CreateSchedule,
                  response=m.ScheduleView, statuses={201: "created", 200: "already exists",
                  404: "unknown function", 409: "id used with another schedule",
                  422: "bad cron or arguments"}),
            Route("GET", "/schedules", self.list_schedules, "schedules", "List schedules",
                  response=m.ScheduleList, query=["id", "limit"]),
            Route("GET", "/schedules/{id}", self.get_schedule, "schedules", "A schedule",
                  response=m.ScheduleView, statuses={404: "unknown id"}),
            Route("DELETE", "/schedules/{id}", self.delete_schedule, "schedules",
                  "Delete a schedule", statuses={204: "deleted", 404: "unknown id"}),
            Route("GET", "/nodes", self.list_nodes, "nodes",
                  "The live nodes: address, groups, and which one leads", response=m.NodeList),
            Route("GET", "/healthz", self.healthz, "health", "The process is alive",
                  response=m.Health, auth=False),
            Route("GET", "/readyz", self.readyz, "health",
                  "The store is reachable and the node started", response=m.Health,
                  statuses={503: "not ready"}, auth=False),
            Route("GET", "/metrics", self.metrics_text, "health", "Prometheus metrics",
                  text=True),
            Route("GET", "/openapi.json", self.openapi, "health", "This document", text=True),
        ]  # fmt: skip
