"""The JSON bodies of the HTTP API, as pydantic models (validated in, serialised out, and the
source of the OpenAPI document)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dawait.core._ids import CALL_SEPARATOR, MAX_ID_LENGTH
from dawait.core._partitions import partition_index

__all__ = [
    "MAX_PAGE",
    "CanceledView",
    "CreateInvocation",
    "CreatePromise",
    "CreateSchedule",
    "ErrorBody",
    "ErrorInfo",
    "Health",
    "InvocationCounts",
    "InvocationPage",
    "InvocationView",
    "PromisePage",
    "PromiseView",
    "RejectPromise",
    "ResolvePromise",
    "ResultView",
    "ScheduleList",
    "ScheduleView",
    "TreeNode",
]

PromiseStateName = Literal[
    "pending", "resolved", "rejected", "rejected_canceled", "rejected_timedout"
]

_ID = Field(
    min_length=1, max_length=MAX_ID_LENGTH, description="Invocation id; no ':' (call ids use it)"
)

MAX_PAGE = 1000
"""Items one page of a list answers at most (``limit``)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Every 4xx/5xx response."""

    error: str = Field(description="A stable code: not_found, conflict, invalid, ...")
    message: str
    field: str | None = Field(default=None, description="The input field that was wrong")


class ErrorInfo(BaseModel):
    """A recorded failure."""

    type: str
    message: str


class CreateInvocation(_Strict):
    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=rf"^[^{CALL_SEPARATOR}]+$")
    function: str = Field(min_length=1, max_length=256)
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    version: int | None = Field(default=None, ge=1, strict=True)


class InvocationView(BaseModel):
    id: str
    function: str | None
    version: int | None
    state: PromiseStateName
    args: list[Any]
    kwargs: dict[str, Any]
    result: Any = None
    error: ErrorInfo | None = None
    created_at: dt.datetime
    settled_at: dt.datetime | None
    timeout_at: dt.datetime | None
    delete_at: dt.datetime | None = Field(
        default=None,
        description="When its retention ends and it is deleted with everything it recorded "
        "(null: still pending, or kept until deleted)",
    )


class CanceledView(InvocationView):
    canceled: bool = Field(
        description="Whether this request canceled it (false: it had ended already)"
    )


class ResultView(BaseModel):
    """An invocation's outcome; ``state`` is ``pending`` when the wait ran out first."""

    id: str
    state: PromiseStateName
    result: Any = None
    error: ErrorInfo | None = None


class InvocationCounts(BaseModel):
    by_state: dict[PromiseStateName, int] = Field(
        description="How many of the invocations the filters keep are in each state"
    )
    total: int
    exact: bool = Field(
        description="False when the count stopped at its limit (100,000): there are more"
    )


class InvocationPage(BaseModel):
    items: list[InvocationView] = Field(description="Newest first (by creation time, then id)")
    cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at the end")
    counts: InvocationCounts | None = Field(
        default=None, description="With ?count=true: the filters' matches counted by state"
    )


class TreeNode(BaseModel):
    id: str
    kind: Literal["invocation", "step", "sleep", "promise", "call"]
    function: str | None
    state: PromiseStateName
    created_at: dt.datetime
    settled_at: dt.datetime | None
    duration_ms: int | None
    attempts: int = Field(default=1, description="Attempts a step took (retries + 1)")
    error: ErrorInfo | None = Field(default=None, description="Why it failed, if it did")
    children: list[TreeNode] = Field(default_factory=list)


class CreatePromise(_Strict):
    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    timeout: float | None = Field(
        default=None, ge=0, le=100 * 365 * 24 * 3600, strict=True, description="Seconds from now"
    )
    data: Any = None


class ResolvePromise(_Strict):
    value: Any = None


class RejectPromise(_Strict):
    error: str | ErrorInfo = Field(description="A message, or {type, message}")


class PromiseView(BaseModel):
    id: str
    state: PromiseStateName
    param: Any = None
    value: Any = None
    error: ErrorInfo | None = None
    tags: dict[str, str]
    created_at: dt.datetime
    settled_at: dt.datetime | None
    timeout_at: dt.datetime | None
    delete_at: dt.datetime | None = Field(
        default=None,
        description="When its retention ends and it is deleted with everything it recorded "
        "(null: still pending, or kept until deleted)",
    )


class PromisePage(BaseModel):
    items: list[PromiseView]
    cursor: str | None


class CreateSchedule(_Strict):
    id: str = Field(min_length=1, max_length=256, pattern=r"^[^:]+$")
    cron: str = Field(
        min_length=1, max_length=256, description="5-field cron (or 6 with leading seconds), UTC"
    )
    function: str = Field(min_length=1, max_length=256)
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class ScheduleView(BaseModel):
    id: str
    cron: str
    function: str
    args: list[Any]
    kwargs: dict[str, Any]
    next_run_at: dt.datetime | None
    last_run_at: dt.datetime | None
    created_at: dt.datetime


class ScheduleList(BaseModel):
    items: list[ScheduleView]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    detail: str | None = None


class NodeView(BaseModel):
    node_id: str
    address: str
    groups: list[str]
    functions: list[str]
    leader: bool
    started_at: dt.datetime


class NodeList(BaseModel):
    cluster: bool
    """False for a node on an embedded store (it alone is listed)."""
    items: list[NodeView]
    partitions: int | None = None
    """The namespace's partition count (cluster only)."""
    owners: dict[str, list[str | None]] = {}
    """Family (a function group; ``""`` for promises no invocation owns) -> the node that
    owns, or is about to own, each of its partitions, by index."""
    function_groups: dict[str, str] = {}
    """Each registered function's group, as the answering node's app has it."""
    balanced: bool = True
    """Whether the answering node owns exactly the partitions it should (none moving)."""
    clock_offset_ms: float | None = None
    """How far the answering node's wall clock is ahead of its peers' majority (measured
    over the peer RPC; null: not measured yet, or no peer)."""
    clock_error_ms: float | None = None
    """The error bound of that measurement (half the median round trip)."""

    def owner(self, id: str, function: str) -> str | None:
        """The node id owning the partition of invocation ``id`` of ``function``."""
        if not self.partitions:
            return None
        owners = self.owners.get(self.function_groups.get(function, "default"))
        return owners[partition_index(id, self.partitions)] if owners else None
