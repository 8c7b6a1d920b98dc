"""The durable promise: records and their state machine.

Pure code: no IO and no clock; ``now`` (epoch milliseconds) is an argument. Stores read a
record, call one of these transitions and write what it returns, so every store settles,
times out and deduplicates promises the same way.

A promise is ``pending`` until it settles once, for good, to ``resolved``, ``rejected``,
``rejected_canceled`` or ``rejected_timedout``. A promise past its ``timeout_at`` is timed out
whether or not anything has noticed yet: every transition first applies the timeout, so
lazily noticed and eagerly fired timeouts give the same record. A promise tagged as a timer
resolves at its timeout instead of timing out.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

__all__ = [
    "EMPTY",
    "NO_TAGS",
    "TAG_BRANCH",
    "TAG_DETACHED",
    "TAG_RETENTION",
    "TAG_TIMER",
    "PromiseRecord",
    "PromiseState",
    "Settle",
    "SettleOutcome",
    "Transition",
    "Value",
    "create_promise",
    "expire_promise",
    "same_value",
    "settle_promise",
]

TAG_TIMER = "resonate:timer"
TAG_BRANCH = "resonate:branch"
TAG_RETENTION = "dawait:retention"
TAG_DETACHED = "dawait:detached"
"""On a ``ctx.detached`` invocation: it outlives its caller (a cancel does not reach it)."""
"""On a root (an invocation or a promise that is nobody's call): milliseconds it is kept
once settled, then deleted with its tree. Absent: kept until deleted."""
NO_TAGS: Mapping[str, str] = MappingProxyType({})


class PromiseState(enum.StrEnum):
    PENDING = "pending"
    RESOLVED = "resolved"
    REJECTED = "rejected"
    REJECTED_CANCELED = "rejected_canceled"
    REJECTED_TIMEDOUT = "rejected_timedout"

    @property
    def settled(self) -> bool:
        return self is not PromiseState.PENDING


class Settle(enum.StrEnum):
    """What may happen to a promise."""

    RESOLVE = "resolve"
    REJECT = "reject"
    CANCEL = "cancel"
    TIMEOUT = "timeout"


# The whole state machine: which event moves a pending promise to which state. Settled
# states have no outgoing transitions.
_TRANSITIONS: Mapping[tuple[PromiseState, Settle], PromiseState] = MappingProxyType(
    {
        (PromiseState.PENDING, Settle.RESOLVE): PromiseState.RESOLVED,
        (PromiseState.PENDING, Settle.REJECT): PromiseState.REJECTED,
        (PromiseState.PENDING, Settle.CANCEL): PromiseState.REJECTED_CANCELED,
        (PromiseState.PENDING, Settle.TIMEOUT): PromiseState.REJECTED_TIMEDOUT,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Value:
    """An opaque payload: ``data`` is a JSON document as text, ``headers`` free metadata."""

    data: str | None = None
    headers: Mapping[str, str] | None = None


EMPTY = Value()


@dataclass(frozen=True, slots=True, kw_only=True)
class PromiseRecord:
    id: str
    state: PromiseState
    param: Value = EMPTY
    value: Value = EMPTY
    timeout_at: int | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: NO_TAGS)
    created_at: int
    settled_at: int | None = None

    @property
    def is_timer(self) -> bool:
        return self.tags.get(TAG_TIMER) == "true"

    @property
    def branch(self) -> str | None:
        return self.tags.get(TAG_BRANCH)

    @property
    def delete_at(self) -> int | None:
        """When its retention ends (``TAG_RETENTION`` after it settled); None while pending,
        or if it is kept until deleted."""
        retention = self.tags.get(TAG_RETENTION)
        if self.settled_at is None or retention is None:
            return None
        try:
            return self.settled_at + int(retention)
        except ValueError:  # not one of ours: kept
            return None


class SettleOutcome(enum.Enum):
    SETTLED = "settled"
    """The transition settled a pending promise."""
    ALREADY_SAME = "already_same"
    """The promise was settled before with the same state and value: nothing changed."""
    ALREADY_OTHER = "already_other"
    """The promise was settled before with another state or value: nothing changed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """A transition's result: the record to keep and whether it must be written."""

    record: PromiseRecord
    changed: bool
    outcome: SettleOutcome = SettleOutcome.SETTLED


def same_value(a: Value, b: Value) -> bool:
    """Whether two payloads are the same: equal JSON documents (key order and number
    spelling aside) with equal headers."""
    if a.headers != b.headers:
        return False
    if a.data == b.data:
        return True
    if a.data is None or b.data is None:
        return False
    try:
        return bool(json.loads(a.data) == json.loads(b.data))
    except ValueError:
        return False


def expire_promise(record: PromiseRecord, now: int) -> Transition:
    """Time the promise out if it is pending and its deadline has passed."""
    if record.state.settled or record.timeout_at is None or now < record.timeout_at:
        return Transition(record=record, changed=False, outcome=SettleOutcome.ALREADY_SAME)
    event = Settle.RESOLVE if record.is_timer else Settle.TIMEOUT
    settled = replace(
        record,
        state=_TRANSITIONS[(PromiseState.PENDING, event)],
        settled_at=record.timeout_at,
    )
    return Transition(record=settled, changed=True)


def create_promise(
    existing: PromiseRecord | None,
    *,
    id: str,
    now: int,
    param: Value = EMPTY,
    timeout_at: int | None = None,
    tags: Mapping[str, str] = NO_TAGS,
    state: PromiseState = PromiseState.PENDING,
    value: Value = EMPTY,
) -> Transition:
    """Create a promise, or return the one that already has this id (idempotent by id).

    ``state`` other than pending creates the promise already settled: a leaf step's one
    write. An existing promise is returned as it is (timed out if its deadline passed);
    comparing its param with the request is the caller's business.
    """
    if existing is not None:
        return expire_promise(existing, now)
    settled = state.settled
    record = PromiseRecord(
        id=id,
        state=state,
        param=param,
        value=value if settled else EMPTY,
        timeout_at=timeout_at,
        tags=tags,
        created_at=now,
        settled_at=now if settled else None,
    )
    if not settled:
        record = expire_promise(record, now).record
    return Transition(record=record, changed=True)


def settle_promise(record: PromiseRecord, *, event: Settle, value: Value, now: int) -> Transition:
    """Settle a pending promise; settling a settled one changes nothing and says how it compares."""
    expired = expire_promise(record, now)
    current = expired.record
    if current.state.settled:
        target = _TRANSITIONS[(PromiseState.PENDING, event)]
        same = current.state is target and same_value(current.value, value)
        outcome = SettleOutcome.ALREADY_SAME if same else SettleOutcome.ALREADY_OTHER
        return Transition(record=current, changed=expired.changed, outcome=outcome)
    settled = replace(
        current,
        state=_TRANSITIONS[(PromiseState.PENDING, event)],
        value=value,
        settled_at=now,
    )
    return Transition(record=settled, changed=True)
