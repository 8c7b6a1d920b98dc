"""Records as the HTTP API shows them: plain JSON payloads, recorded errors as {type, message},
and an invocation's calls as a tree."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from dawait.cluster._api_models import ErrorInfo, InvocationView, PromiseView, ResultView, TreeNode
from dawait.runtime._context import ATTEMPTS_HEADER
from dawait.runtime._promise import TAG_TIMER, PromiseRecord, PromiseState

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


def _call(record: PromiseRecord) -> dict[str, Any]:
    param = _json(record.param.data)
    return param if isinstance(param, dict) else {}


def invocation_view(record: PromiseRecord) -> InvocationView:
    call = _call(record)
    version = call.get("version")
    args = call.get("args")
    kwargs = call.get("kwargs")
    return InvocationView(
        id=record.id,
        function=call.get("func") if isinstance(call.get("func"), str) else None,
        version=version if isinstance(version, int) else None,
        state=record.state.value,
        args=args if isinstance(args, list) else [],
        kwargs=kwargs if isinstance(kwargs, dict) else {},
        result=_json(record.value.data) if record.state is PromiseState.RESOLVED else None,
        error=error_info(record),
        created_at=_at(record.created_at),
        settled_at=_time(record.settled_at),
        timeout_at=_time(record.timeout_at),
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
    )


def _parent_id(id: str) -> str | None:
    if "." in id.rpartition(":")[2]:
        return id.rpartition(".")[0]
    if ":" in id:
        return id.rpartition(":")[0]
    return None


def _node(record: PromiseRecord, *, root: bool) -> TreeNode:
    call = _call(record)
    kind: Literal["invocation", "step", "sleep", "promise", "call"]
    if root:
        kind = "invocation"
    elif record.tags.get(TAG_TIMER) == "true":
        kind = "sleep"
    elif record.tags.get(_EXTERNAL) == "true":
        kind = "promise"
    elif "args" in call:
        kind = "call"  # ctx.rpc / ctx.detached: an invocation of its own
    else:
        kind = "step"
    settled = record.settled_at
    return TreeNode(
        id=record.id,
        kind=kind,
        function=call.get("func") if isinstance(call.get("func"), str) else None,
        state=record.state.value,
        created_at=_at(record.created_at),
        settled_at=_time(settled),
        duration_ms=None if settled is None else max(0, settled - record.created_at),
        attempts=_attempts(record),
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
    ordered = sorted(calls, key=lambda r: _id_order(r.id))
    for record in ordered:
        nodes[record.id] = _node(record, root=False)
    for record in ordered:
        parent = _parent_id(record.id)
        while parent is not None and parent not in nodes:
            parent = _parent_id(parent)
        nodes[parent or root.id].children.append(nodes[record.id])
    return nodes[root.id]


def _id_order(id: str) -> list[tuple[int, int, str]]:
    """Sort key putting ``a:2`` before ``a:10`` (numbers by value, other parts by text)."""
    head, _, tail = id.partition(":")
    parts = [head, *tail.split(".")] if tail else [head]
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]
