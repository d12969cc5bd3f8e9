"""The HTML timeline, rendered in headless Chromium: lanes, bars and the highlight are
checked in the DOM the page's own script built."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

import tdpmmu
from tdpmmu import cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (.ci/run installs it; CI never skips this)")


class _Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.elems = []

    def handle_starttag(self, tag, attrs):
        self.elems.append((tag, dict(attrs)))

    def with_class(self, cls):
        return [a for t, a in self.elems if cls in (a.get("class") or "").split()]


def render_dom(path) -> _Dom:
    assert CHROMIUM, "chromium is required in CI"
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={path.parent / 'chromium-profile'}", "--dump-dom",
         path.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=True)
    dom = _Dom()
    dom.feed(out.stdout)
    return dom


def _failure(scenario, defect):
    res = tdpmmu.explore(scenario, strategy="pct", schedules=2000, defects=[defect],
                         stop_on_first=True)
    assert res.failures
    return res.failures[0]


@needs_browser
@pytest.mark.parametrize("scenario,defect", [
    ("sync-lock-order", "lock-order-abba"),
    ("sync-rcu-pointer", "rcu-reader-unlocked"),
    ("mmu-zap-range-yield", "cond-resched-skips-flush"),
])
def test_rendered_timeline_has_lanes_bars_and_the_highlight(tmp_path, capsys, scenario, defect):
    f = _failure(scenario, defect)
    src = tmp_path / "failure.json"
    src.write_text(f.to_json())
    out = tmp_path / "failure.html"
    assert cli.main(["report", str(src), "--html", str(out)]) == 0
    capsys.readouterr()
    dom = render_dom(out)
    body = [a for t, a in dom.elems if t == "body"][0]
    assert body.get("data-rendered") == "yes", "the page's script did not run"
    tasks = []
    for s in f.trace:
        if s["task"] not in tasks:
            tasks.append(s["task"])
    lanes = dom.with_class("lane")
    assert [a["data-task"] for a in lanes] == tasks
    steps = dom.with_class("step")
    assert len(steps) == len(f.trace)
    hot = dom.with_class("violation")
    assert len(hot) == 1 and int(hot[0]["data-step"]) == f.trace[-1]["step"]
    assert hot[0]["data-task"] == f.trace[-1]["task"]
    assert f.trace[-1]["site"] in hot[0]["title"]          # hover shows the source line
    bars = dom.with_class("bar")
    kinds = {a["data-kind"] for a in bars}
    if any(s["kind"] == "acquire" for s in f.trace):
        assert "lock" in kinds
    if any(s["op"].startswith("rcu_read_lock") for s in f.trace):
        assert "rcu" in kinds
    preempted = [s["step"] for s in f.trace if s["preempted"]]
    assert sorted(int(a["data-step"]) for a in dom.with_class("preempted")) == preempted


def test_report_reads_every_json_shape(tmp_path, capsys):
    f = _failure("sync-counter", "counter-racy-rmw")
    shapes = {"failure.json": f.to_dict(), "replay.json": {"failure": f.to_dict()},
              "explore.json": {"failures": [f.to_dict()]},
              "check.json": {"runs": [{"failures": [f.to_dict()]}]}}
    for name, doc in shapes.items():
        p = tmp_path / name
        p.write_text(json.dumps(doc))
        assert cli.main(["report", str(p)]) == 0
        assert capsys.readouterr().out.startswith("InvariantViolation: lost update")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli.main(["report", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tdpmmu: error: ") and err.count("\n") == 1
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    assert cli.main(["report", str(empty)]) == 2
    assert cli.main(["report", str(tmp_path / "missing.json")]) == 2
    assert cli.main(["report", str(tmp_path / "failure.json"), "--index", "3"]) == 2
