"""The error codes of the HTTP API that stand for a dawait error, with their statuses: the
node answers an error of a class with its code and status (the first row whose class it
is), and ``HttpClient`` raises a code's class again (the code's first row).

The node's other codes come from the request, not from a dawait error, and a client reads
them as ``ApiError``: ``invalid`` (400/422), ``malformed_json`` (400), ``client_gone`` (400:
the client hung up mid-request), ``unauthorized`` (401), ``method_not_allowed`` (405),
``too_large`` (413), ``internal`` (500), ``http_error`` (any other status); ``not_found``
also answers an unknown path.
"""

from __future__ import annotations

from dataclasses import dataclass

from dawait.core._errors import (
    DawaitError,
    InvocationConflictError,
    NotDeletableError,
    NotSettleableError,
    NotStartedError,
    PayloadTooLargeError,
    PromiseAlreadySettledError,
    PromiseNotFoundError,
    ScheduleConflictError,
    ScheduleNotFoundError,
    SerializationError,
    StoreError,
    UnknownFunctionError,
)

__all__ = ["ERROR_CODES", "ErrorCode", "error_class", "error_code"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorCode:
    """One row: errors of ``error`` go over the wire as ``code`` with ``status``."""

    code: str
    status: int
    error: type[DawaitError]


ERROR_CODES: tuple[ErrorCode, ...] = (
    ErrorCode(code="unknown_function", status=404, error=UnknownFunctionError),
    ErrorCode(code="not_found", status=404, error=PromiseNotFoundError),
    ErrorCode(code="payload_too_large", status=413, error=PayloadTooLargeError),
    ErrorCode(code="invalid_arguments", status=422, error=SerializationError),
    ErrorCode(code="conflict", status=409, error=InvocationConflictError),
    ErrorCode(code="schedule_conflict", status=409, error=ScheduleConflictError),
    ErrorCode(code="schedule_not_found", status=404, error=ScheduleNotFoundError),
    ErrorCode(code="already_settled", status=409, error=PromiseAlreadySettledError),
    ErrorCode(code="not_deletable", status=409, error=NotDeletableError),
    ErrorCode(code="engine_owned", status=403, error=NotSettleableError),
    # A node not started and a store that fails are both "try again later" to a client.
    ErrorCode(code="unavailable", status=503, error=NotStartedError),
    ErrorCode(code="unavailable", status=503, error=StoreError),
)

# Reversed, so that a code's first row is the one kept.
_CLASS_OF = {row.code: row.error for row in reversed(ERROR_CODES)}


def error_code(exc: DawaitError) -> ErrorCode | None:
    """The row the node answers ``exc`` with; None for a dawait error without a code of
    its own (the node answers it as ``invalid``)."""
    for row in ERROR_CODES:
        if isinstance(exc, row.error):
            return row
    return None


def error_class(code: str) -> type[DawaitError] | None:
    """The class a client raises for an error body with ``code``; None: no class of its own."""
    return _CLASS_OF.get(code)
