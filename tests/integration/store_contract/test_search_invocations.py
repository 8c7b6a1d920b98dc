"""``search_invocations``: newest first, pages that hold across ties and new arrivals, and
every filter (states as of now, a function prefix, a time range, tags)."""

from __future__ import annotations

from typing import Any

import pytest

from dawait.core._listing import FAILED, InvocationQuery, parse_states
from dawait.core._param import invocation_param
from dawait.core._promise import PromiseState, Settle, Value
from dawait.runtime import Store
from dawait.runtime._store import CreatePromise

ARGS = '{"args":[],"kwargs":{}}'


async def start(store: Store, id: str, func: str, *, at: int, **fields: Any) -> None:
    param = Value(data=invocation_param(func, 1, ARGS))
    request = CreatePromise(id=id, param=param, **fields)
    await store.create_invocation(request, pid="w1", ttl=None, now=at)


async def listed(
    store: Store, query: InvocationQuery | None = None, *, limit: int = 100, now: int = 1000
) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = await store.search_invocations(
            query or InvocationQuery(), limit=limit, cursor=cursor, now=now
        )
        assert len(page.promises) <= limit
        ids += [record.id for record in page.promises]
        if page.cursor is None:
            return ids
        cursor = page.cursor


async def test_newest_first_then_by_id_in_pages(store: Store) -> None:
    await start(store, "b", "f", at=10)
    await start(store, "a", "f", at=10)
    await start(store, "z", "f", at=5)
    await start(store, "new", "f", at=20)
    await store.create_promise(CreatePromise(id="not-an-invocation"), now=30)

    for limit in (1, 2, 3, 100):
        assert await listed(store, limit=limit) == ["new", "a", "b", "z"]


async def test_a_page_goes_on_where_the_last_ended_whatever_arrived_since(store: Store) -> None:
    for k in range(4):
        await start(store, f"i{k}", "f", at=10 + k)
    first = await store.search_invocations(InvocationQuery(), limit=2, now=100)
    assert [r.id for r in first.promises] == ["i3", "i2"]
    await start(store, "later", "f", at=50)

    rest = await store.search_invocations(InvocationQuery(), limit=10, cursor=first.cursor, now=100)
    assert [r.id for r in rest.promises] == ["i1", "i0"]
    assert rest.cursor is None


async def test_states_as_of_now_and_the_word_failed(store: Store) -> None:
    await start(store, "ok", "f", at=1)
    await start(store, "bad", "f", at=2)
    await start(store, "gone", "f", at=3)
    await start(store, "late", "f", at=4, timeout_at=500)
    await start(store, "running", "f", at=5)
    await store.settle_promise("ok", event=Settle.RESOLVE, value=Value(data="1"), now=10)
    await store.settle_promise("bad", event=Settle.REJECT, value=Value(data='"x"'), now=10)
    await store.settle_promise("gone", event=Settle.CANCEL, value=Value(), now=10)

    assert parse_states("failed") == FAILED
    assert await listed(store, InvocationQuery(states=FAILED), now=1000) == ["late", "gone", "bad"]
    assert await listed(store, InvocationQuery(states=FAILED), now=100) == ["gone", "bad"]
    pending = InvocationQuery(states=parse_states("pending"))
    assert await listed(store, pending, now=100) == ["running", "late"]
    assert await listed(store, pending, now=1000) == ["running"]
    timed_out = InvocationQuery(states=parse_states("timedout,resolved"))
    assert await listed(store, timed_out, now=1000) == ["late", "ok"]
    canceled = InvocationQuery(states=frozenset({PromiseState.REJECTED_CANCELED}))
    assert await listed(store, canceled) == ["gone"]


async def test_function_prefix_time_range_and_tags(store: Store) -> None:
    await start(store, "p1", "shop.pay", at=100, tags={"customer": "ann"})
    await start(store, "p2", "shop.pay", at=200, tags={"customer": "bob"})
    await start(store, "r1", "shop.refund", at=300, tags={"customer": "ann", "vip": "yes"})
    await start(store, "m1", "mail.send", at=400)

    assert await listed(store, InvocationQuery(function="shop.")) == ["r1", "p2", "p1"]
    assert await listed(store, InvocationQuery(function="shop.pay")) == ["p2", "p1"]
    assert await listed(store, InvocationQuery(function="nothing")) == []
    window = InvocationQuery(created_after=200, created_before=400)
    assert await listed(store, window, limit=1) == ["r1", "p2"]
    assert await listed(store, InvocationQuery(created_after=401)) == []
    ann = InvocationQuery(tags={"customer": "ann"})
    assert await listed(store, ann, limit=1) == ["r1", "p1"]
    assert await listed(store, InvocationQuery(tags={"customer": "ann", "vip": "yes"})) == ["r1"]
    both = InvocationQuery(function="shop.", tags={"customer": "bob"}, created_before=250)
    assert await listed(store, both) == ["p2"]


async def test_a_cursor_no_listing_gave_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="not a cursor"):
        await store.search_invocations(InvocationQuery(), cursor="p1", now=0)


def test_unknown_state_words_are_named() -> None:
    with pytest.raises(ValueError, match="'broken' is not a state: use one or more of failed"):
        parse_states("pending,broken")
