"""Runtime speed, measured as ratios within one run (these machines are noisy).

Prints, in one run:

* scheduling points/s with no switch (one runnable task: the strategy is not consulted),
  and with two runnable tasks and a strategy that is consulted but never switches;
* switches/s (two tasks, a strategy that always picks the other one);
* executions/s of a 3-task, ~70-point program under the random strategy;
* the ratio of one runtime switch to one bare greenlet round trip (A -> B -> A),
  the baseline measured in this same run.

Targets (issue 2): >= 1M points/s, a switch <= 3x a bare round trip, >= 5,000
executions/s.  ``--json`` prints one object with the keys ``points_per_s``,
``switches_per_s``, ``executions_per_s`` and ``switch_ratio`` (plus the baseline).

    python benchmarks/runtime.py [--json] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import time

from greenlet import greenlet

from tdpmmu.runtime import Execution, RandomWalk, Strategy, ops, traps

OP = (ops.READ, None, "bench", None)


def best_of(fn, repeat: int) -> float:
    """Smallest time of ``repeat`` runs, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        best = min(best, (time.perf_counter_ns() - t0) / 1e9)
    return best


def bare_round_trips(n: int) -> None:
    def pong():
        main = a.parent
        while True:
            main.switch()

    a = greenlet(pong)
    for _ in range(n):
        a.switch()


class Alternate(Strategy):
    """Always run a task other than the current one (when there is one)."""

    name = "alternate"

    def next_task(self, runnable, current, yielding):
        for t in runnable:
            if t is not current:
                return t
        return runnable[0]


class Stay(Strategy):
    """Keep the current task while it can run (the strategy is consulted every point)."""

    name = "stay"

    def next_task(self, runnable, current, yielding):
        return current if current in runnable else runnable[0]


def points_consulted(n: int) -> None:
    def setup():
        def body():
            sp = traps.schedule_point
            for _ in range(n):
                sp(OP)
        traps.spawn("t0", body)
        traps.spawn("t1", lambda: None)
    s = Stay(0)
    s.new_execution()
    Execution(s, max_steps=n + 10).run(setup)


def points_no_switch(n: int) -> None:
    def setup():
        def body():
            sp = traps.schedule_point
            for _ in range(n):
                sp(OP)
        traps.spawn("t0", body)
    s = RandomWalk(0)
    s.new_execution()
    Execution(s, max_steps=n + 10).run(setup)


def switches(n: int) -> None:
    def setup():
        def body():
            sp = traps.schedule_point
            for _ in range(n // 2):
                sp(OP)
        traps.spawn("t0", body)
        traps.spawn("t1", body)
    s = Alternate(0)
    s.new_execution()
    Execution(s, max_steps=n + 10).run(setup)


def small_program_setup():
    def body():
        sp = traps.schedule_point
        for _ in range(22):
            sp(OP)
    traps.spawn("t0", body)
    traps.spawn("t1", body)
    traps.spawn("t2", body)


def executions(n: int) -> int:
    s = RandomWalk(0)
    steps = 0
    for _ in range(n):
        s.new_execution()
        steps += Execution(s).run(small_program_setup).steps
    return steps


def measure(repeat: int, quick: bool = False) -> dict:
    N = 5_000 if quick else 200_000
    rt = best_of(lambda: bare_round_trips(N), repeat) / N
    pt = best_of(lambda: points_no_switch(N), repeat) / N
    pc = best_of(lambda: points_consulted(N), repeat) / N
    sw = best_of(lambda: switches(N), repeat) / N
    E = 50 if quick else 2_000
    ex = best_of(lambda: executions(E), repeat) / E
    steps = executions(1)
    return {
        "points_per_s": round(1 / pt),
        "points_consulted_per_s": round(1 / pc),
        "switches_per_s": round(1 / sw),
        "executions_per_s": round(1 / ex),
        "switch_ratio": round(sw / rt, 2),
        "bare_round_trip_us": round(rt * 1e6, 3),
        "point_us": round(pt * 1e6, 3),
        "switch_us": round(sw * 1e6, 3),
        "program_steps": steps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, not a measurement)")
    args = ap.parse_args()
    r = measure(args.repeat, args.quick)
    if args.json:
        print(json.dumps(r))
        return
    print(f"bare greenlet round trip     {r['bare_round_trip_us']:8.3f} us   (baseline)")
    print(f"scheduling point, no switch  {r['point_us']:8.3f} us   {r['points_per_s']:>12,} points/s"
          f"   (target >= 1,000,000)")
    print(f"point, strategy consulted    {1e6 / r['points_consulted_per_s']:8.3f} us   "
          f"{r['points_consulted_per_s']:>12,} points/s   (2 runnable, no switch)")
    print(f"scheduling point + switch    {r['switch_us']:8.3f} us   {r['switches_per_s']:>12,} switches/s"
          f"   = {r['switch_ratio']}x a round trip (target <= 3x)")
    print(f"3-task program ({r['program_steps']} steps)    {r['executions_per_s']:>12,} executions/s"
          f"   (target >= 5,000)")


if __name__ == "__main__":
    main()
