"""The benchmarks run and print what they promise (no timing assertions here)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_runtime_benchmark_json_keys():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "runtime.py"), "--json",
                          "--quick", "--repeat", "1"], check=True, capture_output=True, text=True)
    doc = json.loads(out.stdout)
    for key in ("points_per_s", "switches_per_s", "executions_per_s", "switch_ratio"):
        assert key in doc and doc[key] > 0
    assert 60 <= doc["program_steps"] <= 80


def test_bugs_benchmark_json():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bugs.py"), "--json",
                          "--defect", "counter-racy-rmw", "--seeds", "2", "--timeslice-cap", "50",
                          "--jobs", "1", "--no-check"],
                         check=True, capture_output=True, text=True)
    doc = json.loads(out.stdout)
    row, = doc["rows"]
    assert row["defect"] == "counter-racy-rmw" and row["expected"] == "InvariantViolation"
    for st in ("pct", "random", "dfs", "timeslice"):
        assert st in row and row[st]["schedules"] >= 1
    assert row["pct"]["found"] == "2/2" and row["dfs"]["found"] == "1/1"
    assert doc["summary"]["median_ratio"] is not None
    assert "median_ratio_interleaving_dependent" in doc["summary"]


def test_model_benchmark_json_keys():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "model.py"), "--json",
                          "--quick"], check=True, capture_output=True, text=True)
    doc = json.loads(out.stdout)
    for key in ("baseline_step_us", "fault_us", "faithful_fault_us", "zap_range_ms_per_gib",
                "teardown_ms_per_gib", "enable_split_ms_per_gib", "dirty_fast_fault_us"):
        assert key in doc and doc[key] > 0


def test_heldout_benchmark_patches_apply_and_one_is_found():
    """Every held-out mutation still applies to the model's source, and the harness
    reports one of them (a leak found by the first scenario's first schedule)."""
    bench = str(ROOT / "benchmarks" / "heldout.py")
    out = subprocess.run([sys.executable, bench, "--list"], check=True, capture_output=True,
                         text=True)
    assert out.stdout.count(": applies") >= 10
    out = subprocess.run([sys.executable, bench, "--only", "link-fail-leaks-sp", "--jobs", "1",
                          "--no-baseline", "--json"], check=True, capture_output=True, text=True)
    row, = json.loads(out.stdout)["rows"]
    assert row["found"] and row["category"] == "MemoryLeak"


def test_heldout_patches_of_registered_defects_put_the_defect_back():
    """A held-out mutation that later became a registered defect must still be that bug
    when applied as a patch: its scenario, with the defect's parameters, finds the
    defect's class on the patched copy with no --defect given."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import heldout
    finally:
        sys.path.pop(0)
    from tdpmmu.scenarios import all_defects
    registered = {d.name: d for d in all_defects()}
    shared = [n for n in heldout.MUTATIONS if n in registered]
    assert shared, "no held-out mutation is a registered defect any more"
    for name in shared:
        d = registered[name]
        with tempfile.TemporaryDirectory() as tmp:
            root = heldout.make_copy(pathlib.Path(tmp), name)
            argv = [sys.executable, "-m", "tdpmmu", "explore", d.scenarios[0], "--schedules",
                    "200", "--stop-on-first", "--json"]
            for k, v in d.params.items():
                argv += ["--param", f"{k}={str(v).lower()}"]
            out = subprocess.run(argv, capture_output=True, text=True, cwd=tmp,
                                 env=dict(os.environ, PYTHONPATH=str(root)))
        doc = json.loads(out.stdout)
        assert [f["category"] for f in doc["failures"]][:1] == [d.expected], name
