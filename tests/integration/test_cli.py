"""The ``dawait`` CLI as real processes against ``dawait serve`` on 127.0.0.1: its commands,
their output and exit codes (0 ok, 1 the invocation failed, 2 usage error or not found),
with ``--url``/``--token`` before or after the command or from ``DAWAIT_URL``/``DAWAIT_TOKEN``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re

from dawait.node._client import HttpClient
from tests.integration.served import (
    TOKEN,
    WAIT_TIMEOUT,
    Node,
    at,
    client,
    dawait,
    fields,
    finished,
    settled,
    table,
    wait_until,
)


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
    assert (
        "registered: add, approve, blob, fail, load, nap, repeat, reserve, shout, tick, via_worker"
        in no_fn.err
    ), str(no_fn)
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


async def test_rm_deletes_a_settled_invocation_and_promises_rm_a_promise(shared: Node) -> None:
    ran = await at(shared, "invoke", "rm-1", "add", "[2, 3]", "--wait")
    assert ran.code == 0, str(ran)
    pending = await at(shared, "invoke", "rm-2", "approve", '["rm"]')
    assert pending.code == 0, str(pending)
    removed, refused, unknown = await asyncio.gather(
        at(shared, "rm", "rm-1"), at(shared, "rm", "rm-2"), at(shared, "rm", "no-such-id")
    )
    assert (removed.code, removed.out) == (0, "deleted rm-1\n"), str(removed)
    assert refused.code == 2, str(refused)
    assert refused.err == "dawait: 'rm-2' is pending: cancel it (or settle it) before deleting it\n"
    assert unknown.code == 2, str(unknown)
    assert "no invocation with id 'no-such-id'" in unknown.err, str(unknown)
    gone = await at(shared, "get", "rm-1")
    assert gone.code == 2, str(gone)

    async with client(shared) as api:
        await api.create_promise("rm-promise")
        await api.resolve("rm-promise", 1)
    deleted = await at(shared, "promises", "rm", "rm-promise", "--json")
    assert deleted.code == 0, str(deleted)
    assert json.loads(deleted.out) == {"deleted": "rm-promise"}
    assert (await at(shared, "promises", "get", "rm-promise")).code == 2
    assert all("Traceback" not in r.err for r in (removed, refused, unknown, deleted))


async def test_ls_newest_first_with_pages_failed_and_counts(shared: Node) -> None:
    since = dt.datetime.now(dt.UTC).isoformat()
    await finished(
        shared,
        ("new-1", "add", [1, 1]),
        ("new-2", "fail", ["no"]),
        ("new-3", "add", [2, 2]),
        ("new-4", "add", [3, 3]),
    )
    async with client(shared) as api:
        await api.start("new-5", "approve", ["ann"], {})
        await api.cancel("new-5")

    every = await at(shared, "ls", "--since", since, "--all", "--limit", "2", "--json")
    assert every.code == 0, str(every)
    items = json.loads(every.out)["items"]
    assert sorted(v["id"] for v in items) == [f"new-{k}" for k in range(1, 6)], str(every)
    assert items == sorted(
        items, key=lambda v: (-dt.datetime.fromisoformat(v["created_at"]).timestamp(), v["id"])
    )
    first = await at(shared, "ls", "--since", since, "--limit", "2")
    assert [r["ID"] for r in table(first)] == [v["id"] for v in items[:2]], str(first)
    cursor = re.fullmatch(r"more: --cursor (\S+) \(or --all\)\n", first.err)
    assert cursor, str(first)
    rest = await at(shared, "ls", "--since", since, "--limit", "10", "--cursor", cursor[1])
    assert [r["ID"] for r in table(rest)] == [v["id"] for v in items[2:]], str(rest)
    assert rest.err == "", str(rest)

    failed = await at(shared, "ls", "--since", since, "--state", "failed")
    assert {(r["ID"], r["STATE"]) for r in table(failed)} == {
        ("new-2", "rejected"),
        ("new-5", "rejected_canceled"),
    }, str(failed)
    prefix = await at(shared, "ls", "--since", since, "--function", "ad")
    assert {r["ID"] for r in table(prefix)} == {"new-1", "new-3", "new-4"}, str(prefix)
    counted = await at(shared, "ls", "--since", since, "--count")
    assert counted.lines[-1] == ("5 in all: rejected 1, rejected_canceled 1, resolved 3"), str(
        counted
    )
    until = await at(shared, "ls", "--since", since, "--until", since)
    assert until.lines == ["ID  FUNCTION  STATE  CREATED"], str(until)


async def test_ls_names_a_bad_filter(shared: Node) -> None:
    state, since, cursor = await asyncio.gather(
        at(shared, "ls", "--state", "broken"),
        at(shared, "ls", "--since", "yesterday"),
        at(shared, "ls", "--cursor", "nonsense"),
    )
    assert state.code == 2, str(state)
    assert "'broken' is not a state: use one or more of failed" in state.err, str(state)
    assert since.code == 2, str(since)
    assert "'yesterday' is neither an ISO time" in since.err, str(since)
    assert cursor.code == 2, str(cursor)
    assert "'nonsense' is not a cursor a listing gave" in cursor.err, str(cursor)


async def test_promises_create_and_cancel_and_schedules_get(shared: Node) -> None:
    created = await at(shared, "promises", "create", "cli-p", "--timeout", "60", "--data", "[1]")
    assert created.code == 0, str(created)
    assert fields(created)["state"] == "pending", str(created)
    canceled = await at(shared, "promises", "cancel", "cli-p")
    assert fields(canceled)["state"] == "rejected_canceled", str(canceled)
    bad = await at(shared, "promises", "create", "cli-q", "--data", "{nope")
    assert bad.code == 2, str(bad)
    assert bad.err.startswith("dawait promises create: --data is not JSON"), str(bad)

    made = await at(shared, "schedules", "create", "cli-s", "0 3 * * *", "add", "[1, 2]")
    assert made.code == 0, str(made)
    got = await at(shared, "schedules", "get", "cli-s")
    assert got.code == 0, str(got)
    assert {k: fields(got)[k] for k in ("id", "cron", "function", "args")} == {
        "id": "cli-s", "cron": "0 3 * * *", "function": "add", "args": "[1, 2]"
    }, str(got)  # fmt: skip
    missing = await at(shared, "schedules", "get", "cli-none")
    assert missing.code == 2, str(missing)
    await at(shared, "schedules", "delete", "cli-s")


async def test_invoke_version_wait_timeout_and_cancel_of_a_finished_invocation(
    shared: Node,
) -> None:
    versioned = await at(shared, "invoke", "cli-v1", "add", "[1, 2]", "--version", "1", "--wait")
    assert (versioned.code, versioned.out) == (0, "3\n"), str(versioned)
    unknown = await at(shared, "invoke", "cli-v9", "add", "[1, 2]", "--version", "9")
    assert unknown.code == 2, str(unknown)
    assert "version 9" in unknown.err, str(unknown)

    quick = await at(shared, "invoke", "cli-q", "approve", '["cli-amy"]', "--wait", "0.5")
    assert (quick.code, quick.err) == (1, ""), str(quick)  # gave up before a second
    assert quick.out == "pending: still running after 0.5 s\n", str(quick)
    waited = await at(shared, "invoke", "cli-w", "approve", '["cli-zed"]', "--wait", "1.5")
    assert waited.code == 1, str(waited)
    assert waited.err == "dawait: waiting for cli-w (at most 1.5 s)\n", str(waited)
    assert waited.out == "pending: still running after 1.5 s\n", str(waited)
    first = await at(shared, "cancel", "cli-w")
    assert first.code == 0, str(first)
    assert fields(first)["state"] == "rejected_canceled", str(first)
    again = await at(shared, "cancel", "cli-w")
    assert again.code == 1, str(again)
    assert again.err == "dawait: cli-w had ended (rejected_canceled): nothing canceled\n"
    async with client(shared) as api:  # what it awaited went with it
        assert (await api.promise("approval-cli-zed")).state == "rejected_canceled"


async def test_tree_says_why_a_step_failed_and_nodes_on_an_embedded_store(shared: Node) -> None:
    await finished(shared, ("cli-r", "reserve", ["sku-1"]))
    tree = await at(shared, "tree", "cli-r")
    assert tree.code == 1, str(tree)
    step = [line for line in tree.lines if "check_stock" in line]
    assert len(step) == 1, str(tree)
    assert step[0].endswith("builtins.LookupError: sku-1 is out of stock"), str(tree)
    nodes = await at(shared, "nodes")
    assert (nodes.code, nodes.out) == (
        0, f"dawait: the node at {shared.url} is not a cluster (an embedded store)\n"
    ), str(nodes)  # fmt: skip
