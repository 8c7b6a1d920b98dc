"""Retention in the store: a settled root's deadline (``settled_at`` + its
``TAG_RETENTION``) is indexed, found by ``delete_expired`` from that millisecond on (not one
before), and its tree deleted; roots that cannot go yet are kept a while longer."""

from __future__ import annotations

from pathlib import Path

from dawait.core._promise import TAG_BRANCH, TAG_RETENTION, PromiseState, Settle, Value
from dawait.runtime import SQLiteStore, Store
from dawait.runtime._deletion import KEEP_WAITING
from dawait.runtime._store import CreatePromise
from tests.integration.store_contract.support import ONE, TIMER, create, resolve
from tests.integration.store_contract.test_delete_tree import INVOCATION

KEPT = {TAG_RETENTION: "1000"}
"""A root kept one second once settled."""


async def _root(store: Store, id: str, *, now: int = 0, tags: dict[str, str] = KEPT) -> None:
    await store.create_invocation(CreatePromise(id=id, tags=tags), pid="w1", ttl=None, now=now)


async def test_a_settled_root_goes_with_its_tree_once_its_retention_ends(store: Store) -> None:
    await _root(store, "wf")
    await create(store, "wf:1", tags={TAG_BRANCH: "wf"})
    await create(store, "wf:2", tags={TAG_BRANCH: "wf", **TIMER}, timeout_at=50)
    await resolve(store, "wf:1", now=10)
    await resolve(store, "wf:2", now=20)
    assert await store.next_deletion() is None  # pending: no deadline yet
    await resolve(store, "wf", now=500)

    assert await store.next_deletion() == 1500
    early = await store.delete_expired(now=1499, limit=10)
    assert (early.roots, early.records) == (0, 0)
    assert await store.get_promise("wf") is not None

    swept = await store.delete_expired(now=1500, limit=10)

    assert (swept.roots, swept.records, swept.more) == (1, 3, False)
    for id in ("wf", "wf:1", "wf:2"):
        assert await store.get_promise(id) is None
    assert await store.get_task("wf") is None
    assert await store.next_deletion() is None


async def test_what_has_no_retention_is_kept(store: Store) -> None:
    await _root(store, "forever", tags={})
    await resolve(store, "forever", now=5)
    await create(store, "odd", tags={TAG_RETENTION: "soon"})  # not one of ours
    await resolve(store, "odd", now=5)

    swept = await store.delete_expired(now=10**13, limit=10)

    assert swept.roots == 0
    assert await store.get_promise("forever") is not None
    assert await store.get_promise("odd") is not None
    assert await store.next_deletion() is None


async def test_promises_created_settled_and_timed_out_get_their_deadline(store: Store) -> None:
    await store.create_promise(
        CreatePromise(id="done", state=PromiseState.RESOLVED, value=ONE, tags=KEPT), now=100
    )
    await create(store, "late", timeout_at=200, tags=KEPT)
    assert await store.next_deletion() == 1100
    expired = await store.expire_promises(now=300, limit=10)
    assert [s.promise.id for s in expired] == ["late"]

    assert (await store.delete_expired(now=1100, limit=10)).roots == 1
    assert await store.next_deletion() == 1200  # timed out at its timeout_at, 200
    assert (await store.delete_expired(now=1200, limit=10)).roots == 1
    assert await store.get_promise("late") is None


async def test_a_sweep_takes_at_most_its_limit_earliest_first(store: Store) -> None:
    for k in range(5):
        await create(store, f"p{k}", tags=KEPT)
        await resolve(store, f"p{k}", now=10 - k)  # p4 settled first

    first = await store.delete_expired(now=2000, limit=2)

    assert (first.roots, first.more) == (2, True)
    assert await store.get_promise("p4") is None
    assert await store.get_promise("p3") is None
    assert await store.get_promise("p2") is not None
    last = await store.delete_expired(now=2000, limit=10)
    assert (last.roots, last.more) == (3, False)


async def test_an_invocation_whose_caller_is_pending_is_kept_until_the_caller_settles(
    store: Store,
) -> None:
    await _root(store, "caller", tags={})
    child = CreatePromise(id="caller:1", param=INVOCATION, tags={TAG_BRANCH: "caller", **KEPT})
    await store.create_invocation(child, pid="w1", ttl=None, now=0)
    await resolve(store, "caller:1", now=10)

    kept = await store.delete_expired(now=1010, limit=10)

    assert kept.roots == 0
    record = await store.get_promise("caller:1")
    assert record is not None
    assert record.delete_at == 1010 + KEEP_WAITING  # tried again then
    assert await store.next_deletion() == 1010 + KEEP_WAITING
    await resolve(store, "caller", now=2000)
    assert (await store.delete_expired(now=1010 + KEEP_WAITING, limit=10)).roots == 1
    assert await store.get_promise("caller:1") is None
    assert await store.get_promise("caller") is not None  # no retention of its own


async def test_a_call_that_names_a_retention_goes_with_its_root_only(store: Store) -> None:
    await _root(store, "wf")
    await create(store, "wf:1", tags={TAG_BRANCH: "wf", **KEPT})
    await resolve(store, "wf:1", now=0)

    swept = await store.delete_expired(now=5000, limit=10)

    assert swept.roots == 0
    call = await store.get_promise("wf:1")
    assert call is not None
    assert call.delete_at is None  # kept with its root now
    await resolve(store, "wf", now=6000)
    assert (await store.delete_expired(now=7000, limit=10)).records == 2
    assert await store.get_promise("wf:1") is None


async def test_a_deleted_root_leaves_nothing_due(store: Store) -> None:
    await create(store, "p", tags=KEPT)
    await resolve(store, "p", now=0)
    await store.delete_tree("p")

    assert await store.next_deletion() is None
    assert (await store.delete_expired(now=5000, limit=10)).roots == 0


async def test_the_index_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "kept.db"
    first = SQLiteStore(path)
    await first.open()
    await create(first, "p", tags=KEPT)
    await first.settle_promise("p", event=Settle.RESOLVE, value=Value(data="1"), now=7)
    await first.close()

    second = SQLiteStore(path)
    await second.open()
    try:
        assert await second.next_deletion() == 1007
        assert (await second.delete_expired(now=1007, limit=10)).roots == 1
    finally:
        await second.close()
