"""Slow tier: README command 1's main job, as installed -- ``tdpmmu check`` on its
default budget (PCT, random and bounded DFS over every default scenario) -- explores
>= 100,000 schedules on the correct model with zero violations, and reaches every
scenario's racy branches.

This is the run CI relies on for the main job (``.ci/run`` installs, then runs this
suite: the check is not run a second time outside it).  The million-schedule campaign
recorded in the README is the full evidence."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tdpmmu.scenarios import default_scenarios


def _tdpmmu() -> list[str]:
    exe = shutil.which("tdpmmu")
    return [exe] if exe else [sys.executable, "-m", "tdpmmu"]


@pytest.mark.slow
def test_the_default_check_explores_a_hundred_thousand_schedules_without_a_violation():
    proc = subprocess.run(_tdpmmu() + ["check", "--json"], capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads(proc.stdout)
    runs = doc["runs"]
    assert doc["exit_code"] == 0 and doc["budget"] == 1000
    total = sum(r["executions"] for r in runs)
    assert total >= 100_000, total
    bad = [(r["scenario"], r["strategy"], f["category"]) for r in runs for f in r["failures"]]
    assert not bad, bad
    assert {r["scenario"] for r in runs} == {sc.name for sc in default_scenarios()}
    for sc in default_scenarios():
        mine = [r for r in runs if r["scenario"] == sc.name]
        # every strategy once per configuration: the defaults, then each variant
        assert sorted(r["strategy"].split("(")[0] for r in mine) == sorted(
            ["dfs", "pct", "random"] * (1 + len(sc.variants)))
        # a run belongs to a variant when its parameters are exactly the defaults with
        # the variant's overrides (one variant may extend another's)
        runs_of_variants = sum(1 for v in sc.variants for r in mine
                               if r["params"] == {**sc.params, **v})
        assert runs_of_variants == 3 * len(sc.variants), sc.name
        cov = [r["coverage"] for r in mine]
        for branch in sc.key_branches:
            assert any(c.get(branch) for c in cov), (sc.name, branch)
