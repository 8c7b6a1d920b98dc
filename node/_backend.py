"""What the HTTP API does, over one app's engine: start, find, wait for and settle.

It works through the app's ``LocalBackend`` (``app.local``): its engine, and the record-level
``start_invocation``, ``create_promise_record`` and ``settle``."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dawait.core._errors import (
    PromiseNotFoundError,
    ScheduleNotFoundError,
    StoreError,
)
from dawait.core._ids import check_invocation_id
from dawait.core._listing import InvocationQuery
from dawait.core._param import read_invocation
from dawait.core._promise import PromiseRecord, PromiseState, Settle, SettleOutcome, Value
from dawait.node import _api_models as m
from dawait.runtime._codec import encode_json
from dawait.runtime._store import PromisePage

if TYPE_CHECKING:
    from dawait import Resonate

__all__ = ["COUNT_LIMIT", "NodeBackend"]

COUNT_LIMIT = 100_000
"""Invocations one count reads at most (beyond it, the count says it is not all)."""


class NodeBackend:
    """The node's operations, in the terms of records (the HTTP layer renders them)."""

    def __init__(self, app: Resonate) -> None:
        self.app = app
        self.local = app.local
        self._engine = app.local.engine
        self._stopping = asyncio.Event()
        self._stop_future: asyncio.Future[None] | None = None

    def stop_waiting(self) -> None:
        """The node is stopping: every long-poll answers at once with the current state."""
        self._stopping.set()
        if self._stop_future is not None and not self._stop_future.done():
            self._stop_future.set_result(None)

    async def start(
        self,
        id: str,
        function: str,
        args: list[Any],
        kwargs: dict[str, Any],
        version: int | None,
    ) -> tuple[PromiseRecord, bool]:
        problem = self._store_problem()
        if problem is not None:
            raise StoreError(f"this node takes no new work now: {problem}")
        check_invocation_id(id)
        created = await self.local.start_invocation(id, function, args, kwargs, version=version)
        return created.promise, created.created

    def nodes(self) -> m.NodeList:
        """The live nodes as this node's replica of the membership records has them."""
        cluster = self.app.cluster
        if cluster is None:
            return m.NodeList(cluster=False, items=[])
        watch = cluster.clock_watch
        offset = watch.offset
        return m.NodeList(
            cluster=True,
            items=[
                m.NodeView(
                    node_id=member.node_id,
                    address=member.address,
                    groups=list(member.groups),
                    functions=list(member.functions),
                    leader=member.node_id == cluster.leader,
                    started_at=dt.datetime.fromtimestamp(member.started_at / 1000, dt.UTC),
                )
                for member in cluster.members
            ],
            partitions=cluster.count,
            owners=cluster.owners(),
            function_groups=cluster.function_groups(),
            balanced=cluster.balanced,
            clock_offset_ms=None if offset is None else round(offset * 1000, 1),
            clock_error_ms=None if offset is None else round(watch.error * 1000, 1),
        )

    async def invocation(self, id: str) -> PromiseRecord:
        record = await self._engine.get_promise(id)
        if record is None or read_invocation(record.param.data) is None:
            raise PromiseNotFoundError(f"no invocation with id {id!r}")
        result: PromiseRecord = record
        return result

    async def result(
        self, id: str, wait: float, gone: asyncio.Future[None] | None = None
    ) -> PromiseRecord:
        """Invocation ``id`` once settled, or after ``wait`` seconds, or once ``gone`` (the
        client hung up: ``ConnectionResetError``)."""
        engine = self._engine
        # Listen first, then read: a settle in between is not missed. No task is started:
        # the waiter and the stop signal are plain futures.
        settled: asyncio.Future[PromiseRecord] = engine.waiter(id)
        try:
            # An invocation running here is pending, and its settling will notify the
            # waiter: no need to read it first (one store operation less per call).
            if wait <= 0 or self._stopping.is_set() or not engine.settles_here(id):
                record = await self.invocation(id)
                if record.state.settled or wait <= 0 or self._stopping.is_set():
                    return record
                # Settled elsewhere (a cluster: another node owns it): ask to be told.
                engine.ownership.watch(id)
            # A request's wait is a wall-clock network timeout, not workflow time.
            waits: list[asyncio.Future[Any]] = [settled, self._stop_signal()]
            if gone is not None:
                waits.append(gone)
            await asyncio.wait(waits, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            if settled.done() and not settled.cancelled() and settled.exception() is None:
                return settled.result()
            if gone is not None and gone.done():
                raise ConnectionResetError("the client closed the connection")
            return await self.invocation(id)
        finally:
            engine.drop_waiter(id, settled)

    def _stop_signal(self) -> asyncio.Future[None]:
        if self._stop_future is None:
            self._stop_future = asyncio.get_running_loop().create_future()
            if self._stopping.is_set():
                self._stop_future.set_result(None)
        return self._stop_future

    def check_json_args(self, function: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        """Refuse arguments from outside that do not fit ``function`` strictly, as a start
        does (``SerializationError`` naming the parameter): a schedule's fire later is lax."""
        registered = self.local.registry.resolve(function)
        registered.signature.encode_args(args, kwargs, strict=True)

    async def cancel(self, id: str) -> tuple[PromiseRecord, bool]:
        """Cancel invocation ``id`` with what it awaits; and whether this call canceled it
        (False: it had ended already)."""
        await self.invocation(id)
        settled = await self._engine.cancel(id)
        return settled.promise, settled.outcome is SettleOutcome.SETTLED

    async def delete(self, id: str) -> None:
        await self._engine.store.delete_tree(id)

    async def invocations(
        self, query: InvocationQuery, *, limit: int, cursor: str | None
    ) -> PromisePage:
        return await self._engine.store.search_invocations(
            query, limit=limit, cursor=cursor, now=self._engine.timers.expiry_now()
        )

    async def count_invocations(self, query: InvocationQuery) -> tuple[dict[str, int], bool]:
        """How many invocations ``query`` keeps, by state; and whether that is all of them
        (counting stops after ``COUNT_LIMIT``)."""
        counts: dict[str, int] = {}
        counted, cursor = 0, None
        while counted < COUNT_LIMIT:
            page = await self.invocations(query, limit=1000, cursor=cursor)
            for record in page.promises:
                counts[record.state.value] = counts.get(record.state.value, 0) + 1
            counted += len(page.promises)
            if (cursor := page.cursor) is None:
                return counts, True
        return counts, False

    async def tree(self, id: str) -> tuple[PromiseRecord, list[PromiseRecord]]:
        root = await self.invocation(id)
        # Calls made with an explicit id (ctx.promise(id=...)) are found by their branch.
        calls: list[PromiseRecord] = [
            record
            for record in await self._engine.store.branch_promises(id)
            if not record.id.startswith(f"{id}:")
        ]
        cursor: str | None = None
        while True:
            page = await self._engine.search_promises(
                f"{id}:*", state=None, limit=1000, cursor=cursor
            )
            calls.extend(page.promises)
            cursor = page.cursor
            if cursor is None or len(calls) >= 10_000:
                return root, calls

    async def create_promise(
        self, id: str, timeout: float | None, data: Any
    ) -> tuple[PromiseRecord, bool]:
        created = await self.local.create_promise_record(id, timeout, data)
        return created.promise, created.created

    async def promise(self, id: str) -> PromiseRecord:
        record = await self._engine.get_promise(id)
        if record is None:
            raise PromiseNotFoundError(f"no promise with id {id!r}")
        result: PromiseRecord = record
        return result

    async def resolve(self, id: str, value: Any) -> PromiseRecord:
        data = encode_json(value, what=f"promise {id} value")
        return await self._settle(id, Settle.RESOLVE, Value(data=data))

    async def reject(self, id: str, type: str, message: str) -> PromiseRecord:
        data = json.dumps({"type": type, "message": message})
        return await self._settle(id, Settle.REJECT, Value(data=data))

    async def cancel_promise(self, id: str) -> PromiseRecord:
        return await self._settle(id, Settle.CANCEL, Value())

    async def promises(
        self, *, pattern: str, state: PromiseState | None, limit: int, cursor: str | None
    ) -> tuple[Sequence[PromiseRecord], str | None]:
        page = await self._engine.search_promises(pattern, state=state, limit=limit, cursor=cursor)
        return page.promises, page.cursor

    async def schedule_exists(self, id: str) -> bool:
        try:
            await self.app.schedules.get(id)
        except ScheduleNotFoundError:
            return False
        return True

    def _store_problem(self) -> str | None:
        return self._engine.store.problem()

    async def readiness(self) -> str | None:
        """None when the node can take work, else what is wrong."""
        if not self._engine.running:
            return "the engine is not running"
        problem = self._engine.faults.problem() or self._engine.store.refusal()
        if problem is not None:
            return problem
        try:
            await asyncio.wait_for(self._engine.store.get_promise("dawait-readiness-probe"), 5)
        except TimeoutError:
            return f"store unreachable: {self._engine.store!r} gave no answer within 5 s"
        except Exception as exc:  # any failure to reach the store means not ready
            return f"store unreachable: {exc}"
        return None

    async def _settle(self, id: str, event: Settle, value: Value) -> PromiseRecord:
        return await self.local.settle(id, event, value)
