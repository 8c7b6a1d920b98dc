"""Resonate's wire format (core/_wire.py): addresses, values, records."""

from __future__ import annotations

import base64

import pytest

from dawait.core._promise import PromiseRecord, PromiseState, Settle, Value
from dawait.core._task import TaskRecord, TaskState
from dawait.core._wire import (
    NO_TIMEOUT,
    Address,
    WireError,
    parse_address,
    promise_wire,
    settle_event,
    task_wire,
    value_field,
)


@pytest.mark.parametrize(
    ("raw", "address"),
    [
        ("poll://any@workers", Address(True, "workers")),
        ("poll://any@Workers/p1", Address(True, "workers", "p1")),  # hosts are lowercased
        ("poll://uni@g/p1", Address(False, "g", "p1")),
        ("poll://uni@g", None),  # a unicast names its process
        ("poll://all@g", None),
        ("http://any@g", None),
        ("poll://any@", None),
        ("workers", None),
    ],
)
def test_poll_addresses(raw: str, address: Address | None) -> None:
    assert parse_address(raw) == address


def test_values_are_base64_of_json_text_on_the_wire() -> None:
    encoded = base64.b64encode(b'{"a": [1]}').decode()
    value = value_field({"v": {"data": encoded, "headers": {"h": "x"}}}, "v", "k")
    assert value == Value(data='{"a": [1]}', headers={"h": "x"})
    assert value_field({}, "v", "k") == Value()
    assert value_field({"v": None}, "v", "k") == Value()
    assert value_field({"v": {"data": "", "headers": {}}}, "v", "k") == Value()  # TypeScript
    for bad, why in [
        ({"data": "%%%"}, "base64 of JSON"),
        ({"data": base64.b64encode(b"not json").decode()}, "base64 of JSON"),
        ({"data": base64.b64encode(b"\xff\xfe").decode()}, "base64 of JSON"),
        ({"data": 3}, "base64 string"),
        ({"headers": {"h": 1}}, "headers must map strings to strings"),
        ("text", "must be an object"),
    ]:
        with pytest.raises(WireError, match=why) as raised:
            value_field({"v": bad}, "v", "promise.create")
        assert raised.value.status == 400
        assert "promise.create: data.v" in str(raised.value)


def test_records_in_the_shapes_both_sdks_accept() -> None:
    pending = PromiseRecord(id="p", state=PromiseState.PENDING, created_at=5)
    wire = promise_wire(pending)
    assert wire == {
        "id": "p", "state": "pending", "param": {}, "value": {}, "tags": {},
        "timeoutAt": NO_TIMEOUT, "createdAt": 5,
    }  # fmt: skip
    settled = PromiseRecord(
        id="p", state=PromiseState.RESOLVED, value=Value(data="1"), timeout_at=9,
        created_at=5, settled_at=7,
    )  # fmt: skip
    assert promise_wire(settled)["value"] == {"data": base64.b64encode(b"1").decode()}
    assert promise_wire(settled)["settledAt"] == 7
    task = TaskRecord(id="p", state=TaskState.ACQUIRED, version=3, pid="w", expires_at=10)
    assert task_wire(task, ttl=60) == {
        "id": "p", "version": 3, "state": "acquired", "resumes": [], "pid": "w", "ttl": 60
    }  # fmt: skip


def test_settle_states() -> None:
    assert settle_event({"state": "rejected_canceled"}, "k") is Settle.CANCEL
    with pytest.raises(WireError, match="must be resolved, rejected or rejected_canceled"):
        settle_event({"state": "rejected_timedout"}, "promise.settle")
