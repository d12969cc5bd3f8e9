"""The historical bug catalogue (shared/reference/bugs.md): every in-scope entry is a
named defect that the default campaign (``tdpmmu check --defect ID``) finds, with the
expected violation class first; its report is shrunk and its replay reproduces it.

The correct model passing the same campaign is ``tdpmmu check`` itself (CI runs it) and
the slow tier (tests/test_slow_campaign.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import tdpmmu
from tdpmmu import cli
from tdpmmu.explore.campaign import check_plan, run_campaign
from tdpmmu.scenarios import all_defects, default_scenarios
from tdpmmu.scenarios.catalogue import OUT_OF_SCOPE

BUGS_MD = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "bugs.md"
CATALOGUE = [d for d in all_defects() if d.catalogue]


def catalogue_ids() -> list[str]:
    """The ids of bugs.md's summary table, in its order."""
    text = BUGS_MD.read_text()
    table = text[text.index("## Summary table"):]
    ids = []
    for line in table.splitlines():
        m = re.match(r"\|\s*([a-z0-9][a-z0-9-]+)(?:\s*\(B\d+\))?\s*\|", line)
        if m and m.group(1) not in ("id",):
            ids.append(m.group(1))
    return ids


def test_every_catalogue_entry_is_a_defect_or_listed_out_of_scope():
    ids = catalogue_ids()
    assert len(ids) >= 28
    covered = {d.catalogue for d in CATALOGUE}
    missing = [i for i in ids if i not in covered and i not in OUT_OF_SCOPE]
    assert not missing, f"catalogue entries with no defect and no out-of-scope reason: {missing}"
    assert len(OUT_OF_SCOPE) <= 4, OUT_OF_SCOPE
    assert not set(OUT_OF_SCOPE) & covered
    assert set(OUT_OF_SCOPE) <= set(ids)
    assert covered <= set(ids), covered - set(ids)


def test_catalogue_defects_name_default_scenarios_and_a_kernel_fix():
    default = {s.name for s in default_scenarios()}
    for d in CATALOGUE:
        assert d.scenarios, d.name
        assert set(d.scenarios) <= default, (d.name, set(d.scenarios) - default)
        assert d.fix, d.name
        assert d.expected not in ("", "none"), d.name
        assert d.name == d.catalogue or d.name.startswith(d.catalogue + "/")


def test_list_json_shows_the_catalogue(capsys):
    assert cli.main(["list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    by_name = {d["name"]: d for d in out["defects"]}
    for d in CATALOGUE:
        row = by_name[d.name]
        assert row["catalogue"] == d.catalogue and row["expected"] == d.expected
        assert row["scenarios"] and row["title"] and row["fix"]


@pytest.mark.parametrize("defect", CATALOGUE, ids=lambda d: d.name)
def test_the_default_campaign_finds_it_with_the_expected_class_first(defect):
    plan = check_plan(1000, 0, (), [defect.name])
    results = run_campaign(plan, jobs=None, stop_on_first=True)
    found = [f for r in results for f in r.failures]
    assert found, f"the default campaign did not find {defect.name}"
    f = found[0]
    assert f.category == defect.expected, f"{defect.name}: first violation {f.category}: {f.message}"
    assert f.steps <= f.original_steps and f.preemptions <= f.original_preemptions
    again = tdpmmu.replay(f.scenario, f.schedule, params=f.params, defects=f.defects)
    assert again.failure is not None and again.failure.origin == f.origin
    assert again.trace == f.trace
