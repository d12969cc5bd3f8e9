"""Concurrent smoke checks of the model core, with their negative controls."""

from __future__ import annotations

import pytest

import tdpmmu

SMOKE = 2000


@pytest.mark.parametrize("strategy", ["pct", "random"])
def test_faults_vs_zap_all_fast_smoke(strategy):
    """Two vCPUs fault in the same and different GFNs while a third task runs
    kvm_mmu_zap_all_fast; then teardown.  No lockdep, RCU, use-after-free, refcount or
    leak report in 2,000 schedules."""
    res = tdpmmu.explore("mmu-faults-vs-zap-all-fast", strategy=strategy, schedules=SMOKE,
                         seed=11)
    assert res.executions == SMOKE
    assert res.failures == [], tdpmmu.render_failure(res.failures[0])


@pytest.mark.parametrize("defect,expected", [
    ("fault-without-mmu-lock", "LockNotHeld"),
    ("free-pt-without-rcu", "UseAfterFree"),
])
@pytest.mark.parametrize("strategy", ["pct", "random"])
def test_dropping_a_lock_or_the_rcu_deferral_is_caught(defect, expected, strategy):
    from tdpmmu.scenarios import get_defect
    d = get_defect(defect)
    res = tdpmmu.explore(d.scenarios[0], strategy=strategy, schedules=500, seed=1,
                         defects=[defect], stop_on_first=True)
    assert res.failures, f"{strategy} missed {defect}"
    f = res.failures[0]
    assert f.category == expected, f.message
    again = tdpmmu.replay(f.scenario, f.schedule, params=f.params, defects=f.defects)
    assert again.failure is not None and again.failure.origin == f.origin


@pytest.mark.parametrize("scenario", ["mmu-smm-teardown", "mmu-fault-vs-zap-range",
                                      "mmu-nx-recovery-vs-fault"])
def test_other_core_scenarios_are_clean(scenario):
    for strategy in ("pct", "random"):
        res = tdpmmu.explore(scenario, strategy=strategy, schedules=300, seed=5)
        assert res.failures == [], tdpmmu.render_failure(res.failures[0])


@pytest.mark.parametrize("variant,scenario", [
    ("async-zap-worker", "mmu-faults-vs-zap-all-fast"),
    ("async-zap-worker", "mmu-smm-teardown"),
    ("fault-under-write-lock", "mmu-faults-vs-zap-all-fast"),
])
def test_older_designs_are_reachable_and_clean(variant, scenario):
    """The seed's predecessors (tdp-mmu.md section 9) run under the same explorer."""
    for strategy in ("pct", "random"):
        res = tdpmmu.explore(scenario, strategy=strategy, schedules=300, seed=2,
                             defects=[variant])
        assert res.failures == [], tdpmmu.render_failure(res.failures[0])


def test_async_zap_worker_really_runs_a_worker():
    res = tdpmmu.explore("mmu-faults-vs-zap-all-fast", strategy="pct", schedules=1,
                         defects=["async-zap-worker"])
    from tdpmmu.explore import Runner
    from tdpmmu.runtime import RandomWalk
    r = Runner("mmu-faults-vs-zap-all-fast", defects=["async-zap-worker"])
    s = RandomWalk(0)
    s.new_execution()
    ex = r.run(s, tracing=True)
    assert any(n.startswith("kworker/zap:") for n in ex.task_names)
    assert res.failures == []
