"""What the engine counts, kept as plain numbers: a node exports them (Prometheus), tests and
benchmarks read them. No dependency, no IO."""

from __future__ import annotations

import bisect
import collections
from collections.abc import Sequence

__all__ = ["ENGINE_EVENTS", "EngineMetrics", "Histogram", "store_error_kind"]

ENGINE_EVENTS = {
    "steps": ("dawait_steps", "Leaf steps completed and recorded"),
    "step_retries": ("dawait_step_retries", "Leaf step attempts that failed and were retried"),
    "retries": ("dawait_invocation_retries", "Durable function attempts retried by policy"),
    "evictions": ("dawait_evictions", "Invocations evicted from memory while they waited"),
    "timeouts_fired": ("dawait_timeouts_fired", "Timers and promise timeouts fired"),
    "schedules_fired": ("dawait_schedules_fired", "Schedule slots that started an invocation"),
    "unknown_function": (
        "dawait_unknown_function",
        "Invocations left for another process: their function is not registered here",
    ),
    "dropped": (
        "dawait_invocations_dropped",
        "Invocations dropped here because another node owns them now",
    ),
    "actor_crashes": (
        "dawait_actor_crashes",
        "Invocations that failed inside the engine (they resume on restart)",
    ),
    "store_retries": (
        "dawait_invocation_store_retries",
        "Invocation runs ended by a store error, nothing recorded, and run again later",
    ),
    "loop_errors": (
        "dawait_loop_errors",
        "Recovery, timer, schedule or retention passes that failed on a store error (retried)",
    ),
    "retention_deleted": (
        "dawait_retention_deleted",
        "Invocations and promises deleted with their trees once their retention ended",
    ),
    "retention_records_deleted": (
        "dawait_retention_records_deleted",
        "Promises (each with its task) deleted by retention",
    ),
}
"""Every event the engine counts: its key, and its Prometheus counter (name, help)."""


_KINDS = (
    ("disk_full", ("disk is full", "no space left", "free space")),
    ("read_only", ("readonly", "read-only")),
    ("io_error", ("i/o error", "fsync", "input/output")),
    ("busy", ("locked", "busy")),
    ("over_quota", ("database space exceeded", "nospace")),
    ("unavailable", ("unavailable", "cannot reach", "no answer", "deadline")),
)


def store_error_kind(error: BaseException) -> str:
    """What kind of store error ``error`` is, from its message (a metric label)."""
    text = str(error).lower()
    for kind, marks in _KINDS:
        if any(mark in text for mark in marks):
            return kind
    return "other"


class Histogram:
    """Cumulative bucket counts of observed values (Prometheus semantics: ``le`` buckets)."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= it)`` for each bucket, ending with +Inf."""
        total = 0
        out = []
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


class EngineMetrics:
    """Counters by function, and the store's commit latencies and batch sizes."""

    def __init__(self) -> None:
        self.events: collections.Counter[str] = collections.Counter()
        """Event (a key of ``ENGINE_EVENTS``) -> count."""
        self.by_function: collections.Counter[tuple[str, str]] = collections.Counter()
        """(event, function) -> count; events: started, completed, failed."""
        self.store_errors: collections.Counter[str] = collections.Counter()
        """Store errors the engine met, by kind (``store_error_kind``)."""
        self.commit_seconds = Histogram(
            (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
        )
        self.batch_sizes = Histogram((1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048))

    def count(self, event: str, function: str) -> None:
        self.by_function[(event, function)] += 1

    def event(self, name: str, count: int = 1) -> None:
        """Count ``count`` of ``name`` (a key of ``ENGINE_EVENTS``)."""
        self.events[name] += count
