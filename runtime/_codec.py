"""Payloads as JSON, typed through pydantic from the functions' annotations.

Arguments are checked against their parameters' annotations when an invocation starts and
decoded back to those types when it runs (or replays); a step's result is encoded through
its return annotation and decoded to that type on replay. Errors are recorded as their
type's qualified name, message and (when JSON-able) ``args``, and rebuilt on replay: the
original type when it can be imported, else ``StepError`` naming it. Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import re
import sys
import typing
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic
from pydantic import TypeAdapter
from pydantic_core import PydanticSerializationError

from dawait.core._errors import (
    CanceledError,
    PayloadTooLargeError,
    PromiseTimeoutError,
    SerializationError,
    StepError,
)
from dawait.core._param import call_target, read_invocation
from dawait.core._promise import PromiseRecord, PromiseState, Value

__all__ = [
    "ANY",
    "MAX_ERROR_MESSAGE",
    "Signature",
    "check_request_size",
    "check_size",
    "decode_error",
    "decode_json",
    "decode_outcome",
    "encode_error",
    "encode_json",
    "signature_of",
]

ANY: TypeAdapter[Any] = TypeAdapter(Any)
_ADAPTERS: dict[object, TypeAdapter[Any]] = {Any: ANY}
_SIGNATURES: weakref.WeakKeyDictionary[Callable[..., Any], Signature] = weakref.WeakKeyDictionary()
"""Weak: a lambda or closure made per call must not live on in the cache."""


def _adapter(annotation: Any) -> TypeAdapter[Any]:
    try:
        return _ADAPTERS[annotation]
    except KeyError:
        pass
    except TypeError:  # unhashable annotation: build one each time
        return TypeAdapter(annotation)
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    _ADAPTERS[annotation] = adapter
    return adapter


def validation_summary(error: pydantic.ValidationError) -> str:
    """A pydantic error in one line: each problem as ``field: message``."""
    problems = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"])
        problems.append(f"{where}: {item['msg']}" if where else str(item["msg"]))
    return "; ".join(problems) or str(error)


def encode_json(value: object, adapter: TypeAdapter[Any] = ANY, *, what: str) -> str:
    """``value`` as JSON text through ``adapter``; ``what`` names it in the error."""
    try:
        return adapter.dump_json(value, warnings="error").decode()
    except (PydanticSerializationError, pydantic.ValidationError, ValueError) as exc:
        raise SerializationError(f"{what}: cannot encode {type(value).__name__}: {exc}") from exc
    except TypeError as exc:
        raise SerializationError(f"{what}: cannot encode {type(value).__name__}: {exc}") from exc


def check_size(data: str, limit: int, what: str) -> str:
    """``data`` if its UTF-8 encoding is at most ``limit`` bytes, else
    ``PayloadTooLargeError`` naming ``what``, the size and the limit."""
    if len(data) * 4 > limit:  # else it fits: a character is at most 4 bytes
        size = len(data.encode("utf-8", "surrogatepass"))
        if size > limit:
            raise PayloadTooLargeError(
                f"{what}: {size:,} bytes, over the store's payload limit of {limit:,} bytes "
                "(max_payload); keep large data in a blob store and pass its key"
            )
    return data


def check_request_size(id: str, param: Value, value: Value, limit: int) -> None:
    """``PayloadTooLargeError`` if a new promise's param or value is over ``limit``: the
    arguments of an invocation (naming its function), else a promise's data or value."""
    if param.data is not None and len(param.data) * 4 > limit:
        function = call_target(param.data)[0]
        what = f"the arguments of {function} ({id})" if function else f"the data of promise {id}"
        check_size(param.data, limit, what)
    if value.data is not None and len(value.data) * 4 > limit:
        check_size(value.data, limit, f"the value of promise {id}")


def decode_json(data: str | None, adapter: TypeAdapter[Any] = ANY, *, what: str) -> Any:
    """JSON text back to the annotated type; ``None`` data decodes as ``None``."""
    if data is None:
        return None
    try:
        return adapter.validate_json(data)
    except pydantic.ValidationError as exc:
        raise SerializationError(
            f"{what}: stored value does not fit: {validation_summary(exc)}"
        ) from exc


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    kind: inspect._ParameterKind
    adapter: TypeAdapter[Any]
    annotated: bool
    type_name: str = "Any"
    """The annotation as an error names it: ``int``, ``list[Item]``, ``int | None``."""


_MODULE_PATH = re.compile(r"(?<![\w.'\"])(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])")


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return _MODULE_PATH.sub("", repr(annotation))


def _shown(value: object, limit: int = 40) -> str:
    """A JSON value as an error shows it: its type and its JSON text, cut to ``limit``."""
    text = json.dumps(value, ensure_ascii=False, default=repr)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return "None" if value is None else f"{type(value).__name__} {text}"


def _misfit(function: str, param: _Param, value: object, error: pydantic.ValidationError) -> str:
    """Why ``value`` from outside does not fit ``param``, in one line: ``add(): parameter
    'n' expects int, got str "1"``; where the problem is inside it (a model's field, an
    item), each problem's path, pydantic's message and what was there (three at most)."""
    head = f"{function}(): parameter {param.name!r} expects {param.type_name}"
    problems = error.errors(include_url=False)
    # The value itself is of another type (for a union, of none of its members' types).
    if all(p["type"].endswith("_type") and p["input"] == value for p in problems):
        return f"{head}, got {_shown(value)}"
    shown = []
    for problem in problems[:3]:
        where = ".".join(str(part) for part in problem["loc"])
        detail = problem["msg"]
        if problem["type"] != "missing":
            detail += f", got {_shown(problem['input'])}"
        shown.append(f"{where}: {detail}" if where else detail)
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return f"{head}: {'; '.join(shown)}{more}"


@dataclass(frozen=True, slots=True)
class Signature:
    """What the codec needs to know about a function, computed once per function."""

    name: str
    params: Sequence[_Param]
    result: TypeAdapter[Any]
    takes_context: bool
    is_async: bool
    """Whether calling the function returns a coroutine (else it runs in a worker thread)."""
    inspected: inspect.Signature | None
    layout: _Layout

    def encode_args(
        self, args: Sequence[object], kwargs: Mapping[str, object], *, strict: bool = False
    ) -> str:
        """``{"args": [...], "kwargs": {...}}`` as JSON, each checked against its annotation.

        ``strict``: the arguments are plain JSON from outside (the HTTP API), each
        validated in pydantic's strict JSON mode: ``"1"`` is no ``int`` and ``"yes"`` no
        ``bool``, while an ISO string is a ``datetime`` and an object a model. Otherwise
        they are Python objects (``app.run``, ``ctx.run``), validated laxly as ever."""
        positional, keywords = self._params_for(args, kwargs)
        encode = self._admit_arg if strict else self._encode_arg
        encoded_args = [encode(p, v) for p, v in zip(positional, args, strict=True)]
        encoded_kwargs = [
            f"{json.dumps(key)}:{encode(keywords[key], value)}" for key, value in kwargs.items()
        ]
        return (
            '{"args":[' + ",".join(encoded_args) + '],"kwargs":{' + ",".join(encoded_kwargs) + "}}"
        )

    def decode_args(
        self, args: Sequence[object], kwargs: Mapping[str, object]
    ) -> tuple[list[Any], dict[str, Any]]:
        """Plain JSON arguments (as decoded from the record) to the annotated types."""
        positional, keywords = self._params_for(args, kwargs, check=False)
        return (
            [self._decode_arg(p, v) for p, v in zip(positional, args, strict=True)],
            {key: self._decode_arg(keywords[key], value) for key, value in kwargs.items()},
        )

    def decode_param(self, param: str) -> tuple[list[Any], dict[str, Any]]:
        """The arguments of an encoded invocation param, decoded to their annotated types:
        what a new invocation runs with, exactly as a replay will."""
        call = read_invocation(param)
        if call is None:
            raise SerializationError(f"{self.name}: not an invocation's call record: {param:.80}")
        return self.decode_args(call.args, call.kwargs)

    def _encode_arg(self, param: _Param, value: object) -> str:
        what = f"{self.name}: argument {param.name!r}"
        try:
            return param.adapter.dump_json(value, warnings="error").decode()
        except (PydanticSerializationError, ValueError, TypeError):
            pass
        # A plain JSON form (a dict for a model, a string for a datetime) is fine too.
        return encode_json(self._decode_arg(param, value), param.adapter, what=what)

    def _admit_arg(self, param: _Param, value: object) -> str:
        what = f"{self.name}: argument {param.name!r}"
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"{what}: not plain JSON: {exc}") from exc
        try:
            typed = param.adapter.validate_json(text, strict=True)
        except pydantic.ValidationError as exc:
            raise SerializationError(_misfit(self.name, param, value, exc)) from exc
        return encode_json(typed, param.adapter, what=what)

    def _decode_arg(self, param: _Param, value: object) -> Any:
        try:
            return param.adapter.validate_python(value)
        except pydantic.ValidationError as exc:
            raise SerializationError(
                f"{self.name}: argument {param.name!r} does not fit its annotation: "
                f"{validation_summary(exc)}"
            ) from exc

    def _params_for(
        self, args: Sequence[object], kwargs: Mapping[str, object], *, check: bool = True
    ) -> tuple[list[_Param], dict[str, _Param]]:
        """The parameter each positional and keyword argument binds to."""
        ordered, rest, named, extra = self.layout
        # Exactly one argument per parameter, all positional, always binds.
        plain = not kwargs and len(args) == len(ordered) == len(self.params)
        if check and self.inspected is not None and not plain:
            try:
                self.inspected.bind(*(None,) * self.takes_context, *args, **kwargs)
            except TypeError as exc:
                raise SerializationError(f"{self.name}: arguments do not match: {exc}") from exc
        positional = [ordered[i] if i < len(ordered) else rest for i in range(len(args))]
        return positional, {key: named.get(key, extra) for key in kwargs}


_ANY_PARAM = _Param("arg", inspect.Parameter.POSITIONAL_ONLY, ANY, False)


_Layout = tuple[list[_Param], _Param, dict[str, _Param], _Param]


def _layout(params: Sequence[_Param]) -> _Layout:
    """Where arguments bind: the positional parameters in order, the ``*args`` one, the
    ones a keyword names, and the ``**kwargs`` one (``_ANY_PARAM`` when absent)."""
    kind = inspect.Parameter
    ordered = [p for p in params if p.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)]
    rest = next((p for p in params if p.kind is kind.VAR_POSITIONAL), _ANY_PARAM)
    named = {p.name: p for p in params if p.kind is not kind.VAR_POSITIONAL}
    extra = next((p for p in params if p.kind is kind.VAR_KEYWORD), _ANY_PARAM)
    return ordered, rest, named, extra


def signature_of(fn: Callable[..., Any], *, name: str, context_type: type) -> Signature:
    """The (cached) codec signature of ``fn``."""
    try:
        return _SIGNATURES[fn]
    except (KeyError, TypeError):
        pass
    signature = _build_signature(fn, name=name, context_type=context_type)
    with contextlib.suppress(TypeError):
        _SIGNATURES[fn] = signature
    return signature


def _build_signature(fn: Callable[..., Any], *, name: str, context_type: type) -> Signature:
    try:
        inspected: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):
        inspected = None
    hints = _type_hints(fn, name=name, context_type=context_type)
    params = [] if inspected is None else list(inspected.parameters.values())
    takes_context = False
    if params:
        first = params[0]
        hint = hints.get(first.name, first.annotation)
        if (isinstance(hint, type) and issubclass(hint, context_type)) or (
            isinstance(hint, str) and hint.split(".")[-1] == context_type.__name__
        ):
            takes_context = True
            params = params[1:]
    codec_params = [
        _Param(
            p.name,
            p.kind,
            _adapter(hints.get(p.name, Any)),
            p.name in hints,
            _type_name(hints.get(p.name, Any)),
        )
        for p in params
    ]
    result = hints.get("return", Any)
    if inspect.iscoroutinefunction(fn) and typing.get_origin(result) is typing.Coroutine:
        result = typing.get_args(result)[-1]
    return Signature(
        name=name,
        params=codec_params,
        result=_adapter(result),
        takes_context=takes_context,
        is_async=inspect.iscoroutinefunction(fn),
        inspected=inspected,
        layout=_layout(codec_params),
    )


def _type_hints(fn: Callable[..., Any], *, name: str, context_type: type) -> dict[str, Any]:
    """The function's annotations, resolved; an annotation that cannot be resolved is an
    error naming it (treating it as ``Any`` would silently change types on replay)."""
    try:
        return typing.get_type_hints(fn)
    except Exception:  # find out which annotation, below
        pass
    raw = getattr(fn, "__annotations__", None) or {}
    namespace = dict(getattr(inspect.unwrap(fn), "__globals__", {}))
    hints: dict[str, Any] = {}
    for key, annotation in raw.items():
        if not isinstance(annotation, str):
            hints[key] = annotation
            continue
        try:
            hints[key] = eval(annotation, namespace)  # what get_type_hints does, one by one
        except Exception as exc:
            if annotation.split(".")[-1] == context_type.__name__:
                hints[key] = context_type
                continue
            where = "its result" if key == "return" else f"parameter {key!r}"
            raise SerializationError(
                f"{name}: cannot resolve the annotation {annotation!r} of {where} ({exc}); "
                "define the type at module level (annotations are strings under "
                "`from __future__ import annotations`)"
            ) from exc
    return hints


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


MAX_ERROR_MESSAGE = 16_000
"""Characters of an error's message that are recorded (and of its ``args`` as JSON): an
error always fits under any payload limit, whatever its message held."""


def encode_error(error: BaseException) -> str:
    """An exception as ``{"type", "message", "args"?}`` JSON; a message longer than
    ``MAX_ERROR_MESSAGE`` is cut (saying how much), and ``args`` that long are left out."""
    message = str(error)
    if len(message) > MAX_ERROR_MESSAGE:
        cut = len(message) - MAX_ERROR_MESSAGE
        message = f"{message[:MAX_ERROR_MESSAGE]}... ({cut:,} more characters cut)"
    record: dict[str, Any] = {"type": qualified_name(type(error)), "message": message}
    with contextlib.suppress(PydanticSerializationError, ValueError, TypeError):
        args = ANY.dump_python(error.args, mode="json", warnings="error")
        if len(json.dumps(args)) <= MAX_ERROR_MESSAGE:
            record["args"] = args
    if isinstance(error, StepError) and error.type_name:
        record["type"] = error.type_name
    return json.dumps(record)


def decode_error(data: str | None, *, what: str) -> BaseException:
    """Rebuild a recorded exception: its own type when importable, else ``StepError``."""
    try:
        record = json.loads(data) if data else {}
    except ValueError:
        record = {}
    if not isinstance(record, dict):
        record = {}
    type_name = str(record.get("type") or "Exception")
    message = str(record.get("message", ""))
    cls = _import_exception(type_name)
    if cls is not None:
        args = record.get("args")
        for attempt in ((tuple(args),) if isinstance(args, list) else ()) + ((message,),):
            try:
                return cls(*attempt)
            except Exception:  # a constructor with other parameters: try the next form
                continue
    return StepError(f"{what} failed with {type_name}: {message}", type_name=type_name)


def _import_exception(type_name: str) -> type[BaseException] | None:
    """The exception class named, looked up among modules already imported (and builtins).

    Stored data never makes this process import a module it has not imported itself.
    """
    parts = type_name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:split]))
        if module is None:
            continue
        obj: Any = module
        for attr in parts[split:]:
            obj = getattr(obj, attr, None)
        if isinstance(obj, type) and issubclass(obj, Exception):
            return obj
        return None
    return None


def decode_outcome(record: PromiseRecord, adapter: Any, what: str) -> Any:
    """A settled record's outcome: its decoded value, or the exception it records."""
    state = record.state
    if state is PromiseState.RESOLVED:
        return decode_json(record.value.data, adapter, what=what)
    if state is PromiseState.REJECTED_CANCELED:
        raise CanceledError(f"{what} was canceled")
    if state is PromiseState.REJECTED_TIMEDOUT:
        raise PromiseTimeoutError(f"{what} timed out")
    raise decode_error(record.value.data, what=what)
