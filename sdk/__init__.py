"""dawait: durable execution for asyncio Python.

Write workflows as plain ``async def`` functions that take a ``Context``; every call made
through it is checkpointed, so a crash resumes the workflow from its last completed step.
"""

from __future__ import annotations

from dawait._resonate import Handle, PromiseInfo, Promises, Resonate
from dawait._retry import Constant, Exponential, Linear, Never, RetryPolicy
from dawait._schedules import ScheduleInfo, Schedules
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
