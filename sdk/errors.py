"""The errors dawait raises, under one root.

::

    DawaitError
    ├── UnknownFunctionError       a name that no registered function has
    ├── SerializationError         arguments or a result that do not fit the annotations / JSON
    ├── InvocationConflictError    an id already used with another function or other arguments
    ├── NonDeterminismError        a replay asked for another call at a recorded id
    ├── PromiseNotFoundError       no promise has that id
    ├── PromiseAlreadySettledError settling a settled promise with another outcome
    ├── PromiseTimeoutError        a promise, step or invocation passed its deadline
    ├── ScheduleConflictError      a schedule id already used with another cron, function or args
    ├── ScheduleNotFoundError      no schedule has that id
    ├── CanceledError              the promise or invocation was canceled
    ├── StepError                  a recorded failure whose exception type cannot be rebuilt
    ├── StoreError                 the store cannot be opened or written
    └── NotStartedError            the app is used outside ``async with`` / before ``open()``

Every message names the function, id or field involved.
"""

from __future__ import annotations

__all__ = [
    "CanceledError",
    "DawaitError",
    "InvocationConflictError",
    "NonDeterminismError",
    "NotStartedError",
    "OwnershipLostError",
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


class DawaitError(Exception):
    """Root of every error dawait raises itself."""


class UnknownFunctionError(DawaitError):
    """A function name that is not registered with this app (at this version)."""


class SerializationError(DawaitError):
    """Arguments or a result that cannot be encoded as JSON through their annotations."""


class InvocationConflictError(DawaitError):
    """An invocation id already in use with another function or other arguments."""


class NonDeterminismError(DawaitError):
    """On replay, the workflow asked for a different call at an id than was recorded."""


class PromiseNotFoundError(DawaitError):
    """No promise (or invocation) has the given id."""


class PromiseAlreadySettledError(DawaitError):
    """A settled promise was asked to settle again with another outcome."""


class PromiseTimeoutError(DawaitError):
    """A promise, a step or an invocation passed its deadline before it settled."""


class ScheduleConflictError(DawaitError):
    """A schedule id already in use with another cron expression, function or arguments."""


class ScheduleNotFoundError(DawaitError):
    """No schedule has the given id."""


class CanceledError(DawaitError):
    """The promise or invocation was canceled."""


class StepError(DawaitError):
    """A recorded failure whose original exception type cannot be rebuilt here.

    ``type_name`` is the fully qualified name of the original exception type.
    """

    def __init__(self, message: str, *, type_name: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name


class StoreError(DawaitError):
    """The store could not be opened, read or written."""


class OwnershipLostError(StoreError):
    """A cluster node wrote for an invocation another node owns now (its lease ended while
    it was stalled or cut off): nothing was written, and the node drops that invocation."""


class NotStartedError(DawaitError):
    """The app was used before it was opened (use ``async with Resonate() as app``)."""
