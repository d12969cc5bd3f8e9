"""Shared helpers for the test suite."""

from __future__ import annotations

from tdpmmu.runtime import Execution, ops, traps
from tdpmmu.runtime.strategies import make_strategy

_NOP = (ops.READ, None, "step", None)


def steps(n: int) -> None:
    """Perform ``n`` scheduling points that touch nothing."""
    for _ in range(n):
        traps.schedule_point(_NOP)


def straight_line(*lengths):
    """A setup spawning tasks t0, t1... that take exactly ``lengths[i]`` steps each
    (their start step plus lengths[i] - 1 scheduling points)."""
    def setup():
        for i, n in enumerate(lengths):
            traps.spawn(f"t{i}", lambda n=n: steps(n - 1))
    return setup


def run_all(setup, strategy, n: int, tracing: bool = False):
    """Run up to ``n`` executions of ``setup`` under ``strategy``; yields results."""
    for _ in range(n):
        if not strategy.new_execution():
            return
        r = Execution(strategy, tracing=tracing).run(setup)
        strategy.end_execution(r.steps)
        yield r


def traces(setup, name: str, seed: int, n: int, **opts):
    """The full traces of ``n`` executions under a fresh strategy (as plain dicts)."""
    strat = make_strategy(name, seed, **opts)
    return [[s.to_dict(r.task_names) for s in r.trace] + [repr(r.failure)]
            for r in run_all(setup, strat, n, tracing=True)]
