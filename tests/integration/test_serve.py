"""``dawait serve`` as a real process on 127.0.0.1, driven by the ``dawait`` CLI (also run as
processes) and the HTTP client:

* the CLI's commands, their output and exit codes (0 ok, 1 the invocation failed, 2 usage
  error or not found), with ``--url``/``--token`` before or after the command or from
  ``DAWAIT_URL``/``DAWAIT_TOKEN``;
* ``dawait serve`` taking its settings from ``DAWAIT_*`` variables, and refusing a bad
  ``--app`` with a clear message and exit 2;
* a schedule firing every second keeps firing across a SIGTERM and a restart on the same
  SQLite file, each slot at most once;
* SIGTERM during load loses nothing: the node exits by itself within its grace period, and
  after a restart every invocation finishes with its result; each step ran at least once and
  at most twice, never twice in one process.

The served functions are in ``served_app.py``; their steps append lines to an effects file.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dawait.cluster._client import HttpClient
from dawait.errors import NotStartedError
from tests.integration import served_app

REPO = Path(__file__).resolve().parents[2]
DAWAIT = str(Path(sys.executable).with_name("dawait"))
APP = "tests.integration.served_app:app"
TOKEN = "test-token-4f2a"
LISTENING = re.compile(r"dawait node listening on (http://127\.0\.0\.1:\d+)")

POLL = 0.02
START_TIMEOUT = 15.0
"""Seconds a node may take to print that it listens."""
CLI_TIMEOUT = 30.0
"""Seconds one ``dawait`` command may take."""
WAIT_TIMEOUT = 15.0
"""Seconds a condition polled for may take to hold."""
GRACE = 3.0
"""The ``--grace-period`` of the nodes that are stopped with SIGTERM."""
EXIT_SLACK = 2.0
"""Seconds beyond the grace period a node may take to exit (closing the store, the
interpreter's own shutdown)."""


def _base_env() -> dict[str, str]:
    """The test's environment without DAWAIT_* settings that would leak into the nodes."""
    return {key: value for key, value in os.environ.items() if not key.startswith("DAWAIT_")}


# -- nodes -----------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Node:
    """One ``dawait serve`` process; its stdout and stderr go to files."""

    name: str
    process: subprocess.Popen[bytes]
    out: Path
    err: Path
    url: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def report(self, problem: str) -> str:
        return f"node {self.name} (pid {self.pid}): {problem}\n-- its stderr:\n{self.stderr()}"

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    async def exit_code(self, *, within: float) -> int:
        """Its exit code, once it exits by itself within ``within`` seconds."""
        try:
            return await asyncio.to_thread(self.process.wait, within)
        except subprocess.TimeoutExpired:
            raise AssertionError(self.report(f"still running {within} s later")) from None

    async def stop(self) -> None:
        """SIGTERM; it must exit 0 within the grace period."""
        self.terminate()
        code = await self.exit_code(within=GRACE + EXIT_SLACK)
        assert code == 0, self.report(f"exited {code} after SIGTERM")


@dataclass(slots=True)
class Nodes:
    """Starts nodes in ``dir`` and kills, at the end, every one still running."""

    dir: Path
    started: list[Node] = field(default_factory=list)

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> Node:
        """Start ``dawait serve ARGS`` from the repository root (so the app imports)."""
        out, err = self.dir / f"{name}.out", self.dir / f"{name}.err"
        environment = {**_base_env(), served_app.EFFECTS_ENV: str(self.effects)}
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [DAWAIT, "serve", *args],
                cwd=REPO,
                env={**environment, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        node = Node(name=name, process=process, out=out, err=err)
        self.started.append(node)
        return node

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Node:
        """Start ``dawait serve ARGS``; return once it listens."""
        node = self.spawn(name, *args, env=env)
        self.wait_listening(node)
        return node

    def wait_listening(self, node: Node) -> None:
        """Wait until ``node`` says where it listens (and note it)."""
        deadline = time.monotonic() + START_TIMEOUT
        while not (found := LISTENING.search(node.out.read_text())):
            if node.process.poll() is not None:
                raise AssertionError(node.report(f"exited {node.process.returncode} at start"))
            if time.monotonic() > deadline:
                raise AssertionError(node.report(f"not listening after {START_TIMEOUT} s"))
            time.sleep(POLL)
        node.url = found.group(1)

    def start_with(self, name: str, *extra: str) -> Node:
        """Start a node serving the test app on a free port, with ``TOKEN``, on the store
        ``{dir}/node.db`` (so the nodes of one test share it)."""
        default = ("--app", APP, "--port", "0", "--token", TOKEN, "--store", self.store)
        return self.start(name, *default, *extra)

    @property
    def store(self) -> str:
        return f"sqlite:///{self.dir / 'node.db'}"

    @property
    def effects(self) -> Path:
        return self.dir / "effects.log"

    def effect_lines(self) -> list[tuple[str, str, int]]:
        """The complete ``kind id pid`` lines of the effects file."""
        try:
            text = self.effects.read_text()
        except FileNotFoundError:
            return []
        lines = text[: text.rfind("\n") + 1].splitlines()
        return [(kind, id, int(pid)) for kind, id, pid in (line.split() for line in lines)]

    def kill_all(self) -> None:
        for node in self.started:
            if node.process.poll() is None:
                node.process.kill()
                node.process.wait(timeout=10)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    started = Nodes(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One node for the CLI tests (each uses its own ids)."""
    started = Nodes(tmp_path_factory.mktemp("shared"))
    try:
        yield started.start_with("shared")
    finally:
        started.kill_all()


async def wait_until(
    what: str, done: Callable[[], bool | Awaitable[bool]], *, node: Node | None = None
) -> None:
    """Poll ``done()`` until it holds; fail after ``WAIT_TIMEOUT`` or if ``node`` exits."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while True:
        result = done()
        if result if isinstance(result, bool) else await result:
            return
        if node is not None and node.process.poll() is not None:
            raise AssertionError(node.report(f"exited while waiting for {what}"))
        if time.monotonic() > deadline:
            problem = f"no {what} after {WAIT_TIMEOUT} s"
            raise AssertionError(node.report(problem) if node else problem)
        await asyncio.sleep(POLL)


# -- the CLI ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ran:
    """What one ``dawait`` command did (``str()`` of it in assertion messages shows it all)."""

    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"dawait {' '.join(self.args)} -> exit {self.code}\n{self.out}{self.err}"

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


async def dawait(*args: str, env: dict[str, str] | None = None) -> Ran:
    """Run ``dawait ARGS`` (killed if it takes longer than ``CLI_TIMEOUT``)."""
    process = await asyncio.create_subprocess_exec(
        DAWAIT,
        *args,
        cwd=REPO,
        env={**_base_env(), **(env or {})},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(CLI_TIMEOUT):
            out, err = await process.communicate()
    except TimeoutError:
        problem = f"dawait {' '.join(args)}: still running after {CLI_TIMEOUT} s"
        raise AssertionError(problem) from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Ran(args, process.returncode, out.decode(), err.decode())


async def at(node: Node, *args: str) -> Ran:
    """``dawait --url NODE --token TOKEN ARGS``."""
    return await dawait("--url", node.url, "--token", TOKEN, *args)


def fields(ran: Ran) -> dict[str, str]:
    """The ``FIELD  VALUE`` lines of ``get``/``invoke``/``promises get`` output."""
    first = re.match(r"\S+ +", ran.out)
    assert first, str(ran)
    width = first.end()
    assert all(re.fullmatch(r" \S", line[width - 1 : width + 1]) for line in ran.lines), str(ran)
    return {line[:width].strip(): line[width:] for line in ran.lines}


def table(ran: Ran) -> list[dict[str, str]]:
    """The rows of an aligned table (``ls``, ``promises search``, ``schedules ls``): every
    cell starts at its header's column."""
    header, *rows = ran.lines
    columns = list(re.finditer(r"\S+(?: \S+)*", header))
    starts = [column.start() for column in columns]
    names = [column.group() for column in columns]
    parsed = []
    for row in rows:
        for start in starts[1:]:
            cell = row[start - 1 : start + 1]
            assert re.fullmatch(r" \S", cell), f"no cell starts at column {start}:\n{ran}"
        bounds = zip(starts, [*starts[1:], None], strict=True)
        parsed.append({name: row[a:b].strip() for name, (a, b) in zip(names, bounds, strict=True)})
    return parsed


def client(node: Node) -> HttpClient:
    """The HTTP API of ``node`` (to set up and check what the CLI is tested on)."""
    return HttpClient(node.url, token=TOKEN, timeout=WAIT_TIMEOUT + 5)


async def finished(node: Node, *calls: tuple[str, str, list[Any]]) -> None:
    """Start ``(id, function, args)`` invocations and wait until every one has finished."""
    async with client(node) as api:
        for id, function, args in calls:
            await api.start(id, function, args, {})
    await settled(node, *(id for id, _, _ in calls))


async def settled(node: Node, *ids: str) -> None:
    """Wait until every one of ``ids`` has finished."""
    async with client(node) as api:
        for id in ids:
            outcome = await api.result(id, wait=WAIT_TIMEOUT)
            assert outcome.state != "pending", node.report(f"{id} still pending")


# -- CLI against a served node ---------------------------------------------------------------


async def test_invoke_get_tree_ls(shared: Node) -> None:
    waited, started = await asyncio.gather(
        at(shared, "invoke", "sum-1", "add", "[2, 3]", "--wait"),
        at(shared, "invoke", "sum-2", "add", '{"a": 40, "b": 2}'),
    )
    assert (waited.code, waited.out, waited.err) == (0, "5\n", ""), str(waited)
    assert started.code == 0, str(started)
    shown = fields(started)
    assert (shown["id"], shown["function"]) == ("sum-2", "add (v1)"), str(started)
    assert shown["state"] in ("pending", "resolved"), str(started)
    assert (shown["args"], shown["kwargs"]) == ("[]", '{"a": 40, "b": 2}'), str(started)
    await settled(shared, "sum-2")

    got, as_json, tree, listed = await asyncio.gather(
        at(shared, "get", "sum-2"),
        at(shared, "get", "sum-2", "--json"),
        at(shared, "tree", "sum-1"),
        at(shared, "ls", "--function", "add"),
    )
    assert got.code == 0, str(got)
    assert (fields(got)["state"], fields(got)["result"]) == ("resolved", "42"), str(got)
    assert as_json.code == 0, str(as_json)
    view = json.loads(as_json.out)
    assert {k: view[k] for k in ("id", "function", "state", "kwargs", "result")} == {
        "id": "sum-2",
        "function": "add",
        "state": "resolved",
        "kwargs": {"a": 40, "b": 2},
        "result": 42,
    }
    assert tree.code == 0, str(tree)
    node_line = re.compile(r"^( *)(\S+)  (\S+)  (\S+)  (\d+ ms)$")
    parsed = [node_line.match(line) for line in tree.lines]
    assert all(parsed), str(tree)
    assert [(len(m[1]), m[2], m[3], m[4]) for m in parsed if m] == [
        (0, "sum-1", "add", "resolved"),
        (2, "sum-1:1", "plus", "resolved"),
    ], tree
    assert listed.code == 0, str(listed)
    rows = table(listed)
    assert list(rows[0]) == ["ID", "FUNCTION", "STATE", "CREATED"], str(listed)
    assert {(r["ID"], r["FUNCTION"], r["STATE"]) for r in rows} >= {
        ("sum-1", "add", "resolved"),
        ("sum-2", "add", "resolved"),
    }, listed
    assert {r["FUNCTION"] for r in rows} == {"add"}, str(listed)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", r["CREATED"]) for r in rows)


async def test_ls_by_state_and_function_and_get_of_a_failed_invocation(shared: Node) -> None:
    await finished(shared, ("ls-fail", "fail", ["nope"]), ("ls-ok", "add", [1, 1]))
    listed, got = await asyncio.gather(
        at(shared, "ls", "--state", "rejected", "--function", "fail"),
        at(shared, "get", "ls-fail"),
    )
    assert listed.code == 0, str(listed)
    rows = table(listed)
    assert {(r["FUNCTION"], r["STATE"]) for r in rows} == {("fail", "rejected")}, str(listed)
    assert "ls-fail" in {r["ID"] for r in rows}, str(listed)
    assert got.code == 1, str(got)
    assert fields(got)["state"] == "rejected", str(got)
    assert fields(got)["error"] == "builtins.ValueError: nope", str(got)


async def test_failed_invocation_exits_1_unknown_ids_and_bad_arguments_exit_2(
    shared: Node,
) -> None:
    results = await asyncio.gather(
        at(shared, "invoke", "boom-1", "fail", '["it broke"]', "--wait"),
        at(shared, "get", "no-such-id"),
        at(shared, "cancel", "no-such-id"),
        at(shared, "invoke", "bad-json", "add", "[1,"),
        at(shared, "invoke", "no-fn", "no_such_function", "[]"),
    )
    failed, get_unknown, cancel_unknown, bad_json, no_fn = results
    assert failed.code == 1, str(failed)
    assert failed.out == "rejected: builtins.ValueError: it broke\n", str(failed)
    for ran in (get_unknown, cancel_unknown):
        assert (ran.code, ran.out) == (2, ""), str(ran)
        assert ran.err == "dawait: no invocation with id 'no-such-id'\n", str(ran)
    assert bad_json.code == 2, str(bad_json)
    assert bad_json.err.startswith("dawait: ARGS_JSON is not JSON"), str(bad_json)
    assert no_fn.code == 2, str(no_fn)
    assert "no_such_function" in no_fn.err, str(no_fn)
    assert "registered: add, approve, fail, load, tick" in no_fn.err, str(no_fn)
    assert all("Traceback" not in ran.err for ran in results), "\n".join(map(str, results))


async def test_wrong_or_missing_token_and_unreachable_node_say_so(shared: Node) -> None:
    wrong, missing, unreachable = await asyncio.gather(
        dawait("--url", shared.url, "--token", "not-the-token", "get", "x"),
        dawait("--url", shared.url, "ls"),
        dawait("--url", "http://127.0.0.1:1", "--token", TOKEN, "ls"),
    )
    for ran in (wrong, missing):
        assert ran.code != 0, str(ran)
        assert ran.out == "", str(ran)
        assert ran.err == (
            "dawait: missing or wrong bearer token (give --token or set DAWAIT_TOKEN)\n"
        ), str(ran)
    assert unreachable.code == 2, str(unreachable)
    assert unreachable.err.startswith("dawait: cannot reach the node at http://127.0.0.1:1")
    async with HttpClient(shared.url, timeout=10) as anonymous:
        assert (await anonymous.health()).status == "ok"  # /readyz needs no token


async def test_url_and_token_before_or_after_the_command_or_from_the_environment(
    shared: Node,
) -> None:
    await finished(shared, ("where-1", "add", [3, 4]))
    env = {"DAWAIT_URL": shared.url, "DAWAIT_TOKEN": TOKEN}
    after, from_env, overridden = await asyncio.gather(
        dawait("get", "where-1", "--url", shared.url, "--token", TOKEN),
        dawait("get", "where-1", env=env),
        dawait("--json", "get", "where-1", "--token", TOKEN, env={**env, "DAWAIT_TOKEN": "old"}),
    )
    for ran in (after, from_env):
        assert ran.code == 0, str(ran)
        assert fields(ran)["result"] == "7", str(ran)
    assert overridden.code == 0, str(overridden)
    assert json.loads(overridden.out)["result"] == 7, str(overridden)


async def test_cancel_and_promises_get_resolve_reject_search(shared: Node) -> None:
    async with client(shared) as api:
        for who in "abc":
            await api.start(f"ask-{who}", "approve", [who], {})

        async def awaits_approval() -> bool:
            page = await api.promises("approval-*", state="pending")
            return {p.id for p in page.items} >= {"approval-a", "approval-b", "approval-c"}

        await wait_until("approval promises", awaits_approval, node=shared)

    pending, resolve, reject, cancel = await asyncio.gather(
        at(shared, "promises", "get", "approval-c"),
        at(shared, "promises", "resolve", "approval-a", '"yes"'),
        at(shared, "promises", "reject", "approval-b", "not today"),
        at(shared, "cancel", "ask-c"),
    )
    assert pending.code == 0, str(pending)
    assert fields(pending)["id"] == "approval-c", str(pending)
    assert resolve.code == 0, str(resolve)
    assert fields(resolve) == {"id": "approval-a", "state": "resolved", "value": '"yes"'}
    assert reject.code == 0, str(reject)
    assert fields(reject) == {
        "id": "approval-b",
        "state": "rejected",
        "error": "Exception: not today",
    }
    assert cancel.code == 0, str(cancel)
    assert fields(cancel)["state"] == "rejected_canceled", str(cancel)
    assert fields(cancel)["error"] == "dawait.errors.CanceledError: ask-c was canceled"

    approved, again, search = await asyncio.gather(
        at(shared, "invoke", "ask-a", "approve", '["a"]', "--wait"),
        at(shared, "promises", "resolve", "approval-b", "1"),
        at(shared, "promises", "search", "approval-*"),
    )
    assert (approved.code, approved.out) == (0, '"a: yes"\n'), str(approved)
    assert again.code == 2, str(again)
    assert again.err == "dawait: promise 'approval-b' is already rejected\n", str(again)
    assert search.code == 0, str(search)
    states = {row["ID"]: (row["STATE"], row["VALUE"]) for row in table(search)}
    assert states["approval-a"] == ("resolved", '"yes"'), str(search)
    assert states["approval-b"][0] == "rejected", str(search)
    assert "not today" in states["approval-b"][1], str(search)
    assert "approval-c" in states, str(search)
    async with client(shared) as api:
        refused = await api.result("ask-b", wait=WAIT_TIMEOUT)
        assert refused.state == "rejected", refused
        assert refused.error is not None
        assert "not today" in refused.error.message


async def test_schedules_create_ls_delete(shared: Node) -> None:
    yearly = "0 0 1 1 *"
    created, bad_cron = await asyncio.gather(
        at(shared, "schedules", "create", "new-year", yearly, "add", "[1, 2]"),
        at(shared, "schedules", "create", "bad-cron", "every day", "add", "[1, 2]"),
    )
    assert created.code == 0, str(created)
    shown = fields(created)
    assert (shown["id"], shown["cron"], shown["function"]) == ("new-year", yearly, "add")
    assert re.fullmatch(r"\d{4}-01-01T00:00:00\+00:00", shown["next run"]), str(created)
    assert bad_cron.code == 2, str(bad_cron)
    assert "'every day'" in bad_cron.err, str(bad_cron)

    again, conflict, listed = await asyncio.gather(
        at(shared, "schedules", "create", "new-year", yearly, "add", "[1, 2]"),
        at(shared, "schedules", "create", "new-year", "0 0 * * *", "add", "[1, 2]"),
        at(shared, "schedules", "ls"),
    )
    assert (again.code, again.out) == (0, created.out), str(again)
    assert conflict.code == 2, str(conflict)
    assert "new-year" in conflict.err, str(conflict)
    assert "0 0 * * *" in conflict.err, str(conflict)
    assert listed.code == 0, str(listed)
    [row] = table(listed)
    assert (row["ID"], row["CRON"], row["FUNCTION"]) == ("new-year", yearly, "add"), str(listed)
    assert row["NEXT RUN"] == shown["next run"], str(listed)

    deleted = await at(shared, "schedules", "delete", "new-year")
    assert (deleted.code, deleted.out) == (0, "deleted new-year\n"), str(deleted)
    gone = await at(shared, "schedules", "delete", "new-year")
    assert gone.code == 2, str(gone)
    assert gone.err == "dawait: no schedule with id 'new-year'\n", str(gone)
    async with client(shared) as api:
        assert (await api.schedules()).items == []


async def test_url_without_scheme_is_a_usage_error() -> None:
    ran = await dawait("--url", "127.0.0.1:8080", "ls")
    assert "Traceback" not in ran.err, str(ran)
    assert ran.code == 2, str(ran)


async def test_invoke_with_a_colon_in_the_id_is_a_usage_error(shared: Node) -> None:
    ran = await at(shared, "invoke", "a:b", "add", "[1, 2]")
    assert "Traceback" not in ran.err, str(ran)
    assert ran.code == 2, str(ran)


# -- dawait serve settings -------------------------------------------------------------------


async def test_serve_takes_its_settings_from_the_environment(nodes: Nodes) -> None:
    env_store = nodes.dir / "from-env.db"
    node = nodes.spawn(
        "from-env",
        env={
            "DAWAIT_APP": APP,
            "DAWAIT_PORT": "0",
            "DAWAIT_STORE": f"sqlite:///{env_store}",
            "DAWAIT_TOKEN": "env-token",
            "DAWAIT_GRACE_PERIOD": "1.5",
        },
    )
    # An option given on the command line wins over its variable.
    given_store = nodes.dir / "given.db"
    ignored_store = nodes.dir / "ignored.db"
    overridden = nodes.spawn(
        "overridden",
        "--app", APP, "--port", "0", "--store", f"sqlite:///{given_store}",
        env={"DAWAIT_APP": "no_such_module:app", "DAWAIT_STORE": f"sqlite:///{ignored_store}",
             "DAWAIT_TOKEN": "env-token"},
    )  # fmt: skip
    nodes.wait_listening(node)
    nodes.wait_listening(overridden)
    with_token, without_token = await asyncio.gather(
        dawait("--url", node.url, "--token", "env-token", "invoke", "e-1", "add", "[1, 2]",
               "--wait"),
        dawait("--url", node.url, "ls"),
    )  # fmt: skip
    assert (with_token.code, with_token.out) == (0, "3\n"), str(with_token)
    assert without_token.code == 2, str(without_token)
    assert "missing or wrong bearer token" in without_token.err, str(without_token)
    async with HttpClient(overridden.url, token="env-token", timeout=10) as api:
        await api.start("e-2", "add", [2, 2], {})
        assert (await api.result("e-2", wait=WAIT_TIMEOUT)).result == 4
    assert env_store.exists()
    assert given_store.exists()
    assert not ignored_store.exists()
    await node.stop()
    await overridden.stop()


@pytest.mark.parametrize(
    ("app", "message"),
    [
        pytest.param(
            "served_app", "expected MODULE:ATTR (like myapp.workflows:app), got 'served_app'",
            id="no-colon",
        ),
        pytest.param(
            "tests.integration.no_such_module:app",
            "cannot import 'tests.integration.no_such_module'",
            id="unknown-module",
        ),
        pytest.param(
            "tests.integration.served_app:not_an_app",
            "tests.integration.served_app:not_an_app is a str, not a dawait.Resonate app",
            id="not-a-resonate",
        ),
    ],
)  # fmt: skip
async def test_serve_refuses_a_bad_app_with_a_clear_message_and_exit_2(
    nodes: Nodes, app: str, message: str
) -> None:
    node = nodes.spawn("bad-app", "--app", app, "--port", "0", "--store", nodes.store)
    code = await node.exit_code(within=CLI_TIMEOUT)
    stderr = node.stderr()
    assert message in stderr, node.report("no clear message")
    assert "Traceback" not in stderr, node.report("a traceback")
    assert node.out.read_text() == ""
    assert code == 2, node.report(f"exit {code}")


# -- a schedule across a restart -------------------------------------------------------------


def epoch_ms() -> int:
    return int(time.time() * 1000)


async def test_schedule_fires_each_second_once_across_a_sigterm_restart(nodes: Nodes) -> None:
    first = nodes.start_with("first", "--grace-period", str(GRACE))
    created = await at(first, "schedules", "create", "beat", "* * * * * *", "tick")
    assert created.code == 0, str(created)
    assert fields(created)["cron"] == "* * * * * *", str(created)

    def ticks_by(node: Node) -> int:
        return sum(kind == "tick" and pid == node.pid for kind, _, pid in nodes.effect_lines())

    await wait_until("3 ticks", lambda: ticks_by(first) >= 3, node=first)
    await first.stop()
    down_from = epoch_ms()
    # A deliberate downtime (not a wait for something): until the second whole second after
    # the stop, so the slot between them passes while no node runs.
    await asyncio.sleep(((down_from // 1000 + 2) * 1000 + 20 - epoch_ms()) / 1000)
    down_to = epoch_ms() // 1000 * 1000
    second = nodes.start_with("second", "--grace-period", str(GRACE))
    listening = epoch_ms()
    await wait_until("3 ticks after the restart", lambda: ticks_by(second) >= 3, node=second)
    async with client(second) as api:
        [schedule] = (await api.schedules()).items
        assert (schedule.id, schedule.cron, schedule.function) == ("beat", "* * * * * *", "tick")
        await api.delete_schedule("beat")
        # Once deleted, no slot fires; the slots already started finish.
        page = await api.invocations(function="tick", limit=1000)
        slots = {item.id for item in page.items}
        for id in slots:
            outcome = await api.result(id, wait=WAIT_TIMEOUT)
            assert (outcome.state, outcome.result) == ("resolved", id), outcome
        page = await api.invocations(function="tick", limit=1000)
        assert {item.id for item in page.items} == slots, "a slot fired after the delete"
    await second.stop()

    ticks = [(id, pid) for kind, id, pid in nodes.effect_lines() if kind == "tick"]
    runs = Counter(id for id, _ in ticks)
    assert set(runs) == slots, "every slot's invocation ran its step, and no other did"
    assert [id for id, count in runs.items() if count != 1] == [], f"run twice: {ticks}"
    times = sorted(int(id.removeprefix("beat.")) for id in slots)
    assert all(ms % 1000 == 0 for ms in times), times
    missed = range((down_from // 1000 + 1) * 1000, down_to, 1000)
    assert len(missed) >= 1, "the downtime spanned no slot"
    assert [ms for ms in times if down_from < ms < down_to] == [], "a missed slot fired late"
    assert [ms for ms in times if down_to <= ms <= listening], "no catch-up slot at start-up"
    before = [ms for ms in times if ms <= down_from]
    after = [ms for ms in times if ms >= down_to]
    assert len(before) >= 3, times
    assert len(after) >= 3, times
    assert {pid for id, pid in ticks if int(id.removeprefix("beat.")) >= down_to} == {second.pid}, (
        ticks
    )
    assert {pid for _, pid in ticks} <= {first.pid, second.pid}, ticks


# -- SIGTERM during load ---------------------------------------------------------------------

LOAD = 200
POSTERS = 8


async def start_all(
    api: HttpClient, seeds: dict[str, int], accepted: set[str], *, signal_at: int,
    reached: asyncio.Event,
) -> None:  # fmt: skip
    """POST every invocation, ``POSTERS`` at a time; set ``reached`` once ``signal_at`` were
    accepted. A POST the stopping node refuses is left for the restarted node."""
    slots = asyncio.Semaphore(POSTERS)

    async def post(id: str, seed: int) -> None:
        async with slots:
            try:
                await api.start(id, "load", [seed], {})
            except NotStartedError:
                return
            accepted.add(id)
            if len(accepted) >= signal_at:
                reached.set()

    await asyncio.gather(*(post(id, seed) for id, seed in seeds.items()))


async def test_sigterm_during_load_loses_nothing(nodes: Nodes) -> None:
    seeds = {f"load-{n}": n for n in range(LOAD)}
    first = nodes.start_with("first", "--grace-period", str(GRACE))
    accepted: set[str] = set()
    reached = asyncio.Event()
    async with HttpClient(first.url, token=TOKEN, timeout=10) as api:
        posting = asyncio.create_task(
            start_all(api, seeds, accepted, signal_at=LOAD * 2 // 5, reached=reached)
        )
        try:
            async with asyncio.timeout(WAIT_TIMEOUT):
                await reached.wait()
            first.terminate()
            code = await first.exit_code(within=GRACE + EXIT_SLACK)
            async with asyncio.timeout(WAIT_TIMEOUT):
                await posting
        finally:
            posting.cancel()
    assert code == 0, first.report(f"exited {code} after SIGTERM")
    started_first = {id.partition("/")[0] for _, id, _ in nodes.effect_lines()}
    done_first = {id.partition("/")[0] for _, id, _ in nodes.effect_lines() if id.endswith("/2")}
    assert started_first - done_first, "SIGTERM left no invocation half done: nothing tested"

    second = nodes.start_with("second", "--grace-period", str(GRACE))
    async with HttpClient(second.url, token=TOKEN, timeout=WAIT_TIMEOUT + 5) as api:
        await start_all(api, seeds, set(), signal_at=LOAD + 1, reached=asyncio.Event())
        outcomes = await asyncio.gather(*(api.result(id, wait=WAIT_TIMEOUT) for id in seeds))
        wrong = {
            o.id: (o.state, o.result)
            for o in outcomes
            if (o.state, o.result) != ("resolved", served_app.load_result(seeds[o.id]))
        }
        assert wrong == {}, second.report(f"{len(wrong)} wrong or missing results")
        page = await api.invocations(function="load", state="resolved", limit=1000)
        assert sorted(v.id for v in page.items) == sorted(seeds)
    await second.stop()

    pids: defaultdict[str, list[int]] = defaultdict(list)
    for kind, key, pid in nodes.effect_lines():
        assert kind == "step", key
        pids[key].append(pid)
    expected = {f"{id}/{step}" for id in seeds for step in range(served_app.LOAD_STEPS)}
    assert set(pids) == expected
    twice = {key: runs for key, runs in pids.items() if len(runs) > 1}
    assert all(len(runs) == 2 and runs[0] != runs[1] for runs in twice.values()), twice
    assert {pid for runs in pids.values() for pid in runs} <= {first.pid, second.pid}


async def test_sigterm_while_a_client_waits_for_a_result_exits_within_the_grace_period(
    nodes: Nodes,
) -> None:
    node = nodes.start_with("waited-on", "--grace-period", "0.5")
    host, port = node.url.removeprefix("http://").split(":")
    async with HttpClient(node.url, token=TOKEN, timeout=10) as api:
        await api.start("held", "approve", ["nobody"], {})
        _, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(
                f"GET /invocations/held/result?wait=60 HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
            )
            await writer.drain()
            # A round trip on another connection: by then the node has read the request.
            assert (await api.health()).status == "ok"
            node.terminate()
            code = await node.exit_code(within=0.5 + EXIT_SLACK)
        finally:
            writer.close()
    assert code == 0, node.report(f"exited {code}")
