"""``app.promises``: create, get, resolve, reject, cancel, search and timeouts."""

from __future__ import annotations

import pytest

from dawait import Resonate
from dawait.errors import (
    CanceledError,
    PromiseAlreadySettledError,
    PromiseNotFoundError,
    PromiseTimeoutError,
)
from dawait.testing import FakeClock
from tests.integration.semantics.payloads import OutOfStockError


async def test_promises_create_get_resolve_and_search(app: Resonate) -> None:
    created = await app.promises.create("p-1", data={"q": 1})
    assert created.id == "p-1"
    assert created.pending
    assert created.param == {"q": 1}
    assert (await app.promises.create("p-1", data={"q": 2})).param == {"q": 1}
    await app.promises.create("p-2")
    await app.promises.create("other")

    resolved = await app.promises.resolve("p-1", {"ok": True})
    assert resolved.state == "resolved"
    assert resolved.value == {"ok": True}
    assert (await app.promises.get("p-1")).value == {"ok": True}
    assert (await app.promises.resolve("p-1", {"ok": True})).state == "resolved"
    with pytest.raises(PromiseAlreadySettledError, match="p-1"):
        await app.promises.resolve("p-1", {"ok": False})
    with pytest.raises(PromiseAlreadySettledError, match="p-1"):
        await app.promises.reject("p-1", "late")

    assert [p.id for p in await app.promises.search("p-*")] == ["p-1", "p-2"]
    assert [p.id for p in await app.promises.search("*", state="pending")] == ["other", "p-2"]
    assert [p.id for p in await app.promises.search("*", state="resolved")] == ["p-1"]
    assert [p.id for p in await app.promises.search("*", limit=1)] == ["other"]


async def test_resolving_again_with_an_equal_value_is_fine(app: Resonate) -> None:
    await app.promises.create("p")
    await app.promises.resolve("p", {"a": 1, "b": 2})
    again = await app.promises.resolve("p", {"b": 2, "a": 1})
    assert again.value == {"a": 1, "b": 2}


async def test_promises_reject_and_cancel(app: Resonate) -> None:
    await app.promises.create("r")
    await app.promises.create("c")
    rejected = await app.promises.reject("r", OutOfStockError("none"))
    assert rejected.state == "rejected"
    assert isinstance(rejected.error, OutOfStockError)
    assert str(rejected.error) == "none"
    canceled = await app.promises.cancel("c")
    assert canceled.state == "rejected_canceled"
    assert isinstance(canceled.error, CanceledError)
    assert (await app.promises.cancel("c")).state == "rejected_canceled"
    with pytest.raises(PromiseAlreadySettledError):
        await app.promises.resolve("c", 1)
    with pytest.raises(PromiseNotFoundError, match="missing"):
        await app.promises.get("missing")
    with pytest.raises(PromiseNotFoundError, match="missing"):
        await app.promises.resolve("missing", 1)


async def test_a_promise_with_a_timeout_times_out(clock: FakeClock) -> None:
    async with Resonate(clock=clock) as app:
        await app.promises.create("p", timeout=30)
        clock.advance(31)
        info = await app.promises.get("p")
        assert info.state == "rejected_timedout"
        assert isinstance(info.error, PromiseTimeoutError)
