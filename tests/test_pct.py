"""PCT is shown to be PCT (Burckhardt et al.): the classic depth-1 and depth-2 bugs.

Depth 1: task ``a`` runs a long prefix and then sets a flag; the bug needs ``a`` to
set it before ``b``'s first read.  A random walk almost never gets there (it would
have to pick ``a`` ~PREFIX times in a row); PCT with d=1 does whenever ``a`` got the
higher priority, i.e. in about half the executions.

Depth 2: ``b`` must read ``x`` *between* two writes of ``a``: one ordering constraint
more, so a strict priority order (d=1) can never produce it while d=2 places its single
priority-change point inside the window now and then.
"""

from __future__ import annotations

from tdpmmu.runtime import PCT, RandomWalk
from tdpmmu.runtime.errors import InvariantViolation
from tdpmmu.sync import Words, spawn

from helpers import run_all

PREFIX = 30
WINDOW = 6
RUNS = 400


def depth1_bug():
    flag = Words("flag")
    scratch = Words("scratch", PREFIX)

    def a():
        for i in range(PREFIX):
            scratch.write_once(i, i)
        flag.write_once(0, 1)

    def b():
        if flag.read_once(0) == 1:
            raise InvariantViolation("b saw the flag at its first read")

    spawn("a", a)
    spawn("b", b)


def depth2_bug():
    x = Words("x")
    scratch = Words("scratch", PREFIX + WINDOW)

    def a():
        for i in range(PREFIX):
            scratch.write_once(i, i)
        x.write_once(0, 1)
        for i in range(WINDOW):
            scratch.write_once(PREFIX + i, i)
        x.write_once(0, 2)

    def b():
        if x.read_once(0) == 1:
            raise InvariantViolation("b read x between a's two writes")

    spawn("a", a)
    spawn("b", b)


def hits(setup, strategy, n=RUNS) -> int:
    return sum(1 for r in run_all(setup, strategy, n) if r.failure is not None)


def test_depth1_bug_random_walk_almost_never():
    assert hits(depth1_bug, RandomWalk(seed=1)) <= 1


def test_depth1_bug_pct_d1_about_half():
    h = hits(depth1_bug, PCT(seed=1, depth=1))
    assert 0.35 * RUNS <= h <= 0.65 * RUNS, h


def test_depth2_bug_missed_by_d1_found_by_d2():
    assert hits(depth2_bug, PCT(seed=2, depth=1)) == 0
    h2 = hits(depth2_bug, PCT(seed=2, depth=2))
    # probability ~ 1/2 * WINDOW/k with k ~ 2 * (PREFIX + WINDOW); at least a few in 400
    assert h2 >= 3, h2
    assert hits(depth2_bug, RandomWalk(seed=2)) <= 1


def test_pct_priorities_are_distinct_and_above_depth():
    p = PCT(seed=5, depth=3)
    p.new_execution()

    class T:
        def __init__(self, i):
            self.id = i
    for i in range(6):
        p.on_spawn(T(i))
    vals = list(p.prio.values())
    assert len(set(vals)) == len(vals)
    assert all(v > 3 for v in vals)
    assert len(p.change_points) == 2
