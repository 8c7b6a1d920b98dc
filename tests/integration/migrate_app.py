"""The app of test_migrate.py: written by the single-node etcd store (layout 1), then run
by a cluster node after ``dawait migrate`` (which reads its groups from ``app``)."""

from __future__ import annotations

from dawait import Context, Resonate

RAN: list[str] = []
"""Each step run in this process, by id."""


def register(app: Resonate) -> Resonate:
    @app.register(name="double", group="helpers")
    async def double(ctx: Context, x: int) -> int:
        return await ctx.run(step, f"double-{x}", x * 2)

    async def step(key: str, value: int) -> int:
        RAN.append(key)
        return value

    @app.register(name="flow")
    async def flow(ctx: Context, x: int) -> int:
        a = await ctx.run(step, f"flow-{x}", x)
        b = await ctx.rpc("double", x)
        c = await ctx.promise(id=f"ext-{x}")
        return a + b + c

    return app


app = register(Resonate())
