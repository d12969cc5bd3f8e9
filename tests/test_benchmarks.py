"""The benchmarks run and print what they promise (no timing assertions here)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_runtime_benchmark_json_keys():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "runtime.py"), "--json",
                          "--quick", "--repeat", "1"], check=True, capture_output=True, text=True)
    doc = json.loads(out.stdout)
    for key in ("points_per_s", "switches_per_s", "executions_per_s", "switch_ratio"):
        assert key in doc and doc[key] > 0
    assert 60 <= doc["program_steps"] <= 80
