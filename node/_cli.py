"""The ``dawait`` command: run a node, and talk to one.

Exit codes: 0 ok, 1 the invocation failed (or was canceled / timed out), 2 usage error or
not found (or the node cannot be reached).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import pydantic

from dawait.core._errors import DawaitError, StoreError
from dawait.node import _api_models as m
from dawait.node._client import ApiError, HttpClient
from dawait.node._settings import add_serve_flags, settings_from_flags
from dawait.runtime._clock import SystemClock
from dawait.runtime._codec import validation_summary

__all__ = ["main"]

OK, FAILED, USAGE = 0, 1, 2
WAIT_FOREVER = float("inf")
"""``invoke --wait`` with no SECONDS: until it settles."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return USAGE
    if args.command == "serve":  # a long-lived process: its command line stays visible
        _warn_of_secrets_in(sys.argv[1:] if argv is None else argv)
        return _serve(args)
    if args.command == "migrate":
        return _migrate(args)
    try:
        return asyncio.run(_client_command(args))
    except ApiError as exc:
        hint = " (give --token or set DAWAIT_TOKEN)" if exc.status == 401 else ""
        print(f"dawait: {exc}{hint}", file=sys.stderr)
        return USAGE
    except DawaitError as exc:
        print(f"dawait: {exc}", file=sys.stderr)
        return USAGE
    except pydantic.ValidationError as exc:
        print(f"dawait: {validation_summary(exc)}", file=sys.stderr)
        return USAGE
    except ValueError as exc:
        print(f"dawait: {exc}", file=sys.stderr)
        return USAGE
    except BrokenPipeError:
        # The reader went away (`dawait ls | head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
    except KeyboardInterrupt:
        return USAGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dawait", description="dawait: durable execution")
    _client_options(parser, None)
    # The same options after the command (`dawait get ID --json`); not given there, they
    # leave what was given before it.
    common = argparse.ArgumentParser(add_help=False)
    _client_options(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run a node (options also from DAWAIT_* variables)")
    add_serve_flags(serve)

    migrate = sub.add_parser(
        "migrate", help="move an etcd namespace of layout 1 to partitions (no node running)"
    )
    migrate.add_argument("--app", required=True, help="the app (module:attribute): its groups")
    migrate.add_argument("--etcd", required=True, help="etcd endpoints (HOST:PORT,...)")
    migrate.add_argument("--namespace", default="default")
    migrate.add_argument("--partitions", type=int, default=64)
    sub.add_parser("nodes", parents=[common], help="list the cluster's live nodes")

    invoke = sub.add_parser("invoke", parents=[common], help="start an invocation")
    invoke.add_argument("id")
    invoke.add_argument("function")
    invoke.add_argument("args", nargs="?", default="[]", help="JSON array, or object of kwargs")
    invoke.add_argument("--version", type=int, help="the function's version (default: newest)")
    invoke.add_argument(
        "--wait", nargs="?", type=float, const=WAIT_FOREVER, metavar="SECONDS",
        help="wait for the result (at most SECONDS; exit 1 with state pending if it runs out)",
    )  # fmt: skip

    for name, text in (("get", "show an invocation"), ("tree", "show its call tree"),
                       ("cancel", "cancel an invocation"),
                       ("rm", "delete a settled invocation with every call it made")):  # fmt: skip
        command = sub.add_parser(name, parents=[common], help=text)
        command.add_argument("id")

    ls = sub.add_parser("ls", parents=[common], help="list invocations, newest first")
    ls.add_argument(
        "--state", help="pending, resolved, rejected, canceled, timedout, or failed (the last "
        "three); several comma-separated",
    )  # fmt: skip
    ls.add_argument("--function", help="a prefix of the function's name")
    ls.add_argument(
        "--since", type=_time_arg, help="created at or after: ISO time, or 30m, 2h, 7d ago"
    )
    ls.add_argument("--until", type=_time_arg, help="created before: ISO time, or 30m, 2h, 7d ago")
    ls.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    ls.add_argument("--limit", type=int, default=100, help="per page (at most 1000)")
    ls.add_argument("--cursor", help="where the page before ended")
    ls.add_argument("--all", action="store_true", help="every page")
    ls.add_argument("--count", action="store_true", help="count the matches by state too")

    promises = sub.add_parser("promises", help="durable promises").add_subparsers(
        dest="action", required=True
    )
    get = promises.add_parser("get", parents=[common])
    get.add_argument("id")
    create = promises.add_parser("create", parents=[common], help="a promise to settle later")
    create.add_argument("id")
    create.add_argument("--timeout", type=float, help="seconds from now (default: none)")
    create.add_argument("--data", default="null", help="JSON value it carries")
    cancel = promises.add_parser("cancel", parents=[common])
    cancel.add_argument("id")
    resolve = promises.add_parser("resolve", parents=[common])
    resolve.add_argument("id")
    resolve.add_argument("value", nargs="?", default="null", help="JSON value")
    reject = promises.add_parser("reject", parents=[common])
    reject.add_argument("id")
    reject.add_argument("message")
    rm = promises.add_parser("rm", parents=[common], help="delete a settled promise")
    rm.add_argument("id")
    search = promises.add_parser("search", parents=[common])
    search.add_argument("pattern", nargs="?", default="*")
    search.add_argument("--state")
    search.add_argument("--limit", type=int, default=100)

    schedules = sub.add_parser("schedules", help="cron schedules").add_subparsers(
        dest="action", required=True
    )
    create = schedules.add_parser("create", parents=[common])
    create.add_argument("id")
    create.add_argument("cron", help="5 fields (or 6 with leading seconds), UTC, quoted")
    create.add_argument("function")
    create.add_argument("args", nargs="?", default="[]", help="JSON array, or object of kwargs")
    schedules.add_parser("ls", parents=[common])
    schedules.add_parser("get", parents=[common]).add_argument("id")
    delete = schedules.add_parser("delete", parents=[common])
    delete.add_argument("id")
    return parser


def _warn_of_secrets_in(argv: Sequence[str]) -> None:
    """A token given on the command line shows in ``ps`` and /proc/PID/cmdline to every
    user of the machine: say so, and where to put it instead."""
    for option, instead in (
        ("--token", "--token-file FILE or DAWAIT_TOKEN"),
        ("--cluster-token", "--cluster-token-file FILE or DAWAIT_CLUSTER_TOKEN"),
    ):
        if any(arg == option or arg.startswith(f"{option}=") for arg in argv):
            print(
                f"dawait: warning: {option} on the command line is visible to every user of "
                f"this machine (ps, /proc/PID/cmdline); use {instead}",
                file=sys.stderr,
            )


def _client_options(parser: argparse.ArgumentParser, default: Any) -> None:
    top = default is None
    parser.add_argument(
        "--url",
        default=os.environ.get("DAWAIT_URL", "http://127.0.0.1:8080") if top else default,
        help="the node's address (env DAWAIT_URL)",
    )
    parser.add_argument(
        "--token", default=os.environ.get("DAWAIT_TOKEN") if top else default,
        help="bearer token (env DAWAIT_TOKEN)",
    )  # fmt: skip
    parser.add_argument(
        "--json", action="store_true", default=False if top else default,
        help="print JSON instead of tables",
    )  # fmt: skip


def _serve(args: argparse.Namespace) -> int:
    from dawait.node._serve import AppLoadError, UsageError, load_app, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        settings = settings_from_flags(args)
    except pydantic.ValidationError as exc:
        for error in exc.errors(include_url=False):
            field = ".".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            print(f"dawait serve: {field + ': ' if field else ''}{message}", file=sys.stderr)
        return USAGE
    try:
        app = load_app(settings.app)
    except AppLoadError as exc:
        print(f"dawait serve: --app {settings.app}: {exc}", file=sys.stderr)
        return USAGE

    def ready(address: str) -> None:
        print(f"dawait node listening on {address}", flush=True)

    try:
        asyncio.run(serve(settings, app=app, on_ready=ready))
    except UsageError as exc:
        print(f"dawait serve: {exc}", file=sys.stderr)
        return USAGE
    except StoreError as exc:
        # The store or cluster cannot be opened (etcd unreachable, the file locked, a node
        # id in use): say so plainly; a supervisor restarts the node with backoff.
        print(f"dawait serve: {exc}", file=sys.stderr)
        return FAILED
    return OK


def _migrate(args: argparse.Namespace) -> int:
    from dawait.cluster._etcd import Etcd
    from dawait.cluster._migrate import migrate
    from dawait.node._serve import AppLoadError, load_app

    try:
        app = load_app(args.app)
    except AppLoadError as exc:
        print(f"dawait migrate: --app {args.app}: {exc}", file=sys.stderr)
        return USAGE

    async def run() -> str:
        etcd = Etcd(args.etcd)
        await etcd.connect()
        try:
            done = await migrate(
                etcd,
                args.namespace,
                group_of=app.local.registry.group_of,
                partitions=args.partitions,
            )
        finally:
            await etcd.close()
        return str(done)

    try:
        print(f"dawait migrate: namespace {args.namespace}: {asyncio.run(run())}")
    except (StoreError, ValueError) as exc:
        print(f"dawait migrate: {exc}", file=sys.stderr)
        return FAILED
    return OK


async def _client_command(args: argparse.Namespace) -> int:
    async with HttpClient(args.url, token=args.token) as client:
        if args.command == "invoke":
            return await _invoke(client, args)
        if args.command == "get":
            view = await client.invocation(args.id)
            _show(args, view, _invocation_lines(view))
            return _exit_code(view.state)
        if args.command == "tree":
            node = await client.tree(args.id)
            _show(args, node, _tree_lines(node))
            return _exit_code(node.state)
        if args.command == "cancel":
            view = await client.cancel(args.id)
            if not view.canceled and not args.json:
                print(
                    f"dawait: {args.id} had ended ({view.state}): nothing canceled", file=sys.stderr
                )
            _show(args, view, _invocation_lines(view))
            return OK if view.canceled else FAILED
        if args.command == "rm":
            await client.delete(args.id)
            _deleted(args, args.id)
            return OK
        if args.command == "ls":
            return await _ls(client, args)
        if args.command == "schedules":
            return await _schedules(client, args)
        if args.command == "nodes":
            listing = await client.nodes()
            if not listing.cluster and not args.json:
                print(f"dawait: the node at {args.url} is not a cluster (an embedded store)")
                return OK
            rows = [[n.node_id, n.address, ",".join(n.groups), "yes" if n.leader else ""]
                    for n in listing.items]  # fmt: skip
            _show(args, listing, _table(["NODE", "ADDRESS", "GROUPS", "LEADER"], rows))
            return OK
        return await _promises(client, args)


def _call_arguments(text: str) -> tuple[list[Any], dict[str, Any]] | None:
    """ARGS_JSON: an array of positional arguments, an object of keyword arguments, or one
    value; None (after saying why) when it is not JSON."""
    try:
        given = json.loads(text)
    except ValueError as exc:
        print(f"dawait: ARGS_JSON is not JSON: {exc}", file=sys.stderr)
        return None
    if isinstance(given, list):
        return given, {}
    if isinstance(given, dict):
        return [], given
    return [given], {}


def _time_arg(text: str) -> dt.datetime:
    """``--since`` / ``--until``: an ISO 8601 time (UTC if it names no zone), or a span
    ago (``90s``, ``30m``, ``2h``, ``7d``)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        ago_ms = int(text[:-1]) * units[text[-1]] * 1000
        return dt.datetime.fromtimestamp((SystemClock().now() - ago_ms) / 1000, dt.UTC)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO time (2026-12-04T10:00) nor a span ago (30m, 2h, 7d)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


async def _ls(client: HttpClient, args: argparse.Namespace) -> int:
    tags = {}
    for tag in args.tag:
        key, equals, value = tag.partition("=")
        if not key or not equals:
            print(f"dawait ls: --tag {tag!r} is not KEY=VALUE", file=sys.stderr)
            return USAGE
        tags[key] = value
    items: list[m.InvocationView] = []
    cursor, counts = args.cursor, None
    while True:
        page = await client.invocations(
            state=args.state,
            function=args.function,
            created_after=args.since,
            created_before=args.until,
            tags=tags,
            limit=args.limit,
            cursor=cursor,
            count=args.count and counts is None,
        )
        items.extend(page.items)
        counts = counts or page.counts
        cursor = page.cursor
        if cursor is None or not args.all:
            break
    shown = m.InvocationPage(items=items, cursor=cursor, counts=counts)
    rows = [[v.id, v.function or "", v.state, _age(v)] for v in items]
    lines = _table(["ID", "FUNCTION", "STATE", "CREATED"], rows)
    if counts is not None:
        total = f"{counts.total}" if counts.exact else f"at least {counts.total}"
        by_state = ", ".join(f"{state} {n}" for state, n in sorted(counts.by_state.items()))
        lines.append(f"{total} in all{': ' + by_state if by_state else ''}")
    _show(args, shown, lines)
    if cursor is not None and not args.json:
        print(f"more: --cursor {cursor} (or --all)", file=sys.stderr)
    return OK


async def _schedules(client: HttpClient, args: argparse.Namespace) -> int:
    if args.action == "create":
        arguments = _call_arguments(args.args)
        if arguments is None:
            return USAGE
        view = await client.create_schedule(args.id, args.cron, args.function, *arguments)
        next_run = view.next_run_at.isoformat() if view.next_run_at else "-"
        rows = [["id", view.id], ["cron", view.cron], ["function", view.function],
                ["next run", next_run]]  # fmt: skip
        _show(args, view, _table(["FIELD", "VALUE"], rows)[1:])
        return OK
    if args.action == "delete":
        await client.delete_schedule(args.id)
        _deleted(args, args.id)
        return OK
    if args.action == "get":
        view = await client.schedule(args.id)
        last_run = view.last_run_at.isoformat() if view.last_run_at else "-"
        next_run = view.next_run_at.isoformat() if view.next_run_at else "-"
        rows = [["id", view.id], ["cron", view.cron], ["function", view.function],
                ["args", _short(view.args)], ["kwargs", _short(view.kwargs)],
                ["next run", next_run], ["last run", last_run]]  # fmt: skip
        _show(args, view, _table(["FIELD", "VALUE"], rows)[1:])
        return OK
    listing = await client.schedules()
    rows = [[v.id, v.cron, v.function, v.next_run_at.isoformat() if v.next_run_at else "-"]
            for v in listing.items]  # fmt: skip
    _show(args, listing, _table(["ID", "CRON", "FUNCTION", "NEXT RUN"], rows))
    return OK


async def _invoke(client: HttpClient, args: argparse.Namespace) -> int:
    arguments = _call_arguments(args.args)
    if arguments is None:
        return USAGE
    call_args, kwargs = arguments
    view, _created = await client.start(
        args.id, args.function, call_args, kwargs, version=args.version
    )
    if args.wait is None:
        _show(args, view, _invocation_lines(view))
        return OK
    clock = SystemClock()
    deadline = clock.monotonic() + args.wait
    # Quiet for what ends within a second; then say that it waits, and for how long.
    result = await client.result(args.id, wait=min(1.0, args.wait))
    if result.state == "pending" and not args.json and clock.monotonic() < deadline:
        until = "" if args.wait == WAIT_FOREVER else f" (at most {args.wait:g} s)"
        print(f"dawait: waiting for {args.id}{until}", file=sys.stderr)
    while result.state == "pending":
        left = deadline - clock.monotonic()
        if left <= 0:
            break
        result = await client.result(args.id, wait=min(left, 300))
    if result.state == "pending":
        _show(args, result, [f"pending: still running after {args.wait:g} s"])
        return FAILED
    lines = [json.dumps(result.result)] if result.state == "resolved" else [
        f"{result.state}: {result.error.type if result.error else ''}: "
        f"{result.error.message if result.error else ''}"
    ]  # fmt: skip
    _show(args, result, lines)
    return _exit_code(result.state)


async def _promises(client: HttpClient, args: argparse.Namespace) -> int:
    if args.action == "get":
        view = await client.promise(args.id)
    elif args.action == "resolve":
        try:
            value = json.loads(args.value)
        except ValueError as exc:
            print(f"dawait promises resolve: VALUE is not JSON: {exc}", file=sys.stderr)
            return USAGE
        view = await client.resolve(args.id, value)
    elif args.action == "reject":
        view = await client.reject(args.id, args.message)
    elif args.action == "cancel":
        view = await client.cancel_promise(args.id)
    elif args.action == "create":
        try:
            data = json.loads(args.data)
        except ValueError as exc:
            print(f"dawait promises create: --data is not JSON: {exc}", file=sys.stderr)
            return USAGE
        view = await client.create_promise(args.id, timeout=args.timeout, data=data)
    elif args.action == "rm":
        await client.delete_promise(args.id)
        _deleted(args, args.id)
        return OK
    else:
        page = await client.promises(args.pattern, state=args.state, limit=args.limit)
        rows = [[p.id, p.state, _short(p.value if p.state == "resolved" else p.error)]
                for p in page.items]  # fmt: skip
        _show(args, page, _table(["ID", "STATE", "VALUE"], rows))
        return OK
    _show(args, view, _promise_lines(view))
    return OK


# -- output --------------------------------------------------------------------------------


def _deleted(args: argparse.Namespace, id: str) -> None:
    print(json.dumps({"deleted": id}) if args.json else f"deleted {id}")


def _show(args: argparse.Namespace, model: pydantic.BaseModel, lines: list[str]) -> None:
    if args.json:
        print(model.model_dump_json(indent=2))
    else:
        print("\n".join(lines))


def _exit_code(state: str) -> int:
    return OK if state in ("resolved", "pending") else FAILED


def _short(value: Any, width: int = 60) -> str:
    if isinstance(value, pydantic.BaseModel):
        value = value.model_dump()
    text = json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _age(view: m.InvocationView) -> str:
    return view.created_at.strftime("%Y-%m-%d %H:%M:%S")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def _invocation_lines(view: m.InvocationView) -> list[str]:
    rows = [
        ["id", view.id],
        ["function", f"{view.function} (v{view.version})"],
        ["state", view.state],
        ["args", _short(view.args)],
        ["kwargs", _short(view.kwargs)],
        ["created", view.created_at.isoformat()],
        ["settled", view.settled_at.isoformat() if view.settled_at else "-"],
        ["deleted at", view.delete_at.isoformat() if view.delete_at else "-"],
    ]
    if view.state == "resolved":
        rows.append(["result", _short(view.result)])
    if view.error is not None:
        rows.append(["error", f"{view.error.type}: {view.error.message}"])
    return _table(["FIELD", "VALUE"], rows)[1:]


def _promise_lines(view: m.PromiseView) -> list[str]:
    rows = [["id", view.id], ["state", view.state]]
    if view.state == "resolved":
        rows.append(["value", _short(view.value)])
    if view.error is not None:
        rows.append(["error", f"{view.error.type}: {view.error.message}"])
    return _table(["FIELD", "VALUE"], rows)[1:]


def _tree_lines(node: m.TreeNode, depth: int = 0) -> list[str]:
    duration = "-" if node.duration_ms is None else f"{node.duration_ms} ms"
    label = node.function or node.kind
    attempts = f"  {node.attempts} attempts" if node.attempts > 1 else ""
    failed = f"  {node.error.type}: {node.error.message}" if node.error is not None else ""
    lines = [f"{'  ' * depth}{node.id}  {label}  {node.state}  {duration}{attempts}{failed}"]
    for child in node.children:
        lines.extend(_tree_lines(child, depth + 1))
    return lines


if __name__ == "__main__":
    sys.exit(main())
