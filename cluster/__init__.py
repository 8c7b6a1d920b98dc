"""Cluster mode: the etcd store shared by several nodes (membership and claims under each
node's lease, fenced writes, a replica kept by a watch), leader election, placement and
takeover (``ClusterNode``)."""

from __future__ import annotations

__all__: list[str] = []
