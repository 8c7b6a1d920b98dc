"""The app bench/http.py serves (``dawait serve --app bench.http_app:app``, from the
repository root): one workflow of three trivial async steps, as in bench/embedded.py."""

from __future__ import annotations

from dawait import Context, Resonate

app = Resonate()


async def step(x: int) -> int:
    return x + 1


@app.register
async def three_steps(ctx: Context, x: int) -> int:
    a = await ctx.run(step, x)
    b = await ctx.run(step, a)
    return await ctx.run(step, b)
