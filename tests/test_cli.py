"""The CLI, driven in-process through main(argv): exit codes, one-line errors, JSON, and
the replay command a report prints reproducing the failure."""

from __future__ import annotations

import json
import shlex

import pytest

from tdpmmu import cli
from tdpmmu.explore import ExitCode


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_passes_and_prints_its_table(capsys):
    # the human-readable table on two scenarios (every default scenario, on the default
    # budget, is the slow tier's tests/test_slow_campaign.py)
    code, out, err = run(capsys, "check", "--budget", "100", "--scenario", "sync-counter",
                         "--scenario", "mmu-faults-vs-zap-all-fast")
    assert code == ExitCode.OK, out
    assert "no violations found" in out
    assert "sync-counter" in out and "mmu-faults-vs-zap-all-fast" in out
    assert "pct(d=3)" in out and "random" in out and "dfs(k=1)" in out


def test_check_json_schema(capsys):
    code, out, _ = run(capsys, "check", "--budget", "30", "--json", "--scenario", "sync-counter")
    doc = json.loads(out)
    assert doc["exit_code"] == 0 and doc["budget"] == 30
    strategies = [r["strategy"] for r in doc["runs"]]
    assert strategies == ["pct(d=3)", "random", "dfs(k=2)"]
    for r in doc["runs"]:
        assert {"scenario", "executions", "steps", "failures", "exit_reason"} <= set(r)


def test_check_with_a_defect_exits_1(capsys):
    code, out, _ = run(capsys, "check", "--budget", "200", "--defect", "counter-racy-rmw",
                       "--scenario", "sync-counter")
    assert code == ExitCode.VIOLATION
    assert "InvariantViolation: lost update" in out


def test_explore_report_ends_with_a_replay_command_that_reproduces(capsys):
    code, out, _ = run(capsys, "explore", "sync-rcu-pointer", "--defect", "rcu-reader-unlocked",
                       "--stop-on-first")
    assert code == ExitCode.VIOLATION
    lines = out.rstrip().splitlines()
    assert lines[0].startswith("sync-rcu-pointer:")
    assert lines[2].startswith("UseAfterFree: use-after-free")
    for label in ("scenario", "strategy", "execution", "shrunk", "Interleaving:", "Evidence:",
                  "Traceback (model frames):"):
        assert label in out
    cmd = lines[-1]
    assert cmd.startswith("tdpmmu replay sync-rcu-pointer --defect rcu-reader-unlocked --schedule v1:")
    code2, out2, _ = run(capsys, *shlex.split(cmd)[1:])
    assert code2 == ExitCode.VIOLATION
    assert out2.splitlines()[0] == lines[2]


def test_explore_json(capsys):
    code, out, _ = run(capsys, "explore", "sync-counter", "--defect", "counter-unlocked",
                       "--strategy", "dfs", "--bound", "-1", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["exit_code"] == 1
    f = doc["failures"][0]
    assert f["category"] == "DataRace" and f["family"] == "DataRace"
    assert f["schema"] == 1 and f["trace"][-1]["step"] == f["steps"]


def test_replay_prints_a_passing_trace(capsys):
    code, out, _ = run(capsys, "explore", "sync-counter", "--schedules", "1", "--json")
    assert code == 0
    from tdpmmu.explore import Runner
    runner = Runner("sync-counter")
    text = runner.encode(runner.replay([], strict=False).choices)
    code, out, _ = run(capsys, "replay", "sync-counter", "--schedule", text)
    assert code == 0
    assert "spin_lock(counter_lock)" in out and "no violation" in out


def test_schedule_file(tmp_path, capsys):
    from tdpmmu.explore import Runner
    runner = Runner("sync-counter")
    text = runner.encode(runner.replay([], strict=False).choices)
    p = tmp_path / "s.schedule"
    p.write_text(text + "\n")
    code, out, _ = run(capsys, "replay", "sync-counter", "--schedule-file", str(p), "--json")
    assert code == 0 and json.loads(out)["schedule"] == text


def test_shrink_command(capsys):
    code, out, _ = run(capsys, "explore", "sync-refcount", "--defect", "refcount-put-then-use",
                       "--strategy", "random", "--no-shrink", "--json", "--stop-on-first")
    f = json.loads(out)["failures"][0]
    code, out, _ = run(capsys, "shrink", "sync-refcount", "--defect", "refcount-put-then-use",
                       "--schedule", f["schedule"], "--json")
    g = json.loads(out)
    assert code == 1
    assert g["origin"] == f["origin"] and g["steps"] <= f["steps"]


def test_list_json(capsys):
    code, out, _ = run(capsys, "list", "--json")
    doc = json.loads(out)
    assert code == 0
    names = {s["name"] for s in doc["scenarios"]}
    assert "sync-counter" in names
    d = {x["name"]: x for x in doc["defects"]}
    assert d["lock-order-abba"]["expected"] == "LockOrderInversion"
    assert {"UseAfterFree", "DataRace", "Deadlock", "Livelock"} <= {v["name"] for v in doc["violations"]}


@pytest.mark.parametrize("argv,needle", [
    (["explore", "no-such-scenario"], "unknown scenario 'no-such-scenario'"),
    (["explore", "sync-countr"], "did you mean sync-counter"),
    (["explore", "sync-counter", "--defect", "nope"], "unknown defect 'nope'"),
    (["explore", "sync-counter", "--param", "bogus=1"], "has no parameter 'bogus'"),
    (["explore", "sync-counter", "--param", "incs=x"], "expected an integer"),
    (["explore", "sync-counter", "--param", "incs"], "expected NAME=VALUE"),
    (["explore", "sync-counter", "--strategy", "magic"], "'magic' is not one of"),
    (["explore", "sync-counter", "--depth", "2", "--strategy", "random"], "--depth applies"),
    (["replay", "sync-counter", "--schedule", "v1:zz"], "malformed schedule"),
    (["replay", "sync-counter", "--schedule", "v1:00000000:0"], "recorded for other parameters"),
    (["replay", "sync-counter"], "exactly one of --schedule"),
    (["replay", "sync-counter", "--schedule-file", "/nonexistent/x"], "cannot read schedule file"),
    (["frobnicate"], "No such command"),
    (["check", "--budget", "0"], "--budget"),
    (["check", "--budget", "many"], "--budget"),
    (["check", "--seed", "x"], "--seed"),
    (["check", "--scenario", "nope"], "unknown scenario 'nope'"),
    (["check", "--defect", "nope"], "unknown defect 'nope'"),
    (["check", "--jobs", "0"], "--jobs"),
    (["explore", "sync-counter", "--schedules", "0"], "--schedules"),
    (["explore", "sync-counter", "--schedules", "-5"], "--schedules"),
    (["explore", "sync-counter", "--bound", "x"], "--bound"),
    (["explore", "sync-counter", "--bound", "2", "--strategy", "pct"], "--bound applies"),
    (["explore", "sync-counter", "--max-steps", "0"], "--max-steps"),
    (["replay", "sync-lock-order", "--schedule", "v1:00000000:0x3"], "recorded for other parameters"),
    (["replay", "nope", "--schedule", "v1:00000000:0"], "unknown scenario 'nope'"),
    (["shrink", "sync-counter", "--schedule", "garbage"], "malformed schedule"),
    (["shrink", "sync-counter"], "exactly one of --schedule"),
    (["report", "/nonexistent.json"], "cannot read /nonexistent.json"),
    (["locks", "--json", "--markdown"], "at most one of --json and --markdown"),
    (["list", "--bogus"], "No such option"),
    # parameter values the model refuses (as KVM's ioctls would) are usage errors too,
    # not violations of the run
    (["explore", "mmu-dirty-log-vs-writes", "--param", "mode=fast"], "expected dirty-log or"),
    (["explore", "mmu-dirty-log-vs-writes", "--param", "backing=5"], "backing level 5"),
    (["explore", "mmu-fault-vs-zap-range", "--param", "host_maxphyaddr=10"], "MAXPHYADDR"),
    (["explore", "mmu-faults-vs-zap-all-fast", "--param", "vcpus=-1"], "vcpus=-1"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == ExitCode.USAGE_ERROR
    assert err.count("\n") == 1 and err.startswith("tdpmmu: error: ")
    assert needle in err


def test_replay_mismatch_is_exit_2(capsys):
    from tdpmmu.explore import Runner
    text = Runner("sync-counter").encode([1, 1, 5])
    code, _, err = run(capsys, "replay", "sync-counter", "--schedule", text)
    assert code == ExitCode.USAGE_ERROR
    assert "step 3 expected task 5" in err


def test_internal_error_says_it_is_ours(capsys, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("kaboom")
    monkeypatch.setattr(cli, "explore", boom)
    code, _, err = run(capsys, "explore", "sync-counter")
    assert code == ExitCode.INTERNAL_ERROR
    assert "internal error in tdpmmu - please file a bug" in err and "kaboom" in err
    assert err.count("\n") == 1


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "check" in out


def test_schedule_of_another_scenario_is_refused(capsys):
    from tdpmmu.explore import Runner
    text = Runner("sync-lock-order").encode([0, 0])
    code, _, err = run(capsys, "replay", "sync-counter", "--schedule", text)
    assert code == 2 and "recorded for other parameters" in err and err.count("\n") == 1


def test_shrink_of_a_passing_schedule_is_a_usage_error(capsys):
    from tdpmmu.explore import Runner
    r = Runner("sync-counter")
    text = r.encode(r.replay([], strict=False).choices)
    code, _, err = run(capsys, "shrink", "sync-counter", "--schedule", text)
    assert code == 2 and "does not fail" in err


def test_check_runs_the_defects_scenarios_first_and_can_stop_on_first(capsys):
    code, out, _ = run(capsys, "check", "--budget", "300", "--defect", "counter-racy-rmw",
                       "--stop-on-first", "--json")
    doc = json.loads(out)
    assert code == ExitCode.VIOLATION and doc["stopped_on_first"]
    runs = doc["runs"]
    assert runs[0]["scenario"] == "sync-counter" and runs[0]["failures"]
    assert runs[-1]["failures"] and all(not r["failures"] for r in runs[:-1])
    assert len(runs) < 10


def test_dynamic_text_is_never_read_as_rich_markup():
    # a run label such as "mmu-x [pct]" (the check's progress line) or a user's scenario
    # description with brackets must print as written, not be swallowed as a style tag
    from rich.console import Console
    from rich.table import Table
    con = Console(record=True, width=120)
    t = Table()
    t.add_column("c")
    t.add_row(cli._plain("mmu-x [pct] [bold]x[/bold]"))
    con.print(t)
    con.print(cli._plain("out of scope: a [b]"))
    text = con.export_text()
    assert "mmu-x [pct] [bold]x[/bold]" in text and "out of scope: a [b]" in text


def test_table_rows_escape_text_and_keep_explicit_styles():
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text
    con = Console(record=True, width=120)
    t = Table()
    t.add_column("a")
    t.add_column("b")
    cli._row(t, "scenario [pct]", Text("3", style="red"))
    con.print(t)
    assert "scenario [pct]" in con.export_text()
    assert t.columns[1]._cells[0].style == "red"
