"""Cluster mode: a namespace in etcd cut into partitions, each owned and written by one
node at a time (membership and ownership under each node's lease, writes fenced by the
owner record), leader election, routing between nodes, takeover (``ClusterNode``)."""

from __future__ import annotations

__all__: list[str] = []
