"""The examples under ``examples/`` do what their docstrings promise, on a real SQLite file.

Each example's ``main`` is imported and run against a store in ``tmp_path``; the last test
runs every example as a user would (``python examples/<name>.py``) in a fresh directory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path

import pytest

from dawait import Resonate
from dawait.errors import InvocationConflictError, PromiseAlreadySettledError
from dawait.testing import FakeClock
from examples import (
    approval,
    idempotent_charge,
    leased_queue,
    order_processing,
    reminder,
    saga,
)

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_NAMES = sorted(
    path.stem
    for path in EXAMPLES_DIR.glob("*.py")
    if not path.stem.startswith("_") and path.stem != "app"  # app.py is what `serve` runs
)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def at(clock: FakeClock) -> dt.datetime:
    return dt.datetime.fromtimestamp(clock.now() / 1000, dt.UTC)


# -- order_processing --------------------------------------------------------------------


async def test_order_receipt_has_typed_parts_and_each_step_runs_once(tmp_path: Path) -> None:
    store = sqlite_url(tmp_path / "orders.db")

    receipt = await order_processing.main(store)

    assert isinstance(receipt, order_processing.Receipt)
    assert receipt.payment == order_processing.Payment(charge_id="ch_order-42", amount_cents=5797)
    assert receipt.reservation == order_processing.Reservation(
        reservation_id="res_order-42", skus=("lamp", "bulb")
    )
    assert isinstance(receipt.shipment, order_processing.Shipment)
    assert dict(order_processing.calls) == {"charge_card": 1, "reserve_items": 1, "ship_order": 1}


async def test_order_rerun_on_the_same_store_returns_the_stored_receipt(tmp_path: Path) -> None:
    store = sqlite_url(tmp_path / "orders.db")
    first = await order_processing.main(store)

    second = await order_processing.main(store)  # a new app: as after a restart

    assert second == first
    assert isinstance(second.reservation, order_processing.Reservation)
    assert not order_processing.calls


# -- saga ----------------------------------------------------------------------------------


async def test_saga_refunds_once_and_fails_with_the_domain_error(tmp_path: Path) -> None:
    outcome = await saga.main(sqlite_url(tmp_path / "saga.db"))

    assert outcome.confirmed == saga.Confirmation(
        order_id="order-1", charge_id="ch_order-1", reservation_id="res_order-1"
    )
    assert isinstance(outcome.failure, saga.OutOfStock)
    assert outcome.failure.sku == "chair"
    assert str(outcome.failure) == "chair is out of stock"
    assert isinstance(outcome.failure_again, saga.OutOfStock)
    assert outcome.ledger == [
        "charge order-1 3999",
        "charge order-2 19600",
        "refund ch_order-2 19600",
    ]
    # OutOfStock is non-retryable: the reservation was tried once, not retried with backoff.
    assert outcome.reserve_attempts == {"order-1": 1, "order-2": 1}


async def test_saga_failure_is_stored_across_a_restart(tmp_path: Path) -> None:
    store = sqlite_url(tmp_path / "saga.db")
    await saga.main(store)

    app = Resonate(store=store)
    app.register(saga.place_order)
    async with app:
        handle = await app.get("order-2")
        with pytest.raises(saga.OutOfStock) as failure:
            await handle.result()
        info = await app.promises.get("order-2")

    assert failure.value.sku == "chair"
    assert info.state == "rejected"
    assert saga.ledger == ["charge order-1 3999", "charge order-2 19600", "refund ch_order-2 19600"]


# -- leased_queue --------------------------------------------------------------------------


async def test_queue_runs_every_job_once_with_bounded_concurrency(tmp_path: Path) -> None:
    report = await leased_queue.main(sqlite_url(tmp_path / "queue.db"), jobs=12, concurrency=4)

    expected = [f"job-{n:03}" for n in range(1, 13)]
    assert sorted(report.results) == expected
    assert report.results["job-007"] == leased_queue.Thumbnail(
        job_id="job-007", url="https://img.example.com/7.png?w=200"
    )
    # Three jobs were submitted twice and one was asked for again: still one render each.
    assert report.renders == dict.fromkeys(expected, 1)
    assert report.resubmitted == report.results["job-002"]
    assert 1 <= report.peak_concurrency <= 4


async def test_queue_jobs_left_pending_by_a_restart_finish_on_the_next_open(
    tmp_path: Path,
) -> None:
    store = sqlite_url(tmp_path / "queue.db")
    leased_queue.renderer.reset()
    jobs = [
        leased_queue.Job(id=f"job-{n}", image_url=f"https://img.example.com/{n}.png", width=64)
        for n in range(1, 9)
    ]

    app = Resonate(store=store, max_active=2)
    app.register(leased_queue.process_job)
    async with app:
        handles = [await app.start(job.id, leased_queue.process_job, job) for job in jobs]
        first = await handles[0].result()
    # The app closed with most jobs unfinished; a new one resumes them on open.
    app = Resonate(store=store, max_active=2)
    app.register(leased_queue.process_job)
    async with app:
        results = [await (await app.get(job.id)).result() for job in jobs]

    assert results[0] == first
    assert [r.job_id for r in results] == [job.id for job in jobs]
    assert leased_queue.renderer.renders["job-1"] == 1
    assert set(leased_queue.renderer.renders) == {job.id for job in jobs}


async def test_queue_rejects_a_job_id_reused_for_another_job(tmp_path: Path) -> None:
    job = leased_queue.Job(id="job-1", image_url="https://img.example.com/1.png", width=64)
    other = job.model_copy(update={"width": 128})
    app = Resonate(store=sqlite_url(tmp_path / "queue.db"))
    app.register(leased_queue.process_job)
    async with app:
        await app.run(job.id, leased_queue.process_job, job)
        with pytest.raises(InvocationConflictError, match="job-1"):
            await app.start(job.id, leased_queue.process_job, other)


async def test_queue_resumes_when_the_same_app_is_reopened(tmp_path: Path) -> None:
    leased_queue.renderer.reset()
    jobs = [
        leased_queue.Job(id=f"job-{n}", image_url=f"https://img.example.com/{n}.png", width=64)
        for n in range(1, 9)
    ]
    app = Resonate(store=sqlite_url(tmp_path / "queue.db"), max_active=2)
    app.register(leased_queue.process_job)
    async with app:
        handles = [await app.start(job.id, leased_queue.process_job, job) for job in jobs]
        await handles[0].result()
    async with app, asyncio.timeout(2):  # reopened, as after a maintenance pause
        results = [await (await app.get(job.id)).result() for job in jobs]

    assert [r.job_id for r in results] == [job.id for job in jobs]


# -- reminder ------------------------------------------------------------------------------


async def test_reminder_survives_a_restart_and_fires_when_due(tmp_path: Path) -> None:
    clock = FakeClock()
    start = at(clock)

    report = await reminder.main(sqlite_url(tmp_path / "reminder.db"), clock)

    assert not report.done_before_due
    assert report.delivery == reminder.Delivery(
        reminder_id="reminder-7", user="ada", sent_at=start + dt.timedelta(days=1)
    )
    assert report.messages == {
        "reminder-7/scheduled": "to ada: I will remind you in 24 hours: 'water the plants'",
        "reminder-7/reminder": "to ada: water the plants",
    }


async def test_reminder_fires_only_after_the_clock_jumps(tmp_path: Path) -> None:
    clock = FakeClock()
    start = at(clock)
    reminder.outbox.reset()
    note = reminder.Reminder(id="r-1", user="bob", text="stretch", delay=dt.timedelta(hours=2))

    async with reminder.create_app(sqlite_url(tmp_path / "reminder.db"), clock) as app:
        handle = await app.start(note.id, reminder.remind, note)
        await reminder.outbox.wait_for("r-1/scheduled")
        [timer] = await app.promises.search("r-1:*", state="pending")
        clock.advance(2 * 3600 - 1)
        not_yet = await handle.done()
        timer_then = await app.promises.get(timer.id)
        clock.advance(1)
        delivery = await handle.result()

    assert timer.timeout_at == start + dt.timedelta(hours=2)
    assert not not_yet
    assert timer_then.state == "pending"
    assert delivery.sent_at == start + dt.timedelta(hours=2)
    assert reminder.outbox.messages["r-1/reminder"] == "to bob: stretch"


# -- idempotent_charge ---------------------------------------------------------------------


async def test_charge_id_charges_once_despite_a_lost_response(tmp_path: Path) -> None:
    report = await idempotent_charge.main(sqlite_url(tmp_path / "charge.db"))

    assert report.first == idempotent_charge.Charge(
        id="ch_1", customer="cus_ada", amount_cents=2500
    )
    assert report.second == report.first
    assert report.concurrent == [report.first] * 3
    assert report.charges_made == 1
    # The first request charged the card but lost its response; the retry reused the key.
    assert report.api_requests == 2
    assert list(idempotent_charge.payments.charges) == ["charge-123"]


async def test_charge_rerun_after_restart_makes_no_request(tmp_path: Path) -> None:
    store = sqlite_url(tmp_path / "charge.db")
    first = await idempotent_charge.main(store)

    again = await idempotent_charge.main(store)

    assert again.first == first.first
    assert again.api_requests == 0
    assert again.charges_made == 0


# -- approval ------------------------------------------------------------------------------


async def test_approval_resolve_pays_and_reject_notifies(tmp_path: Path) -> None:
    decisions = await approval.main(sqlite_url(tmp_path / "approval.db"))

    assert decisions == [
        approval.Decision(expense_id="expense-1", approved=True, note="approved by grace"),
        approval.Decision(
            expense_id="expense-2", approved=False, note="rejected: over the travel budget"
        ),
    ]
    assert approval.inbox.payouts == ["expense-1"]
    assert approval.inbox.notices == ["expense-2: rejected: over the travel budget"]


async def test_approval_can_be_given_after_a_restart(tmp_path: Path) -> None:
    store = sqlite_url(tmp_path / "approval.db")
    approval.inbox.reset()
    expense = approval.Expense(id="exp-9", employee="ada", description="desk", amount_cents=30000)

    async with approval.create_app(store) as app:
        await app.start(expense.id, approval.approve_expense, expense)
        approval_id = await approval.inbox.approval_id_for(expense.id)
    async with approval.create_app(store) as app:
        await app.promises.resolve(approval_id, {"approved": True, "by": "grace"})
        decision = await (await app.get(expense.id)).result()

    assert approval_id == "exp-9:1"
    assert decision == approval.Decision(
        expense_id="exp-9", approved=True, note="approved by grace"
    )
    assert approval.inbox.payouts == ["exp-9"]


async def test_approval_times_out_when_nobody_answers(tmp_path: Path) -> None:
    clock = FakeClock()
    approval.inbox.reset()
    expense = approval.Expense(id="exp-3", employee="bob", description="chair", amount_cents=9000)

    async with approval.create_app(sqlite_url(tmp_path / "approval.db"), clock) as app:
        handle = await app.start(expense.id, approval.approve_expense, expense)
        approval_id = await approval.inbox.approval_id_for(expense.id)
        clock.advance(approval.APPROVAL_WINDOW.total_seconds())
        decision = await handle.result()
        with pytest.raises(PromiseAlreadySettledError):
            await app.promises.resolve(approval_id, {"approved": True, "by": "late"})

    assert decision == approval.Decision(
        expense_id="exp-3", approved=False, note="no answer within 3 days"
    )
    assert approval.inbox.payouts == []
    assert approval.inbox.notices == ["exp-3: no answer within 3 days"]


# -- every example, as a user runs it ------------------------------------------------------


def test_every_example_is_tested_here() -> None:
    assert (
        sorted(
            module.__name__.rsplit(".", 1)[-1]
            for module in (
                approval,
                idempotent_charge,
                leased_queue,
                order_processing,
                reminder,
                saga,
            )
        )
        == EXAMPLE_NAMES
    )


async def test_examples_run_as_scripts_twice_on_the_same_store(tmp_path: Path) -> None:
    async def run(name: str) -> tuple[str, int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLES_DIR / f"{name}.py"),
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            stdout, stderr = await process.communicate()
        assert process.returncode is not None
        return name, process.returncode, stdout.decode(), stderr.decode()

    for attempt in ("first run", "second run, same store"):
        outcomes = await asyncio.gather(*(run(name) for name in EXAMPLE_NAMES))
        failed = [
            f"{name} ({attempt}) exited {code}\n{out}\n{err}"
            for name, code, out, err in outcomes
            if code != 0 or "Traceback" in err
        ]
        assert not failed, "\n\n".join(failed)
        assert all(out.strip() for _, _, out, _ in outcomes)
    assert sorted(p.name for p in (tmp_path / ".dawait").glob("*.db")) == [
        f"{name}.db" for name in EXAMPLE_NAMES
    ]


async def test_the_served_example_app_registers_the_examples_and_greets() -> None:
    from examples.app import app

    assert set(app.registered) >= {
        "approve_expense",
        "charge",
        "greet",
        "place_order",
        "process_job",
        "process_order",
    }
    app.use_store(None)
    async with app:
        assert await app.run("hello-test", "greet", "ada") == "hello, ADA"
