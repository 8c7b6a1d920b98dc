"""The error classes of dawait, under one root ``DawaitError``: the tree and what each means
are in ``dawait.errors``, where users import them from (``sdk/errors.py``)."""

from __future__ import annotations

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
    "error_classes",
]


class DawaitError(Exception):
    """Root of every error dawait raises itself."""


class UnknownFunctionError(DawaitError):
    """A function name that is not registered with this app (at this version)."""


class SerializationError(DawaitError):
    """Arguments or a result that cannot be encoded as JSON through their annotations."""


class PayloadTooLargeError(SerializationError):
    """An argument, result or promise value over the store's payload limit (see
    ``Resonate(max_payload=)``): never retried, since it would be as large again."""


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


class NotDeletableError(DawaitError):
    """An invocation or promise that cannot be deleted: still pending, or a call of another
    invocation (deleted with its root, never alone)."""

    def __init__(self, message: str, *, later: bool = True) -> None:
        super().__init__(message)
        self.later = later
        """Whether it may become deletable (it settles, its caller settles); False for a
        call of another invocation, which goes only with its root."""


class NotSettleableError(DawaitError):
    """Settling, through the promise API, a promise that its engine settles itself: an
    invocation, a step, a timer (only ``ctx.promise`` promises and promises made through
    the API are settled from outside)."""


class StoreError(DawaitError):
    """The store could not be opened, read or written."""


class OwnershipLostError(StoreError):
    """A cluster node wrote for an invocation another node owns now (its lease ended while
    it was stalled or cut off): nothing was written, and the node drops that invocation."""


class NotStartedError(DawaitError):
    """The app was used before it was opened (use ``async with Resonate() as app``)."""


# Users import these from ``dawait.errors``, and recorded errors name their type by module:
# they keep that name wherever they are defined.
def error_classes(root: type[DawaitError] | None = None) -> list[type[DawaitError]]:
    """``root`` (``DawaitError`` by default) and every class under it."""
    root = DawaitError if root is None else root
    return [root, *(error for sub in root.__subclasses__() for error in error_classes(sub))]


for _error in error_classes():
    _error.__module__ = "dawait.errors"
del _error
