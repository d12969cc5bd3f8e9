"""The pytest plugin, run on a user's test file with pytester."""

from __future__ import annotations

USER_TESTS = '''
from tdpmmu.pytest_plugin import explores
from tdpmmu.sync import SpinLock, Words, spawn, spin_lock, spin_unlock


@explores(strategy="pct", schedules=300)
def test_locked_counter(tasks: int = 2):
    lock, c = SpinLock("lock"), Words("c")
    def body():
        spin_lock(lock)
        c.write(0, c.read(0) + 1)
        spin_unlock(lock)
    for i in range(tasks):
        spawn(f"t{i}", body)
    def check():
        assert c.peek() == tasks
    return check


@explores(strategy="random", schedules=300)
def test_unlocked_counter():
    c = Words("c")
    def body():
        c.write(0, c.read(0) + 1)
    spawn("t0", body)
    spawn("t1", body)


def test_builtin_scenario(tdpmmu_explore):
    res = tdpmmu_explore("sync-counter", strategy="random", schedules=100)
    assert res.executions == 100


def test_builtin_defect(tdpmmu_explore):
    tdpmmu_explore("sync-counter", defects=["counter-racy-rmw"], schedules=500)
'''


def test_plugin_passes_and_fails_with_the_report(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(passed=2, failed=2)
    out = r.stdout.str()
    assert "DataRace: data race on c[0]" in out
    assert "--tdpmmu-replay v1:" in out
    assert "InvariantViolation: lost update" in out
    assert "tdpmmu replay sync-counter --defect counter-racy-rmw --schedule v1:" in out


def test_plugin_replays_a_schedule(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "unlocked")
    out = r.stdout.str()
    import re
    schedule = re.search(r"--tdpmmu-replay (v1:\S+)", out).group(1)
    r2 = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "unlocked",
                            "--tdpmmu-replay", schedule)
    r2.assert_outcomes(failed=1)
    assert "DataRace: data race on c[0]" in r2.stdout.str()
    r3 = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "test_locked_counter",
                            "--tdpmmu-schedules", "20")
    r3.assert_outcomes(passed=1)
