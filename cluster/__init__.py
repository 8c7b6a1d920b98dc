"""Cluster mode (etcd coordination, ownership, forwarding): not built yet."""

from __future__ import annotations

__all__: list[str] = []
