"""Campaigns: many explorations (scenario x strategy), run on every core.

Each exploration is independent and seeded, so running them in worker processes changes
nothing but the wall time: the results come back in plan order and are identical to a
sequential run (``jobs=1``).  Workers are forked, so scenarios registered at run time
(the pytest plugin, a user's module) are visible to them.

A campaign that stops early (``stop_on_first``) stops its running workers cooperatively:
each job asks the campaign's flag before every schedule.  Workers are never killed -- a
worker killed while it sends a result leaves a partial message in the pool's result
pipe, and the pool's manager thread then waits for the rest of it for ever.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

from ..scenarios import default_scenarios, get_defect, get_scenario
from .engine import ExploreResult, explore

#: the strategies of the default campaign (``tdpmmu check``), in plan order
CHECK_STRATEGIES = ("pct", "random", "dfs")


@dataclass(frozen=True)
class Job:
    scenario: str
    strategy: str
    schedules: int
    seed: int = 0
    defects: tuple = ()
    strategy_options: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)


#: in a worker process: the campaign's stop flag (a multiprocessing Event, inherited)
_STOP = None


def _init_worker(stop) -> None:
    global _STOP
    _STOP = stop


def _run(job: Job, stop_on_first: bool = False) -> ExploreResult:
    return explore(job.scenario, strategy=job.strategy, schedules=job.schedules, seed=job.seed,
                   defects=job.defects, strategy_options=job.strategy_options,
                   params=job.params or None, stop_on_first=stop_on_first,
                   cancelled=_STOP.is_set if _STOP is not None else None)


def check_plan(budget: int, seed: int = 0, scenarios=(), defects=()) -> list[Job]:
    """The default campaign's jobs: every default scenario (or ``scenarios``), with its
    default parameters and then each of its ``variants``, x :data:`CHECK_STRATEGIES`
    (DFS with the scenario's preemption bound, where it has one).

    With ``defects``, the scenarios each defect names run first, in the order it names
    them (so a report leads with the flow the bug belongs to), and a defect that needs
    scenario parameters (``Defect.params``) adds its scenarios with those parameters,
    run just before their default runs.  Everything else is unchanged: the same jobs as the
    plain campaign, plus those parameterised ones.
    """
    chosen = [get_scenario(s) for s in scenarios] if scenarios else default_scenarios()
    ds = [get_defect(d) for d in defects]
    names = [sc.name for sc in chosen]
    first = []
    for d in ds:
        first += [n for n in d.scenarios if n in names and n not in first]
    order = first + [n for n in names if n not in first]
    by_name = {sc.name: sc for sc in chosen}
    plan = []
    for name in order:
        sc = by_name[name]
        # a defect's own parameters first (the configuration its bug needs), then the
        # scenario's defaults -- kept even where a defect names parameters (explore()
        # would otherwise apply the defect's own)
        keys = sorted({k for d in ds for k in d.params if k in sc.params})
        variants = [dict(d.params) for d in ds
                    if d.params and name in d.scenarios and set(d.params) <= set(sc.params)]
        variants.append({k: sc.params[k] for k in keys})
        variants += [dict(v) for v in sc.variants if dict(v) not in variants]
        for params in variants:
            for st in CHECK_STRATEGIES:
                if st == "dfs" and sc.dfs_bound is None:
                    continue
                plan.append(Job(name, st, budget, seed, tuple(defects),
                                {"preemption_bound": sc.dfs_bound} if st == "dfs" else {},
                                params))
    return plan


def default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else (os.cpu_count() or 1))


def run_campaign(plan: list[Job], jobs: int | None = None, on_done=None,
                 stop_on_first: bool = False) -> list[ExploreResult]:
    """Run every job; ``on_done(job, result)`` is called as each finishes.

    ``stop_on_first``: each job stops at its first failure, and the campaign stops as
    soon as the first failing job *in plan order* is known (every job before it has
    finished clean); jobs after it that did not start are dropped.  The first reported
    failure is therefore the one the full campaign would report first.  Returns the
    results of the jobs that ran, in plan order.
    """
    jobs = default_jobs() if jobs is None else jobs
    if jobs <= 1 or len(plan) <= 1:
        out = []
        for job in plan:
            r = _run(job, stop_on_first)
            if on_done:
                on_done(job, r)
            out.append(r)
            if stop_on_first and r.failures:
                break
        return out
    results: list[ExploreResult | None] = [None] * len(plan)
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                               initargs=(stop,))
    cut = len(plan)                     # the first failing job in plan order, when known
    try:
        futures = {pool.submit(_run, job, stop_on_first): i for i, job in enumerate(plan)}
        for fut in as_completed(futures):
            if fut.cancelled():         # a job after the cut, dropped before it started
                continue
            i = futures[fut]
            results[i] = fut.result()
            if on_done:
                on_done(plan[i], results[i])
            if stop_on_first and results[i].failures and i < cut:
                cut = i
                for f, j in futures.items():
                    if j > cut:
                        f.cancel()
            if stop_on_first and cut < len(plan) and all(
                    results[j] is not None for j in range(cut)):
                break
    finally:
        # the jobs still running (after the cut, or the rest after an interrupt) stop at
        # their next schedule: their results are dropped, so they need not use their
        # whole budget
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
    done = [r for r in results if r is not None]
    if stop_on_first and cut < len(plan):
        done = [r for j, r in enumerate(results[:cut + 1]) if r is not None]
    return done
