"""``app.promises``: durable promises settled from outside the workflows that await them."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dawait.core._ids import check_id_pattern
from dawait.core._promise import PromiseRecord, PromiseState
from dawait.runtime._calls import to_seconds
from dawait.runtime._codec import ANY, decode_json, decode_outcome

if TYPE_CHECKING:
    from dawait._backend import AppBackend

__all__ = ["PromiseInfo", "Promises", "utc"]


def utc(ms: int | None) -> dt.datetime | None:
    """Epoch milliseconds as an aware UTC datetime (None stays None)."""
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class PromiseInfo:
    """A durable promise as the outside sees it, its payloads decoded from JSON."""

    id: str
    state: str
    """``pending``, ``resolved``, ``rejected``, ``rejected_canceled`` or ``rejected_timedout``."""
    value: Any
    """The resolved value (decoded JSON), or None."""
    error: BaseException | None
    """The rejection as an exception, or None."""
    param: Any
    timeout_at: dt.datetime | None
    created_at: dt.datetime
    settled_at: dt.datetime | None
    tags: Mapping[str, str]
    delete_at: dt.datetime | None = None
    """When its retention ends and it is deleted (None: pending, or kept until deleted)."""

    @classmethod
    def of(cls, record: PromiseRecord) -> PromiseInfo:
        error: BaseException | None = None
        value: Any = None
        if record.state is PromiseState.RESOLVED:
            value = decode_json(record.value.data, ANY, what=f"promise {record.id}")
        elif record.state.settled:
            try:
                decode_outcome(record, ANY, f"promise {record.id}")
            except Exception as exc:
                error = exc
        try:
            param = json.loads(record.param.data) if record.param.data else None
        except ValueError:
            param = record.param.data
        return cls(
            id=record.id,
            state=record.state.value,
            value=value,
            error=error,
            param=param,
            timeout_at=utc(record.timeout_at),
            created_at=utc(record.created_at) or dt.datetime.fromtimestamp(0, dt.UTC),
            settled_at=utc(record.settled_at),
            tags=dict(record.tags),
            delete_at=utc(record.delete_at),
        )

    @property
    def pending(self) -> bool:
        return self.state == PromiseState.PENDING.value


class Promises:
    """Durable promises, settled from outside the workflows that await them."""

    def __init__(self, backend: AppBackend) -> None:
        self._backend = backend

    async def create(
        self,
        id: str,
        *,
        timeout: float | dt.timedelta | None = None,
        data: Any = None,
    ) -> PromiseInfo:
        """Create a pending promise (idempotent: an existing one is returned unchanged)."""
        if not isinstance(id, str) or not id:
            raise ValueError(f"promise id must be a non-empty string, got {id!r}")
        seconds = None if timeout is None else to_seconds(timeout, f"promise {id} timeout")
        return await self._backend.create_promise(id, seconds, data)

    async def get(self, id: str) -> PromiseInfo:
        """The promise with this id (``PromiseNotFoundError`` if there is none)."""
        return await self._backend.get_promise(id)

    async def resolve(self, id: str, value: Any = None) -> PromiseInfo:
        """Resolve a pending promise with ``value`` (JSON-able); resolving it again with the
        same value returns it, with another raises ``PromiseAlreadySettledError``."""
        return await self._backend.resolve_promise(id, value)

    async def reject(self, id: str, error: BaseException | str) -> PromiseInfo:
        """Reject a pending promise; its awaiter raises ``error`` (a ``str`` becomes an
        ``Exception`` with that message)."""
        return await self._backend.reject_promise(id, error)

    async def cancel(self, id: str) -> PromiseInfo:
        return await self._backend.cancel_promise(id)

    async def search(
        self, pattern: str = "*", *, state: str | None = None, limit: int = 100
    ) -> list[PromiseInfo]:
        """Promises whose id matches ``pattern`` (``*`` matches any run), by id."""
        if state is not None and state not in {s.value for s in PromiseState}:
            states = ", ".join(s.value for s in PromiseState)
            raise ValueError(f"search: unknown state {state!r} (one of {states})")
        if limit < 1:
            raise ValueError(f"search: limit must be >= 1, got {limit}")
        pattern = check_id_pattern(pattern)
        return await self._backend.search_promises(pattern, state, limit)
