"""``/metrics``: the engine's numbers in the Prometheus text format, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from dawait.runtime._metrics import ENGINE_EVENTS, Histogram

if TYPE_CHECKING:
    from dawait.node._backend import NodeBackend

__all__ = ["NodeMetrics"]

_BY_FUNCTION = {
    "started": ("dawait_invocations_started", "Invocations started"),
    "completed": ("dawait_invocations_completed", "Invocations that resolved"),
    "failed": ("dawait_invocations_failed", "Invocations that were rejected"),
}


class _EngineCollector(Collector):
    def __init__(self, backend: NodeBackend) -> None:
        self.backend = backend

    def collect(self) -> Iterator[Metric]:
        engine = self.backend.local.engine
        for key, (name, help) in ENGINE_EVENTS.items():
            yield CounterMetricFamily(name, help, value=engine.metrics.events[key])
        metrics = engine.metrics
        for event, (name, help) in _BY_FUNCTION.items():
            family = CounterMetricFamily(name, help, labels=["function"])
            for (seen, function), count in sorted(metrics.by_function.items()):
                if seen == event:
                    family.add_metric([function], count)
            yield family
        errors = CounterMetricFamily(
            "dawait_store_errors", "Store errors the engine met, by kind", labels=["kind"]
        )
        for kind, count in sorted(metrics.store_errors.items()):
            errors.add_metric([kind], count)
        yield errors
        cluster = self.backend.app.cluster
        if cluster is not None and cluster.clock_watch.offset is not None:
            yield GaugeMetricFamily(
                "dawait_clock_offset_seconds",
                "How far this node's wall clock is ahead of its peers' majority",
                value=cluster.clock_watch.offset,
            )
        yield GaugeMetricFamily(
            "dawait_active_invocations", "Invocations held in memory", value=engine.active
        )
        yield GaugeMetricFamily(
            "dawait_queued_invocations", "Invocations waiting for a slot", value=engine.queued
        )
        yield _histogram(
            "dawait_store_commit_seconds",
            "Time from a store commit's start to its fsync",
            metrics.commit_seconds,
        )
        yield _histogram(
            "dawait_store_batch_operations",
            "Operations per store commit (group commit)",
            metrics.batch_sizes,
        )


def _histogram(name: str, help: str, histogram: Histogram) -> HistogramMetricFamily:
    buckets = [
        ("+Inf" if bound == float("inf") else repr(float(bound)), count)
        for bound, count in histogram.cumulative()
    ]
    return HistogramMetricFamily(name, help, buckets=buckets, sum_value=histogram.sum)


class NodeMetrics:
    """The node's own registry (not the process-global one)."""

    def __init__(self, backend: NodeBackend) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_EngineCollector(backend))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
