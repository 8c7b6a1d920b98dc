"""How the etcd store lays out a namespace and encodes what it keeps there.

Every record is a compact JSON value under ``/dawait/{namespace}/`` (``Keys``): promises,
tasks, callbacks and schedules (the tables the store operations run on), and the
cluster's own records: a membership record per live node (``Member``) and the leader
key. ``ClusterView`` is those cluster records as the
replica holds them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from dawait.core._partitions import Partition
from dawait.core._promise import NO_TAGS, PromiseRecord, PromiseState, Value
from dawait.core._schedule import ScheduleRecord, schedule_from_row, schedule_row
from dawait.core._task import TaskRecord, task_from_row, task_row

__all__ = [
    "LAYOUT",
    "ClusterView",
    "Keys",
    "Member",
    "decode_promise",
    "decode_schedule",
    "decode_task",
    "dumps",
    "encode_promise",
    "encode_schedule",
    "encode_task",
    "namespace_prefix",
    "partition_prefix",
]


# -- records as JSON values ----------------------------------------------------------------


def _value(value: Value) -> list[Any]:
    return [value.data, None if value.headers is None else dict(value.headers)]


def _unvalue(raw: list[Any]) -> Value:
    return Value(data=raw[0], headers=raw[1])


def dumps(obj: Any) -> bytes:
    """Compact JSON, as every value is stored: UTF-8 as it is (``\\uXXXX`` escapes would
    triple a payload of accented text), escaped only where it holds a lone surrogate."""
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode()


def encode_promise(r: PromiseRecord) -> bytes:
    return dumps(
        {
            "id": r.id,
            "state": r.state.value,
            "param": _value(r.param),
            "value": _value(r.value),
            "timeout_at": r.timeout_at,
            "tags": dict(r.tags) if r.tags else None,
            "created_at": r.created_at,
            "settled_at": r.settled_at,
        }
    )


def decode_promise(raw: bytes) -> PromiseRecord:
    d = json.loads(raw)
    return PromiseRecord(
        id=d["id"],
        state=PromiseState(d["state"]),
        param=_unvalue(d["param"]),
        value=_unvalue(d["value"]),
        timeout_at=d["timeout_at"],
        tags=d["tags"] or NO_TAGS,
        created_at=d["created_at"],
        settled_at=d["settled_at"],
    )


def encode_task(t: TaskRecord) -> bytes:
    return dumps(task_row(t))


def decode_task(raw: bytes) -> TaskRecord:
    return task_from_row(json.loads(raw))


def encode_schedule(s: ScheduleRecord) -> bytes:
    return dumps(schedule_row(s))


def decode_schedule(raw: bytes) -> ScheduleRecord:
    return schedule_from_row(json.loads(raw))


_LAST_MS = 10**15 - 1


def creation_mark(created_at: int) -> str:
    """How a creation time is written in an ``o/`` key (descending as times ascend)."""
    return f"{_LAST_MS - created_at:015d}"


class Keys:
    """Where each record lives under the namespace's prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def promise(self, id: str) -> str:
        return f"{self.prefix}p/{id}"

    def task(self, id: str) -> str:
        return f"{self.prefix}t/{id}"

    def callback(self, promise_id: str, task_id: str) -> str:
        # Length-prefixed: ids may hold any character.
        return f"{self.prefix}c/{len(promise_id)}/{promise_id}{task_id}"

    def schedule(self, id: str) -> str:
        return f"{self.prefix}s/{id}"

    def deletion(self, at: int, id: str) -> str:
        """The retention index: root ``id`` is due for deletion at ``at`` (epoch ms, padded
        so that keys sort by time)."""
        return f"{self.prefix}r/{at:015d}/{id}"

    def creation(self, created_at: int, id: str) -> str:
        """The creation index: invocation ``id`` was created at ``created_at`` (epoch ms,
        counted down from ``_LAST_MS`` so that keys sort newest first, then by id)."""
        return f"{self.prefix}o/{creation_mark(created_at)}/{id}"

    def link(self, invocation: str, promise: str) -> str:
        """That ``invocation`` made ``promise``, which has an id of its own (so it lives in
        the free family): what a cancel of the invocation reaches it by."""
        return f"{self.links(invocation)}{promise}"

    def links(self, invocation: str) -> str:
        return f"{self.prefix}k/{len(invocation)}/{invocation}"

    def member(self, node_id: str) -> str:
        return f"{self.prefix}n/{node_id}"

    def polls(self, node_id: str) -> str:
        """The groups whose Resonate poll streams node ``node_id`` holds (under its lease)."""
        return f"{self.prefix}q/{node_id}"

    @property
    def leader(self) -> str:
        return f"{self.prefix}leader"

    @property
    def lock(self) -> str:
        """The namespace's lock (held by one node, when not in cluster mode)."""
        return f"{self.prefix}lock"

    def marker(self, owner: str) -> str:
        """The transaction marker of the store ``owner`` (see ``_etcd_batches``)."""
        return f"{self.prefix}x/{owner}"


# -- the partitioned layout (cluster mode) -------------------------------------------------

LAYOUT = 2
"""The cluster layout this code writes: namespace records under ``N/``, each partition's
under ``P/{family}/{index}/`` (cluster/_partition_store.py). Layout 1 kept every record of
the namespace directly under its prefix, read whole by every node."""


def namespace_prefix(namespace: str) -> str:
    """Where a cluster namespace keeps what is one for all of it: its meta record (``meta``:
    layout and partition count), members (``n/``), the leader key, schedules (``s/``)."""
    return f"/dawait/{namespace}/N/"


def partition_prefix(namespace: str, partition: Partition) -> str:
    """Where one partition's records live."""
    return f"/dawait/{namespace}/P/{partition.path}/"


# -- the cluster's own records: members, the leader ---------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """A live node, as its membership record (under its lease) says."""

    node_id: str
    address: str
    """Where its HTTP API answers (``--advertise``)."""
    groups: tuple[str, ...]
    """The function groups it runs."""
    versions: dict[str, tuple[int, ...]]
    """The functions it runs (those registered in its app, in its groups), each with its
    registered versions."""
    pid: str
    """This incarnation of the node: what its tasks carry."""
    started_at: int

    def encode(self) -> bytes:
        return dumps(
            {
                "node_id": self.node_id,
                "address": self.address,
                "groups": list(self.groups),
                "versions": {f: list(v) for f, v in self.versions.items()},
                "pid": self.pid,
                "started_at": self.started_at,
            }
        )

    @property
    def functions(self) -> tuple[str, ...]:
        return tuple(sorted(self.versions))

    def serves(self, function: str, version: int | None) -> bool:
        """Whether this node runs ``function`` (at ``version``, when given)."""
        known = self.versions.get(function)
        return known is not None and (version is None or version in known)

    @classmethod
    def decode(cls, raw: bytes) -> Member:
        d = json.loads(raw)
        return cls(
            node_id=d["node_id"],
            address=d["address"],
            groups=tuple(d["groups"]),
            versions={f: tuple(v) for f, v in d["versions"].items()},
            pid=d["pid"],
            started_at=d["started_at"],
        )


@dataclass
class ClusterView:
    """Who is in the cluster, who leads."""

    members: dict[str, Member] = field(default_factory=dict)
    leader: str | None = None
    """The leading node's id."""
    polls: dict[str, frozenset[str]] = field(default_factory=dict)
    """Node id -> the groups of the Resonate SDK workers polling it (``Keys.polls``)."""
