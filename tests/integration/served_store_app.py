"""An app made with a store of its own (the URL in ``DAWAIT_TEST_APP_STORE``), as the
quickstart's is: ``test_serve.py`` runs it embedded, then under ``dawait serve`` with no
``--store``, which must serve that store."""

from __future__ import annotations

import os

from dawait import Context, Resonate

STORE_ENV = "DAWAIT_TEST_APP_STORE"

app = Resonate(store=os.environ.get(STORE_ENV, "memory://"))


@app.register
async def greet(ctx: Context, name: str) -> str:
    """Waits for an approval (the promise ``{id}-ok``) from outside."""
    approved = await ctx.promise(id=f"{ctx.id}-ok")
    return f"hello {name}, {approved}"
