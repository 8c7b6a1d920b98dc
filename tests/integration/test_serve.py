"""``dawait serve`` as a real process on 127.0.0.1:

* taking its settings from ``DAWAIT_*`` variables, and refusing a bad ``--app`` with a clear
  message and exit 2;
* a schedule firing every second keeps firing across a SIGTERM and a restart on the same
  SQLite file, each slot at most once;
* SIGTERM during load loses nothing: the node exits by itself within its grace period, and
  after a restart every invocation finishes with its result; each step ran at least once and
  at most twice, never twice in one process.

The served functions are in ``served_app.py``; their steps append lines to an effects file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter, defaultdict

import aiohttp
import pytest

from dawait import Resonate
from dawait.errors import NotStartedError, PromiseNotFoundError
from dawait.node._client import HttpClient
from tests.integration import served_app, served_store_app
from tests.integration.served import (
    APP,
    CLI_TIMEOUT,
    EXIT_SLACK,
    GRACE,
    TOKEN,
    WAIT_TIMEOUT,
    Node,
    Nodes,
    at,
    client,
    dawait,
    fields,
    wait_until,
)


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


async def test_serve_reads_its_token_from_a_file_and_may_open_metrics(nodes: Nodes) -> None:
    """As a mounted Secret gives it: the file's text, less its trailing newline, is the
    token; ``DAWAIT_OPEN_METRICS`` lets a scraper read /metrics without it, and nothing else."""
    secret = nodes.dir / "api-token"
    secret.write_text("file-token\n")
    node = nodes.spawn(
        "token-file",
        "--app", APP, "--port", "0", "--store", nodes.store, "--token-file", str(secret),
        env={"DAWAIT_OPEN_METRICS": "true"},
    )  # fmt: skip
    nodes.wait_listening(node)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{node.url}/metrics") as response:
            assert response.status == 200
            assert "dawait_steps_total" in await response.text()
        async with session.get(f"{node.url}/invocations") as response:
            assert response.status == 401
    async with HttpClient(node.url, token="file-token", timeout=10) as api:
        await api.start("f-1", "add", [1, 1], {})
        assert (await api.result("f-1", wait=WAIT_TIMEOUT)).result == 2
    await node.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--token-file", "/nonexistent/api-token"],
            "token_file /nonexistent/api-token: No such file or directory",
            id="missing-file",
        ),
        pytest.param(
            ["--token", "t", "--token-file", "/dev/null"],
            "give token or token_file, not both",
            id="both",
        ),
        pytest.param(
            ["--cluster-token-file", "/dev/null"],
            "cluster_token_file /dev/null is empty",
            id="empty-file",
        ),
    ],
)
async def test_serve_refuses_a_bad_token_file_naming_it(
    nodes: Nodes, args: list[str], message: str
) -> None:
    node = nodes.spawn("bad-token", "--app", APP, "--port", "0", "--store", nodes.store, *args)
    code = await node.exit_code(within=CLI_TIMEOUT)
    assert message in node.stderr(), node.report("no clear message")
    assert "Traceback" not in node.stderr(), node.report("a traceback")
    assert code == 2, node.report(f"exit {code}")


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


async def test_serve_deletes_what_outlived_its_retention(nodes: Nodes) -> None:
    node = nodes.start_with("retention", "--retention", "1s")
    async with HttpClient(node.url, token=TOKEN, timeout=10) as api:
        await api.start("r-1", "add", [1, 2], {})
        assert (await api.result("r-1", wait=WAIT_TIMEOUT)).result == 3
        view = await api.invocation("r-1")
        assert view.settled_at is not None
        assert view.delete_at == view.settled_at + dt.timedelta(seconds=1)
        waiting = await api.create_promise("r-waits", timeout=None, data=None)
        assert waiting.delete_at is None

        async def deleted() -> bool:
            try:
                await api.invocation("r-1")
            except PromiseNotFoundError:
                return True
            return False

        await wait_until("the invocation's deletion", deleted, node=node)
        assert (await api.promise("r-waits")).state == "pending"  # pending: kept
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{node.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as response,
        ):
            assert "dawait_retention_deleted_total 1" in await response.text()
    await node.stop()


async def test_serve_refuses_a_bad_retention_naming_it(nodes: Nodes) -> None:
    node = nodes.spawn(
        "bad-retention", "--app", APP, "--port", "0", "--store", nodes.store,
        env={"DAWAIT_RETENTION": "7 days"},
    )  # fmt: skip
    code = await node.exit_code(within=CLI_TIMEOUT)
    assert "retention" in node.stderr(), node.report("no clear message")
    assert "expected a number with a unit" in node.stderr(), node.report("no clear message")
    assert "Traceback" not in node.stderr(), node.report("a traceback")
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


# -- the store served, and start-up errors ---------------------------------------------------

STORE_APP = "tests.integration.served_store_app:app"


async def test_serve_serves_the_store_the_app_was_made_with(nodes: Nodes) -> None:
    store = f"sqlite:///{nodes.dir / 'app.db'}"
    embedded = Resonate(store=store)
    embedded.register(served_store_app.greet)
    async with embedded:  # run embedded: left waiting for its approval
        await embedded.start("g-1", served_store_app.greet, "ada")
        await embedded.promises.create("dummy", timeout=None)  # the store is written
    node = nodes.start("app-store", "--app", STORE_APP, "--port", "0",
                       env={served_store_app.STORE_ENV: store})  # fmt: skip
    assert f"from SQLiteStore({str(nodes.dir / 'app.db')!r})" in node.stderr(), node.report(
        "the store served is not logged"
    )
    async with HttpClient(node.url, timeout=10) as api:
        assert (await api.invocation("g-1")).state == "pending"  # resumed, not unknown
        await api.resolve("g-1-ok", "approved")
        assert (await api.result("g-1", wait=WAIT_TIMEOUT)).result == "hello ada, approved"
    await node.stop()
    # --store wins, and says that it is not the app's store.
    other = nodes.start("other-store", "--app", STORE_APP, "--port", "0", "--store",
                        nodes.store, env={served_store_app.STORE_ENV: store})  # fmt: skip
    assert "not the store the app was made with" in other.stderr(), other.report("no warning")
    async with HttpClient(other.url, timeout=10) as api:
        with pytest.raises(PromiseNotFoundError):
            await api.invocation("g-1")
    await other.stop()


async def test_serve_refuses_an_unknown_store_in_one_line(nodes: Nodes) -> None:
    node = nodes.spawn("bogus-store", "--app", APP, "--port", "0", "--store", "bogus://x")
    code = await node.exit_code(within=CLI_TIMEOUT)
    assert "dawait serve: --store: store 'bogus://x': unknown scheme 'bogus'" in node.stderr()
    assert "Traceback" not in node.stderr(), node.report("a traceback")
    assert code == 2, node.report(f"exit {code}")


async def test_serve_on_a_port_in_use_says_so_in_one_line(nodes: Nodes) -> None:
    first = nodes.start_with("first")
    port = first.url.rsplit(":", 1)[1]
    second = nodes.spawn("second", "--app", APP, "--port", port, "--store",
                         f"sqlite:///{nodes.dir / 'second.db'}")  # fmt: skip
    code = await second.exit_code(within=CLI_TIMEOUT)
    assert f"dawait serve: port {port} of 127.0.0.1 is in use" in second.stderr()
    assert "Traceback" not in second.stderr(), second.report("a traceback")
    assert code == 2, second.report(f"exit {code}")
    await first.stop()
