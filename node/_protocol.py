"""Resonate's protocol on a node: ``POST /`` takes the ``{kind, head, data}`` envelope the
official SDKs send (``resonate-sdk`` 0.8.1, ``@resonatehq/sdk`` 0.11.5; protocol
``2026-04-01``) and answers ``{kind, head: {corrId, status, version}, data}``.

The HTTP status is the envelope's where the TypeScript SDK reads it as an answer (200,
300, 404, 409, 422, 501), else 200 with the status in ``head`` (the SDK would take any
other HTTP status for an outage and retry). Error data is a string naming what was wrong.
Pushes go out through ``_poll.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from dawait.core._errors import (
    DawaitError,
    NotSettleableError,
    PayloadTooLargeError,
    PromiseAlreadySettledError,
)
from dawait.core._promise import TAG_TIMER, PromiseRecord, PromiseState, Settle, Value
from dawait.core._task import TaskState
from dawait.core._wire import (
    NO_TIMEOUT,
    PROTOCOL_VERSION,
    TAG_TARGET,
    WireError,
    field,
    page_fields,
    promise_wire,
    settle_event,
    tags_field,
    task_wire,
    value_field,
)
from dawait.node._error_codes import error_code
from dawait.node._poll import DEFAULT_TTL, Dispatch, PollHub
from dawait.node._protocol_schedules import SCHEDULE_KINDS
from dawait.runtime._codec import check_request_size, encode_error
from dawait.runtime._store import CreatePromise, PromiseSettled
from dawait.runtime._store_ops import TablesStore
from dawait.runtime._task_ops import (
    Acquired,
    Fenced,
    Suspended,
    op_heartbeat,
    op_register_callback,
    op_task_acquire,
    op_task_create_again,
    op_task_fence_create,
    op_task_fence_settle,
    op_task_release,
    op_task_suspend,
    run_or_dispatch,
)

if TYPE_CHECKING:
    from dawait._local import LocalBackend
    from dawait.node._cluster_protocol import ClusterProtocol

__all__ = ["ProtocolApi"]

log = logging.getLogger("dawait.protocol")

HTTP_STATUSES = frozenset({200, 300, 404, 409, 422, 501})
"""The statuses the TypeScript SDK takes as answers (``network/http.js``)."""

R = TypeVar("R")
Data = dict[str, Any]
Answer = tuple[int, Any]


class ProtocolApi:
    """The envelope endpoint and the poll endpoint of one node."""

    def __init__(self, local: LocalBackend) -> None:
        self.local = local
        self.engine = local.engine
        self.hub = PollHub(self.engine)
        self.dispatch = Dispatch(self.engine, self.hub)
        self.engine.workers = self.dispatch
        self.cluster: ClusterProtocol | None = None
        """In a partitioned cluster: requests sent to their partitions' owners."""
        if local.cluster is not None:
            from dawait.node._cluster_protocol import ClusterProtocol

            self.cluster = ClusterProtocol(self, local.cluster)
        self.kinds: dict[str, Callable[[Data], Awaitable[Answer]]] = {
            "promise.get": self.promise_get,
            "promise.create": self.promise_create,
            "promise.settle": self.promise_settle,
            "promise.register_listener": self.promise_register_listener,
            "promise.register_callback": self.promise_register_callback,
            "promise.search": self.promise_search,
            "task.create": self.task_create,
            "task.acquire": self.task_acquire,
            "task.fence": self.task_fence,
            "task.suspend": self.task_suspend,
            "task.fulfill": self.task_fulfill,
            "task.release": self.task_release,
            "task.heartbeat": self.task_heartbeat,
        }
        for kind, handler in SCHEDULE_KINDS.items():
            self.kinds[kind] = functools.partial(handler, self)

    def install(self, app: web.Application) -> None:
        app.router.add_route("POST", "/", self.envelope)
        app.router.add_route("GET", "/poll/{group}/{pid}", self.hub.handle)
        app.cleanup_ctx.append(self._dispatching)

    async def _dispatching(self, app: web.Application) -> Any:
        tasks = [self.engine.spawn(self.dispatch.run(), name="dawait-protocol-dispatch")]
        if self.cluster is not None:
            tasks.append(self.engine.spawn(self.cluster.publish(), name="dawait-protocol-polls"))
        yield
        for task in tasks:
            task.cancel()

    # -- the envelope ----------------------------------------------------------------------

    async def envelope(self, request: web.Request) -> web.Response:
        kind, corr = "error", ""
        try:
            try:
                body = json.loads(await request.read())
            except ValueError:
                raise WireError(
                    400, "the body is not JSON: a {kind, head, data} envelope"
                ) from None
            if not isinstance(body, dict):
                raise WireError(400, "the body must be a {kind, head, data} object")
            head = body.get("head")
            if isinstance(head, dict) and isinstance(head.get("corrId"), str):
                corr = head["corrId"]
            if isinstance(body.get("kind"), str):
                kind = body["kind"]
            if kind not in self.kinds:
                raise WireError(400, f"unknown request kind {kind!r}")
            data = body.get("data")
            if not isinstance(data, dict):
                raise WireError(400, f"{kind}: data must be an object")
            if self.cluster is not None:
                status, out = await self.cluster.handle(kind, data)
            else:
                status, out = await self.answer(kind, data)
        except WireError as exc:
            status, out = exc.status, str(exc)
        except DawaitError as exc:
            status, out = _refused(exc)
        except Exception:
            log.exception("protocol request %s failed", kind)
            status, out = 500, f"{kind}: the node failed to handle this request"
        return _answer(kind, corr, status, out)

    async def answer(self, kind: str, data: Data) -> Answer:
        """Request ``kind`` answered here: its status and data (errors as their status)."""
        try:
            return await self.kinds[kind](data)
        except WireError as exc:
            return exc.status, str(exc)
        except DawaitError as exc:
            return _refused(exc)

    # -- promises --------------------------------------------------------------------------

    def _now(self) -> int:
        return self.engine.clock.now()

    async def _promise(self, id: str, what: str) -> PromiseRecord:
        record = await self.engine.store.get_promise(id, now=self._now())
        if record is None:
            raise WireError(404, f"{what}: no promise with id {id!r}")
        return record

    async def promise_get(self, data: Data) -> Answer:
        record = await self._promise(field(data, "id", str, "promise.get"), "promise.get")
        return 200, {"promise": promise_wire(record)}

    def create_request(self, data: Data, what: str, *, fenced: bool = False) -> CreatePromise:
        """The promise ``data`` asks for. Its param over the payload limit is refused
        (``PayloadTooLargeError``); ``fenced`` (a worker's call), the promise is made
        rejected with that error instead: the SDKs would send the same call again forever."""
        id = field(data, "id", str, what)
        if not id:
            raise WireError(400, f"{what}: data.id is empty")
        timeout_at = field(data, "timeoutAt", int, what)
        request = CreatePromise(
            id=id,
            param=value_field(data, "param", what),
            timeout_at=None if timeout_at >= NO_TIMEOUT else timeout_at,
            tags=tags_field(data, "tags", what),
        )
        try:
            check_request_size(id, request.param, request.value, self.engine.max_payload)
        except PayloadTooLargeError as exc:
            if not fenced:
                raise
            request = dataclasses.replace(
                request, param=Value(), state=PromiseState.REJECTED, value=_failure(exc)
            )
        return self.engine.retention.tag(request)  # a root: kept as long as the app says

    @staticmethod
    def with_task(request: CreatePromise) -> bool:
        """A promise with a target gets a task (a timer: none; the node resolves it)."""
        return TAG_TARGET in request.tags and request.tags.get(TAG_TIMER) != "true"

    async def promise_create(self, data: Data) -> Answer:
        request = self.create_request(data, "promise.create")
        now = self._now()
        if self.with_task(request):
            created = await self.engine.store.create_invocation(
                request, pid=None, ttl=None, now=now
            )
            if self.cluster is None:  # a cluster's router runs or dispatches it
                run_or_dispatch(self.engine, created.promise, created.task)
            record = created.promise
        else:
            record = (await self.engine.store.create_promise(request, now=now)).promise
        self.engine.arm_timeout(record)
        return 200, {"promise": promise_wire(record)}

    async def promise_settle(self, data: Data) -> Answer:
        what = "promise.settle"
        id = field(data, "id", str, what)
        event = settle_event(data, what)
        value = value_field(data, "value", what)
        try:
            record = await self.local.settle(id, event, value)
        except PromiseAlreadySettledError:
            record = await self._promise(id, what)  # settled before: its record, as Resonate
        except NotSettleableError as exc:
            raise WireError(403, f"{what}: {exc}") from None
        return 200, {"promise": promise_wire(record)}

    async def promise_register_listener(self, data: Data) -> Answer:
        what = "promise.register_listener"
        awaited = field(data, "awaited", str, what)
        address = field(data, "address", str, what)
        record = await self._promise(awaited, what)
        if not record.state.settled:
            via = None if self.cluster is None else self.cluster.via()
            self.dispatch.listen(awaited, address, via)
        return 200, {"promise": promise_wire(record)}

    async def promise_register_callback(self, data: Data) -> Answer:
        what = "promise.register_callback"
        awaited = field(data, "awaited", str, what)
        awaiter = field(data, "awaiter", str, what)
        if self.cluster is not None:
            record = await self.cluster.register_callback(awaited, awaiter, self._now())
        else:
            record = await self.run(awaited, op_register_callback, awaited, awaiter, self._now())
        if record is None:
            raise WireError(404, f"{what}: no promise with id {awaited!r}")
        return 200, {"promise": promise_wire(record)}

    async def promise_search(self, data: Data) -> Answer:
        what = "promise.search"
        raw_state = data.get("state")
        state = None
        if raw_state is not None:
            try:
                state = PromiseState(raw_state)
            except ValueError:
                raise WireError(400, f"{what}: data.state {raw_state!r} is not a state") from None
        tags = tags_field(data, "tags", what)
        limit, cursor = page_fields(data, what)
        page = await self.engine.store.search_promises(
            "*", state=state, limit=limit, cursor=cursor, now=self._now()
        )
        found = [r for r in page.promises if all(r.tags.get(k) == v for k, v in tags.items())]
        return 200, {"promises": [promise_wire(r) for r in found], "cursor": page.cursor}

    # -- tasks -----------------------------------------------------------------------------

    async def run(self, id: str, op: Callable[..., R], *args: object) -> R:
        """Run store operation ``op(tables, *args)`` about ``id`` atomically: in the store
        (one node's), or on the partition answered for (a cluster's)."""
        if self.cluster is not None:
            return await self.cluster.run(id, op, *args)
        store = self.engine.store
        if not isinstance(store, TablesStore):
            raise WireError(501, "the Resonate protocol needs a store with tables")
        return await store.transact(op, *args)

    @staticmethod
    def _action(data: Data, kinds: tuple[str, ...], what: str) -> tuple[str, Data]:
        action = field(data, "action", dict, what)
        kind = action.get("kind")
        if kind not in kinds:
            raise WireError(400, f"{what}: data.action.kind must be {' or '.join(kinds)}")
        inner = action.get("data")
        if not isinstance(inner, dict):
            raise WireError(400, f"{what}: data.action.data must be an object")
        return kind, inner

    @staticmethod
    def _ttl(data: Data, what: str) -> int:
        ttl = data.get("ttl", DEFAULT_TTL)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
            raise WireError(400, f"{what}: data.ttl must be a positive number of milliseconds")
        return ttl

    async def _preload(self, record: PromiseRecord) -> list[dict[str, Any]]:
        branch = record.branch or record.id
        return [
            promise_wire(r)
            for r in await self.engine.store.branch_promises(branch)
            if r.id != record.id
        ]

    async def task_create(self, data: Data) -> Answer:
        what = "task.create"
        pid = field(data, "pid", str, what)
        ttl = self._ttl(data, what)
        _, inner = self._action(data, ("promise.create",), what)
        request = self.create_request(inner, what)
        created = await self.engine.store.create_invocation(
            request, pid=pid, ttl=ttl, now=self._now()
        )
        if not created.created:
            # As Resonate's server: a pending task is taken, a fulfilled one answered.
            again = await self.run(
                request.id, op_task_create_again, request.id, pid, ttl, self._now()
            )
            if again is None:
                return 409, f"{what}: promise {request.id!r} exists"
            if again.task.state is TaskState.ACQUIRED:
                self.dispatch.leased(again.task, ttl)
            return 200, {
                "task": task_wire(again.task, ttl=ttl),
                "promise": promise_wire(again.promise),
                "preload": await self._preload(again.promise),
            }
        self.engine.arm_timeout(created.promise)
        out: Data = {"promise": promise_wire(created.promise), "preload": []}
        if created.task is not None:
            self.dispatch.leased(created.task, ttl)
            out["task"] = task_wire(created.task, ttl=ttl)
        return 200, out

    async def task_acquire(self, data: Data) -> Answer:
        what = "task.acquire"
        id = field(data, "id", str, what)
        version = field(data, "version", int, what)
        pid = field(data, "pid", str, what)
        ttl = self._ttl(data, what)
        got = await self.run(id, op_task_acquire, id, version, pid, ttl, self._now())
        if isinstance(got, Fenced):
            return _fenced(got, what, id, version)
        assert isinstance(got, Acquired)
        self.dispatch.leased(got.task, ttl)
        return 200, {
            "task": task_wire(got.task, ttl=ttl),
            "promise": promise_wire(got.promise),
            "preload": await self._preload(got.promise),
        }

    async def task_fence(self, data: Data) -> Answer:
        what = "task.fence"
        id = field(data, "id", str, what)
        version = field(data, "version", int, what)
        kind, inner = self._action(data, ("promise.create", "promise.settle"), what)
        now = self._now()
        if kind == "promise.create":
            request = self.create_request(inner, f"{what} {kind}", fenced=True)
            with_task = self.with_task(request) and not request.state.settled
            if self.cluster is not None:
                got = await self.cluster.fence_create(id, version, request, with_task, now)
            else:
                got = await self.run(id, op_task_fence_create, id, version, request, with_task, now)
            if isinstance(got, Fenced):
                return _fenced(got, what, id, version)
            record, task = got
            self.engine.arm_timeout(record)
            run_or_dispatch(self.engine, record, task)
        else:
            settled = await self._fenced_settle(id, version, inner, f"{what} {kind}")
            if isinstance(settled, Fenced):
                return _fenced(settled, what, id, version)
            record = settled.promise
        inner_answer = {
            "kind": kind,
            "head": {"corrId": _corr(data["action"]), "status": 200, "version": PROTOCOL_VERSION},
            "data": {"promise": promise_wire(record)},
        }
        return 200, {"action": inner_answer, "preload": []}

    async def _fenced_settle(
        self, id: str, version: int, inner: Data, what: str
    ) -> PromiseSettled | Fenced:
        promise_id = field(inner, "id", str, what)
        event = settle_event(inner, what)
        value = value_field(inner, "value", what)
        try:
            check_request_size(promise_id, Value(), value, self.engine.max_payload)
        except PayloadTooLargeError as exc:  # failed, naming why: else sent again forever
            event, value = Settle.REJECT, _failure(exc)
        now = self._now()
        if self.cluster is not None:
            return await self.cluster.fence_settle(id, version, promise_id, event, value, now)
        settled = await self.run(
            id, op_task_fence_settle, id, version, promise_id, event, value, now
        )
        if not isinstance(settled, Fenced):
            self.engine.on_settled(settled)
        return settled

    async def task_suspend(self, data: Data) -> Answer:
        what = "task.suspend"
        id = field(data, "id", str, what)
        version = field(data, "version", int, what)
        actions = field(data, "actions", list, what)
        awaited = []
        for action in actions:
            inner = action.get("data") if isinstance(action, dict) else None
            if not isinstance(inner, dict) or action.get("kind") != "promise.register_callback":
                raise WireError(400, f"{what}: each action must be a promise.register_callback")
            awaited.append(field(inner, "awaited", str, what))
        if self.cluster is not None:
            got = await self.cluster.suspend(id, version, awaited, self._now())
        else:
            got = await self.run(id, op_task_suspend, id, version, awaited, self._now())
        if isinstance(got, Fenced):
            return _fenced(got, what, id, version)
        assert isinstance(got, Suspended)
        if got.missing is not None:
            return 404, f"{what}: no promise with id {got.missing!r} to await"
        if got.suspended:
            return 200, {}
        record = await self._promise(id, what)
        return 300, {"preload": await self._preload(record)}

    async def task_fulfill(self, data: Data) -> Answer:
        what = "task.fulfill"
        id = field(data, "id", str, what)
        version = field(data, "version", int, what)
        _, inner = self._action(data, ("promise.settle",), what)
        settled = await self._fenced_settle(id, version, inner, what)
        if isinstance(settled, Fenced):
            return _fenced(settled, what, id, version)
        return 200, {"promise": promise_wire(settled.promise)}

    async def task_release(self, data: Data) -> Answer:
        what = "task.release"
        id = field(data, "id", str, what)
        version = field(data, "version", int, what)
        got = await self.run(id, op_task_release, id, version)
        if isinstance(got, Fenced):
            return _fenced(got, what, id, version)
        record = await self._promise(id, what)
        self.dispatch.dispatch(record, got)
        return 200, {}

    async def task_heartbeat(self, data: Data) -> Answer:
        what = "task.heartbeat"
        pid = field(data, "pid", str, what)
        tasks = []
        for item in field(data, "tasks", list, what):
            if not isinstance(item, dict):
                raise WireError(400, f"{what}: each of data.tasks must be {{id, version}}")
            id = field(item, "id", str, what)
            tasks.append(
                (id, field(item, "version", int, what), self.dispatch.ttls.get(id, DEFAULT_TTL))
            )
        if not tasks:
            return 200, {}
        renewed = await self.run(tasks[0][0], op_heartbeat, pid, tasks, self._now())
        for task in renewed:
            self.dispatch.leased(task, self.dispatch.ttls.get(task.id, DEFAULT_TTL))
        return 200, {}


def _corr(envelope: Any) -> str:
    head = envelope.get("head") if isinstance(envelope, Mapping) else None
    corr = head.get("corrId") if isinstance(head, Mapping) else None
    return corr if isinstance(corr, str) else ""


def _failure(exc: Exception) -> Value:
    """An error as a rejected promise's value: dawait's ``{type, message}``, which each SDK
    raises as its own generic error."""
    return Value(data=encode_error(exc))


def _refused(exc: DawaitError) -> Answer:
    row = error_code(exc)
    return (row.status if row is not None else 400), str(exc)


def _fenced(why: Fenced, what: str, id: str, version: int) -> Answer:
    if why is Fenced.NO_TASK:
        return 404, f"{what}: no task with id {id!r}"
    return 409, f"{what}: task {id!r} is not held at version {version}"


def _answer(kind: str, corr: str, status: int, data: Any) -> web.Response:
    body = {
        "kind": kind,
        "head": {"corrId": corr, "status": status, "version": PROTOCOL_VERSION},
        "data": data,
    }
    return web.json_response(body, status=status if status in HTTP_STATUSES else 200)
