"""The model's oracles, each shown to fire on its defect -- found by `tdpmmu explore`
within a stated budget, with the right class, and replayable as printed."""

from __future__ import annotations

import shlex

import pytest

import tdpmmu
from tdpmmu import cli
from tdpmmu.scenarios import all_defects

BUDGET = 2000
MODEL_DEFECTS = [d for d in all_defects() if d.source == "model negative control"]


@pytest.mark.parametrize("defect", MODEL_DEFECTS, ids=lambda d: d.name)
def test_model_defect_is_found_by_explore_and_replays_as_printed(defect, capsys):
    """Found by `tdpmmu explore` with PCT, or else with the random walk, within BUDGET."""
    scenario = defect.scenarios[0]
    for strategy in ("pct", "random"):
        code = cli.main(["explore", scenario, "--defect", defect.name, "--schedules",
                         str(BUDGET), "--stop-on-first", "--strategy", strategy])
        out = capsys.readouterr().out
        if code == 1:
            break
    assert code == 1, out
    headline = out.splitlines()[2]
    assert headline.startswith(defect.expected + ":"), headline
    replay = out.rstrip().splitlines()[-1]
    assert replay.startswith(f"tdpmmu replay {scenario} --defect {defect.name}")
    code2 = cli.main(shlex.split(replay)[1:])
    out2 = capsys.readouterr().out
    assert code2 == 1 and out2.splitlines()[0] == headline


def test_oracles_are_silent_on_the_correct_model():
    for d in MODEL_DEFECTS:
        for sc in d.scenarios:
            res = tdpmmu.explore(sc, strategy="random", schedules=150, seed=9)
            assert res.failures == [], tdpmmu.render_failure(res.failures[0])


def test_each_oracle_class_has_a_defect():
    from tdpmmu.mmu.oracles import (FastFaultUnsafe, SpteLostUpdate, StructureViolation,
                                    TlbIncoherence)
    from tdpmmu.runtime.errors import KernelWarning
    from tdpmmu.mmu.oracles import (DirtyLogIncomplete, HostSafetyViolation,
                                    WriteTrackBypassed)
    classes = {d.expected for d in all_defects()}
    for k in (TlbIncoherence, StructureViolation, SpteLostUpdate, KernelWarning,
              FastFaultUnsafe, DirtyLogIncomplete, HostSafetyViolation, WriteTrackBypassed):
        assert k.__name__ in classes
