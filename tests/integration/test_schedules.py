"""Cron schedules as a user sees them: ``app.schedules`` on a ``FakeClock``.

Cron has minute resolution, so time moves by ``clock.advance``; restarts close an app and
open a new ``Resonate`` on the same SQLite file. The clock starts at 1_700_000_000_000
(22:13:20 UTC), so an every-minute schedule's first slot is 40 seconds later.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from dawait import Context, Resonate, ScheduleInfo
from dawait.errors import (
    ScheduleConflictError,
    ScheduleNotFoundError,
    SerializationError,
    UnknownFunctionError,
)
from dawait.testing import FakeClock
from tests.polling import eventually

WAIT = 10.0
"""Seconds any single wait in these tests may take before the test fails."""

START = 1_700_000_000_000
FIRST = START + 40_000
"""The first every-minute slot after ``START``."""
MINUTE = 60_000


def at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


async def started(app: Resonate, pattern: str) -> list[str]:
    """The ids of the invocations whose id matches ``pattern``."""
    return [promise.id for promise in await app.promises.search(pattern)]


async def finished(app: Resonate, id: str) -> None:
    """Wait until invocation ``id`` exists and has finished."""
    await eventually(lambda: _exists(app, id), f"invocation {id} to start")
    await asyncio.wait_for((await app.get(id)).result(), WAIT)


async def _exists(app: Resonate, id: str) -> bool:
    return id in await started(app, id)


Report = Callable[..., Awaitable[str]]


@pytest.fixture
def runs() -> collections.Counter[str]:
    """Runs of ``report`` by invocation id."""
    return collections.Counter[str]()


@pytest.fixture
def report(runs: collections.Counter[str]) -> Report:
    async def report(ctx: Context, team: str, *, verbose: bool = False) -> str:
        runs[ctx.id] += 1
        return f"report for {team}"

    return report


def reporting_app(clock: FakeClock, report: Report, store: str | None = None) -> Resonate:
    """An app with ``report`` registered before it opens, so what it resumes can run."""
    app = Resonate(store, clock=clock, evict_after=60)
    app.register(report, name="report")
    return app


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
async def app(clock: FakeClock, report: Report) -> AsyncIterator[Resonate]:
    async with reporting_app(clock, report) as app:
        yield app


# -- firing ---------------------------------------------------------------------------------


async def test_an_every_minute_schedule_starts_one_invocation_per_slot(
    app: Resonate, clock: FakeClock, runs: collections.Counter[str]
) -> None:
    info = await app.schedules.create("tick", "* * * * *", "report", "ops", verbose=True)

    assert info == ScheduleInfo(
        id="tick",
        cron="* * * * *",
        function="report",
        args=["ops"],
        kwargs={"verbose": True},
        next_run_at=at(FIRST),
        last_run_at=None,
        created_at=at(START),
    )
    clock.advance(39.999)
    clock.advance(0.001)
    await finished(app, f"tick.{FIRST}")
    clock.advance(60)
    await finished(app, f"tick.{FIRST + MINUTE}")
    clock.advance(30)  # half way to the next slot: nothing more

    assert await started(app, "tick.*") == [f"tick.{FIRST}", f"tick.{FIRST + MINUTE}"]
    assert runs == {f"tick.{FIRST}": 1, f"tick.{FIRST + MINUTE}": 1}
    assert await (await app.get(f"tick.{FIRST}")).result() == "report for ops"
    info = await app.schedules.get("tick")
    assert (info.last_run_at, info.next_run_at) == (at(FIRST + MINUTE), at(FIRST + 2 * MINUTE))


async def test_a_schedule_accepts_the_function_itself(
    app: Resonate, clock: FakeClock, report: Report, runs: collections.Counter[str]
) -> None:
    info = await app.schedules.create("tick", "* * * * *", report, "ops")

    assert info.function == "report"
    clock.advance(40)
    await finished(app, f"tick.{FIRST}")
    assert runs == {f"tick.{FIRST}": 1}


async def test_deleting_a_schedule_stops_it(app: Resonate, clock: FakeClock) -> None:
    await app.schedules.create("tick", "* * * * *", "report", "ops")
    clock.advance(40)
    await finished(app, f"tick.{FIRST}")

    assert await app.schedules.delete("tick")
    # A witness on the same cron fires after "tick" would have (due ones fire in id order).
    await app.schedules.create("witness", "* * * * *", "report", "ops")
    clock.advance(60)
    await finished(app, f"witness.{FIRST + MINUTE}")

    assert await started(app, "tick.*") == [f"tick.{FIRST}"]
    with pytest.raises(ScheduleNotFoundError, match="'tick'"):
        await app.schedules.get("tick")
    assert not await app.schedules.delete("tick")


async def test_a_schedule_with_an_earlier_slot_wakes_the_sleeping_scheduler(
    app: Resonate, clock: FakeClock
) -> None:
    hourly = await app.schedules.create("hourly", "0 * * * *", "report", "ops")
    assert hourly.next_run_at is not None
    next_hour = round(hourly.next_run_at.timestamp() * 1000)

    async def sleeping_until_the_hour() -> bool:
        return clock.next_deadline == next_hour

    await eventually(sleeping_until_the_hour, "the scheduler to sleep until the hour")
    await app.schedules.create("tick", "* * * * *", "report", "ops")
    clock.advance(40)

    await finished(app, f"tick.{FIRST}")


async def test_a_slot_started_already_is_not_run_again(
    app: Resonate, clock: FakeClock, runs: collections.Counter[str]
) -> None:
    await app.schedules.create("tick", "* * * * *", "report", "ops")
    await app.run(f"tick.{FIRST}", "report", "ops")

    clock.advance(40)
    await eventually(
        lambda: _moved(app, "tick", FIRST + MINUTE), "the schedule to move to its next slot"
    )

    assert runs == {f"tick.{FIRST}": 1}


async def _moved(app: Resonate, id: str, next_run_at: int) -> bool:
    return (await app.schedules.get(id)).next_run_at == at(next_run_at)


async def test_each_firing_runs_the_newest_registered_version(
    app: Resonate, clock: FakeClock, runs: collections.Counter[str]
) -> None:
    await app.schedules.create("tick", "* * * * *", "report", "ops")

    async def report_v2(ctx: Context, team: str, *, verbose: bool = False) -> str:
        return f"v2 report for {team}"

    app.register(report_v2, name="report", version=2)
    clock.advance(40)
    await finished(app, f"tick.{FIRST}")

    assert await (await app.get(f"tick.{FIRST}")).result() == "v2 report for ops"
    assert runs == {}


# -- restarts -------------------------------------------------------------------------------


async def test_across_a_restart_no_slot_runs_twice(
    tmp_path: Path, clock: FakeClock, report: Report, runs: collections.Counter[str]
) -> None:
    async with reporting_app(clock, report, sqlite_url(tmp_path)) as app:
        await app.schedules.create("tick", "* * * * *", "report", "ops")
        clock.advance(40)
        await finished(app, f"tick.{FIRST}")

    async with reporting_app(clock, report, sqlite_url(tmp_path)) as app:
        # Creating it again on start-up, as an app would, keeps the schedule as it was.
        info = await app.schedules.create("tick", "* * * * *", "report", "ops")
        assert (info.last_run_at, info.next_run_at) == (at(FIRST), at(FIRST + MINUTE))
        clock.advance(60)
        await finished(app, f"tick.{FIRST + MINUTE}")
        assert await started(app, "tick.*") == [f"tick.{FIRST}", f"tick.{FIRST + MINUTE}"]

    assert runs == {f"tick.{FIRST}": 1, f"tick.{FIRST + MINUTE}": 1}


async def test_after_downtime_exactly_one_missed_slot_runs(
    tmp_path: Path, clock: FakeClock, report: Report, runs: collections.Counter[str]
) -> None:
    async with reporting_app(clock, report, sqlite_url(tmp_path)) as app:
        await app.schedules.create("tick", "* * * * *", "report", "ops")

    clock.advance(10 * 60)  # down for ten minutes: ten slots missed
    latest_missed = FIRST + 9 * MINUTE

    async with reporting_app(clock, report, sqlite_url(tmp_path)) as app:
        await finished(app, f"tick.{latest_missed}")
        # The firing and the move to the next slot are one write: nothing more is due.
        info = await app.schedules.get("tick")
        assert (info.last_run_at, info.next_run_at) == (at(latest_missed), at(FIRST + 10 * MINUTE))
        assert await started(app, "tick.*") == [f"tick.{latest_missed}"]

    assert runs == {f"tick.{latest_missed}": 1}


async def test_a_slot_whose_function_is_not_registered_waits_for_a_process_that_has_it(
    tmp_path: Path, clock: FakeClock, report: Report, runs: collections.Counter[str]
) -> None:
    async with reporting_app(clock, report, sqlite_url(tmp_path)) as app:
        await app.schedules.create("tick", "* * * * *", "report", "ops")

    async with Resonate(sqlite_url(tmp_path), clock=clock) as app:  # without the function
        clock.advance(40)
        await eventually(lambda: _exists(app, f"tick.{FIRST}"), "the slot's invocation")
        assert (await app.promises.get(f"tick.{FIRST}")).pending

    async with reporting_app(clock, report, sqlite_url(tmp_path)) as app:
        await finished(app, f"tick.{FIRST}")

    assert runs == {f"tick.{FIRST}": 1}


# -- the API --------------------------------------------------------------------------------


async def test_create_again_with_the_same_call_returns_the_existing_schedule(
    app: Resonate, clock: FakeClock
) -> None:
    first = await app.schedules.create("tick", "* * * * *", "report", "ops")
    clock.advance(5)

    again = await app.schedules.create("tick", " *  * * * * ", "report", "ops")

    assert again == first


@pytest.mark.parametrize(
    ("cron", "args", "conflict"),
    [
        ("*/5 * * * *", ("ops",), "cron"),
        ("* * * * *", ("sales",), "other arguments"),
    ],
)
async def test_create_again_with_another_call_raises_conflict(
    app: Resonate, cron: str, args: tuple[str, ...], conflict: str
) -> None:
    await app.schedules.create("tick", "* * * * *", "report", "ops")

    with pytest.raises(ScheduleConflictError, match=conflict) as raised:
        await app.schedules.create("tick", cron, "report", *args)

    assert "'tick'" in str(raised.value)


async def test_create_again_with_another_function_raises_conflict(app: Resonate) -> None:
    async def other(ctx: Context, team: str) -> None:
        return None

    app.register(other, name="other")
    await app.schedules.create("tick", "* * * * *", "report", "ops")

    with pytest.raises(ScheduleConflictError, match="'report'"):
        await app.schedules.create("tick", "* * * * *", "other", "ops")


@pytest.mark.parametrize(
    "cron", ["* * * *", "* * * * * * *", "61 * * * *", "every minute", "0 0 30 2 *"]
)
async def test_a_bad_cron_expression_is_refused_naming_the_schedule_and_the_expression(
    app: Resonate, cron: str
) -> None:
    with pytest.raises(ValueError, match="cron expression") as refused:
        await app.schedules.create("tick", cron, "report", "ops")

    assert "'tick'" in str(refused.value)
    assert repr(cron) in str(refused.value)
    assert await app.schedules.search() == []


@pytest.mark.parametrize("id", ["", "a:b", "x" * 481])
async def test_a_bad_schedule_id_is_refused(app: Resonate, id: str) -> None:
    with pytest.raises(ValueError, match="schedule id"):
        await app.schedules.create(id, "* * * * *", "report", "ops")


async def test_an_unknown_function_is_refused(app: Resonate) -> None:
    with pytest.raises(UnknownFunctionError, match="missing"):
        await app.schedules.create("tick", "* * * * *", "missing")


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1,), {}), (("ops", "extra"), {}), (("ops",), {"verbose": "very"})],
)
async def test_arguments_that_do_not_fit_are_refused(
    app: Resonate, args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    with pytest.raises(SerializationError, match="report"):
        await app.schedules.create("tick", "* * * * *", "report", *args, **kwargs)

    assert await app.schedules.search() == []


async def test_search_lists_schedules_by_id(app: Resonate) -> None:
    for id in ("report-b", "report-a", "cleanup"):
        await app.schedules.create(id, "0 3 * * *", "report", "ops")

    assert [s.id for s in await app.schedules.search()] == ["cleanup", "report-a", "report-b"]
    assert [s.id for s in await app.schedules.search("report-*")] == ["report-a", "report-b"]
    assert [s.id for s in await app.schedules.search(limit=1)] == ["cleanup"]
    with pytest.raises(ValueError, match="limit"):
        await app.schedules.search(limit=0)
