"""The explorer: run a scenario under a strategy, confirm, shrink and report failures.

Phases for every execution that fails:

1. *De-duplicate* by origin (violation class + the model site that raised it): each
   distinct failure is reported once; repeats are only counted.
2. *Confirm* by replaying the recorded schedule strictly, with tracing.  A failure
   that does not reproduce with the same origin is reported as nondeterminism
   (exit code 4) and never shrunk: something in the scenario depends on more than
   the schedule (wall clock, unseeded randomness, state leaking between executions).
3. *Shrink* (see :mod:`tdpmmu.explore.shrink`).
4. *Record* a traced strict replay of the shrunk schedule as a :class:`Failure`.

Exploration stops when the budget of schedules is spent, when the strategy has
nothing left (bounded DFS: every schedule within the bound was run), or -- if asked
-- at the first failure.  :class:`ExitReason` says which, in words.
"""

from __future__ import annotations

import traceback as tb_mod
from dataclasses import dataclass, field
from enum import Enum, IntEnum

from ..runtime import schedule as sched
from ..runtime.errors import (Deadlock, Livelock, ModelInternalError, ScheduleMismatch,
                              TdpmmuError, UsageError, Violation)
from ..runtime.execution import DEFAULT_MAX_STEPS, Execution, format_site
from ..runtime.strategies import DFS, Replay, make_strategy
from ..scenarios.registry import get_defect, get_scenario
from .failure import Failure
from .shrink import Shrinker


class ExitCode(IntEnum):
    #: nothing found
    OK = 0
    #: at least one violation found (and reproduced)
    VIOLATION = 1
    #: bad input: unknown scenario, malformed schedule, bad option, replay mismatch
    USAGE_ERROR = 2
    #: a bug in tdpmmu itself
    INTERNAL_ERROR = 3
    #: a failure did not reproduce on replay
    NONDETERMINISM = 4


class ExitReason(Enum):
    BUDGET = "ran the whole budget of schedules"
    EXHAUSTED = "explored every schedule within the bound"
    FIRST_FAILURE = "stopped at the first failure, as asked"
    CANCELLED = "stopped by its campaign (a job after the campaign's first failure)"


@dataclass
class ExploreResult:
    scenario: str
    params: dict
    defects: list
    strategy: str
    seed: int
    schedules: int
    executions: int = 0
    steps: int = 0
    failures: list = field(default_factory=list)
    #: origin key -> how many executions failed that way
    hits: dict = field(default_factory=dict)
    exit_reason: ExitReason = ExitReason.BUDGET
    #: index (1-based) of the first failing execution, or None
    first_failure_at: int | None = None
    #: racy-branch coverage: branch -> number of executions that reached it
    coverage: dict = field(default_factory=dict)
    #: the scenario's key branches no execution reached (the scenario is under-explored)
    under_explored: list = field(default_factory=list)

    @property
    def exhausted(self) -> bool:
        return self.exit_reason is ExitReason.EXHAUSTED

    @property
    def exit_code(self) -> ExitCode:
        if any(f.nondeterministic for f in self.failures):
            return ExitCode.NONDETERMINISM
        if self.failures:
            return ExitCode.VIOLATION
        return ExitCode.OK

    def to_dict(self) -> dict:
        return {
            "scenario": self.scenario, "params": self.params, "defects": self.defects,
            "strategy": self.strategy, "seed": self.seed, "schedules": self.schedules,
            "executions": self.executions, "steps": self.steps,
            "exit_reason": self.exit_reason.value, "exhausted": self.exhausted,
            "first_failure_at": self.first_failure_at,
            "coverage": dict(sorted(self.coverage.items())),
            "under_explored": list(self.under_explored),
            "exit_code": int(self.exit_code),
            "failures": [f.to_dict() for f in self.failures],
        }


# -- origins -----------------------------------------------------------------------

_PKG = format_site.__code__.co_filename.rsplit("/runtime/", 1)[0]
_INTERNAL = (_PKG + "/runtime/", _PKG + "/sync/", _PKG + "/explore/", _PKG + "/mmu/locking.py")


def _frames(v: BaseException):
    return tb_mod.extract_tb(v.__traceback__) if v.__traceback__ else []


def origin_of(v: Violation) -> tuple:
    """(class, site) identifying a failure; shrinking keeps it, reports de-duplicate by it."""
    if isinstance(v, Livelock):
        return (v.category, "step bound")
    if isinstance(v, Deadlock):
        return (v.category, "all tasks blocked")
    frames = _frames(v)
    if v.__cause__ is not None and v.__cause__.__traceback__ is not None:
        frames = _frames(v.__cause__)
    for fr in reversed(frames):
        if not fr.filename.startswith(_INTERNAL) and "/greenlet/" not in fr.filename:
            return (v.category, format_site((fr.filename, fr.lineno, fr.name)))
    return (v.category, "?")


def trimmed_traceback(v: BaseException) -> list[str]:
    """Model frames only, plus the checker frame they called into."""
    frames = _frames(v.__cause__ if v.__cause__ is not None else v)
    keep = []
    prev_model = False
    for fr in frames:
        internal = fr.filename.startswith(_INTERNAL) or "/greenlet/" in fr.filename
        if not internal or prev_model:
            keep.append(fr)     # model frames, and the checker frame model code called
        prev_model = not internal
    lines = []
    for fr in keep:
        lines.append(f'File "{format_site((fr.filename, fr.lineno, fr.name)).split(":")[0]}", '
                     f"line {fr.lineno}, in {fr.name}")
        if fr.line:
            lines.append(f"    {fr.line}")
    lines.append(f"{(v.category if isinstance(v, Violation) else type(v).__name__)}: {v}")
    return lines


# -- running one scenario ------------------------------------------------------------

class Runner:
    """A scenario bound to its parameters and defects: runs executions of it."""

    def __init__(self, scenario, params=None, defects=(), max_steps: int | None = None):
        self.scenario = get_scenario(scenario)
        for d in defects:
            get_defect(d)
        self.defects = list(defects)
        merged = {}
        for d in self.defects:          # a defect's parameters, where this scenario has them
            merged.update({k: v for k, v in get_defect(d).params.items()
                           if k in self.scenario.params})
        merged.update(params or {})
        self.params = self.scenario.resolve(merged)
        self.max_steps = max_steps or self.scenario.max_steps or DEFAULT_MAX_STEPS
        self.phash = sched.params_hash(self.scenario.name, self.params, self.defects)
        self._setup = self.scenario.setup(self.params)

    def run(self, strategy, tracing: bool = False, max_steps: int | None = None):
        ex = Execution(strategy, max_steps=min(max_steps or self.max_steps, self.max_steps),
                       tracing=tracing, defects=self.defects, params=self.params)
        r = ex.run(self._setup)
        strategy.end_execution(r.steps)
        if r.error is not None:
            raise r.error
        return r

    def replay(self, choices, strict: bool = True, tracing: bool = False,
               max_steps: int | None = None):
        strat = Replay(choices, strict=strict)
        strat.new_execution()
        r = self.run(strat, tracing=tracing, max_steps=max_steps)
        if strict and r.failure is None and strat.leftover():
            raise ScheduleMismatch(f"the execution finished after {r.steps} steps but the "
                                   f"schedule has {strat.leftover()} more choices")
        return r

    def encode(self, choices) -> str:
        return sched.encode(choices, self.phash)

    def decode(self, text: str) -> list[int]:
        phash, choices = sched.decode(text)
        if phash != self.phash:
            raise ScheduleMismatch(
                f"schedule was recorded for other parameters or defects (hash {phash}, "
                f"this run of {self.scenario.name} has {self.phash})")
        return choices

    def make_failure(self, r, *, strategy: str, seed: int, execution: int, executions: int,
                     original, original_pre: int, shrink_runs: int, nondeterministic=False,
                     note: str = "") -> Failure:
        v = r.failure
        names = r.task_names
        trace = [s.to_dict(names) for s in (r.trace or [])]
        origin = origin_of(v)
        return Failure(
            scenario=self.scenario.name, params=dict(self.params), defects=list(self.defects),
            strategy=strategy, seed=seed, execution=execution, executions=executions,
            category=v.category, family=v.family, message=v.message,
            origin={"category": origin[0], "site": origin[1]},
            evidence=[list(e) for e in v.evidence], failing_task=r.failure_task,
            schedule=self.encode(r.choices), original_schedule=self.encode(original),
            steps=r.steps, original_steps=sum(1 for c in original if c >= 0),
            preemptions=r.preemptions, original_preemptions=original_pre,
            shrink_runs=shrink_runs, tasks=list(names), trace=trace,
            traceback=trimmed_traceback(v), nondeterministic=nondeterministic, note=note,
            default_params=dict(self.scenario.params))


def _confirm_and_shrink(runner: Runner, r, *, strategy: str, seed: int, execution: int,
                        executions: int, shrink: bool, max_shrink_runs: int) -> Failure:
    origin = origin_of(r.failure)
    choices = list(r.choices)
    try:
        again = runner.replay(choices, strict=True, tracing=True)
        same = again.failure is not None and origin_of(again.failure) == origin
        why = ("it did not fail" if again.failure is None else
               f"it failed differently ({origin_of(again.failure)[0]} at "
               f"{origin_of(again.failure)[1]})")
    except ScheduleMismatch as e:
        same, again, why = False, None, str(e)
    if not same:
        f = runner.make_failure(r, strategy=strategy, seed=seed, execution=execution,
                                executions=executions, original=choices,
                                original_pre=r.preemptions, shrink_runs=0,
                                nondeterministic=True,
                                note=f"replaying the schedule did not reproduce it: {why}")
        return f

    runs = 0
    best = choices
    if shrink:
        # A candidate is kept only if it takes no more steps than the best so far, so a
        # replay may stop there: a lenient replay that wanders into a long retry loop
        # would otherwise run to the scenario's step bound.  Not for a Livelock, whose
        # origin *is* the step bound (a shorter bound would fake it).
        capped = not isinstance(r.failure, Livelock)

        def attempt(cand, best_steps):
            try:
                x = runner.replay(cand, strict=False,
                                  max_steps=best_steps if capped else None)
            except ScheduleMismatch:
                return None
            if x.failure is not None and origin_of(x.failure) == origin:
                return x.choices, x.preemptions
            return None
        s = Shrinker(attempt, choices, r.preemptions, max_shrink_runs)
        best = s.shrink()
        runs = s.runs
    final = runner.replay(best, strict=True, tracing=True)
    if final.failure is None or origin_of(final.failure) != origin:
        raise ModelInternalError("a shrunk schedule did not reproduce its failure on strict replay")
    return runner.make_failure(final, strategy=strategy, seed=seed, execution=execution,
                               executions=executions, original=choices,
                               original_pre=r.preemptions, shrink_runs=runs)


def explore(scenario, *, strategy: str = "pct", schedules: int = 1000, seed: int = 0,
            params: dict | None = None, defects=(), max_steps: int | None = None,
            shrink: bool = True, stop_on_first: bool = False, max_shrink_runs: int = 400,
            strategy_options: dict | None = None, progress=None,
            cancelled=None) -> ExploreResult:
    """Explore ``scenario`` (a registered name or a scenario function).

    ``strategy`` is ``"pct"``, ``"random"``, ``"dfs"`` or ``"timeslice"`` (options such
    as ``depth`` or ``preemption_bound`` go in ``strategy_options``), or a Strategy
    instance.  Returns an :class:`ExploreResult`; its ``failures`` are confirmed,
    shrunk and de-duplicated by origin.  ``progress(done, found)`` is called now and
    then.  ``cancelled()``, when given, is asked before each schedule: once it returns
    true the exploration stops where it is (``ExitReason.CANCELLED``).
    """
    if schedules < 1:
        raise UsageError("the number of schedules must be at least 1")
    runner = Runner(scenario, params, defects, max_steps)
    if isinstance(strategy, str):
        strat = make_strategy(strategy, seed, **(strategy_options or {}))
    else:
        strat = strategy
    res = ExploreResult(runner.scenario.name, dict(runner.params), list(runner.defects),
                        strat.describe(), seed, schedules)
    for i in range(1, schedules + 1):
        if cancelled is not None and cancelled():
            res.exit_reason = ExitReason.CANCELLED
            break
        if not strat.new_execution():
            res.exit_reason = ExitReason.EXHAUSTED
            break
        r = runner.run(strat)
        res.executions = i
        res.steps += r.steps
        cov = res.coverage
        for branch in r.coverage:
            cov[branch] = cov.get(branch, 0) + 1
        if progress is not None and (i & 63) == 0:
            progress(i, len(res.failures))
        if r.failure is None:
            continue
        key = origin_of(r.failure)
        res.hits[key] = res.hits.get(key, 0) + 1
        if res.hits[key] > 1:
            continue
        if res.first_failure_at is None:
            res.first_failure_at = i
        res.failures.append(_confirm_and_shrink(
            runner, r, strategy=strat.describe(), seed=seed, execution=i,
            executions=schedules, shrink=shrink, max_shrink_runs=max_shrink_runs))
        if stop_on_first:
            res.exit_reason = ExitReason.FIRST_FAILURE
            break
    else:
        if isinstance(strat, DFS) and not strat.new_execution():
            res.exit_reason = ExitReason.EXHAUSTED
    res.under_explored = [b for b in runner.scenario.key_branches if not res.coverage.get(b)]
    if progress is not None:
        progress(res.executions, len(res.failures))
    return res


@dataclass
class ReplayResult:
    scenario: str
    params: dict
    defects: list
    schedule: str
    steps: int
    preemptions: int
    trace: list
    tasks: list
    failure: Failure | None

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.VIOLATION if self.failure is not None else ExitCode.OK

    def to_dict(self) -> dict:
        return {"scenario": self.scenario, "params": self.params, "defects": self.defects,
                "schedule": self.schedule, "steps": self.steps, "preemptions": self.preemptions,
                "tasks": self.tasks, "trace": self.trace, "exit_code": int(self.exit_code),
                "failure": self.failure.to_dict() if self.failure else None}


def replay(scenario, schedule: str, *, params: dict | None = None, defects=(),
           max_steps: int | None = None) -> ReplayResult:
    """Replay a schedule string strictly, with a full trace.

    Raises :class:`~tdpmmu.runtime.errors.ScheduleMismatch` (a UsageError) when the
    schedule does not fit the scenario, its parameters or the model.
    """
    runner = Runner(scenario, params, defects, max_steps)
    choices = runner.decode(schedule)
    r = runner.replay(choices, strict=True, tracing=True)
    failure = None
    if r.failure is not None:
        failure = runner.make_failure(r, strategy="replay", seed=0, execution=1, executions=1,
                                      original=choices, original_pre=r.preemptions,
                                      shrink_runs=0)
    return ReplayResult(runner.scenario.name, dict(runner.params), list(runner.defects),
                        runner.encode(r.choices), r.steps, r.preemptions,
                        [s.to_dict(r.task_names) for s in r.trace], list(r.task_names), failure)


def shrink(scenario, schedule: str, *, params: dict | None = None, defects=(),
           max_steps: int | None = None, max_shrink_runs: int = 400) -> Failure:
    """Shrink a failing schedule; returns the shrunk failure (UsageError if it passes)."""
    runner = Runner(scenario, params, defects, max_steps)
    choices = runner.decode(schedule)
    r = runner.replay(choices, strict=True)
    if r.failure is None:
        raise UsageError("that schedule does not fail: nothing to shrink")
    return _confirm_and_shrink(runner, r, strategy="replay", seed=0, execution=1, executions=1,
                               shrink=True, max_shrink_runs=max_shrink_runs)


__all__ = ["ExitCode", "ExitReason", "ExploreResult", "ReplayResult", "Runner", "explore",
           "replay", "shrink", "origin_of", "TdpmmuError"]
