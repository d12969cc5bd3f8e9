"""Slow tier: the correct model survives >= 100,000 schedules across every default
scenario with zero violations (and its racy branches are reached).

The per-scenario budgets keep the tier within CI's time (28 ``mmu-*`` flows at ~4 ms an
execution); the million-schedule campaign recorded in the README is the full evidence."""

from __future__ import annotations

import pytest

from tdpmmu.explore.campaign import Job, run_campaign
from tdpmmu.scenarios import default_scenarios

MMU_PER_STRATEGY = 1_200
SYNC_PER_STRATEGY = 3_000


@pytest.mark.slow
def test_hundred_thousand_schedules_without_a_violation():
    plan = []
    for i, sc in enumerate(default_scenarios()):
        n = MMU_PER_STRATEGY if "mmu" in sc.tags else SYNC_PER_STRATEGY
        for strategy in ("pct", "random"):
            plan.append(Job(sc.name, strategy, n, seed=1000 + i))
    total = sum(j.schedules for j in plan)
    assert total >= 100_000
    results = run_campaign(plan)
    assert sum(r.executions for r in results) == total
    bad = [(r.scenario, r.strategy, f.category, f.message) for r in results for f in r.failures]
    assert not bad, bad
    for sc in default_scenarios():
        runs = [r for r in results if r.scenario == sc.name]
        for branch in sc.key_branches:
            assert any(r.coverage.get(branch) for r in runs), (sc.name, branch)
