"""pytest plugin: explore your own scenarios (or the built-in ones) from a test.

Installed with tdpmmu (entry point ``pytest11``), so it is active in any project that has
tdpmmu installed.  Two ways to use it::

    from tdpmmu.pytest_plugin import explores
    from tdpmmu.sync import SpinLock, Words, spawn, spin_lock, spin_unlock

    @explores(strategy="pct", schedules=500)
    def test_counter_is_exact(tasks: int = 2):      # the body is a scenario
        lock, c = SpinLock("lock"), Words("c")
        ...
        return check

    def test_builtin(tdpmmu_explore):                # the fixture
        tdpmmu_explore("mmu-link-race", strategy="random", schedules=200)

A failing exploration fails the test with the full violation report.  Its last lines
say how to replay the failing schedule: ``pytest NODEID --tdpmmu-replay SCHEDULE`` for a
decorated test, or the ``tdpmmu replay`` command for a registered scenario.

Options: ``--tdpmmu-schedules N`` overrides every budget (e.g. a long nightly run),
``--tdpmmu-seed S`` the seed, ``--tdpmmu-replay SCHEDULE`` replays one schedule.
"""

from __future__ import annotations

import functools
import inspect

import pytest

from .explore import explore, replay
from .report.text import render_failure

_config = {"schedules": None, "seed": None, "replay": None}


def pytest_addoption(parser):
    g = parser.getgroup("tdpmmu")
    g.addoption("--tdpmmu-schedules", type=int, default=None,
                help="schedules per exploration (overrides the tests' budgets)")
    g.addoption("--tdpmmu-seed", type=int, default=None, help="seed for every exploration")
    g.addoption("--tdpmmu-replay", default=None, metavar="SCHEDULE",
                help="replay this schedule in the selected @explores test")


def pytest_configure(config):
    _config["schedules"] = config.getoption("--tdpmmu-schedules")
    _config["seed"] = config.getoption("--tdpmmu-seed")
    _config["replay"] = config.getoption("--tdpmmu-replay")


def _run(scenario, *, strategy, schedules, seed, defects, params, replay_hint, **kw):
    if _config["replay"]:
        r = replay(scenario, _config["replay"], params=params, defects=defects)
        if r.failure is not None:
            pytest.fail(render_failure(r.failure), pytrace=False)
        return r
    res = explore(scenario, strategy=strategy,
                  schedules=_config["schedules"] or schedules,
                  seed=seed if _config["seed"] is None else _config["seed"],
                  defects=defects, params=params, **kw)
    if res.failures:
        f = res.failures[0]
        text = render_failure(f)
        if replay_hint:
            text += "\n" + replay_hint(f)
        more = len(res.failures) - 1
        if more:
            text += f"\n({more} more distinct failure(s))"
        pytest.fail(text, pytrace=False)
    return res


def explores(*, strategy: str = "pct", schedules: int = 1000, seed: int = 0, defects=(),
             params: dict | None = None, **kw):
    """Turn a scenario function into a test that explores it (and fails with the report)."""
    def deco(fn):
        fn.scenario_name = f"{fn.__module__}.{fn.__qualname__}"
        from .scenarios.registry import scenario as register
        register(fn.scenario_name, default=False)(fn)

        @functools.wraps(fn)
        def test(request):
            hint = (lambda f: f"replay: pytest '{request.node.nodeid}' "
                              f"--tdpmmu-replay {f.schedule}")
            _run(fn.scenario_name, strategy=strategy, schedules=schedules, seed=seed,
                 defects=tuple(defects), params=params, replay_hint=hint, **kw)
        test.__signature__ = inspect.Signature(
            [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD)])
        del test.__wrapped__
        return test
    return deco


@pytest.fixture
def tdpmmu_explore():
    """``tdpmmu_explore(scenario, strategy=..., schedules=..., seed=..., defects=...,
    params=...)``: explore and fail the test with the report of the first failure."""
    def run(scenario, *, strategy="pct", schedules=1000, seed=0, defects=(), params=None, **kw):
        return _run(scenario, strategy=strategy, schedules=schedules, seed=seed,
                    defects=tuple(defects), params=params, replay_hint=None, **kw)
    return run
