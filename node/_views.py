"""Records as the HTTP API shows them: plain JSON payloads, recorded errors as {type, message},
and an invocation's calls as a tree."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from dawait.core._ids import id_order, parent_of
from dawait.core._param import call_target, read_invocation
from dawait.core._promise import TAG_TIMER, PromiseRecord, PromiseState
from dawait.node._api_models import ErrorInfo, InvocationView, PromiseView, ResultView, TreeNode
from dawait.runtime._step import ATTEMPTS_HEADER

__all__ = ["error_info", "invocation_view", "promise_view", "result_view", "tree"]

_EXTERNAL = "resonate:external"


def _time(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _json(data: str | None) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data


def error_info(record: PromiseRecord) -> ErrorInfo | None:
    """The recorded failure of a settled, not resolved, promise."""
    if not record.state.settled or record.state is PromiseState.RESOLVED:
        return None
    if record.state is PromiseState.REJECTED_CANCELED:
        return ErrorInfo(type="dawait.errors.CanceledError", message=f"{record.id} was canceled")
    recorded = _json(record.value.data)
    if isinstance(recorded, dict) and "type" in recorded:
        return ErrorInfo(type=str(recorded["type"]), message=str(recorded.get("message", "")))
    if record.state is PromiseState.REJECTED_TIMEDOUT:
        return ErrorInfo(type="dawait.errors.PromiseTimeoutError", message=f"{record.id} timed out")
    return ErrorInfo(type="Exception", message="" if recorded is None else str(recorded))


def invocation_view(record: PromiseRecord) -> InvocationView:
    function, version = call_target(record.param.data)
    call = read_invocation(record.param.data)
    return InvocationView(
        id=record.id,
        function=function,
        version=version,
        state=record.state.value,
        args=[] if call is None else call.args,
        kwargs={} if call is None else call.kwargs,
        result=_json(record.value.data) if record.state is PromiseState.RESOLVED else None,
        error=error_info(record),
        created_at=_at(record.created_at),
        settled_at=_time(record.settled_at),
        timeout_at=_time(record.timeout_at),
        delete_at=_time(record.delete_at),
    )


def result_view(record: PromiseRecord) -> ResultView:
    return ResultView(
        id=record.id,
        state=record.state.value,
        result=_json(record.value.data) if record.state is PromiseState.RESOLVED else None,
        error=error_info(record),
    )


def promise_view(record: PromiseRecord) -> PromiseView:
    return PromiseView(
        id=record.id,
        state=record.state.value,
        param=_json(record.param.data),
        value=_json(record.value.data) if record.state is PromiseState.RESOLVED else None,
        error=error_info(record),
        tags=dict(record.tags),
        created_at=_at(record.created_at),
        settled_at=_time(record.settled_at),
        timeout_at=_time(record.timeout_at),
        delete_at=_time(record.delete_at),
    )


def _node(record: PromiseRecord, *, root: bool) -> TreeNode:
    kind: Literal["invocation", "step", "sleep", "promise", "call"]
    if root:
        kind = "invocation"
    elif record.tags.get(TAG_TIMER) == "true":
        kind = "sleep"
    elif record.tags.get(_EXTERNAL) == "true":
        kind = "promise"
    elif read_invocation(record.param.data) is not None:
        kind = "call"  # ctx.rpc / ctx.detached: an invocation of its own
    else:
        kind = "step"
    settled = record.settled_at
    return TreeNode(
        id=record.id,
        kind=kind,
        function=call_target(record.param.data)[0],
        state=record.state.value,
        created_at=_at(record.created_at),
        settled_at=_time(settled),
        duration_ms=None if settled is None else max(0, settled - record.created_at),
        attempts=_attempts(record),
        error=error_info(record),
    )


def _attempts(record: PromiseRecord) -> int:
    headers = record.value.headers or {}
    try:
        return max(1, int(headers.get(ATTEMPTS_HEADER, "1")))
    except ValueError:
        return 1


def tree(root: PromiseRecord, calls: list[PromiseRecord]) -> TreeNode:
    """The invocation and every call recorded under it, nested by id (``a:1.2`` is a child
    of ``a:1``), in call order. Calls still running have no record yet and do not appear."""
    nodes = {root.id: _node(root, root=True)}
    ordered = sorted(calls, key=lambda r: id_order(r.id))
    for record in ordered:
        nodes[record.id] = _node(record, root=False)
    for record in ordered:
        parent = parent_of(record.id)
        while parent is not None and parent not in nodes:
            parent = parent_of(parent)
        nodes[parent or root.id].children.append(nodes[record.id])
    return nodes[root.id]
