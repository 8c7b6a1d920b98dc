"""``call_conflict``: what differs when an invocation id is started again with another call,
one message for every store (memory, SQLite, etcd)."""

from __future__ import annotations

import json
from typing import Any

from dawait.core._param import call_conflict, describe_call, invocation_param, read_invocation


def param(func: str, *args: Any, version: int | None = 1, **kwargs: Any) -> str:
    return invocation_param(func, version, json.dumps({"args": args, "kwargs": kwargs}))


ORDER = {"id": "o-1", "lines": [{"sku": "a", "qty": 1}]}
EXISTING = """invocation 'order-1' already exists as shop.pay({"id":"o-1","lines":[{"sku":"a","qty":1}]}, retry=true) v1"""  # noqa: E501
STORED = param("shop.pay", ORDER, retry=True)


def test_the_same_call_is_no_conflict_whatever_its_version() -> None:
    assert call_conflict("order-1", STORED, STORED) is None
    assert call_conflict("order-1", STORED, param("shop.pay", ORDER, retry=True, version=2)) is None


def test_a_promise_that_is_no_invocation() -> None:
    assert call_conflict("order-1", '{"x": 1}', STORED) == (
        "id 'order-1' is already used by a promise that is not an invocation"
    )
    assert call_conflict("order-1", None, STORED) == (
        "id 'order-1' is already used by a promise that is not an invocation"
    )


def test_another_function_shows_both_calls() -> None:
    other = param("shop.refund", ORDER, version=None)
    assert call_conflict("order-1", STORED, other) == (
        f"""{EXISTING}; this call is shop.refund({{"id":"o-1","lines":[{{"sku":"a","qty":1}}]}}), of another function"""  # noqa: E501
    )


def test_other_arguments_name_the_paths_that_differ() -> None:
    changed = {"id": "o-1", "lines": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}]}
    assert call_conflict("order-1", STORED, param("shop.pay", changed, note="x")) == (
        f"{EXISTING}; this call has other arguments: args[0].lines[0].qty is 2 (was 1); "
        """args[0].lines[1] is {"sku":"b","qty":1} (was absent); retry is absent (was true); ..."""
    )
    assert call_conflict("order-1", STORED, param("shop.pay", order=ORDER, retry=True)) == (
        f"{EXISTING}; this call has other arguments: "
        """args[0] is absent (was {"id":"o-1","lines":[{"sku":"a","qty":1}]}); """
        """order is {"id":"o-1","lines":[{"sku":"a","qty":1}]} (was absent)"""
    )
    assert call_conflict("order-1", STORED, param("shop.pay", [ORDER], retry=True)).endswith(
        """other arguments: args[0] is [{"id":"o-1","lines":[{"sku":"a","qty":1}]}] (was {"id":"o-1","lines":[{"sku":"a","qty":1}]})"""  # noqa: E501
    )


def test_at_most_three_differences_and_no_long_values_are_shown() -> None:
    stored = param("f", 1, 2, 3, 4, 5)
    message = call_conflict("j", stored, param("f", 0, 0, 0, 0, "x" * 10_000))
    assert message == (
        "invocation 'j' already exists as f(1, 2, 3, 4, ... 1 more) v1; this call has other "
        "arguments: args[0] is 0 (was 1); args[1] is 0 (was 2); args[2] is 0 (was 3); ..."
    )
    message = call_conflict("j", param("f", "a" * 10_000), param("f", "b" * 10_000))
    assert message is not None
    assert len(message) < 300
    assert message.endswith(f'args[0] is "{"b" * 58}… (was "{"a" * 58}…)')


def test_describe_call() -> None:
    call = read_invocation(param("shop.pay", ORDER, retry=True, version=None))
    assert call is not None
    assert describe_call(call) == 'shop.pay({"id":"o-1","lines":[{"sku":"a","qty":1}]}, retry=true)'
