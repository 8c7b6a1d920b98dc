"""Node to node: what one partition's owner asks of another's, over HTTP.

A node writes only the partitions it owns (cluster/_partition_store.py); whatever an
invocation needs from another partition goes to that partition's owner, as a JSON POST to
``/_dawait/peer/{call}`` with the cluster token:

* ``start``: create (and run there) an invocation of the owner's partition (``ctx.rpc``,
  ``detached``, a schedule's slot);
* ``create``, ``settle``: create or settle a promise there (``ctx.promise`` with an id of its
  own, a workflow settling one);
* ``await``: record that a task of the caller's partition awaits a promise there; the
  answer is the promise as it is (settled: nothing was recorded);
* ``settled``: a promise a task here awaited has settled (the owner of the promise's
  partition delivers its outbox record; redelivered until acknowledged).

``encode_*``/``decode_*`` turn the requests and records into JSON and back; ``PeerClient``
sends them. The node's HTTP layer (node/_http.py) authenticates and routes the requests to
``ClusterNode.peer``.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from dawait.cluster._etcd_records import decode_promise, encode_promise
from dawait.core._errors import DawaitError, StoreError, error_classes
from dawait.core._promise import NO_TAGS, PromiseRecord, PromiseState, Value
from dawait.core._task import task_from_row, task_row
from dawait.runtime._store import CreatePromise, InvocationCreated, PromiseCreated

__all__ = [
    "PEER_PATH",
    "PeerClient",
    "PeerError",
    "PeerServer",
    "decode_created",
    "decode_invocation",
    "decode_request",
    "encode_created",
    "encode_invocation",
    "encode_request",
    "peer_handler",
    "promise_json",
    "record_from_json",
]

log = logging.getLogger("dawait.cluster")

PEER_PATH = "/_dawait/peer/"
TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=2)


class PeerError(StoreError):
    """A peer could not be reached, or refused the request."""


def _value(value: Value) -> list[Any]:
    return [value.data, None if value.headers is None else dict(value.headers)]


def encode_request(request: CreatePromise) -> dict[str, Any]:
    return {
        "id": request.id,
        "param": _value(request.param),
        "timeout_at": request.timeout_at,
        "tags": dict(request.tags),
        "state": request.state.value,
        "value": _value(request.value),
    }


def decode_request(d: dict[str, Any]) -> CreatePromise:
    return CreatePromise(
        id=d["id"],
        param=Value(data=d["param"][0], headers=d["param"][1]),
        timeout_at=d["timeout_at"],
        tags=d["tags"] or NO_TAGS,
        state=PromiseState(d["state"]),
        value=Value(data=d["value"][0], headers=d["value"][1]),
    )


def promise_json(record: PromiseRecord) -> Any:
    return json.loads(encode_promise(record))


def record_from_json(d: Any) -> PromiseRecord:
    return decode_promise(json.dumps(d).encode())


def encode_invocation(created: InvocationCreated) -> dict[str, Any]:
    return {
        "promise": promise_json(created.promise),
        "task": None if created.task is None else task_row(created.task),
        "created": created.created,
    }


def decode_invocation(d: dict[str, Any]) -> InvocationCreated:
    return InvocationCreated(
        promise=record_from_json(d["promise"]),
        task=None if d["task"] is None else task_from_row(d["task"]),
        created=d["created"],
    )


def encode_created(created: PromiseCreated) -> dict[str, Any]:
    return {"promise": promise_json(created.promise), "created": created.created}


def decode_created(d: dict[str, Any]) -> PromiseCreated:
    return PromiseCreated(promise=record_from_json(d["promise"]), created=d["created"])


class PeerClient:
    """POSTs peer requests (one session for the node)."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, address: str, call: str, body: dict[str, Any]) -> Any:
        """The peer's JSON answer to ``call``; ``PeerError`` if it cannot be had, or the
        peer's own error (``DawaitError`` by code) when it refused."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=TIMEOUT)
        headers = {"Content-Type": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        url = f"{address}{PEER_PATH}{call}"
        try:
            async with self._session.post(url, data=json.dumps(body), headers=headers) as reply:
                answer = await reply.json(content_type=None)
                status = reply.status
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise PeerError(f"peer {address}: {call} failed: {exc!r}") from exc
        if status >= 400:
            error = answer.get("error") if isinstance(answer, dict) else None
            error = error if isinstance(error, dict) else {}
            raise _error(error.get("type"), str(error.get("message") or status), address, call)
        return answer


def _error(type_name: object, message: str, address: str, call: str) -> DawaitError:
    """The peer's error as the class it named (a ``DawaitError``), else a ``PeerError``."""
    classes = {cls.__name__: cls for cls in error_classes()}
    cls = classes.get(type_name) if isinstance(type_name, str) else None
    if cls is None or cls in (DawaitError, StoreError):
        return PeerError(f"peer {address}: {call}: {message}")
    return cls(message)


Answer = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""``ClusterNode.peer``: a call's name and body to its JSON answer."""


def peer_handler(answer: Answer) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The aiohttp handler of ``POST /_dawait/peer/{call}`` (authenticated by its app)."""

    async def handle(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            error = {"type": "ValueError", "message": "a peer request's body must be JSON"}
            return web.json_response({"error": error}, status=422)
        try:
            reply = await answer(request.match_info["call"], body)
        except DawaitError as exc:
            status = 503 if isinstance(exc, StoreError) else 409
            error = {"type": type(exc).__name__, "message": str(exc)}
            return web.json_response({"error": error}, status=status)
        except (KeyError, TypeError, ValueError) as exc:
            call = request.match_info["call"]
            error = {"type": "ValueError", "message": f"peer call {call!r}: bad request: {exc!r}"}
            return web.json_response({"error": error}, status=422)
        return web.json_response(reply)

    return handle


class PeerServer:
    """The peer endpoint alone, on 127.0.0.1 and a free port: for a node joined in process
    without an HTTP API to advertise (``Resonate(etcd=...)`` outside ``dawait serve``)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self._runner: web.AppRunner | None = None
        self.address = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("POST", PEER_PATH + "{call}", peer_handler(self.answer))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, listener).start()
        self.address = f"http://127.0.0.1:{listener.getsockname()[1]}"
        return self.address

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
