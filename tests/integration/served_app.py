"""The app ``test_serve.py`` runs in ``dawait serve`` subprocesses
(``--app tests.integration.served_app:app``, from the repository root).

Steps that have an outside effect append one line to the file named by the environment
variable ``EFFECTS_ENV`` (``<kind> <id> <pid>``, with one ``os.write`` on an ``O_APPEND``
descriptor), so the test can count how often each one ran, and in which process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from datetime import timedelta

from dawait import Context, Resonate

EFFECTS_ENV = "DAWAIT_TEST_EFFECTS"
LOAD_STEPS = 3

app = Resonate()
not_an_app = "a string"


def effect(kind: str, id: str) -> None:
    """Append ``kind id pid`` to the effects file."""
    fd = os.open(os.environ[EFFECTS_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {id} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


async def plus(a: int, b: int) -> int:
    return a + b


@app.register
async def add(ctx: Context, a: int, b: int) -> int:
    """One step."""
    return await ctx.run(plus, a, b)


@app.register
async def fail(ctx: Context, message: str) -> None:
    """Fails at once (durable functions are not retried)."""
    raise ValueError(message)


@app.register
async def approve(ctx: Context, who: str) -> str:
    """Waits for the external promise ``approval-{who}``."""
    decision = await ctx.promise(id=f"approval-{who}")
    return f"{who}: {decision}"


@app.register
async def nap(ctx: Context, seconds: float) -> str:
    """A durable sleep (its timer is call ``:1``)."""
    await ctx.sleep(dt.timedelta(seconds=seconds))
    return "rested"


async def record_tick(id: str) -> None:
    effect("tick", id)


@app.register
async def tick(ctx: Context) -> str:
    """What a schedule fires: one effect line per run, naming the slot's invocation."""
    await ctx.run(record_tick, ctx.invocation_id)
    return ctx.invocation_id


async def load_step(id: str, step: int, acc: int) -> int:
    effect("step", f"{id}/{step}")
    await asyncio.sleep(0.02)
    return acc * 3 + step


def load_result(seed: int) -> int:
    """What ``load(seed)`` returns."""
    acc = seed
    for step in range(LOAD_STEPS):
        acc = acc * 3 + step
    return acc


@app.register
async def load(ctx: Context, seed: int) -> int:
    """A few short steps, each with an effect line, and a durable sleep after the first (so
    a graceful stop, which lets running steps finish, leaves the invocation half done)."""
    acc = seed
    for step in range(LOAD_STEPS):
        acc = await ctx.run(load_step, ctx.invocation_id, step, acc)
        if step == 0:
            await ctx.sleep(timedelta(milliseconds=500))
    return acc


async def make_text(n: int, char: str) -> str:
    return char * n


@app.register
async def blob(ctx: Context, n: int, char: str = "x") -> int:
    """A step that returns ``n`` characters ``char``; returns their count."""
    return len(await ctx.run(make_text, n, char))


@app.register
async def repeat(ctx: Context, text: str, times: int) -> str:
    """Returns ``text`` ``times`` times over, as its own result (no step)."""
    return text * times


@app.register
async def shout(ctx: Context, text: str, times: int) -> None:
    """Fails with ``text`` ``times`` times over as its message."""
    raise ValueError(text * times)


def check_stock(sku: str) -> None:
    raise LookupError(f"{sku} is out of stock")


@app.register
async def reserve(ctx: Context, sku: str) -> None:
    """A step that fails at once (not retried): ``dawait tree`` shows why."""
    await ctx.options(non_retryable=(LookupError,)).run(check_stock, sku)


@app.register
async def via_worker(ctx: Context, group: str, x: int) -> object:
    """Calls ``triple`` on a Resonate SDK worker of ``group`` (tests/integration/resonate)."""
    return await ctx.options(target=group).rpc("triple", x)
