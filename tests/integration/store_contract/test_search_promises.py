"""``search_promises``: ``*`` patterns, state filters, pages, and a reference glob."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dawait.core._promise import EMPTY, PromiseState, Settle
from dawait.runtime import Store
from tests.integration.store_contract.support import all_pages, create, resolve


async def search(store: Store, pattern: str, **filters: Any) -> list[str]:
    return await all_pages(store, pattern, limit=100, **filters)


async def test_search_with_star(store: Store) -> None:
    for id in ("order-1", "order-22", "order-", "Order-1", "xorder-1", "order", "ord.er-1"):
        await create(store, id)

    assert await search(store, "order-*") == ["order-", "order-1", "order-22"]
    assert await search(store, "*order-1") == ["order-1", "xorder-1"]
    assert await search(store, "o*r-1") == ["ord.er-1", "order-1"]
    assert await search(store, "order-1") == ["order-1"]
    assert await search(store, "*") == sorted(
        ["order-1", "order-22", "order-", "Order-1", "xorder-1", "order", "ord.er-1"]
    )
    assert await search(store, "missing*") == []


async def test_search_is_case_sensitive(store: Store) -> None:
    await create(store, "Order-1")
    await create(store, "order-1")

    assert await search(store, "order*") == ["order-1"]
    assert await search(store, "ORDER*") == []


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("a[1]", ["a[1]"]),
        ("a[*", ["a[1]"]),
        ("a?", ["a?"]),
        ("a?*", ["a?"]),
        ("a%b", ["a%b"]),
        ("a%", []),
        ("a_b", ["a_b"]),
        ("a_", []),
        ("a.b", ["a.b"]),
        ("a\\b", ["a\\b"]),
        ("a]", ["a]"]),
        ("a^", ["a^"]),
        ("a+", []),
    ],
)
async def test_search_treats_everything_but_star_literally(
    store: Store, pattern: str, expected: list[str]
) -> None:
    for id in ("a[1]", "a1", "a?", "ab", "a%b", "a_b", "axb", "a.b", "a\\b", "a]", "a^", "aa"):
        await create(store, id)

    assert await search(store, pattern) == expected


async def test_search_by_state(store: Store) -> None:
    for id in ("p1", "p2", "p3", "p4"):
        await create(store, id)
    await resolve(store, "p2")
    await store.settle_promise("p3", event=Settle.CANCEL, value=EMPTY, now=1)

    assert await search(store, "p*", state=PromiseState.PENDING) == ["p1", "p4"]
    assert await search(store, "p*", state=PromiseState.RESOLVED) == ["p2"]
    assert await search(store, "p*", state=PromiseState.REJECTED_CANCELED) == ["p3"]
    assert await search(store, "p*", state=PromiseState.REJECTED) == []


async def test_search_with_now_shows_the_timed_out_view(store: Store) -> None:
    await create(store, "p", timeout_at=100)

    page = await store.search_promises("*", now=150)

    assert [(p.id, p.state) for p in page.promises] == [("p", PromiseState.REJECTED_TIMEDOUT)]


async def test_search_by_state_with_now_filters_the_timed_out_view(store: Store) -> None:
    await create(store, "p", timeout_at=100)

    pending = await store.search_promises("*", state=PromiseState.PENDING, now=150)
    timed_out = await store.search_promises("*", state=PromiseState.REJECTED_TIMEDOUT, now=150)

    assert pending.promises == []
    assert [p.id for p in timed_out.promises] == ["p"]


@pytest.mark.parametrize("limit", [1, 3, 5, 7, 15, 16, 100])
async def test_search_pages_return_every_match_exactly_once(store: Store, limit: int) -> None:
    ids = [f"job-{n:02}" for n in range(15)]
    for id in reversed(ids):
        await create(store, id)
    await create(store, "other-1")
    await create(store, "job")

    found = await all_pages(store, "job-*", limit=limit)

    assert found == ids


async def test_search_last_page_has_no_cursor(store: Store) -> None:
    for n in range(4):
        await create(store, f"p{n}")

    first = await store.search_promises("p*", limit=2)
    last = await store.search_promises("p*", limit=2, cursor=first.cursor)

    assert [p.id for p in first.promises] == ["p0", "p1"]
    assert first.cursor == "p1"
    assert [p.id for p in last.promises] == ["p2", "p3"]
    assert last.cursor is None


async def test_search_pages_by_state_skip_other_states(store: Store) -> None:
    for n in range(10):
        await create(store, f"p{n}")
        if n % 3 == 0:
            await resolve(store, f"p{n}")

    found = await all_pages(store, "p*", limit=2, state=PromiseState.PENDING)

    assert found == ["p1", "p2", "p4", "p5", "p7", "p8"]


TRICKY_IDS = [
    "a",
    "A",
    "ab",
    "aab",
    "aba",
    "a.b",
    "a*b",
    "a[b]",
    "a]",
    "a?",
    "a?b",
    "a%",
    "a%b",
    "a_b",
    "a\\b",
    "a\nb",
    "b",
    "ba",
    "[",
    "?",
    "%",
    "_",
    "*",
    "é",
    "aé",
    "",
]


def star_matches(pattern: str, id: str) -> bool:
    """The reference: ``*`` matches any run of characters, every other character itself."""
    head, *rest = pattern.split("*")
    if not rest:
        return id == pattern
    *middle, tail = rest
    if not id.startswith(head):
        return False
    position = len(head)
    for part in middle:
        found = id.find(part, position)
        if found < 0:
            return False
        position = found + len(part)
    return len(id) - position >= len(tail) and id.endswith(tail)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    pattern=st.text(alphabet="aAbé*[]?%_.\\\n", max_size=5) | st.sampled_from(TRICKY_IDS),
    limit=st.integers(min_value=1, max_value=6),
)
async def test_search_matches_the_reference_glob(store: Store, pattern: str, limit: int) -> None:
    await asyncio.gather(*(create(store, id) for id in TRICKY_IDS))

    found = await all_pages(store, pattern, limit=limit)

    assert found == sorted(id for id in TRICKY_IDS if star_matches(pattern, id))
