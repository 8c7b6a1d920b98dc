"""DBOS behind the same HTTP endpoint as a dawait node, for bench/http_api.py.

Run by the DBOS venv's python (never imports dawait). Serves, on aiohttp like the node:

    POST /invocations?wait=SECONDS  {"id", "function": "three_steps", "args": [x]}

which starts the workflow under that id (``SetWorkflowID``) and answers 201
``{"result": x + 3}`` once it finished; ``GET /invocations/{id}/result?wait=`` awaits a
started one. The system database is SQLite in ``--folder`` (synchronous=FULL, DBOS's
default, as dawait's fsync per commit), or the Postgres database ``--database-url``
names (bench/cluster.py: several such processes, each its own executor, share one Postgres).
Prints ``peer listening on URL`` when ready and stops on SIGTERM.

    python dbos_http.py (--folder DIR | --database-url URL [--executor-id ID]) [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from importlib.metadata import version

# Keep DBOS local: Conductor is used only with DBOS__CLOUD=true or a conductor_key.
os.environ.pop("DBOS__CLOUD", None)

from aiohttp import web
from dbos import DBOS, DBOSConfig, SetWorkflowID

# The same workflow of three steps as the embedded benchmark's (this folder is on the path).
from dbos_workload import workflow as three_steps


async def start(request: web.Request) -> web.Response:
    body = await request.json()
    if body.get("function") != "three_steps":
        return web.json_response({"error": "unknown_function"}, status=404)
    with SetWorkflowID(str(body["id"])):
        handle = await DBOS.start_workflow_async(three_steps, *body.get("args", []))
    if "wait" not in request.query:
        return web.json_response({"id": handle.get_workflow_id()}, status=201)
    result = await asyncio.wait_for(handle.get_result(), float(request.query["wait"]))
    return web.json_response({"id": handle.get_workflow_id(), "result": result}, status=201)


async def result(request: web.Request) -> web.Response:
    handle = await DBOS.retrieve_workflow_async(request.match_info["id"])
    value = await asyncio.wait_for(handle.get_result(), float(request.query.get("wait", "30")))
    return web.json_response({"result": value})


async def serve(port: int) -> None:
    app = web.Application()
    app.add_routes([web.post("/invocations", start), web.get("/invocations/{id}/result", result)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    bound = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    print(f"peer listening on http://127.0.0.1:{bound} (dbos {version('dbos')})", flush=True)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--folder", help="SQLite system database in this folder")
    where.add_argument("--database-url", help="a Postgres system database")
    parser.add_argument("--executor-id", default="local")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    config: DBOSConfig = {
        "name": "dawait-bench-http",
        "system_database_url": args.database_url or f"sqlite:///{args.folder}/dbos.sqlite",
        "executor_id": args.executor_id,
        "log_level": "WARNING",
        "enable_otlp": False,
    }
    DBOS(config=config)
    DBOS.launch()
    try:
        asyncio.run(serve(args.port))
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    main()
