"""``Context``: what a durable function uses to make durable calls.

Each call gets its id synchronously, when it is made (``parent:N`` under a root,
``parent.N`` deeper), so ``asyncio.gather`` over ctx calls numbers them the same way on every
replay. A call whose promise is already settled returns the stored outcome without running.
A leaf step costs one write: the settled promise, once it has finished. Calls that others
settle (sleeps, external promises, remote and detached invocations) write their pending
promise at once, and every step waits for the records of the calls made before it, so an
id handed out by a later step can always be settled.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random as _random
import uuid as _uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, overload

from dawait.core._errors import NonDeterminismError, PromiseTimeoutError, SerializationError
from dawait.core._param import invocation_param
from dawait.core._promise import (
    TAG_DETACHED,
    TAG_TIMER,
    PromiseRecord,
    Settle,
    Value,
    expire_promise,
)
from dawait.core._retry import Exponential, RetryPolicy
from dawait.core._wire import TAG_TARGET
from dawait.runtime._calls import (
    TAG_EXTERNAL,
    Builtin,
    Call,
    CallOptions,
    Frame,
    LeafCall,
    done,
    min_deadline,
    recorded_kind,
    step_value,
    to_seconds,
)
from dawait.runtime._codec import (
    ANY,
    Signature,
    check_size,
    decode_outcome,
    encode_error,
    encode_json,
    signature_of,
)
from dawait.runtime._registry import Registered, function_name
from dawait.runtime._step import Step
from dawait.runtime._store import CreatePromise

if TYPE_CHECKING:
    from dawait.runtime._invocation import Invocation

__all__ = ["Call", "CallOptions", "Context", "Frame"]

T = TypeVar("T")
P = ParamSpec("P")

DEFAULT_STEP_RETRY: RetryPolicy = Exponential()


class Context:
    """The durable function's handle on the engine. Make every effect through it."""

    __slots__ = ("_frame", "_inv", "_opts")

    def __init__(self, inv: Invocation, frame: Frame, opts: CallOptions | None = None) -> None:
        self._inv = inv
        self._frame = frame
        self._opts = opts or CallOptions()

    @property
    def id(self) -> str:
        """This durable function's promise id: stable across replays, use it as an
        idempotency key for outside systems."""
        return self._frame.id

    @property
    def invocation_id(self) -> str:
        """The id of the invocation this function runs in."""
        return self._inv.id

    def __repr__(self) -> str:
        return f"<Context {self.id}>"

    def options(
        self,
        *,
        id: str | None = None,
        timeout: float | dt.timedelta | None = None,
        retry_policy: RetryPolicy | None = None,
        non_retryable: tuple[type[BaseException], ...] | None = None,
        version: int | None = None,
        target: str | None = None,
    ) -> Context:
        """A view of this context whose calls use these options.

        ``id`` names the next call's promise (give it to one call only); ``timeout`` is in
        seconds, capped by this function's own deadline; ``version`` picks the version of a
        registered function for ``rpc`` and ``detached``. ``target`` sends ``rpc`` and
        ``detached`` by name to a worker of that group of Resonate's SDKs (connected to the
        node: ``docs/resonate.md``), for a function registered there, not in this app.
        """
        opts = self._opts
        if id is not None:
            if not isinstance(id, str) or not id:
                raise ValueError(f"ctx.options: id must be a non-empty string, got {id!r}")
            opts = replace(opts, id=id)
        if timeout is not None:
            opts = replace(opts, timeout=to_seconds(timeout, "ctx.options timeout"))
        if retry_policy is not None:
            opts = replace(opts, retry_policy=retry_policy)
        if non_retryable is not None:
            opts = replace(opts, non_retryable=tuple(non_retryable))
        if version is not None:
            opts = replace(opts, version=version)
        if target is not None:
            if not isinstance(target, str) or not target:
                raise ValueError(f"ctx.options: target must be a group name, got {target!r}")
            opts = replace(opts, target=target)
        return Context(self._inv, self._frame, opts)

    # -- calls -----------------------------------------------------------------------------

    @overload
    def run(
        self,
        fn: Callable[Concatenate[Context, P], Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Call[T]: ...

    @overload
    def run(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Call[T]: ...

    @overload
    def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Call[T]: ...

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Call[Any]:
        """Run ``fn`` as a step: a leaf step (any function; a plain one runs in a worker
        thread), or a durable child when its first parameter is a ``Context``."""
        cid = self._next_id()
        registered = self._inv.engine.registry.lookup(fn)
        name = registered.name if registered else function_name(fn)
        signature = (
            registered.signature
            if registered
            else signature_of(fn, name=name, context_type=Context)
        )
        if signature.takes_context:
            return self._durable(cid, fn, name, signature, registered, args, kwargs)
        policy = (
            self._opts.retry_policy
            or (registered and registered.retry_policy)
            or (DEFAULT_STEP_RETRY)
        )
        non_retryable = self._opts.non_retryable
        if non_retryable is None:
            non_retryable = registered.non_retryable if registered else ()
        timeout = (
            self._opts.timeout
            if self._opts.timeout is not None
            else (registered.timeout if registered else None)
        )
        return self._leaf(
            cid,
            name,
            signature,
            LeafCall(fn, signature.is_async, args, kwargs),
            policy,
            non_retryable,
            timeout,
        )

    def rpc(self, name: str, /, *args: Any, **kwargs: Any) -> Call[Any]:
        """Call the function registered as ``name`` as its own invocation (embedded: in this
        app; in a cluster: on a node that serves it) and wait for its result."""
        return self._invoke(name, args, kwargs, detached=False)

    def detached(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Call[Any]:
        """Start a registered function as its own invocation that may outlive this one;
        awaiting the call waits for its result."""
        return self._invoke(fn, args, kwargs, detached=True)

    def sleep(self, duration: float | dt.timedelta) -> Call[None]:
        """A durable timer: the invocation resumes once ``duration`` has passed, even across
        restarts (it leaves memory while it waits)."""
        seconds = to_seconds(duration, "ctx.sleep")
        cid = self._next_id()
        return self._remote(
            cid,
            "ctx.sleep",
            lambda now: CreatePromise(
                id=cid,
                timeout_at=min_deadline(now + round(seconds * 1000), self._frame.deadline),
                tags={**self._inv.tags, TAG_TIMER: "true"},
            ),
            ANY,
            start=None,
        )

    def promise(
        self, id: str | None = None, timeout: float | dt.timedelta | None = None
    ) -> Call[Any]:
        """A promise settled from outside (``app.promises.resolve(call.id, value)``).

        Returns at once; its record is written before this function's next call proceeds.
        Without ``timeout`` it waits as long as this function may.
        """
        seconds = None if timeout is None else to_seconds(timeout, "ctx.promise timeout")
        cid = self._next_id(id)
        return self._remote(
            cid,
            "ctx.promise",
            lambda now: CreatePromise(
                id=cid,
                timeout_at=min_deadline(
                    None if seconds is None else now + round(seconds * 1000), self._frame.deadline
                ),
                tags={**self._inv.tags, TAG_EXTERNAL: "true"},
            ),
            ANY,
            start=None,
        )

    def now(self) -> Call[dt.datetime]:
        """The current time, recorded: a replay sees the same instant."""
        clock = self._inv.engine.clock
        return self._builtin(
            "dawait.now",
            _NOW_SIGNATURE,
            lambda: dt.datetime.fromtimestamp(clock.now() / 1000, dt.UTC),
        )

    def random(self) -> Call[float]:
        """A random float in [0, 1), recorded: a replay sees the same number."""
        return self._builtin("dawait.random", _RANDOM_SIGNATURE, _random.random)

    def uuid(self) -> Call[_uuid.UUID]:
        """A random UUID, recorded: a replay sees the same one."""
        return self._builtin("dawait.uuid", _UUID_SIGNATURE, _uuid.uuid4)

    # -- machinery -------------------------------------------------------------------------

    def _next_id(self, explicit: str | None = None) -> str:
        if self._inv.stopping:
            raise asyncio.CancelledError
        generated = self._frame.next_id()
        chosen = explicit or self._opts.id
        if chosen is not None and (not isinstance(chosen, str) or not chosen):
            raise ValueError(f"{self.id}: a promise id must be a non-empty string, got {chosen!r}")
        return chosen or generated

    def _recorded(self, cid: str, kind: str) -> PromiseRecord | None:
        record = self._inv.cache.get(cid)
        if record is None:
            return None
        found = recorded_kind(record)
        if found != kind:
            raise NonDeterminismError(
                f"invocation {self._inv.id}: call {cid} is now {kind} but was recorded as "
                f"{found}; code that changes the order of calls must be registered as a new "
                "version"
            )
        return expire_promise(record, self._inv.engine.clock.now()).record

    def _builtin(self, name: str, signature: Signature, fn: Callable[[], Any]) -> Call[Any]:
        return self._leaf(
            self._next_id(), name, signature, Builtin(fn), DEFAULT_STEP_RETRY, (), None
        )

    def _leaf(
        self,
        cid: str,
        name: str,
        signature: Signature,
        call: LeafCall | Builtin,
        policy: RetryPolicy,
        non_retryable: tuple[type[BaseException], ...],
        timeout: float | None,
    ) -> Call[Any]:
        recorded = self._recorded(cid, name)
        if recorded is not None and recorded.state.settled:
            what = f"step {name} ({cid})"
            return Call(cid, done(lambda: decode_outcome(recorded, signature.result, what)))
        deadline = min_deadline(
            None if timeout is None else self._inv.engine.clock.now() + round(timeout * 1000),
            self._frame.deadline,
        )
        step = Step(self._inv, cid, name, signature, call, policy, non_retryable, deadline)
        return Call(cid, step.run)

    def _durable(
        self,
        cid: str,
        fn: Callable[..., Any],
        name: str,
        signature: Signature,
        registered: Registered | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Call[Any]:
        what = f"{name} ({cid})"
        recorded = self._recorded(cid, name)
        if recorded is not None and recorded.state.settled:
            return Call(cid, done(lambda: decode_outcome(recorded, signature.result, what)))
        inv = self._inv
        policy = self._opts.retry_policy or (registered.retry_policy if registered else None)
        non_retryable = self._opts.non_retryable
        if non_retryable is None:
            non_retryable = registered.non_retryable if registered else ()
        timeout = (
            self._opts.timeout
            if self._opts.timeout is not None
            else (registered.timeout if registered else None)
        )
        barrier = inv.unwritten()

        async def body() -> Any:
            inv.begin_local()
            writing = True
            try:
                if barrier:
                    await asyncio.wait(barrier)
                record = recorded or await self._create_pending(cid, name, timeout)
                inv.end_local()  # the record is written; the body itself is not local work
                writing = False
                if record.state.settled:
                    return decode_outcome(record, signature.result, what)
                return await self._run_durable(
                    cid, what, record, fn, signature, policy, non_retryable, args, kwargs
                )
            finally:
                if writing:
                    inv.end_local()

        return Call(cid, body)

    async def _create_pending(self, cid: str, name: str, timeout: float | None) -> PromiseRecord:
        engine = self._inv.engine
        now = engine.clock.now()
        created = await engine.create_promise(
            CreatePromise(
                id=cid,
                param=step_value(name),
                timeout_at=min_deadline(
                    None if timeout is None else now + round(timeout * 1000),
                    self._frame.deadline,
                ),
                tags=self._inv.tags,
            )
        )
        return created.promise

    async def _run_durable(
        self,
        cid: str,
        what: str,
        record: PromiseRecord,
        fn: Callable[..., Any],
        signature: Signature,
        policy: RetryPolicy | None,
        non_retryable: tuple[type[BaseException], ...],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run a durable child's body (retrying per ``policy``) and settle its promise."""
        inv = self._inv
        engine = inv.engine

        async def settle(event: Settle, data: str) -> None:
            inv.begin_local()
            try:
                settled = await engine.settle(cid, event, Value(data=data))
            finally:
                inv.end_local()
            inv.remember(settled.promise)

        retry = 0
        while True:
            child = Context(inv, Frame(cid, record.timeout_at))
            try:
                result = await inv.within(record.timeout_at, fn(child, *args, **kwargs), what)
            except PromiseTimeoutError as exc:
                await settle(Settle.TIMEOUT, encode_error(exc))
                raise
            except Exception as exc:
                retry += 1
                exempt = policy is None or isinstance(exc, non_retryable)
                delay = None if exempt else policy.backoff(retry)  # type: ignore[union-attr]
                if delay is None:
                    await settle(Settle.REJECT, encode_error(exc))
                    raise
                await engine.clock.sleep_until(engine.clock.now() + round(delay * 1000))
                continue
            try:
                data = encode_json(result, signature.result, what=f"{what} result")
                if engine.may_be_oversize(data):
                    check_size(data, engine.max_payload, f"the result of {what}")
            except SerializationError as exc:
                await settle(Settle.REJECT, encode_error(exc))
                raise
            await settle(Settle.RESOLVE, data)
            return result

    def _invoke(
        self,
        target: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        detached: bool,
    ) -> Call[Any]:
        if self._opts.target is not None:
            return self._invoke_worker(target, args, kwargs, detached=detached)
        registered = self._inv.engine.registry.resolve(target, self._opts.version)
        cid = self._next_id()
        param = invocation_param(
            registered.name, registered.version, registered.signature.encode_args(args, kwargs)
        )
        timeout = self._opts.timeout if self._opts.timeout is not None else registered.timeout
        request = self._call_request(cid, param, timeout, self._inv.tags, detached=detached)
        engine = self._inv.engine

        async def start(req: CreatePromise) -> Any:
            call = (registered, *registered.signature.decode_param(param))
            return await engine.start_invocation(req, call)

        return self._remote(cid, registered.name, request, registered.signature.result, start=start)

    def _call_request(
        self,
        cid: str,
        param: str,
        timeout: float | None,
        tags: Mapping[str, str],
        *,
        detached: bool,
    ) -> Callable[[int], CreatePromise]:
        """The promise of an ``rpc`` or ``detached`` call, made at ``now``: its timeout capped
        by this function's deadline unless detached (which then says so in its tags)."""
        parent_deadline = None if detached else self._frame.deadline
        if detached:
            tags = {**tags, TAG_DETACHED: "true"}

        def request(now: int) -> CreatePromise:
            deadline = None if timeout is None else now + round(timeout * 1000)
            return CreatePromise(
                id=cid,
                param=Value(data=param),
                timeout_at=min_deadline(deadline, parent_deadline),
                tags=tags,
            )

        return request

    def _invoke_worker(
        self,
        target: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        detached: bool,
    ) -> Call[Any]:
        """``rpc``/``detached`` of a function a Resonate SDK worker of group ``target``
        registered: an invocation with that target, dispatched by the node."""
        group = self._opts.target
        engine = self._inv.engine
        if not isinstance(target, str):
            raise TypeError(
                f"ctx.options(target={group!r}): name the worker's function as a string, "
                f"not {function_name(target)}"
            )
        if engine.workers is None:
            raise ValueError(
                f"ctx.options(target={group!r}).rpc({target!r}): Resonate SDK workers "
                "connect to a node: run this app with dawait serve"
            )
        cid = self._next_id()
        encoded = encode_json({"args": list(args), "kwargs": kwargs}, what=f"{target} arguments")
        param = invocation_param(target, self._opts.version or 1, encoded)
        tags = {**self._inv.tags, TAG_TARGET: f"poll://any@{group}"}
        request = self._call_request(cid, param, self._opts.timeout, tags, detached=detached)

        async def start(req: CreatePromise) -> Any:
            return await engine.start_invocation(req)

        return self._remote(cid, target, request, ANY, start=start)

    def _remote(
        self,
        cid: str,
        kind: str,
        request: Callable[[int], CreatePromise],
        adapter: Any,
        *,
        start: Callable[[CreatePromise], Awaitable[Any]] | None,
    ) -> Call[Any]:
        """A call whose promise something else settles: write it now, wait when awaited."""
        inv = self._inv
        what = f"{kind} ({cid})"
        recorded = self._recorded(cid, kind)
        if recorded is not None and recorded.state.settled:
            return Call(cid, done(lambda: decode_outcome(recorded, adapter, what)))
        settled = inv.waiter(cid)
        if recorded is not None:
            created: asyncio.Future[PromiseRecord] = asyncio.get_running_loop().create_future()
            created.set_result(recorded)
        else:
            barrier = inv.unwritten()
            created = inv.write(self._create(request, start, barrier), name=f"dawait:{cid}")

        async def wait() -> Any:
            record = await asyncio.shield(created)
            if not record.state.settled:
                inv.begin_remote(cid)
                try:
                    record = await asyncio.shield(settled)
                finally:
                    inv.end_remote(cid)
            inv.remember(record)
            return decode_outcome(record, adapter, what)

        return Call(cid, wait)

    async def _create(
        self,
        request: Callable[[int], CreatePromise],
        start: Callable[[CreatePromise], Awaitable[Any]] | None,
        barrier: list[asyncio.Future[PromiseRecord]],
    ) -> PromiseRecord:
        if barrier:
            await asyncio.wait(barrier)
        engine = self._inv.engine
        req = request(engine.clock.now())
        if start is not None:
            created = await start(req)
        else:
            created = await engine.create_promise(req)
        record: PromiseRecord = created.promise
        return record


def _builtin_signature(name: str, fn: Callable[..., Any]) -> Signature:
    return signature_of(fn, name=name, context_type=Context)


def _now_type() -> dt.datetime:
    raise NotImplementedError  # only its annotations are read


def _random_type() -> float:
    raise NotImplementedError


def _uuid_type() -> _uuid.UUID:
    raise NotImplementedError


_NOW_SIGNATURE = _builtin_signature("dawait.now", _now_type)
_RANDOM_SIGNATURE = _builtin_signature("dawait.random", _random_type)
_UUID_SIGNATURE = _builtin_signature("dawait.uuid", _uuid_type)
