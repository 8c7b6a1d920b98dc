"""dawait: durable execution for asyncio Python.

Write workflows as plain ``async def`` functions that take a ``Context``; every call made
through it is checkpointed, so a crash resumes the workflow from its last completed step.

The names below load on first use, so importing a part of dawait (the pure
``dawait.core``, say) loads only what that part needs.
"""

from __future__ import annotations

import importlib
import typing
from typing import Any

if typing.TYPE_CHECKING:
    from dawait._promises import PromiseInfo, Promises
    from dawait._resonate import Handle, Resonate
    from dawait._schedules import ScheduleInfo, Schedules
    from dawait.core._retry import Constant, Exponential, Linear, Never, RetryPolicy
    from dawait.runtime._calls import Call
    from dawait.runtime._context import Context

__all__ = [
    "Call",
    "Constant",
    "Context",
    "Exponential",
    "Handle",
    "Linear",
    "Never",
    "PromiseInfo",
    "Promises",
    "Resonate",
    "RetryPolicy",
    "ScheduleInfo",
    "Schedules",
]

__version__ = "0.1.0"

_HOMES = {
    "Call": "dawait.runtime._calls",
    "Constant": "dawait.core._retry",
    "Context": "dawait.runtime._context",
    "Exponential": "dawait.core._retry",
    "Handle": "dawait._resonate",
    "Linear": "dawait.core._retry",
    "Never": "dawait.core._retry",
    "PromiseInfo": "dawait._promises",
    "Promises": "dawait._promises",
    "Resonate": "dawait._resonate",
    "RetryPolicy": "dawait.core._retry",
    "ScheduleInfo": "dawait._schedules",
    "Schedules": "dawait._schedules",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'dawait' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
