"""The engine and the embedded stores: the supervisor, the invocation actors, ``Context``,
the codec, the clock, the memory and SQLite stores (records and their state machines are
in ``dawait.core``, re-exported here for embedders)."""

from __future__ import annotations

from dawait.core._promise import PromiseRecord, PromiseState, Value
from dawait.core._task import TaskRecord, TaskState
from dawait.runtime._clock import Clock, FakeClock, SystemClock
from dawait.runtime._engine import Engine, EngineConfig
from dawait.runtime._memory_store import MemoryStore
from dawait.runtime._sqlite_store import SQLiteStore
from dawait.runtime._store import Store

__all__ = [
    "Clock",
    "Engine",
    "EngineConfig",
    "FakeClock",
    "MemoryStore",
    "PromiseRecord",
    "PromiseState",
    "SQLiteStore",
    "Store",
    "SystemClock",
    "TaskRecord",
    "TaskState",
    "Value",
]
