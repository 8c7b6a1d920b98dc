"""The errors dawait raises, under one root.

::

    DawaitError
    ├── UnknownFunctionError       a name that no registered function has
    ├── SerializationError         arguments or a result that do not fit the annotations / JSON
    │   └── PayloadTooLargeError   an argument, result or value over the store's payload limit
    ├── InvocationConflictError    an id already used with another function or other arguments
    ├── NonDeterminismError        a replay asked for another call at a recorded id
    ├── PromiseNotFoundError       no promise has that id
    ├── PromiseAlreadySettledError settling a settled promise with another outcome
    ├── PromiseTimeoutError        a promise, step or invocation passed its deadline
    ├── ScheduleConflictError      a schedule id already used with another cron, function or args
    ├── ScheduleNotFoundError      no schedule has that id
    ├── CanceledError              the promise or invocation was canceled
    ├── StepError                  a recorded failure whose exception type cannot be rebuilt
    ├── NotDeletableError          deleting a pending invocation, or a call without its root
    ├── NotSettleableError         settling an invocation, step or timer through the promise API
    ├── StoreError                 the store cannot be opened, read or written
    │   └── OwnershipLostError     a cluster node wrote for an invocation it no longer owns
    └── NotStartedError            the app is used outside ``async with`` / before ``open()``

Every message names the function, id or field involved. The classes are defined in the
pure core (``dawait.core._errors``) and keep this module's name.
"""

from __future__ import annotations

from dawait.core._errors import (
    CanceledError,
    DawaitError,
    InvocationConflictError,
    NonDeterminismError,
    NotDeletableError,
    NotSettleableError,
    NotStartedError,
    OwnershipLostError,
    PayloadTooLargeError,
    PromiseAlreadySettledError,
    PromiseNotFoundError,
    PromiseTimeoutError,
    ScheduleConflictError,
    ScheduleNotFoundError,
    SerializationError,
    StepError,
    StoreError,
    UnknownFunctionError,
)

__all__ = [
    "CanceledError",
    "DawaitError",
    "InvocationConflictError",
    "NonDeterminismError",
    "NotDeletableError",
    "NotSettleableError",
    "NotStartedError",
    "OwnershipLostError",
    "PayloadTooLargeError",
    "PromiseAlreadySettledError",
    "PromiseNotFoundError",
    "PromiseTimeoutError",
    "ScheduleConflictError",
    "ScheduleNotFoundError",
    "SerializationError",
    "StepError",
    "StoreError",
    "UnknownFunctionError",
]
