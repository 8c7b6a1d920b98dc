"""The codec: signatures, typed arguments and results as JSON, errors recorded and rebuilt."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.util
import json
import sys
import uuid
from typing import Any

import pydantic
import pytest

from dawait import Context
from dawait.core._promise import PromiseRecord, PromiseState, Value
from dawait.errors import (
    CanceledError,
    NonDeterminismError,
    PromiseTimeoutError,
    SerializationError,
    StepError,
)
from dawait.runtime._codec import (
    decode_error,
    decode_json,
    decode_outcome,
    encode_error,
    encode_json,
    signature_of,
)


@dataclasses.dataclass(frozen=True)
class Item:
    sku: str
    count: int


class Customer(pydantic.BaseModel):
    id: uuid.UUID
    since: dt.datetime


class AppError(Exception):
    """An exception type of this (imported) module."""


class Holder:
    class InnerError(Exception):
        """An exception type nested in a class."""


class TwoArgsError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


class KeywordOnlyError(Exception):
    def __init__(self, *, code: int) -> None:
        super().__init__(f"code {code}")


CUSTOMER_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
SINCE = dt.datetime(2020, 2, 29, 8, 0, tzinfo=dt.UTC)


def sig(fn: Any, name: str = "fn") -> Any:
    return signature_of(fn, name=name, context_type=Context)


# -- signature_of ---------------------------------------------------------------------------


def test_a_function_whose_first_parameter_is_a_context_takes_context() -> None:
    async def durable(ctx: Context, item: Item) -> int:
        return item.count

    def leaf(item: Item) -> int:
        return item.count

    durable_sig = sig(durable)
    assert durable_sig.takes_context is True
    assert durable_sig.is_async is True
    assert [p.name for p in durable_sig.params] == ["item"]

    leaf_sig = sig(leaf)
    assert leaf_sig.takes_context is False
    assert leaf_sig.is_async is False
    assert [p.name for p in leaf_sig.params] == ["item"]


def test_a_first_parameter_that_is_not_a_context_is_an_argument() -> None:
    def untyped(ctx, n):  # type: ignore[no-untyped-def]
        return n

    assert sig(untyped).takes_context is False
    assert [p.name for p in sig(untyped).params] == ["ctx", "n"]


def test_the_result_type_is_the_return_annotation_of_sync_and_async_functions() -> None:
    async def async_fn() -> Item:
        return Item(sku="a", count=1)

    def sync_fn() -> list[dt.datetime]:
        return []

    assert sig(async_fn).result.validate_json('{"sku": "a", "count": 1}') == Item("a", 1)
    assert sig(sync_fn).result.validate_json('["2020-02-29T08:00:00Z"]') == [SINCE]


def test_signatures_are_cached_per_function() -> None:
    def fn(x: int) -> int:
        return x

    assert sig(fn) is sig(fn)


def test_unannotated_parameters_and_results_pass_json_through() -> None:
    def fn(x, y=2):  # type: ignore[no-untyped-def]
        return x

    s = sig(fn)
    assert json.loads(s.encode_args([{"a": [1]}], {})) == {"args": [{"a": [1]}], "kwargs": {}}
    assert s.result.validate_json('{"k": "v"}') == {"k": "v"}


def test_an_unresolvable_annotation_is_an_error_naming_it() -> None:
    # Treating it as Any would silently give the other annotations up too (get_type_hints
    # fails as a whole) and change types between a first run and a replay.
    def fn(x: NotDefinedAnywhere, when: dt.datetime) -> dt.datetime:  # type: ignore[name-defined]  # noqa: F821
        return when

    with pytest.raises(SerializationError, match=r"fn: .*'NotDefinedAnywhere'.*parameter 'x'"):
        sig(fn)


# -- encode_args / decode_args ----------------------------------------------------------------


def test_typed_arguments_round_trip_to_their_types() -> None:
    def fn(item: Item, customer: Customer, *, at: dt.datetime, ids: list[uuid.UUID]) -> None:
        return None

    s = sig(fn, "place")
    customer = Customer(id=CUSTOMER_ID, since=SINCE)
    encoded = s.encode_args([Item("a", 2), customer], {"at": SINCE, "ids": [CUSTOMER_ID]})
    plain = json.loads(encoded)
    assert plain == {
        "args": [
            {"sku": "a", "count": 2},
            {"id": str(CUSTOMER_ID), "since": "2020-02-29T08:00:00Z"},
        ],
        "kwargs": {"at": "2020-02-29T08:00:00Z", "ids": [str(CUSTOMER_ID)]},
    }
    args, kwargs = s.decode_args(plain["args"], plain["kwargs"])
    assert args == [Item("a", 2), customer]
    assert type(args[0]) is Item
    assert type(args[1]) is Customer
    assert kwargs == {"at": SINCE, "ids": [CUSTOMER_ID]}
    assert type(kwargs["ids"][0]) is uuid.UUID


def test_the_plain_json_form_of_an_argument_is_accepted_and_normalised() -> None:
    def fn(item: Item, at: dt.datetime, n: int) -> None:
        return None

    s = sig(fn)
    encoded = s.encode_args([{"sku": "a", "count": 1}, "2020-02-29T08:00:00Z", "7"], {})
    assert json.loads(encoded)["args"] == [{"sku": "a", "count": 1}, "2020-02-29T08:00:00Z", 7]


def test_var_positional_and_var_keyword_arguments_use_their_annotations() -> None:
    def fn(first: int, *rest: dt.datetime, **extra: uuid.UUID) -> None:
        return None

    s = sig(fn)
    encoded = json.loads(s.encode_args([1, SINCE], {"who": CUSTOMER_ID}))
    args, kwargs = s.decode_args(encoded["args"], encoded["kwargs"])
    assert args == [1, SINCE]
    assert kwargs == {"who": CUSTOMER_ID}


def test_an_argument_that_does_not_fit_names_the_function_and_parameter() -> None:
    def fn(item: Item, count: int) -> None:
        return None

    s = sig(fn, "reserve")
    with pytest.raises(SerializationError, match=r"reserve: argument 'count'"):
        s.encode_args([Item("a", 1), "many"], {})
    with pytest.raises(SerializationError, match=r"reserve: argument 'item'"):
        s.encode_args([{"sku": "a"}, 1], {})


@pytest.mark.parametrize(
    ("args", "kwargs", "problem"),
    [
        ([], {}, "missing a required argument: 'count'"),
        ([1, 2], {}, "too many positional arguments"),
        ([1], {"other": 2}, "unexpected keyword argument 'other'"),
    ],
)
def test_arguments_that_do_not_bind_name_the_function(
    args: list[Any], kwargs: dict[str, Any], problem: str
) -> None:
    def fn(ctx: Context, count: int) -> None:
        return None

    with pytest.raises(SerializationError, match=rf"reserve: .*{problem}"):
        sig(fn, "reserve").encode_args(args, kwargs)


def test_an_argument_that_is_not_json_is_a_serialization_error() -> None:
    def fn(x):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(SerializationError, match=r"fn: argument 'x'"):
        sig(fn).encode_args([object()], {})


def test_decode_args_rejects_stored_arguments_that_no_longer_fit() -> None:
    def fn(count: int) -> None:
        return None

    with pytest.raises(SerializationError, match=r"fn: argument 'count'"):
        sig(fn).decode_args(["many"], {})


# -- strict arguments (plain JSON from the HTTP API) ----------------------------------------


class Line(pydantic.BaseModel):
    sku: str
    qty: int


class Order(pydantic.BaseModel):
    id: str
    lines: list[Line]


def strict_fn(
    n: int, on: bool, when: dt.datetime, order: Order, maybe: int | None = None, *rest: int
) -> None:
    return None


STRICT_OK = [1, True, "2026-01-01T00:00:00Z", {"id": "o", "lines": [{"sku": "a", "qty": 2}]}]


def strict(*changes: tuple[int, Any], **kwargs: Any) -> str:
    """The strict error of ``STRICT_OK`` with ``changes`` (index, value) made."""
    args = list(STRICT_OK)
    for index, value in changes:
        args[index] = value
    with pytest.raises(SerializationError) as raised:
        sig(strict_fn, "add").encode_args(args, kwargs, strict=True)
    return str(raised.value)


def test_strict_arguments_of_the_right_json_type_encode_as_the_lax_ones_do() -> None:
    s = sig(strict_fn, "add")
    encoded = s.encode_args(STRICT_OK, {"maybe": None}, strict=True)
    assert encoded == s.encode_args(STRICT_OK, {"maybe": None})
    args, kwargs = s.decode_param('{"func":"add",' + encoded[1:])
    order = Order(id="o", lines=[Line(sku="a", qty=2)])
    assert args == [1, True, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), order]
    assert kwargs == {"maybe": None}


def test_strict_json_mode_takes_what_json_has_for_a_type() -> None:
    """A JSON int for a float, ISO strings for dates, a string for a UUID, an array for a
    tuple, an object for a dataclass, anything for an unannotated parameter."""

    def typed(x: float, on: dt.date, who: uuid.UUID, pair: tuple[int, str], item: Item, raw):  # type: ignore[no-untyped-def]
        return None

    given = [1, "2026-01-01", str(CUSTOMER_ID), [1, "a"], {"sku": "a", "count": 1}, {"k": [1]}]
    got = json.loads(sig(typed).encode_args(given, {}, strict=True))["args"]
    assert got == [1.0, *given[1:]]


@pytest.mark.parametrize(
    ("index", "value", "message"),
    [
        (0, "1", "add(): parameter 'n' expects int, got str \"1\""),
        (0, 1.5, "add(): parameter 'n' expects int, got float 1.5"),
        (0, True, "add(): parameter 'n' expects int, got bool true"),
        (0, None, "add(): parameter 'n' expects int, got None"),
        (1, "yes", "add(): parameter 'on' expects bool, got str \"yes\""),
        (1, 1, "add(): parameter 'on' expects bool, got int 1"),
        (2, 1767225600, "add(): parameter 'when' expects datetime, got int 1767225600"),
        (3, "o", "add(): parameter 'order' expects Order, got str \"o\""),
        (3, [1], "add(): parameter 'order' expects Order, got list [1]"),
    ],
)
def test_a_strict_argument_of_another_json_type_is_refused_naming_parameter_and_type(
    index: int, value: Any, message: str
) -> None:
    assert strict((index, value)) == message


def test_a_strict_misfit_inside_an_argument_names_its_path() -> None:
    assert strict((3, {"id": "o", "lines": [{"sku": "a", "qty": "2"}]})) == (
        "add(): parameter 'order' expects Order: lines.0.qty: "
        'Input should be a valid integer, got str "2"'
    )
    assert strict((3, {"lines": [{}, {"sku": 1, "qty": 1}]})) == (
        "add(): parameter 'order' expects Order: id: Field required; lines.0.sku: Field "
        "required; lines.0.qty: Field required (and 1 more)"
    )
    message = strict((2, "next thursday"))
    assert message.startswith("add(): parameter 'when' expects datetime: Input should be a")
    assert message.endswith('got str "next thursday"')
    assert strict((0, "9" * 1000)) == f"add(): parameter 'n' expects int, got str \"{'9' * 38}…"


def test_strict_keyword_and_var_positional_arguments_are_checked_too() -> None:
    assert strict(maybe="1") == "add(): parameter 'maybe' expects int | None, got str \"1\""
    with pytest.raises(SerializationError, match=r"parameter 'rest' expects int, got str"):
        sig(strict_fn, "add").encode_args([*STRICT_OK, None, 1, "2"], {}, strict=True)
    with pytest.raises(SerializationError, match="unexpected keyword argument 'other'"):
        sig(strict_fn, "add").encode_args(STRICT_OK, {"other": 1}, strict=True)


def test_lax_arguments_and_recorded_ones_still_coerce() -> None:
    """Python callers and replay are unchanged: a recorded ``"1"`` still decodes as 1."""
    s = sig(strict_fn, "add")
    loose = ["1", "yes", 1767225600, STRICT_OK[3]]
    assert json.loads(s.encode_args(loose, {}))["args"][:3] == [1, True, "2026-01-01T00:00:00Z"]
    assert s.decode_args(loose, {})[0][:2] == [1, True]


# -- encode_json / decode_json ----------------------------------------------------------------


def test_encode_json_checks_the_value_against_its_type() -> None:
    s = sig(lambda: None)
    assert encode_json({"a": SINCE}, what="x") == '{"a":"2020-02-29T08:00:00Z"}'

    def fn() -> int:
        return 0

    with pytest.raises(SerializationError, match=r"step x result: cannot encode str"):
        encode_json("abc", sig(fn).result, what="step x result")
    with pytest.raises(SerializationError, match=r"step y: cannot encode object"):
        encode_json(object(), s.result, what="step y")


def test_decode_json_names_what_does_not_fit() -> None:
    def fn() -> Item:
        return Item("a", 1)

    assert decode_json(None, sig(fn).result, what="x") is None
    with pytest.raises(SerializationError, match=r"step z \(wf:1\): stored value does not fit"):
        decode_json('{"sku": 1}', sig(fn).result, what="step z (wf:1)")


# -- encode_error / decode_error --------------------------------------------------------------


def roundtrip(error: BaseException) -> BaseException:
    return decode_error(encode_error(error), what="step s (wf:1)")


def test_an_error_is_recorded_with_its_type_message_and_args() -> None:
    record = json.loads(encode_error(AppError("no stock", 3)))
    assert record == {
        "type": f"{__name__}.AppError",
        "message": "('no stock', 3)",
        "args": ["no stock", 3],
    }


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad value"),
        KeyError("missing"),
        FileNotFoundError(2, "No such file or directory"),
        AppError("app trouble"),
        Holder.InnerError("inner trouble"),
        TwoArgsError(404, "not found"),
        NonDeterminismError("wf:1 changed"),
        PromiseTimeoutError("wf:2 timed out"),
        CanceledError("wf canceled"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_importable_error_type_is_rebuilt_with_its_args(error: Exception) -> None:
    rebuilt = roundtrip(error)
    assert type(rebuilt) is type(error)
    assert rebuilt.args == error.args
    assert str(rebuilt) == str(error)


def test_rebuilt_errors_keep_their_constructor_attributes() -> None:
    rebuilt = roundtrip(TwoArgsError(404, "not found"))
    assert isinstance(rebuilt, TwoArgsError)
    assert (rebuilt.code, rebuilt.detail) == (404, "not found")


def test_args_that_are_not_json_fall_back_to_the_message() -> None:
    error = AppError(object())
    record = json.loads(encode_error(error))
    assert "args" not in record
    rebuilt = roundtrip(error)
    assert type(rebuilt) is AppError
    assert str(rebuilt) == str(error)


def test_an_error_whose_constructor_cannot_be_called_becomes_step_error() -> None:
    rebuilt = roundtrip(KeywordOnlyError(code=7))
    assert isinstance(rebuilt, StepError)
    assert rebuilt.type_name == f"{__name__}.KeywordOnlyError"
    assert "code 7" in str(rebuilt)
    assert "step s (wf:1)" in str(rebuilt)


def test_a_local_error_class_becomes_step_error_naming_it() -> None:
    class LocalError(Exception):
        pass

    rebuilt = roundtrip(LocalError("local"))
    assert isinstance(rebuilt, StepError)
    assert rebuilt.type_name == f"{__name__}.{LocalError.__qualname__}"
    assert str(rebuilt) == f"step s (wf:1) failed with {rebuilt.type_name}: local"


def test_an_error_from_a_module_not_imported_becomes_step_error_without_importing_it() -> None:
    module = "wave"  # a stdlib module with an Error class that nothing here imports
    if module in sys.modules:
        pytest.skip(f"{module} is already imported in this process")
    assert importlib.util.find_spec(module) is not None
    data = json.dumps({"type": f"{module}.Error", "message": "bad frame", "args": ["bad frame"]})

    rebuilt = decode_error(data, what="step s (wf:1)")
    assert isinstance(rebuilt, StepError)
    assert rebuilt.type_name == f"{module}.Error"
    assert f"{module}.Error: bad frame" in str(rebuilt)
    assert module not in sys.modules, "decoding stored data imported a module"

    wave = importlib.import_module(module)
    try:
        rebuilt = decode_error(data, what="step s (wf:1)")
        assert type(rebuilt) is wave.Error
        assert str(rebuilt) == "bad frame"
    finally:
        del sys.modules[module]


@pytest.mark.parametrize(
    "type_name",
    [
        "builtins.KeyboardInterrupt",  # not an Exception: must not be raised into user code
        "builtins.SystemExit",
        "os.system",  # not a type at all
        "builtins.dict",  # a type, not an exception
        "no.such.module.Error",
        "Error",  # no module part
        "",
    ],
)
def test_only_exception_types_are_rebuilt(type_name: str) -> None:
    data = json.dumps({"type": type_name, "message": "m", "args": ["m"]})
    rebuilt = decode_error(data, what="step s (wf:1)")
    assert isinstance(rebuilt, StepError)
    assert type(rebuilt) is StepError
    assert "m" in str(rebuilt)


@pytest.mark.parametrize("data", [None, "", "not json", "[1, 2]", '{"message": 5}'])
def test_garbled_error_records_still_decode_to_an_exception(data: str | None) -> None:
    rebuilt = decode_error(data, what="step s (wf:1)")
    assert isinstance(rebuilt, StepError)
    assert "step s (wf:1)" in str(rebuilt)


def test_a_step_error_is_recorded_under_its_original_type_name() -> None:
    original = StepError("step s (wf:1) failed with gone.Error: x", type_name="gone.Error")
    record = json.loads(encode_error(original))
    assert record["type"] == "gone.Error"
    again = decode_error(json.dumps(record), what="wf")
    assert isinstance(again, StepError)
    assert again.type_name == "gone.Error"


# -- decode_outcome -------------------------------------------------------------------------


def record(state: PromiseState, data: str | None = None) -> PromiseRecord:
    return PromiseRecord(id="wf:1", state=state, value=Value(data=data), created_at=0, settled_at=1)


def test_decode_outcome_gives_the_value_or_raises_the_recorded_error() -> None:
    def fn() -> dt.datetime:
        return SINCE

    result = sig(fn).result
    assert decode_outcome(record(PromiseState.RESOLVED, '"2020-02-29T08:00:00Z"'), result, "s") == (
        SINCE
    )
    with pytest.raises(AppError, match="boom"):
        decode_outcome(record(PromiseState.REJECTED, encode_error(AppError("boom"))), result, "s")
    with pytest.raises(CanceledError, match=r"step s \(wf:1\)"):
        decode_outcome(record(PromiseState.REJECTED_CANCELED), result, "step s (wf:1)")
    with pytest.raises(PromiseTimeoutError, match=r"step s \(wf:1\)"):
        decode_outcome(record(PromiseState.REJECTED_TIMEDOUT), result, "step s (wf:1)")
