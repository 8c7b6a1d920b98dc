"""Helpers for tests that run ``dawait serve`` and the ``dawait`` CLI as real processes on
127.0.0.1: starting and stopping nodes, running CLI commands, polling with a deadline."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import resource
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dawait.node._client import HttpClient
from tests.integration import served_app
from tests.polling import eventually, eventually_sync

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


def _limit_fds(fds: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (fds, fds))


@dataclass(slots=True)
class Nodes:
    """Starts nodes in ``dir`` and kills, at the end, every one still running."""

    dir: Path
    started: list[Node] = field(default_factory=list)

    def spawn(
        self,
        name: str,
        *args: str,
        env: dict[str, str] | None = None,
        fds: int | None = None,
    ) -> Node:
        """Start ``dawait serve ARGS`` from the repository root (so the app imports);
        ``fds``: its descriptor limit, soft and hard."""
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
                preexec_fn=None if fds is None else functools.partial(_limit_fds, fds),
            )
        node = Node(name=name, process=process, out=out, err=err)
        self.started.append(node)
        return node

    def start(
        self, name: str, *args: str, env: dict[str, str] | None = None, fds: int | None = None
    ) -> Node:
        """Start ``dawait serve ARGS``; return once it listens."""
        node = self.spawn(name, *args, env=env, fds=fds)
        self.wait_listening(node)
        return node

    def wait_listening(self, node: Node) -> None:
        """Wait until ``node`` says where it listens (and note it)."""

        def listening() -> bool:
            if found := LISTENING.search(node.out.read_text()):
                node.url = found.group(1)
                return True
            if node.process.poll() is not None:
                raise AssertionError(node.report(f"exited {node.process.returncode} at start"))
            return False

        eventually_sync(
            listening,
            "it to listen",
            within=START_TIMEOUT,
            every=POLL,
            failure=lambda message: AssertionError(node.report(message)),
        )

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


async def wait_until(
    what: str, done: Callable[[], bool | Awaitable[bool]], *, node: Node | None = None
) -> None:
    """Poll ``done()`` until it holds; fail after ``WAIT_TIMEOUT`` or if ``node`` exits."""

    async def holds() -> bool:
        result = done()
        if result if isinstance(result, bool) else await result:
            return True
        if node is not None and node.process.poll() is not None:
            raise AssertionError(node.report(f"exited while waiting for {what}"))
        return False

    await eventually(
        holds,
        what,
        within=WAIT_TIMEOUT,
        every=POLL,
        failure=lambda message: AssertionError(node.report(message) if node else message),
    )


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
