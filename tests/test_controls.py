"""Negative controls: every self-check defect is found, by PCT and by bounded DFS, within
a stated budget, with the expected violation class; the correct twins pass thousands
of schedules.  Replays of every finding reproduce it; shrinking never grows it."""

from __future__ import annotations

import pytest

import tdpmmu
from tdpmmu.scenarios import all_defects, default_scenarios, get_scenario

#: budgets stated by the issue's "within a stated budget"
PCT_BUDGET = 1000
DFS_BUDGET = 2000
TWIN_BUDGET = 2000

SELF_CHECK_DEFECTS = [d for d in all_defects() if d.source == "runtime self-check"]


def _find(defect, strategy, budget, **kw):
    sc = get_scenario(defect.scenarios[0])
    opts = {"preemption_bound": sc.dfs_bound} if strategy == "dfs" else {}
    return tdpmmu.explore(sc.name, strategy=strategy, schedules=budget, defects=[defect.name],
                          stop_on_first=True, strategy_options=opts, **kw)


@pytest.mark.parametrize("defect", SELF_CHECK_DEFECTS, ids=lambda d: d.name)
@pytest.mark.parametrize("strategy,budget", [("pct", PCT_BUDGET), ("dfs", DFS_BUDGET)])
def test_control_is_found_with_the_expected_class(defect, strategy, budget):
    res = _find(defect, strategy, budget)
    assert res.failures, f"{strategy} did not find {defect.name} in {budget} schedules"
    f = res.failures[0]
    assert f.category == defect.expected, f.message
    assert res.exit_code == tdpmmu.ExitCode.VIOLATION
    # the report's replay reproduces the finding exactly
    again = tdpmmu.replay(f.scenario, f.schedule, params=f.params, defects=f.defects)
    assert again.failure is not None
    assert again.failure.origin == f.origin
    assert again.trace == f.trace
    # shrinking never grows a schedule and keeps the origin
    assert f.steps <= f.original_steps
    assert f.preemptions <= f.original_preemptions
    orig = tdpmmu.replay(f.scenario, f.original_schedule, params=f.params, defects=f.defects)
    assert orig.failure.origin == f.origin


def test_abba_without_lockdep_is_a_real_deadlock():
    for strategy in ("pct", "dfs"):
        res = tdpmmu.explore("sync-lock-order", strategy=strategy, schedules=1000,
                             defects=["lock-order-abba"], params={"_lockdep": False},
                             stop_on_first=True)
        assert res.failures and res.failures[0].category == "Deadlock", strategy
        ev = dict(res.failures[0].evidence)
        assert "blocked on spin_lock(lock_" in ev["t0"] and "blocked on spin_lock(lock_" in ev["t1"]


@pytest.mark.parametrize("sc", [s for s in default_scenarios() if "selftest" in s.tags],
                         ids=lambda s: s.name)
def test_correct_twin_passes_thousands_of_schedules(sc):
    for strategy in ("pct", "random"):
        res = tdpmmu.explore(sc.name, strategy=strategy, schedules=TWIN_BUDGET, seed=3)
        assert res.failures == [], res.failures and tdpmmu.render_failure(res.failures[0])
        assert res.executions == TWIN_BUDGET
    res = tdpmmu.explore(sc.name, strategy="dfs", schedules=50_000,
                         strategy_options={"preemption_bound": sc.dfs_bound})
    assert res.failures == []
    assert res.exhausted, "the twin's schedules within the DFS bound must all be explored"


def test_defects_are_registered_with_known_classes():
    names = {c.__name__ for c in _all_violation_classes()}
    for d in all_defects():
        if d.source in ("design variant", "selftest-port variant"):
            assert d.expected == "none", d.name      # a correct older design / a port's
            continue                                 # broken variant (no oracle: the port)
        assert d.expected in names, d.name
        for s in d.scenarios:
            get_scenario(s)


def _all_violation_classes():
    out, stack = [], [tdpmmu.Violation]
    while stack:
        k = stack.pop()
        out.append(k)
        stack.extend(k.__subclasses__())
    return out
