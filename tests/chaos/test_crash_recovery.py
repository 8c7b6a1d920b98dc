"""Workflows on a SQLite file survive SIGKILL of the process that runs them.

A worker process (``crash_worker.py``) runs 50 workflows of 5 steps; the test kills it with
SIGKILL at random moments (during startup, in the middle of steps, near the end, during the
recovery that follows a restart) and restarts it until it finishes. Then:

* every workflow's result is the one its input determines;
* every step's side effect happened once, except in processes that were killed: for each
  (workflow, step) the effect lines are zero or more runs in killed processes (at most one
  per process) followed by exactly one run, the one whose result was recorded;
* in a fresh process, ``app.run`` with the same id and arguments returns the stored result
  and runs nothing.

The random choices come from one seed, printed in every failure; set
``DAWAIT_CHAOS_SEED`` to replay a run's kill plan.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos import crash_worker
from tests.polling import eventually_sync

WORKER = Path(crash_worker.__file__)
COUNT = 50
PAIRS = COUNT * crash_worker.STEPS
POLL = 0.001
WAIT_WORK = 10.0
"""Seconds a worker may take to show the progress a kill waits for."""
WAIT_EXIT = 20.0
"""Seconds a worker may take to finish (or to die once killed)."""
CLEAN_ATTEMPTS = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Effect:
    line: int
    wf: str
    step: int
    pid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Kill:
    """When to kill a worker: ``delay`` seconds after it has started, or after it is open
    (``after_ready``), or after it has written ``after_lines`` effect lines, or after every
    step has started at least once (``after_all_started``)."""

    name: str
    delay: float
    after_ready: bool = False
    after_lines: int = 0
    after_all_started: bool = False


@dataclass(slots=True, kw_only=True)
class Attempt:
    """One worker process."""

    mode: str
    process: subprocess.Popen[bytes]
    out: Path
    err: Path
    plan: Kill | None = None
    killed: bool = False
    lines_at_kill: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def describe(self) -> str:
        what = self.mode if self.plan is None else f"{self.mode}, kill {self.plan}"
        fate = f"SIGKILLed after {self.lines_at_kill} lines" if self.killed else "not killed"
        return f"pid {self.pid} ({what}): {fate}, exit {self.process.returncode}"


@dataclass(slots=True, kw_only=True)
class Chaos:
    """Runs the worker against one database and effects file, and keeps the record."""

    dir: Path
    seed: int
    rng: random.Random = field(init=False)
    attempts: list[Attempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    @property
    def db(self) -> Path:
        return self.dir / "app.db"

    @property
    def effects_file(self) -> Path:
        return self.dir / "effects.log"

    def effects(self, *, settled: bool = True) -> list[Effect]:
        """The effect lines; while a worker runs (not ``settled``) the last may be partial."""
        try:
            text = self.effects_file.read_text()
        except FileNotFoundError:
            return []
        if not settled:
            text = text[: text.rfind("\n") + 1]
        effects = []
        for number, line in enumerate(text.splitlines(keepends=True)):
            fields = line.split()
            torn = len(line) != crash_worker.RECORD or not line.endswith("\n") or len(fields) != 3
            assert not torn, self.report(f"torn effect line {number}: {line!r}")
            effects.append(
                Effect(line=number, wf=fields[0], step=int(fields[1]), pid=int(fields[2]))
            )
        return effects

    def lines_of(self, pid: int) -> int:
        return sum(effect.pid == pid for effect in self.effects(settled=False))

    def unseen_pairs(self) -> int:
        seen = {(effect.wf, effect.step) for effect in self.effects(settled=False)}
        return PAIRS - len(seen)

    def spawn(self, mode: str, *, plan: Kill | None = None, ready: Path | None = None) -> Attempt:
        n = len(self.attempts)
        command = [sys.executable, str(WORKER), mode, str(self.db), str(self.effects_file)]
        command += ["--count", str(COUNT)]
        if ready is not None:
            command += ["--ready", str(ready)]
        out, err = self.dir / f"out-{n}.txt", self.dir / f"err-{n}.txt"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(command, stdout=stdout, stderr=stderr, cwd=self.dir)
        attempt = Attempt(mode=mode, process=process, out=out, err=err, plan=plan)
        self.attempts.append(attempt)
        return attempt

    def stop(self, attempt: Attempt, problem: str) -> AssertionError:
        """Kill a worker that went wrong: the error to raise."""
        attempt.process.kill()
        attempt.process.wait(timeout=WAIT_EXIT)
        return AssertionError(self.report(f"worker {attempt.pid}: {problem}"))

    def finish(self, attempt: Attempt) -> int:
        try:
            return attempt.process.wait(timeout=WAIT_EXIT)
        except subprocess.TimeoutExpired:
            raise self.stop(attempt, f"still running after {WAIT_EXIT} s") from None

    def wait_until(self, attempt: Attempt, what: str, done: Callable[[], bool]) -> None:
        """Poll ``done()`` until it holds or the worker exits (it finished before the kill);
        a traceback from the worker fails at once (one that hangs would never get there)."""

        def ended_or_done() -> bool:
            if attempt.process.poll() is not None or done():
                return True
            if "Traceback" in attempt.stderr():
                raise self.stop(attempt, f"traceback while waiting for {what}")
            return False

        eventually_sync(
            ended_or_done,
            what,
            within=WAIT_WORK,
            every=POLL,
            failure=lambda message: self.stop(attempt, message),
        )

    def run_and_kill(self, plan: Kill) -> Attempt:
        """Start a worker and SIGKILL it as ``plan`` says (unless it finishes first)."""
        ready = self.dir / f"ready-{len(self.attempts)}"
        attempt = self.spawn("run", plan=plan, ready=ready)
        if plan.after_ready:
            self.wait_until(attempt, "ready file", ready.exists)
        if plan.after_lines:
            self.wait_until(
                attempt,
                f"{plan.after_lines} effect lines",
                lambda: self.lines_of(attempt.pid) >= plan.after_lines,
            )
        if plan.after_all_started:
            self.wait_until(attempt, "run of every step", lambda: self.unseen_pairs() == 0)
        time.sleep(plan.delay)
        if attempt.process.poll() is None:
            attempt.process.send_signal(signal.SIGKILL)
            attempt.killed = True
            attempt.lines_at_kill = self.lines_of(attempt.pid)
        returncode = self.finish(attempt)
        if attempt.killed:
            assert returncode == -signal.SIGKILL, self.report(f"kill of {attempt.pid} missed")
        else:
            assert returncode == 0, self.report(f"worker {attempt.pid} failed")
        return attempt

    def run_to_end(self) -> dict[str, list[Any]]:
        """Restart the worker without killing it until it exits 0: its results."""
        last = self.attempts[-1] if self.attempts else None
        for _ in range(CLEAN_ATTEMPTS):
            if last is not None and last.process.returncode == 0:
                break
            last = self.spawn("run")
            self.finish(last)
        assert last is not None, "no attempt"
        assert last.process.returncode == 0, self.report(
            f"no clean run in {CLEAN_ATTEMPTS} attempts"
        )
        results: dict[str, list[Any]] = json.loads(last.stdout())["results"]
        return results

    def mid_run_kill(self, name: str, fraction: tuple[float, float], delay: float) -> Kill:
        """A kill once the next worker has written a random share of the effect lines
        still to come (at least one), then up to ``delay`` seconds more."""
        remaining = max(1, self.unseen_pairs())
        after = max(1, round(remaining * self.rng.uniform(*fraction)))
        return Kill(name=name, after_lines=after, delay=self.rng.uniform(0, delay))

    def report(self, problem: str) -> str:
        size = self.effects_file.stat().st_size if self.effects_file.exists() else 0
        lines = [
            f"{problem} (DAWAIT_CHAOS_SEED={self.seed}, files in {self.dir}): "
            f"{size / crash_worker.RECORD:g} effect lines for {PAIRS} steps"
        ]
        for attempt in self.attempts:
            lines.append(f"  {attempt.describe()}")
            if stderr := attempt.stderr().strip():
                lines.append("    stderr: " + stderr[-3000:].replace("\n", "\n    "))
        return "\n".join(lines)

    def check(self, results: dict[str, list[Any]]) -> None:
        """Results are right; each step ran once plus at most once per process killed
        while it ran; the recorded run is the last one."""
        killed = {attempt.pid for attempt in self.attempts if attempt.killed}
        workers = {attempt.pid for attempt in self.attempts if attempt.mode == "run"}
        assert sorted(results) == sorted(f"wf-{i}" for i in range(COUNT)), self.report(
            "wrong workflow ids"
        )
        wrong = {
            wf: results[wf]
            for i in range(COUNT)
            if results[(wf := f"wf-{i}")][0] != crash_worker.expected_value(i)
        }
        assert not wrong, self.report(f"wrong results: {wrong}")

        runs: dict[tuple[str, int], list[Effect]] = defaultdict(list)
        for effect in self.effects():
            runs[(effect.wf, effect.step)].append(effect)
        expected_pairs = {
            (f"wf-{i}", step) for i in range(COUNT) for step in range(crash_worker.STEPS)
        }
        assert set(runs) == expected_pairs, self.report(
            f"effects of unknown steps {sorted(set(runs) - expected_pairs)}, "
            f"missing effects of {sorted(expected_pairs - set(runs))}"
        )
        problems = []
        for (wf, step), effects in sorted(runs.items()):
            pids = [effect.pid for effect in effects]
            recorded = results[wf][1][step]
            where = f"{wf} step {step}: runs in pids {pids}, recorded run in pid {recorded}"
            if pids[-1] != recorded:
                problems.append(f"{where}: the recorded run is not the last one")
            if len(set(pids)) != len(pids):
                problems.append(f"{where}: ran twice in one process")
            if not set(pids[:-1]) <= killed:
                problems.append(f"{where}: ran again after a process that was not killed")
            if not set(pids) <= workers:
                problems.append(f"{where}: ran in a process that is not a worker")
        for i in range(COUNT):
            wf = f"wf-{i}"
            for step in range(1, crash_worker.STEPS):
                before, after = runs[(wf, step - 1)], runs[(wf, step)]
                if after[0].line < before[-1].line:
                    problems.append(
                        f"{wf}: step {step} started (line {after[0].line}) before step "
                        f"{step - 1}'s last run (line {before[-1].line})"
                    )
        assert not problems, self.report("\n".join(["effects are wrong:", *problems]))

    def check_rerun_runs_nothing(self, results: dict[str, list[Any]]) -> None:
        """A fresh process's ``app.run`` of every finished id: the stored results, no step."""
        effects_before = self.effects_file.read_bytes()
        attempt = self.spawn("verify")
        assert self.finish(attempt) == 0, self.report("verify run failed")
        assert json.loads(attempt.stdout())["results"] == results, self.report(
            "app.run of a finished id returned another result"
        )
        assert self.effects_file.read_bytes() == effects_before, self.report(
            "app.run of a finished id ran steps again"
        )


def chaos_in(tmp_path: Path) -> Chaos:
    seed = int(os.environ.get("DAWAIT_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    return Chaos(dir=tmp_path, seed=seed)


def landed(attempts: list[Attempt]) -> int:
    return sum(attempt.killed for attempt in attempts)


def test_workflows_survive_sigkill_at_random_moments(tmp_path: Path) -> None:
    chaos = chaos_in(tmp_path)
    # before the worker has done anything: Python is starting or the store is opening
    kills = [chaos.run_and_kill(Kill(name="startup", delay=chaos.rng.uniform(0.0, 0.2)))]
    for n in range(chaos.rng.randint(3, 4)):
        kills.append(chaos.run_and_kill(chaos.mid_run_kill(f"mid-{n}", (0.1, 0.5), 0.005)))
    # the last steps are running, some workflows have finished
    end = Kill(name="near-end", after_all_started=True, delay=chaos.rng.uniform(0, 0.01))
    kills.append(chaos.run_and_kill(end))

    results = chaos.run_to_end()

    assert landed(kills) >= 4, chaos.report("fewer than 4 kills landed")
    chaos.check(results)
    chaos.check_rerun_runs_nothing(results)
    print(chaos.report("passed"))


def test_kill_during_startup_recovery_still_converges(tmp_path: Path) -> None:
    chaos = chaos_in(tmp_path)
    first = chaos.run_and_kill(chaos.mid_run_kill("mid-run", (0.2, 0.6), 0.005))
    kills = [first]
    for n in range(3):
        # the app is open and recovering what the last worker left pending
        kills.append(
            chaos.run_and_kill(
                Kill(name=f"recovery-{n}", after_ready=True, delay=chaos.rng.uniform(0, 0.03))
            )
        )
    # once recovery has replayed far enough to re-run an interrupted step
    kills.append(chaos.run_and_kill(Kill(name="recovery-rerun", after_lines=1, delay=0.0)))

    results = chaos.run_to_end()

    assert first.killed, chaos.report("the first kill did not land")
    assert landed(kills) == len(kills), chaos.report("a kill during recovery did not land")
    chaos.check(results)
    chaos.check_rerun_runs_nothing(results)
    print(chaos.report("passed"))
