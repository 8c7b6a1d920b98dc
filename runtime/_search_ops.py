"""The searches of the ``Tables`` stores (runtime/_store_ops.py): promises by id pattern,
invocations newest first, each as of a time (a pending promise past its deadline counts as
timed out), read in chunks until a page is full."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from dawait.core._listing import InvocationQuery, ListCursor, encode_cursor
from dawait.core._promise import PromiseRecord, PromiseState, expire_promise
from dawait.runtime._store import PromisePage

if TYPE_CHECKING:
    from dawait.runtime._store_ops import Tables

__all__ = ["op_search_invocations", "op_search_promises"]


def op_search_promises(
    t: Tables,
    pattern: str,
    state: PromiseState | None,
    limit: int,
    cursor: str | None,
    now: int | None,
) -> PromisePage:
    if now is None or state is None:
        # One extra row tells whether there is a next page without a second query.
        rows = t.search_promises(pattern, state, limit + 1, cursor)
        page = (
            rows[:limit] if now is None else [expire_promise(r, now).record for r in rows[:limit]]
        )
        next_cursor = page[-1].id if len(rows) > limit and page else None
        return PromisePage(promises=page, cursor=next_cursor)
    # The state asked for is the state as of ``now``: a pending promise past its deadline
    # counts as timed out (or, for a timer, resolved), so read stored states that may turn
    # into it and filter after applying the deadline.
    stored = [state]
    if state in (PromiseState.RESOLVED, PromiseState.REJECTED_TIMEDOUT):
        stored.append(PromiseState.PENDING)
    return _page_as_of(
        lambda after, n: _search_states(t, pattern, stored, n, after), state, limit, cursor, now
    )


def op_search_invocations(
    t: Tables, query: InvocationQuery, limit: int, after: ListCursor | None, now: int
) -> PromisePage:
    """Invocations newest first, after ``after``, that ``query`` keeps as of ``now``; read
    in chunks until the page is full."""
    matches: list[PromiseRecord] = []
    more = True
    while len(matches) <= limit and more:
        rows = t.invocation_promises(query, after, limit + 1)
        more = len(rows) > limit
        matches.extend(r for r in (expire_promise(r, now).record for r in rows) if query.keeps(r))
        if rows:
            after = (rows[-1].created_at, rows[-1].id)
    page = matches[:limit]
    last = page[-1] if page and (len(matches) > limit or more) else None
    return PromisePage(
        promises=page, cursor=None if last is None else encode_cursor((last.created_at, last.id))
    )


def _page_as_of(
    fetch: Callable[[str | None, int], list[PromiseRecord]],
    state: PromiseState | None,
    limit: int,
    cursor: str | None,
    now: int,
) -> PromisePage:
    """A page of the records ``fetch(after, n)`` yields (by id) whose state as of ``now``
    is ``state`` (any when None): fetched in chunks until the page is full."""
    matches: list[PromiseRecord] = []
    more = True
    after = cursor
    while len(matches) <= limit and more:
        rows = fetch(after, limit + 1)
        more = len(rows) > limit
        for row in rows:
            record = expire_promise(row, now).record
            if state is None or record.state is state:
                matches.append(record)
        if rows:
            after = rows[-1].id
    page = matches[:limit]
    next_cursor = page[-1].id if (len(matches) > limit or more) and page else None
    return PromisePage(promises=page, cursor=next_cursor)


def _search_states(
    t: Tables, pattern: str, states: list[PromiseState], limit: int, after: str | None
) -> list[PromiseRecord]:
    if len(states) == 1:
        return t.search_promises(pattern, states[0], limit, after)
    rows = [r for s in states for r in t.search_promises(pattern, s, limit, after)]
    return sorted(rows, key=lambda r: r.id)[:limit]
