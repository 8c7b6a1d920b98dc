"""Deletion, written once over the stores' ``Tables``: a root's tree in bounded
transactions (``op_delete_tree``, explicit deletion and retention alike), and the retention
sweep (``sweep``): roots past ``PromiseRecord.delete_at``."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from dawait.core._errors import NotDeletableError, PromiseNotFoundError
from dawait.core._param import is_root
from dawait.core._promise import TAG_RETENTION, PromiseState
from dawait.runtime._store import Expired

if TYPE_CHECKING:
    from dawait.runtime._store_ops import Tables

__all__ = [
    "DELETE_BATCH",
    "KEEP_WAITING",
    "SWEEP_CONCURRENCY",
    "SWEEP_RECORDS",
    "delete_in_batches",
    "op_delete_tree",
    "op_keep",
    "op_sweep",
    "sweep",
]


DELETE_BATCH = 40
"""Calls one deletion transaction removes at most: each is two keys compared (its promise
and task) and written, with its callbacks, so a transaction stays below etcd's
--max-txn-ops (128 by default; a deletion also starts a transaction of its own)."""


def op_delete_tree(t: Tables, id: str, limit: int = DELETE_BATCH) -> tuple[int, bool]:
    """Delete up to ``limit`` calls of the tree of ``id``, a settled invocation (or promise)
    that is no other's call: every call below it that is not a root of its own
    (``is_root``). A call goes only with (after) every call below it, and ``id`` last, so
    a deletion cut short leaves no call without its caller, and the next one finishes it.
    How many records went, and whether the tree is gone."""
    record = t.get_promise(id)
    if record is None:
        raise PromiseNotFoundError(f"no invocation or promise with id {id!r}")
    caller = record.branch
    if caller is not None and caller != id:
        if not is_root(record.id, record.param.data, caller):
            raise NotDeletableError(
                f"{id!r} is a call of {caller!r}: it is deleted with its root, not alone",
                later=False,
            )
        waiting = t.get_promise(caller)  # a root of its own, but if its caller is pending
        if waiting is not None and waiting.state is PromiseState.PENDING:  # the caller's
            raise NotDeletableError(  # replay would make it again
                f"{id!r} was called by {caller!r}, which is still pending: delete it once "
                f"{caller!r} has settled"
            )
    if record.state is PromiseState.PENDING:
        raise NotDeletableError(f"{id!r} is pending: cancel it (or settle it) before deleting it")
    calls: dict[str, list[tuple[str, str, str | None]]] = {}  # caller -> its calls
    for below in t.calls_below(id):
        calls.setdefault(below[1], []).append(below)
    done: list[str] = []  # calls whose every call below is in ``done`` too (post-order)
    stack = [(id, iter(calls.get(id, ())))]
    while stack and len(done) < limit:
        node, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            if node != id:
                done.append(node)
        elif child[0] != id and not is_root(child[0], child[2], child[1]):
            stack.append((child[0], iter(calls.get(child[0], ()))))
    if stack:
        t.delete_all(done)
        return len(done), False
    t.delete_all([*done, id])
    return len(done) + 1, True


SWEEP_CONCURRENCY = 8
"""Deletions one sweep (of a store, or of a partition) runs at once."""

KEEP_WAITING = 60_000
"""Milliseconds a root past its retention is kept once more when it cannot be deleted yet
(its caller is pending): then it is tried again."""


def op_keep(t: Tables, id: str, until: int | None) -> None:
    """Keep settled root ``id`` until ``until`` (None: until deleted, as a call is kept
    with its root), by rewriting its ``TAG_RETENTION``."""
    record = t.get_promise(id)
    if record is None or record.settled_at is None:
        return
    tags = {k: v for k, v in record.tags.items() if k != TAG_RETENTION}
    if until is not None:
        tags[TAG_RETENTION] = str(until - record.settled_at)
    t.put_promise(dataclasses.replace(record, tags=tags), new=False)


SWEEP_RECORDS = 1_000
"""Records one sweep transaction of a local store deletes at most (``op_sweep``)."""


def op_sweep(t: Tables, due: Sequence[str], now: int) -> tuple[int, int, bool]:
    """Delete the trees of the roots ``due`` in one transaction of at most
    ``SWEEP_RECORDS`` records (a local store commits one after another: one transaction per
    tree would queue each behind the foreground's), keeping those that cannot go yet. The
    roots gone, the records gone, and whether the budget ran out first (a tree cut short
    is still due: the next pass finishes it)."""
    roots = records = 0
    for id in due:
        if records >= SWEEP_RECORDS:
            return roots, records, True
        try:
            count, done = op_delete_tree(t, id, limit=SWEEP_RECORDS - records)
        except PromiseNotFoundError:
            continue
        except NotDeletableError as exc:
            op_keep(t, id, now + KEEP_WAITING if exc.later else None)
            continue
        records += count
        roots += done
    return roots, records, False


async def sweep(
    due: Sequence[str],
    delete: Callable[[str], Awaitable[int]],
    keep: Callable[[str, int | None], Awaitable[None]],
    *,
    now: int,
    more: bool,
) -> Expired:
    """Delete the trees of the roots ``due`` (``delete(id)``), ``SWEEP_CONCURRENCY`` at a
    time (a store commits them together, and what runs in the foreground is not queued
    behind a hundred deletions); keep those that cannot go yet (``keep(id, until)``; None:
    kept until deleted, or its index entry dropped if it is gone). The first store error
    is raised once every one has been tried."""
    running = asyncio.Semaphore(SWEEP_CONCURRENCY)

    async def one(id: str) -> int | None:
        try:
            async with running:
                return await delete(id)
        except PromiseNotFoundError:
            await keep(id, None)
        except NotDeletableError as exc:
            await keep(id, now + KEEP_WAITING if exc.later else None)
        return None

    roots = records = 0
    outcomes = await asyncio.gather(*(one(id) for id in due), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome is not None:
            roots, records = roots + 1, records + outcome
    return Expired(roots=roots, records=records, more=more)


async def delete_in_batches(batch: Callable[[], Awaitable[tuple[int, bool]]]) -> int:
    """Run deletion transactions (``op_delete_tree``) until the tree is gone; how many
    records went."""
    deleted = 0
    while True:
        count, done = await batch()
        deleted += count
        if done:
            return deleted
