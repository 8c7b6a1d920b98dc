"""Partitions: how a cluster splits a namespace between its nodes (pure: no IO).

A namespace has a fixed number of partitions per *family*, chosen when it is created. A
family is a function group (its invocations run on the nodes serving that group) or
``FREE``, for the promises no invocation owns (created through the API, or by a workflow
with an id of its own). Everything an invocation records (its steps, durable children,
timers, its own promises) lives in one partition: its group's family, at the index its
root id hashes to. ``ctx.rpc`` and ``detached`` calls are invocations of their own, in
their own function's group; their ids share their caller's root, so the index is the same
and only the family differs.

Each partition has one owner at a time, among the live nodes that can run its work
(``eligible``), chosen by rendezvous hashing (``owner_of``): a node joining or leaving moves
only the partitions it gains or had, about 1/N of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dawait.core._ids import root_of
from dawait.core._placement import rendezvous

__all__ = [
    "DEFAULT_PARTITIONS",
    "FREE",
    "MAX_PARTITIONS",
    "Partition",
    "check_partition_count",
    "eligible",
    "owner_of",
    "partition_index",
]

DEFAULT_PARTITIONS = 64
MAX_PARTITIONS = 4096
FREE = ""
"""The family of promises no invocation owns."""


@dataclass(frozen=True, slots=True, order=True)
class Partition:
    """Partition ``index`` of ``family`` (a function group, or ``FREE``)."""

    family: str
    index: int

    def __str__(self) -> str:
        return f"{self.family or '(free)'}/{self.index}"

    @property
    def path(self) -> str:
        """How the partition appears in keys: ``{family}/{index:04}`` (``FREE`` is empty;
        groups are never empty and never hold ``/``)."""
        return f"{self.family}/{self.index:04}"

    @classmethod
    def from_path(cls, path: str) -> Partition:
        family, _, index = path.rpartition("/")
        return cls(family, int(index))


def check_partition_count(count: object, what: str = "partitions") -> int:
    """``count`` if it can be a namespace's partition count, else a ValueError naming it."""
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_PARTITIONS:
        raise ValueError(f"{what}: {count!r} must be a whole number from 1 to {MAX_PARTITIONS}")
    return count


def partition_index(id: str, count: int) -> int:
    """The index of the partition holding ``id`` (any call id: its root decides)."""
    digest = hashlib.blake2b(root_of(id).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def eligible(offers: Mapping[str, frozenset[tuple[str, int]]]) -> list[str]:
    """The nodes that may own a family's partitions, from what each serves of it (its
    ``(function, version)`` pairs): every node but those serving a strict subset of what
    another serves. During a rolling upgrade the nodes with the new versions take the
    partitions (they can run everything in them); the others drain."""
    return sorted(
        node
        for node, offer in offers.items()
        if not any(offer < other for peer, other in offers.items() if peer != node)
    )


def owner_of(partition: Partition, candidates: Iterable[str]) -> str | None:
    """The node that should own ``partition`` among ``candidates`` (None: there is none)."""
    return rendezvous(f"{partition.family}\0{partition.index}", candidates)
