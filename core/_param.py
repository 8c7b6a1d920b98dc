"""The call records in promise params, written and read here only (pure: no IO).

* An invocation's promise (a root, or a ``ctx.rpc`` / ``ctx.detached`` call) has the param
  ``{"func": name, "version": n, "args": [...], "kwargs": {...}}``.
* A step's or a child durable function's promise has ``{"func": name}``: what replay
  checks a recorded call against.

``call_conflict`` says what differs when an id is started again with another call.

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
    "call_conflict",
    "call_target",
    "describe_call",
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
    """The call an invocation's param records; None if it is not an invocation's. (The
    TypeScript SDK records no ``kwargs``: none.)"""
    call = _object(param)
    if call is None:
        return None
    func, args, kwargs = call.get("func"), call.get("args"), call.get("kwargs", {})
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


# -- what differs, when an id is started again with another call ---------------------------

_SHOWN = 60
"""Characters of one value's JSON that a message shows."""
_DIFFERENCES = 3
"""Differences a conflict names (then ``...``)."""
_ABSENT = object()


def _shown(value: Any) -> str:
    if value is _ABSENT:
        return "absent"
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 1]}…"


def describe_call(call: InvocationCall) -> str:
    """The call as a message shows it, short: ``pay({"id":"o-1"}, retry=true) v1`` (each
    value cut at 60 characters, four arguments at most)."""
    shown = [_shown(v) for v in call.args] + [f"{k}={_shown(v)}" for k, v in call.kwargs.items()]
    if len(shown) > 4:
        shown = [*shown[:4], f"... {len(shown) - 4} more"]
    version = "" if call.version is None else f" v{call.version}"
    return f"{call.func}({', '.join(shown)}){version}"


def _differences(path: str, mine: Any, theirs: Any, found: list[str]) -> None:
    """Where ``mine`` (this call's) differs from ``theirs`` (the recorded call's), as
    ``path is MINE (was THEIRS)``, into ``found`` (one more than ``_DIFFERENCES`` at most)."""
    if len(found) > _DIFFERENCES or mine == theirs:  # _ABSENT equals only itself
        return
    if isinstance(mine, dict) and isinstance(theirs, dict):
        for key in [*theirs, *(key for key in mine if key not in theirs)]:
            sub = f"{path}.{key}" if path else str(key)
            _differences(sub, mine.get(key, _ABSENT), theirs.get(key, _ABSENT), found)
    elif isinstance(mine, list) and isinstance(theirs, list):
        for i in range(max(len(mine), len(theirs))):
            _differences(
                f"{path}[{i}]",
                mine[i] if i < len(mine) else _ABSENT,
                theirs[i] if i < len(theirs) else _ABSENT,
                found,
            )
    else:
        found.append(f"{path} is {_shown(mine)} (was {_shown(theirs)})")


def call_conflict(id: str, existing: str | None, requested: str) -> str | None:
    """None if ``requested`` (an invocation's param) is the call that ``existing`` (the param
    recorded at ``id``) records, else what differs in one line, for every store alike:
    another function (both calls shown, short), or the arguments that differ (their paths,
    ``args[0].id`` or a keyword's name, this call's value and the recorded one). The
    version is shown, not compared: a call made after a deploy attaches to the invocation
    an older version started."""
    stored = read_invocation(existing)
    if stored is None:
        return f"id {id!r} is already used by a promise that is not an invocation"
    head = f"invocation {id!r} already exists as {describe_call(stored)}"
    call = read_invocation(requested)
    if call is None:
        return head
    if stored.func != call.func:
        return f"{head}; this call is {describe_call(call)}, of another function"
    if (stored.args, stored.kwargs) == (call.args, call.kwargs):
        return None
    found: list[str] = []
    _differences("args", call.args, stored.args, found)
    _differences("", call.kwargs, stored.kwargs, found)
    shown = "; ".join(found[:_DIFFERENCES]) + ("; ..." if len(found) > _DIFFERENCES else "")
    return f"{head}; this call has other arguments: {shown}"
