"""The pieces of a ctx call: its options, its frame's counter, the awaitable it returns,
and the leaf function it runs."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import inspect
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio.to_thread

from dawait.core._ids import child_id
from dawait.core._param import call_target, step_param
from dawait.core._promise import TAG_TIMER, PromiseRecord, Value
from dawait.core._retry import RetryPolicy

__all__ = [
    "MAX_SECONDS",
    "TAG_EXTERNAL",
    "Builtin",
    "Call",
    "CallOptions",
    "Frame",
    "LeafCall",
    "done",
    "min_deadline",
    "recorded_kind",
    "step_value",
    "to_seconds",
]

T = TypeVar("T")

TAG_EXTERNAL = "resonate:external"
MAX_SECONDS = 100 * 365 * 24 * 3600
"""The longest duration a timeout or sleep may have (times are epoch ms in 64-bit ints)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallOptions:
    id: str | None = None
    timeout: float | None = None
    retry_policy: RetryPolicy | None = None
    non_retryable: tuple[type[BaseException], ...] | None = None
    version: int | None = None
    target: str | None = None
    """A group of Resonate SDK workers that ``rpc`` and ``detached`` by name call."""


class Frame:
    """One durable function's execution: its id, deadline and call counter."""

    __slots__ = ("counter", "deadline", "id")

    def __init__(self, id: str, deadline: int | None) -> None:
        self.id = id
        self.deadline = deadline
        self.counter = 0

    def next_id(self) -> str:
        self.counter += 1
        return child_id(self.id, self.counter)


class Call(Generic[T]):
    """The awaitable a ctx call returns; ``id`` is its durable promise's id.

    Like a coroutine, a step runs when it is awaited (``asyncio.gather`` runs several at
    once); awaiting a call again gives the same outcome without running it again.
    """

    __slots__ = ("_future", "_run", "id")

    def __init__(self, id: str, run: Callable[[], Awaitable[T]]) -> None:
        self.id = id
        self._run = run
        self._future: asyncio.Future[T] | None = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._outcome().__await__()

    async def _outcome(self) -> T:
        if self._future is not None:
            return await asyncio.shield(self._future)
        future = self._future = asyncio.get_running_loop().create_future()
        try:
            result = await self._run()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: only later awaiters re-raise it
            raise
        future.set_result(result)
        return result

    def __repr__(self) -> str:
        return f"<Call {self.id}>"


def done(value: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    async def outcome() -> T:
        return value()

    return outcome


@functools.lru_cache(maxsize=1024)
def step_value(name: str) -> Value:
    """A step's param as a record's value."""
    return Value(data=step_param(name))


def recorded_kind(record: PromiseRecord) -> str:
    if record.tags.get(TAG_TIMER) == "true":
        return "ctx.sleep"
    if record.tags.get(TAG_EXTERNAL) == "true":
        return "ctx.promise"
    return call_target(record.param.data)[0] or "?"


def min_deadline(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


class LeafCall:
    """A leaf step's function and arguments: coroutine functions are awaited here, plain
    functions run in a worker thread (abandoned, not stopped, on timeout or eviction)."""

    __slots__ = ("args", "fn", "is_async", "kwargs")

    def __init__(
        self, fn: Callable[..., Any], is_async: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.fn = fn
        self.is_async = is_async
        self.args = args
        self.kwargs = kwargs

    async def run(self) -> Any:
        if self.is_async:
            return await self.fn(*self.args, **self.kwargs)
        call = functools.partial(self.fn, *self.args, **self.kwargs)
        result = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        if inspect.isawaitable(result):
            return await result
        return result


class Builtin:
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn

    async def run(self) -> Any:
        return self.fn()


def to_seconds(duration: float | dt.timedelta, what: str) -> float:
    if isinstance(duration, dt.timedelta):
        seconds = duration.total_seconds()
    elif isinstance(duration, int | float) and not isinstance(duration, bool):
        seconds = float(duration)
    else:
        raise TypeError(f"{what}: expected seconds or a timedelta, got {duration!r}")
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"{what}: duration must be >= 0 seconds, got {duration!r}")
    if seconds > MAX_SECONDS:
        raise ValueError(f"{what}: duration must be at most 100 years, got {duration!r}")
    return seconds
