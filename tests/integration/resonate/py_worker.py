"""A process of Resonate's official Python SDK (resonate-sdk 0.8.1, Python >= 3.12) against a
dawait node: run by tests/integration/resonate/test_python_sdk.py with the SDK's own venv
(.tools/resonate-py), never with dawait's.

    python py_worker.py worker URL GROUP EFFECTS       # serve GROUP's functions until killed
    python py_worker.py rpc URL GROUP ID FUNC ARGS      # start FUNC(*ARGS) on a worker of GROUP,
                                                        # print its outcome as one JSON line
    python py_worker.py many URL GROUP PREFIX N         # N runs of steps(2) at once
    python py_worker.py resolve URL ID VALUE            # resolve promise ID with VALUE (JSON)
    python py_worker.py schedule URL GROUP ID CRON FUNC # create schedule ID (FUNC on GROUP)
    python py_worker.py schedule-get URL ID             # print it (its wire record), or 404
    python py_worker.py schedule-delete URL ID          # delete it

Every step writes "NAME ID PID" to EFFECTS when it runs (to count executions).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import timedelta
from typing import Any

from resonate.context import Context
from resonate.resonate import Resonate

TOKEN = os.environ.get("RESONATE_TOKEN")
EFFECTS = ""


def effect(name: str, id: str) -> None:
    with open(EFFECTS, "a") as out:
        out.write(f"{name} {id} {os.getpid()}\n")


async def double(ctx: Context, i: int) -> int:
    effect("double", ctx.info.id)
    return i * 2


async def steps(ctx: Context, n: int) -> list[int]:
    return [await ctx.run(double, i) for i in range(n)]


async def sleeper(ctx: Context, ms: int) -> str:
    await ctx.sleep(timedelta(milliseconds=ms))
    return "slept"


async def calls(ctx: Context, group: str, x: int) -> Any:
    """ctx.rpc to a function of another group (by name: registered there, not here)."""
    return await ctx.options(target=group).rpc("triple", x)


async def triple(ctx: Context, x: int) -> int:
    effect("triple", ctx.info.id)
    return x * 3


async def approval(ctx: Context, who: str) -> Any:
    """Waits on a promise resolved from another process; its id goes to EFFECTS."""
    promise = ctx.promise()
    effect("waiting", await promise.id())
    return {"who": who, "decision": await promise}


async def slow(ctx: Context, ms: int) -> int:
    effect("slow", ctx.info.id)
    await asyncio.sleep(ms / 1000)
    effect("slow-done", ctx.info.id)
    return ms


async def survives(ctx: Context, ms: int) -> list[int]:
    """A step, then a long one (the test kills the worker during it), then a step."""
    first = await ctx.run(double, 1)
    middle = await ctx.run(slow, ms)
    return [first, middle, await ctx.run(double, 2)]


def make_text(ctx: Context, n: int) -> str:
    return "x" * n


async def too_big(ctx: Context, n: int) -> str:
    """A step whose result is over the node's payload limit: the step fails, naming why."""
    try:
        return await ctx.run(make_text, n)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


async def tick(ctx: Context) -> str:
    """What a schedule runs."""
    effect("tick", ctx.info.id)
    return "tick"


class Flaky(Exception):
    pass


async def always_fails(ctx: Context, tries: int) -> int:
    effect("fails", ctx.info.id)
    raise Flaky(f"failed (of {tries})")


async def retries_then_fails(ctx: Context, tries: int) -> int:
    from resonate.retry import Constant

    return await ctx.options(retry_policy=Constant(delay=0.05, max_retries=tries)).run(
        always_fails, tries
    )


FUNCTIONS = [
    double,
    steps,
    sleeper,
    calls,
    triple,
    approval,
    slow,
    survives,
    always_fails,
    retries_then_fails,
    tick,
    too_big,
]


def resonate(url: str, group: str) -> Resonate:
    r = Resonate(url=url, group=group, token=TOKEN, ttl=timedelta(seconds=2))
    for fn in FUNCTIONS:
        r.register(fn)
    return r


async def worker(url: str, group: str) -> None:
    r = resonate(url, group)
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await r.stop()


async def rpc(url: str, group: str, id: str, func: str, args: list[Any]) -> None:
    # Listeners are re-registered every second (the SDK's default is 60 s): a node that
    # restarted meanwhile learns them again (it keeps them in memory).
    r = Resonate(url=url, group=f"{group}-client", token=TOKEN, subscription_refresh_secs=1)
    try:
        handle = r.options(target=group).rpc(id, func, *args)
        try:
            value = await handle.result()
            print(json.dumps({"resolved": value}), flush=True)
        except Exception as exc:  # the recorded failure
            print(json.dumps({"rejected": type(exc).__name__, "message": str(exc)}), flush=True)
    finally:
        await r.stop()


async def many(url: str, group: str, prefix: str, count: int) -> None:
    """``count`` runs of steps(2) at once; prints how many resolved as expected."""
    r = Resonate(url=url, group=f"{group}-client", token=TOKEN)
    try:
        target = r.options(target=group)
        handles = [target.rpc(f"{prefix}{i}", "steps", 2) for i in range(count)]
        values = await asyncio.gather(*(h.result() for h in handles))
        print(json.dumps({"right": sum(v == [0, 2] for v in values)}), flush=True)
    finally:
        await r.stop()


async def resolve(url: str, id: str, value: Any) -> None:
    from resonate.types import Value

    r = Resonate(url=url, group="resolver", token=TOKEN)
    try:
        record = await r.promises.resolve(id, Value(data=value))
        print(json.dumps({"state": record.state}), flush=True)
    finally:
        await r.stop()


async def schedules(url: str, mode: str, args: list[str]) -> None:
    from resonate.error import ServerError

    r = Resonate(url=url, group="scheduler", token=TOKEN)
    try:
        if mode == "schedule":
            group, id, cron, func = args
            await r.options(target=group).schedule(id, cron, func)
            print(json.dumps({"created": id}), flush=True)
        elif mode == "schedule-get":
            try:
                record = await r.schedules.get(args[0])
            except ServerError as exc:
                print(json.dumps({"error": str(exc)}), flush=True)
                return
            print(json.dumps({"id": record.id, "cron": record.cron, "promiseId": record.promise_id,
                              "promiseTags": record.promise_tags}), flush=True)  # fmt: skip
        else:
            await r.schedules.delete(args[0])
            print(json.dumps({"deleted": args[0]}), flush=True)
    finally:
        await r.stop()


def main() -> None:
    global EFFECTS
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "worker":
        EFFECTS = sys.argv[4]
        asyncio.run(worker(url, sys.argv[3]))
    elif mode == "rpc":
        asyncio.run(rpc(url, sys.argv[3], sys.argv[4], sys.argv[5], json.loads(sys.argv[6])))
    elif mode == "many":
        asyncio.run(many(url, sys.argv[3], sys.argv[4], int(sys.argv[5])))
    elif mode == "resolve":
        asyncio.run(resolve(url, sys.argv[3], json.loads(sys.argv[4])))
    elif mode.startswith("schedule"):
        asyncio.run(schedules(url, mode, sys.argv[3:]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
