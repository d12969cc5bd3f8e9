"""Campaigns: many explorations (scenario x strategy), run on every core.

Each exploration is independent and seeded, so running them in worker processes changes
nothing but the wall time: the results come back in plan order and are identical to a
sequential run (``jobs=1``).  Workers are forked, so scenarios registered at run time
(the pytest plugin, a user's module) are visible to them.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

from .engine import ExploreResult, explore


@dataclass(frozen=True)
class Job:
    scenario: str
    strategy: str
    schedules: int
    seed: int = 0
    defects: tuple = ()
    strategy_options: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)


def _run(job: Job) -> ExploreResult:
    return explore(job.scenario, strategy=job.strategy, schedules=job.schedules, seed=job.seed,
                   defects=job.defects, strategy_options=job.strategy_options,
                   params=job.params or None)


def default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else (os.cpu_count() or 1))


def run_campaign(plan: list[Job], jobs: int | None = None, on_done=None) -> list[ExploreResult]:
    """Run every job; ``on_done(job, result)`` is called as each finishes."""
    jobs = default_jobs() if jobs is None else jobs
    if jobs <= 1 or len(plan) <= 1:
        out = []
        for job in plan:
            r = _run(job)
            if on_done:
                on_done(job, r)
            out.append(r)
        return out
    results: list[ExploreResult | None] = [None] * len(plan)
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {pool.submit(_run, job): i for i, job in enumerate(plan)}
        for fut in as_completed(futures):
            i = futures[fut]
            results[i] = fut.result()
            if on_done:
                on_done(plan[i], results[i])
    return results  # type: ignore[return-value]
