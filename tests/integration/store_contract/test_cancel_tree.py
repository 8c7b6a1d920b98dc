"""``cancel_tree``: the root and every pending call below it that it made, by branch (its
steps, timers, promises with ids of their own, its rpc invocations with their calls), not
detached invocations nor below them; in bounded transactions; again finishes nothing new."""

from __future__ import annotations

from dawait.core._param import invocation_param
from dawait.core._promise import (
    TAG_BRANCH,
    TAG_DETACHED,
    TAG_TIMER,
    Settle,
    SettleOutcome,
    Value,
)
from dawait.runtime import Store
from dawait.runtime._store import CreatePromise
from dawait.runtime._store_ops import CANCEL_BATCH

CALL = Value(data=invocation_param("f", 1, '{"args":[],"kwargs":{}}'))


async def call(store: Store, id: str, caller: str, **tags: str) -> None:
    request = CreatePromise(id=id, tags={TAG_BRANCH: caller, **tags})
    await store.create_promise(request, now=1)


async def invocation(store: Store, id: str, caller: str | None = None, **tags: str) -> None:
    branch = {} if caller is None else {TAG_BRANCH: caller}
    request = CreatePromise(id=id, param=CALL, tags={**branch, **tags})
    await store.create_invocation(request, pid="w1", ttl=None, now=1)


async def states(store: Store, *ids: str) -> dict[str, str]:
    return {id: (await store.get_promise(id)).state.value for id in ids}  # type: ignore[union-attr]


async def test_a_cancel_reaches_every_pending_call_but_detached_ones(store: Store) -> None:
    await invocation(store, "r")
    await call(store, "r:1", "r")  # a step
    await call(store, "r:2", "r", **{TAG_TIMER: "true"})
    await call(store, "approval-r", "r")  # an id of its own
    await invocation(store, "r:3", "r")  # an rpc
    await call(store, "r:3.1", "r:3")
    await invocation(store, "r:4", "r", **{TAG_DETACHED: "true"})
    await call(store, "r:4.1", "r:4")
    await call(store, "r:5", "r")
    await store.settle_promise("r:5", event=Settle.RESOLVE, value=Value(data="1"), now=2)
    await invocation(store, "other")

    tree = await store.cancel_tree("r", now=3)

    assert tree.root.outcome is SettleOutcome.SETTLED
    assert sorted(s.promise.id for s in tree.calls) == [
        "approval-r", "r:1", "r:2", "r:3", "r:3.1"
    ]  # fmt: skip
    assert not tree.more
    assert await states(store, "r", "r:1", "r:2", "approval-r", "r:3", "r:3.1") == dict.fromkeys(
        ["r", "r:1", "r:2", "approval-r", "r:3", "r:3.1"], "rejected_canceled"
    )
    assert await states(store, "r:4", "r:4.1", "r:5", "other") == {
        "r:4": "pending", "r:4.1": "pending", "r:5": "resolved", "other": "pending"
    }  # fmt: skip
    again = await store.cancel_tree("r", now=4)
    assert again.root.outcome is not SettleOutcome.SETTLED
    assert list(again.calls) == []


async def test_a_large_tree_is_canceled_in_bounded_transactions(store: Store) -> None:
    await invocation(store, "big")
    for k in range(CANCEL_BATCH + 5):
        await call(store, f"big:{k}", "big")
    first = await store.cancel_tree("big", now=2)
    assert (len(first.calls), first.more) == (CANCEL_BATCH, True)
    second = await store.cancel_tree("big", now=3)
    assert (len(second.calls), second.more) == (5, False)
    assert set((await states(store, *(f"big:{k}" for k in range(CANCEL_BATCH + 5)))).values()) == {
        "rejected_canceled"
    }


async def test_a_finished_invocation_cancels_nothing(store: Store) -> None:
    await invocation(store, "done")
    await call(store, "done:1", "done")
    await store.settle_promise("done", event=Settle.RESOLVE, value=Value(data="1"), now=2)
    tree = await store.cancel_tree("done", now=3)
    assert tree.root.outcome is not SettleOutcome.SETTLED
    assert tree.root.promise.state.value == "resolved"
    assert list(tree.calls) == []
    assert (await states(store, "done:1")) == {"done:1": "pending"}
