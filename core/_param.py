"""The call records in promise params, written and read here only (pure: no IO).

* An invocation's promise (a root, or a ``ctx.rpc`` / ``ctx.detached`` call) has the param
  ``{"func": name, "version": n, "args": [...], "kwargs": {...}}``.
* A step's or a child durable function's promise has ``{"func": name}``: what replay
  checks a recorded call against.

Arguments arrive already encoded (``{"args": [...], "kwargs": {...}}``, from the codec), so
an invocation's param is spliced from strings rather than encoded again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dawait.core._ids import root_of

__all__ = [
    "InvocationCall",
    "call_target",
    "invocation_param",
    "is_root",
    "read_invocation",
    "step_param",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class InvocationCall:
    """What an invocation's param names: the function, its version and plain-JSON args."""

    func: str
    version: int | None
    args: list[Any]
    kwargs: dict[str, Any]


def invocation_param(name: str, version: int | None, encoded_args: str) -> str:
    """The param of an invocation's promise, from ``{"args": [...], "kwargs": {...}}``."""
    return f'{{"func":{json.dumps(name)},"version":{json.dumps(version)},{encoded_args[1:]}'


def step_param(name: str) -> str:
    """The param of a step's (or a child durable function's) promise."""
    return f'{{"func":{json.dumps(name)}}}'


def _object(param: str | None) -> dict[str, Any] | None:
    try:
        call = json.loads(param or "{}")
    except ValueError:
        return None
    return call if isinstance(call, dict) else None


def _version(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def call_target(param: str | None) -> tuple[str | None, int | None]:
    """The function name and version a param names (None where it names none)."""
    call = _object(param)
    if call is None:
        return None, None
    func = call.get("func")
    return (func if isinstance(func, str) else None), _version(call.get("version"))


def read_invocation(param: str | None) -> InvocationCall | None:
    """The call an invocation's param records; None if it is not an invocation's."""
    call = _object(param)
    if call is None:
        return None
    func, args, kwargs = call.get("func"), call.get("args"), call.get("kwargs")
    if not isinstance(func, str) or not isinstance(args, list) or not isinstance(kwargs, dict):
        return None
    return InvocationCall(
        func=func, version=_version(call.get("version")), args=args, kwargs=kwargs
    )


def is_root(id: str, param: str | None, branch: str | None) -> bool:
    """Whether promise ``id`` is deleted by its own id, not with a caller's tree: nobody's
    call (no ``branch``, or its own), an invocation of its own (``rpc``, ``detached``: an
    invocation's param) or a promise with an id of its own (``ctx.promise(id=...)``)."""
    if branch in (None, id) or root_of(id) == id:
        return True
    # A step's param names only its function: parse only what may be an invocation's.
    return param is not None and '"kwargs"' in param and read_invocation(param) is not None
