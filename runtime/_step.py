"""A leaf step's run (``ctx.run`` of a plain function): wait for the records of the calls
made before it, call it, retry it by its policy within its deadline, and write its one
record, the settled promise."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from dawait.core._errors import PromiseTimeoutError, SerializationError
from dawait.core._promise import PromiseState, Value
from dawait.core._retry import RetryPolicy
from dawait.runtime._calls import Builtin, LeafCall, step_value
from dawait.runtime._codec import Signature, check_size, encode_error, encode_json
from dawait.runtime._store import CreatePromise

if TYPE_CHECKING:
    from dawait.runtime._invocation import Invocation

__all__ = ["ATTEMPTS_HEADER", "Step"]

ATTEMPTS_HEADER = "dawait:attempts"
"""Value header of a step's record: how many attempts it took, when more than one."""


class Step:
    """One leaf step's run: wait for earlier records, call, retry, record the outcome."""

    __slots__ = (
        "barrier",
        "call",
        "cid",
        "deadline",
        "inv",
        "name",
        "non_retryable",
        "policy",
        "signature",
    )

    def __init__(
        self,
        inv: Invocation,
        cid: str,
        name: str,
        signature: Signature,
        call: LeafCall | Builtin,
        policy: RetryPolicy,
        non_retryable: tuple[type[BaseException], ...],
        deadline: int | None,
    ) -> None:
        self.inv = inv
        self.cid = cid
        self.name = name
        self.signature = signature
        self.call = call
        self.policy = policy
        self.non_retryable = non_retryable
        self.deadline = deadline
        self.barrier = inv.unwritten()

    @property
    def what(self) -> str:
        return f"step {self.name} ({self.cid})"

    async def run(self) -> Any:
        inv = self.inv
        inv.begin_local()
        try:
            if self.barrier:
                await asyncio.wait(self.barrier)
            return await self._attempts()
        finally:
            inv.end_local()

    async def _attempts(self) -> Any:
        engine = self.inv.engine
        deadline = self.deadline
        retry = 0
        while True:
            try:
                if deadline is None:
                    result = await self.call.run()
                else:
                    result = await self.inv.within(deadline, self.call.run(), self.what)
            except PromiseTimeoutError as exc:
                await self._record(PromiseState.REJECTED_TIMEDOUT, encode_error(exc), retry)
                raise
            except Exception as exc:
                retry += 1
                delay = None if isinstance(exc, self.non_retryable) else self.policy.backoff(retry)
                wake = None if delay is None else engine.clock.now() + round(delay * 1000)
                if wake is None or (deadline is not None and wake >= deadline):
                    await self._record(PromiseState.REJECTED, encode_error(exc), retry - 1)
                    raise
                engine.metrics.event("step_retries")
                await engine.clock.sleep_until(wake)
                continue
            try:
                data = encode_json(result, self.signature.result, what=f"{self.what} result")
                if engine.may_be_oversize(data):
                    check_size(data, engine.max_payload, f"the result of {self.what}")
            except SerializationError as exc:
                await self._record(PromiseState.REJECTED, encode_error(exc), retry)
                raise
            await self._record(PromiseState.RESOLVED, data, retry)
            engine.metrics.event("steps")
            return result

    async def _record(self, state: PromiseState, data: str, retries: int) -> None:
        """Write the step's one record; retries (in this run) are kept in its headers."""
        inv = self.inv
        headers = {ATTEMPTS_HEADER: str(retries + 1)} if retries else None
        created = await inv.engine.create_promise(
            CreatePromise(
                id=self.cid,
                param=step_value(self.name),
                tags=inv.tags,
                state=state,
                value=Value(data=data, headers=headers),
            )
        )
        inv.remember(created.promise)
