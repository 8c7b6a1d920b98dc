"""Resonate's wire format (protocol ``2026-04-01``): records as the SDKs read them, values,
poll addresses, and the fields of a request's ``data``.

Pure code. The store keeps a value's data as JSON text; on the wire it is base64 of that
text (the SDKs' ``Value.data``). Records are shaped so that both official SDKs accept them
(``../shared/reference/resonate-ts-0.11.5.md``: the TypeScript SDK checks every shape):
``settledAt`` only once settled, ``value`` an object even when empty, ``resumes`` on a task.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dawait.core._param import invocation_param
from dawait.core._promise import PromiseRecord, PromiseState, Settle, Value
from dawait.core._schedule import SchedulePromise, ScheduleRecord
from dawait.core._task import TaskRecord

__all__ = [
    "NO_TIMEOUT",
    "PROTOCOL_VERSION",
    "TAG_TARGET",
    "Address",
    "WireError",
    "field",
    "page_fields",
    "parse_address",
    "promise_wire",
    "schedule_wire",
    "settle_event",
    "tags_field",
    "task_wire",
    "value_field",
    "value_wire",
]

PROTOCOL_VERSION = "2026-04-01"
TAG_TARGET = "resonate:target"
"""Where a promise's task is dispatched: ``poll://any@group`` (a worker of the group)."""
NO_TIMEOUT = 253402300799999
"""``timeoutAt`` of a promise with no timeout (the SDKs need a number): 9999-12-31."""


class WireError(ValueError):
    """A request the protocol cannot take: ``status`` is its ``head.status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Address:
    """A poll address: ``poll://uni@group/pid`` (that process), ``poll://any@group`` or
    ``poll://any@group/pid`` (a process of the group; that one while it is connected)."""

    anycast: bool
    group: str
    pid: str | None = None

    def __str__(self) -> str:
        tail = "" if self.pid is None else f"/{self.pid}"
        return f"poll://{'any' if self.anycast else 'uni'}@{self.group}{tail}"


def parse_address(raw: str) -> Address | None:
    """The poll address ``raw`` names; None for any other (an address dawait cannot reach)."""
    scheme, sep, rest = raw.partition("://")
    if not sep or scheme != "poll":
        return None
    mode, at, path = rest.partition("@")
    if not at or mode not in ("uni", "any"):
        return None
    group, _, pid = path.partition("/")
    group = group.lower()  # as Go's url.Parse, which Resonate's server parses them with
    if not group or (mode == "uni" and not pid):
        return None
    return Address(anycast=mode == "any", group=group, pid=pid or None)


def value_wire(value: Value) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if value.headers:
        out["headers"] = dict(value.headers)
    if value.data is not None:
        out["data"] = base64.b64encode(value.data.encode()).decode("ascii")
    return out


def promise_wire(record: PromiseRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": record.id,
        "state": record.state.value,
        "param": value_wire(record.param),
        "value": value_wire(record.value),
        "tags": dict(record.tags),
        "timeoutAt": NO_TIMEOUT if record.timeout_at is None else record.timeout_at,
        "createdAt": record.created_at,
    }
    if record.settled_at is not None:
        out["settledAt"] = record.settled_at
    return out


def task_wire(task: TaskRecord, *, ttl: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": task.id,
        "version": task.version,
        "state": task.state.value,
        "resumes": [],
    }
    if task.pid is not None:
        out["pid"] = task.pid
    if ttl is not None:
        out["ttl"] = ttl
    return out


def schedule_wire(record: ScheduleRecord) -> dict[str, Any]:
    """A schedule as the SDKs read it (``ScheduleRecord``; the TypeScript SDK needs
    ``nextRunAt``). A dawait schedule shows the promise each slot starts."""
    if record.promise is not None:
        spec = SchedulePromise.decode(record.promise)
        param, timeout, tags = record.args, spec.timeout, spec.tags
        template = spec.id
    else:
        param = invocation_param(record.func, record.version, record.args)
        timeout, tags = 0, {}
        template = f"{record.id}.{{{{.timestamp}}}}"  # as slot_invocation_id makes them
    out: dict[str, Any] = {
        "id": record.id,
        "cron": record.cron,
        "promiseId": template,
        "promiseTimeout": timeout,
        "promiseParam": value_wire(Value(data=param)),
        "promiseTags": tags,
        "createdAt": record.created_at,
        "nextRunAt": record.next_run_at or 0,
    }
    if record.last_run_at is not None:
        out["lastRunAt"] = record.last_run_at
    return out


def field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    """``data[name]``, which must be of ``kind``; WireError(400) naming it otherwise."""
    if name not in data:
        raise WireError(400, f"{what}: data.{name} is missing")
    value = data[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise WireError(400, f"{what}: data.{name} must be {names}, got {type(value).__name__}")
    return value


def value_field(data: Mapping[str, Any], name: str, what: str) -> Value:
    """A Value sent as ``data[name]``: ``{headers?, data?}`` with data base64 of JSON text
    (absent or null: an empty value)."""
    raw = data.get(name)
    if raw is None:
        return Value()
    if not isinstance(raw, dict):
        raise WireError(400, f"{what}: data.{name} must be an object {{headers, data}}")
    headers = raw.get("headers")
    if headers is not None and (
        not isinstance(headers, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        raise WireError(400, f"{what}: data.{name}.headers must map strings to strings")
    encoded = raw.get("data")
    if encoded is None or encoded == "":  # the TypeScript SDK sends "" for no data
        return Value(headers=headers or None)
    if not isinstance(encoded, str):
        raise WireError(400, f"{what}: data.{name}.data must be a base64 string")
    try:
        text = base64.b64decode(encoded, validate=True).decode("utf-8")
        json.loads(text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        shown = encoded if len(encoded) <= 40 else encoded[:40] + "..."
        raise WireError(
            400, f"{what}: data.{name}.data must be base64 of JSON text (UTF-8), got {shown!r}"
        ) from None
    return Value(data=text, headers=headers or None)


def tags_field(data: Mapping[str, Any], name: str, what: str) -> dict[str, str]:
    raw = data.get(name)
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise WireError(400, f"{what}: data.{name} must map strings to strings")
    return dict(raw)


_SETTLE = {
    PromiseState.RESOLVED.value: Settle.RESOLVE,
    PromiseState.REJECTED.value: Settle.REJECT,
    PromiseState.REJECTED_CANCELED.value: Settle.CANCEL,
}


def page_fields(data: Mapping[str, Any], what: str) -> tuple[int, str | None]:
    """A search's ``limit`` (1 to 1000; 100 when absent) and ``cursor``."""
    limit = data.get("limit") or 100
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
        raise WireError(400, f"{what}: data.limit must be an integer from 1 to 1000")
    cursor = data.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise WireError(400, f"{what}: data.cursor must be a string")
    return limit, cursor


def settle_event(data: Mapping[str, Any], what: str) -> Settle:
    state = field(data, "state", str, what)
    event = _SETTLE.get(state)
    if event is None:
        raise WireError(
            400,
            f"{what}: data.state must be resolved, rejected or rejected_canceled, got {state!r}",
        )
    return event
