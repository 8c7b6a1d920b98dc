"""When a schedule fires: cron slots, the slot to fire after downtime, and the next one."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dawait.core._schedule import Cron, ScheduleRecord, due_firing, slot_invocation_id

MINUTE = 60_000


def ms(*when: int) -> int:
    """Epoch ms of a UTC time given as year, month, day[, hour, minute, second]."""
    return int(dt.datetime(*when, tzinfo=dt.UTC).timestamp() * 1000)


def schedule(cron: str, next_run_at: int | None, id: str = "s") -> ScheduleRecord:
    return ScheduleRecord(
        id=id,
        cron=cron,
        func="f",
        version=1,
        args='{"args":[],"kwargs":{}}',
        next_run_at=next_run_at,
        created_at=0,
    )


EXPRESSIONS = [
    "* * * * *",
    "*/5 * * * *",
    "7 * * * *",
    "0 9 * * MON-FRI",
    "30 2 1 * *",
    "0 0 29 2 *",
    "15,45 8-18 * JAN,JUL SUN",
    "0 0 L * *",
]

times = st.integers(min_value=ms(2000, 1, 1), max_value=ms(2100, 1, 1))


# -- Cron -------------------------------------------------------------------------------------


def test_every_minute_slots_are_the_whole_minutes() -> None:
    cron = Cron("* * * * *")
    start = ms(2024, 5, 1, 12, 0)

    assert cron.next_after(start) == start + MINUTE
    assert cron.next_after(start - 1) == start
    assert cron.next_after(start + 59_999) == start + MINUTE
    assert cron.latest_at_or_before(start) == start
    assert cron.latest_at_or_before(start + 59_999) == start
    assert cron.latest_at_or_before(start - 1) == start - MINUTE


def test_slots_are_evaluated_in_utc() -> None:
    cron = Cron("0 9 * * MON-FRI")

    # Friday 2024-05-03 09:00 UTC is a slot; the next is Monday 09:00 UTC.
    assert cron.next_after(ms(2024, 5, 3, 8, 59)) == ms(2024, 5, 3, 9, 0)
    assert cron.next_after(ms(2024, 5, 3, 9, 0)) == ms(2024, 5, 6, 9, 0)
    assert cron.latest_at_or_before(ms(2024, 5, 5, 23, 0)) == ms(2024, 5, 3, 9, 0)


def test_a_leap_day_schedule_waits_for_the_next_leap_year() -> None:
    assert Cron("0 0 29 2 *").next_after(ms(2024, 3, 1)) == ms(2028, 2, 29)


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "* * * *",
        # seconds: not standard cron
        "60 * * * *",
        "* 24 * * *",
        "*/0 * * * *",
        "a b c d e",
        "@daily",
        "0 0 30 2 *",
    ],
)
def test_a_bad_expression_is_refused_with_its_text(expression: str) -> None:
    with pytest.raises(ValueError, match="cron expression") as refused:
        Cron(expression)

    assert repr(expression) in str(refused.value)


@given(st.sampled_from(EXPRESSIONS), times)
def test_next_after_is_the_first_slot_after(expression: str, at: int) -> None:
    cron = Cron(expression)

    following = cron.next_after(at)

    assert following is not None
    assert following > at
    assert following % MINUTE == 0
    # It is a slot, and no slot lies between ``at`` and it.
    assert cron.latest_at_or_before(following) == following
    before = cron.latest_at_or_before(following - 1)
    assert before is None or before <= at


@given(st.sampled_from(EXPRESSIONS), times)
def test_latest_at_or_before_is_the_last_slot_up_to(expression: str, at: int) -> None:
    cron = Cron(expression)

    latest = cron.latest_at_or_before(at)

    assert latest is not None
    assert latest <= at
    assert cron.next_after(latest) == cron.next_after(at)


# -- due_firing -------------------------------------------------------------------------------


def test_a_schedule_whose_slot_has_not_come_does_not_fire() -> None:
    start = ms(2024, 5, 1, 12, 0)

    assert due_firing(schedule("* * * * *", start), now=start - 1) is None
    assert due_firing(schedule("* * * * *", None), now=start) is None


def test_a_due_schedule_fires_its_slot_and_moves_to_the_next() -> None:
    slot = ms(2024, 5, 1, 12, 0)

    firing = due_firing(schedule("* * * * *", slot, id="report"), now=slot + 250)

    assert firing is not None
    assert firing.slot == slot
    assert firing.invocation_id == f"report.{slot}"
    assert firing.next_run_at == slot + MINUTE


def test_after_downtime_only_the_latest_missed_slot_fires() -> None:
    missed = ms(2024, 5, 1, 12, 0)
    now = missed + 10 * MINUTE + 30_000

    firing = due_firing(schedule("* * * * *", missed), now=now)

    assert firing is not None
    assert firing.slot == missed + 10 * MINUTE
    assert firing.next_run_at == missed + 11 * MINUTE


@given(st.sampled_from(EXPRESSIONS), times, st.integers(min_value=0, max_value=10**10))
def test_a_firing_is_the_latest_slot_due_and_moves_past_now(
    expression: str, created: int, downtime: int
) -> None:
    cron = Cron(expression)
    next_run_at = cron.next_after(created)
    assert next_run_at is not None
    now = next_run_at + downtime

    firing = due_firing(schedule(expression, next_run_at), now=now)

    assert firing is not None
    assert next_run_at <= firing.slot <= now
    assert firing.slot == cron.latest_at_or_before(now)
    assert firing.next_run_at is not None
    assert firing.next_run_at > now
    # Fired again at the same ``now`` after moving on, it does nothing.
    assert due_firing(schedule(expression, firing.next_run_at), now=now) is None


def test_slot_invocation_ids_name_the_schedule_and_the_slot() -> None:
    assert slot_invocation_id("nightly-report", 1_700_000_040_000) == (
        "nightly-report.1700000040000"
    )


def test_a_leading_seconds_field_gives_second_slots() -> None:
    cron = Cron("*/5 * * * * *")
    start = 1_700_000_000_000  # a whole second
    first = cron.next_after(start)
    assert first is not None
    assert first % 5000 == 0
    assert cron.next_after(first) == first + 5000
