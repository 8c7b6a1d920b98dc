"""``branch_promises``: the calls one invocation made."""

from __future__ import annotations

from dawait.core._promise import TAG_BRANCH, PromiseState
from dawait.runtime import Store
from tests.integration.store_contract.support import create, resolve


async def test_branch_promises_lists_the_calls_of_one_invocation(store: Store) -> None:
    await create(store, "wf", tags={TAG_BRANCH: "wf"})
    await create(store, "wf.1", tags={TAG_BRANCH: "wf"})
    await create(store, "wf.2", tags={TAG_BRANCH: "wf", "k": "v"})
    await create(store, "wf.3")
    await create(store, "other.1", tags={TAG_BRANCH: "other"})
    await resolve(store, "wf.1", now=5)

    branch = await store.branch_promises("wf")

    assert sorted(promise.id for promise in branch) == ["wf.1", "wf.2"]
    by_id = {promise.id: promise for promise in branch}
    assert by_id["wf.1"].state is PromiseState.RESOLVED
    assert by_id["wf.2"].tags == {TAG_BRANCH: "wf", "k": "v"}
    assert await store.branch_promises("nobody") == []
