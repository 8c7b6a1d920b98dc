"""Where an invocation runs in a cluster: rendezvous (highest-random-weight) hashing of its
root id over the live nodes serving its function. Nodes (cluster/_node.py) and
placement-aware clients (``HttpClient(route=True)``) compute it alike."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["rendezvous"]


def rendezvous(key: str, node_ids: Iterable[str]) -> str | None:
    """The node with the highest score for ``key``: when a node leaves, only its keys move,
    each to the next-highest node."""

    def score(node_id: str) -> bytes:
        return hashlib.blake2b(f"{key}\0{node_id}".encode(), digest_size=8).digest()

    return max(node_ids, key=score, default=None)
