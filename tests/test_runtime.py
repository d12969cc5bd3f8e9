"""The deterministic runtime: steps, DFS counts, determinism, schedules, replay."""

from __future__ import annotations

import itertools
from math import comb, factorial

import pytest

import tdpmmu
from tdpmmu.explore import Runner
from tdpmmu.runtime import DFS, Execution, Replay, schedule, traps
from tdpmmu.runtime.errors import ScheduleMismatch, UsageError
from tdpmmu.scenarios import get_scenario

from helpers import run_all, straight_line, traces


def count_dfs(setup, bound=None) -> tuple[int, bool]:
    d = DFS(preemption_bound=bound)
    n = sum(1 for _ in run_all(setup, d, 100_000))
    return n, d.exhausted


@pytest.mark.parametrize("n,m", [(1, 1), (2, 3), (3, 3), (4, 2), (5, 4)])
def test_dfs_enumerates_binomial_interleavings(n, m):
    count, exhausted = count_dfs(straight_line(n, m))
    assert exhausted
    assert count == comb(n + m, n)


def test_dfs_enumerates_multinomial_for_three_tasks():
    count, exhausted = count_dfs(straight_line(2, 2, 2))
    assert exhausted
    assert count == factorial(6) // (factorial(2) ** 3)


def _preemptions(seq, lengths) -> int:
    left = list(lengths)
    pre = 0
    prev = None
    for t in seq:
        if prev is not None and t != prev and left[prev] > 0:
            pre += 1
        left[t] -= 1
        prev = t
    return pre


@pytest.mark.parametrize("lengths", [(3, 3), (4, 2), (2, 2, 2)])
@pytest.mark.parametrize("bound", [0, 1, 2])
def test_dfs_preemption_bound_counts_match_brute_force(lengths, bound):
    multiset = [i for i, n in enumerate(lengths) for _ in range(n)]
    expected = sum(1 for seq in set(itertools.permutations(multiset))
                   if _preemptions(seq, lengths) <= bound)
    count, exhausted = count_dfs(straight_line(*lengths), bound)
    assert exhausted, "DFS must be able to say it explored every schedule within the bound"
    assert count == expected


def test_dfs_schedules_are_distinct():
    d = DFS(preemption_bound=None)
    seen = {tuple(r.choices) for r in run_all(straight_line(3, 2), d, 1000)}
    assert len(seen) == comb(5, 2)


@pytest.mark.parametrize("name,opts", [("random", {}), ("pct", {"depth": 3}), ("dfs", {}),
                                       ("timeslice", {"min_quantum": 2, "max_quantum": 6})])
@pytest.mark.parametrize("scenario", ["sync-rcu-pointer", "sync-rwlock-table", "sync-refcount"])
def test_same_seed_same_trace(name, opts, scenario):
    sc = get_scenario(scenario)
    setup = sc.setup(sc.resolve({}))
    a = traces(setup, name, 7, 40, **opts)
    b = traces(setup, name, 7, 40, **opts)
    assert a == b
    if name != "dfs":
        c = traces(setup, name, 8, 40, **opts)
        assert a != c, "a different seed should give different schedules"


def test_step_counting_and_start_steps():
    r = next(run_all(straight_line(3, 2), DFS(preemption_bound=None), 1, tracing=True))
    assert r.steps == 5
    assert [s.op[2] for s in r.trace].count("start") == 2
    assert r.choices == [0, 0, 0, 1, 1]


# -- schedules ---------------------------------------------------------------------

def test_schedule_roundtrip_and_compactness():
    choices = [0] * 12 + [1] * 3 + [~1] + [0] * 5 + [2]
    text = schedule.encode(choices, "0c9a51f2")
    assert text == "v1:0c9a51f2:0x12,1x3,d1,0x5,2"
    assert schedule.decode(text) == ("0c9a51f2", choices)


@pytest.mark.parametrize("bad,needle", [
    ("garbage", "expected 'v1:<hash>:<steps>'"),
    ("v9:0c9a51f2:0", "unsupported schedule version"),
    ("v1:xyz:0", "malformed schedule hash"),
    ("v1:0c9a51f2:0,zz", "malformed schedule token 'zz'"),
    ("v1:0c9a51f2:1x0", "count must be >= 1"),
])
def test_malformed_schedules_are_usage_errors(bad, needle):
    with pytest.raises(UsageError, match=needle.replace("(", r"\(")):
        schedule.decode(bad)


def test_replay_refuses_a_mismatch_precisely():
    runner = Runner("sync-counter")
    base = runner.replay([], strict=False).choices   # default: t0 to completion, then t1
    assert base == [0] * 9 + [1] * 9
    assert runner.replay(base, strict=True).failure is None
    with pytest.raises(ScheduleMismatch, match=r"step 1 expected task 5 \(which does not exist\), "
                                               r"runnable were t0, t1"):
        runner.replay([5], strict=True)
    with pytest.raises(ScheduleMismatch, match="step 3: the schedule ended but the execution goes on"):
        runner.replay(base[:2], strict=True)
    with pytest.raises(ScheduleMismatch, match="schedule has 3 more choices"):
        runner.replay(base + [0, 0, 0], strict=True)


def test_replay_mismatch_names_the_blocked_task():
    # t0 takes lock_a then lock_b; if t1 is scheduled while t0 holds lock_a it blocks.
    runner = Runner("sync-lock-order")
    ok = runner.replay([0, 0, 0, 1, 1], strict=False)
    assert ok.failure is None
    # at step 5 t1 is blocked on lock_a (t0 holds it), so asking for t1 again fails
    with pytest.raises(ScheduleMismatch, match=r"step 5 expected t1, runnable were t0"):
        runner.replay([0, 0, 1, 1, 1], strict=True)


def test_replay_refuses_other_parameters():
    res = tdpmmu.explore("sync-counter", defects=["counter-racy-rmw"], schedules=200)
    sched_text = res.failures[0].schedule
    with pytest.raises(ScheduleMismatch, match="recorded for other parameters"):
        tdpmmu.replay("sync-counter", sched_text)   # without the defect
    with pytest.raises(ScheduleMismatch, match="recorded for other parameters"):
        tdpmmu.replay("sync-counter", sched_text, defects=["counter-racy-rmw"],
                      params={"incs": 3})


# -- deadlock and livelock ---------------------------------------------------------

def test_deadlock_report_lists_every_task():
    res = tdpmmu.explore("sync-wait-event", strategy="dfs", schedules=100,
                         defects=["wait-event-lost-wakeup"], stop_on_first=True)
    f = res.failures[0]
    assert f.category == "Deadlock"
    ev = dict((k, v) for k, v in f.evidence)
    assert "blocked on wait queue wq" in ev["waiter0"]
    assert ev["waker"] == "done"


def test_livelock_is_reported_at_the_step_bound():
    res = tdpmmu.explore("sync-frozen-slot", strategy="pct", schedules=10,
                         defects=["frozen-slot-left-frozen"], stop_on_first=True)
    f = res.failures[0]
    assert f.category == "Livelock"
    assert "bound of 2000 steps" in f.message


def test_daemon_left_blocked_is_not_a_deadlock():
    # sync-rcu-pointer leaves rcu_gp blocked waiting for callbacks at the end
    res = tdpmmu.explore("sync-rcu-pointer", strategy="random", schedules=200)
    assert res.failures == []


def test_tasks_are_unwound_when_an_execution_aborts():
    unwound = []

    def setup():
        def victim():
            try:
                traps.schedule_point((1, None, "x", None))
                traps.schedule_point((1, None, "x", None))
            finally:
                unwound.append("victim")

        def culprit():
            raise AssertionError("boom")
        traps.spawn("victim", victim)
        traps.spawn("culprit", culprit)

    s = Replay([0, 0, 1])
    s.new_execution()
    r = Execution(s).run(setup)
    assert r.failure is not None and r.failure.category == "InvariantViolation"
    assert unwound == ["victim"]


def test_nondeterministic_scenario_is_reported_not_shrunk():
    calls = [0]

    def flaky_counter():
        calls[0] += 1
        odd = calls[0] % 2 == 1

        def body():
            traps.schedule_point((1, None, "x", None))
            if odd:
                raise AssertionError("fails on odd executions only")
        traps.spawn("t0", body)

    res = tdpmmu.explore(flaky_counter, strategy="random", schedules=5)
    assert res.exit_code == tdpmmu.ExitCode.NONDETERMINISM
    f = res.failures[0]
    assert f.nondeterministic and f.shrink_runs == 0
    assert "did not fail" in f.note


def _nested_scenario_a():
    def scenario():
        traps.spawn("t", lambda: None)
    return scenario


def _nested_scenario_b():
    def scenario():
        traps.spawn("t", lambda: None)
    return scenario


def test_ad_hoc_scenarios_of_the_same_name_do_not_collide():
    """Two different functions called ``scenario`` (closures from two factories: tests in
    two modules, one pytest worker) are two ad-hoc scenarios; the same factory's closure
    made again replaces its own."""
    a = get_scenario(_nested_scenario_a())
    b = get_scenario(_nested_scenario_b())
    again = get_scenario(_nested_scenario_a())
    assert a.name != b.name and again.name == a.name
    from tdpmmu.runtime.errors import UsageError
    from tdpmmu.scenarios.registry import scenario as register
    with pytest.raises(UsageError, match="registered twice"):
        register(a.name)(lambda: None)


def test_the_shrinker_caps_each_replay_at_the_best_schedule_so_far():
    """A candidate longer than the best schedule can never be kept, so its replay is
    bounded by the best one's step count (and the bound follows the best)."""
    from tdpmmu.explore.shrink import Shrinker
    seen = []

    def attempt(cand, max_steps):
        seen.append(max_steps)
        if len(cand) < 6 and cand[:1] == [0]:      # any shorter prefix still fails
            return cand, 0
        return None
    s = Shrinker(attempt, [0, 0, 0, 1, 1, 0, 0, 1], preemptions=2)
    best = s.shrink()
    assert seen[0] == 8 and min(seen) == len(best) < 8


def _livelock_and_other_caps(monkeypatch):
    """The max_steps of every lenient replay while shrinking a Livelock and a
    use-after-free found in the same scenario family."""
    from tdpmmu.explore import engine
    caps = {}
    inner = engine.Runner.replay

    def replay(self, choices, strict=True, tracing=False, max_steps=None):
        if not strict:
            caps.setdefault(self.defects[0], set()).add(max_steps)
        return inner(self, choices, strict=strict, tracing=tracing, max_steps=max_steps)
    monkeypatch.setattr(engine.Runner, "replay", replay)
    return caps


def test_shrinking_a_livelock_keeps_the_scenario_step_bound(monkeypatch):
    caps = _livelock_and_other_caps(monkeypatch)
    r = tdpmmu.explore("mmu-notifier-remap-vs-fault", strategy="pct", schedules=3, seed=0,
                       defects=["mmu-seq-sign-extension-livelock"],
                       params={"seq_start": 2 ** 31 - 1}, stop_on_first=True,
                       max_shrink_runs=3)
    assert r.failures and r.failures[0].category == "Livelock"
    assert caps["mmu-seq-sign-extension-livelock"] == {None}   # the step bound is the bug
    r = tdpmmu.explore("mmu-zap-leafs-vs-invalidate", strategy="pct", schedules=50, seed=0,
                       defects=["root-iter-next-after-free"], stop_on_first=True,
                       max_shrink_runs=5)
    assert r.failures and r.failures[0].category == "UseAfterFree"
    got = caps["root-iter-next-after-free"]
    assert None not in got and max(got) <= r.failures[0].original_steps
