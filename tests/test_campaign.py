"""Campaign mechanics: the parallel stop-on-first cut."""

from __future__ import annotations

from tdpmmu.explore.campaign import Job, run_campaign
from tdpmmu.explore.engine import ExitReason, explore


def test_parallel_stop_on_first_drops_cancelled_jobs_without_error():
    # job 1 fails at once while the clean job 0 still runs; the jobs after it are cancelled,
    # and as_completed hands cancelled futures back as the pool reaches them: they must be
    # skipped, not .result()ed
    plan = [Job("sync-counter", "random", 1500, 0)]
    plan.append(Job("sync-counter", "random", 200, 0, ("counter-racy-rmw",)))
    plan += [Job("sync-counter", "random", 20, s) for s in range(1, 40)]
    results = run_campaign(plan, jobs=2, stop_on_first=True)
    assert len(results) == 2
    assert not results[0].failures and results[1].failures


def test_parallel_and_sequential_campaigns_agree():
    plan = [Job("sync-counter", "random", 30, s) for s in range(4)]
    plan.append(Job("sync-counter", "pct", 60, 0, ("counter-racy-rmw",)))
    seq = run_campaign(plan, jobs=1)
    par = run_campaign(plan, jobs=2)
    assert [r.schedules for r in seq] == [r.schedules for r in par]
    assert [[f.schedule for f in r.failures] for r in seq] == \
        [[f.schedule for f in r.failures] for r in par]


def test_parallel_stop_on_first_stops_the_jobs_after_the_cut():
    # the failure is job 0: the long clean job running beside it is stopped at its next
    # schedule, not waited for (its result would be dropped anyway); its worker is not
    # killed, so the pool shuts down cleanly
    plan = [Job("sync-counter", "random", 200, 0, ("counter-racy-rmw",)),
            Job("sync-counter", "random", 200_000, 1)]
    results = run_campaign(plan, jobs=2, stop_on_first=True)
    assert len(results) == 1 and results[0].failures
    # the pool is usable again afterwards (fresh workers each campaign)
    again = run_campaign([Job("sync-counter", "random", 20, s) for s in range(3)], jobs=2)
    assert [r.executions for r in again] == [20, 20, 20]


def test_a_cancelled_exploration_stops_before_its_next_schedule():
    asked = []

    def cancelled():
        asked.append(1)
        return len(asked) > 5

    r = explore("sync-counter", strategy="random", schedules=100, cancelled=cancelled)
    assert r.executions == 5 and r.exit_reason is ExitReason.CANCELLED
    assert explore("sync-counter", strategy="random", schedules=7,
                   cancelled=lambda: False).exit_reason is ExitReason.BUDGET
