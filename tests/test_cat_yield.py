"""Group yield: the watchdogs (sync/watchdog.py) with their negative controls, design
R (last-put-zaps-root) on its own, and the group's scenario on the correct model."""

from __future__ import annotations

import pytest

import tdpmmu
from tdpmmu.runtime.errors import RcuStall, SoftLockup, Stall
from tdpmmu.sync import (RwLock, SpinLock, call_rcu, rcu_read_lock, rcu_read_unlock,
                         read_lock, read_unlock, spawn, spin_lock, spin_unlock, write_lock,
                         write_unlock)
from tdpmmu.sync.locks import need_resched
from tdpmmu.runtime import traps
from tdpmmu.runtime.ops import READ
from tdpmmu.sync.watchdog import work as _work


def work(n: int) -> None:
    """``n`` units of work, one step (a plain read of shared state) per chunk."""
    traps.schedule_point((READ, None, "work", None))
    _work(n)


def _hog(lock_mode: str, units: int, resched_every: int = 0, rcu: bool = False):
    """A scenario: ``hog`` holds a lock and works ``units`` units (a scheduling
    opportunity every ``resched_every`` units when > 0) while ``waiter`` wants the lock."""
    def scenario():
        lock = RwLock("biglock") if lock_mode in ("read", "write") else SpinLock("biglock")

        def hog():
            if lock_mode == "read":
                read_lock(lock)
            elif lock_mode == "write":
                write_lock(lock)
            else:
                spin_lock(lock)
            if rcu:
                rcu_read_lock()
                call_rcu(lambda: None, "cb")        # a grace period will wait for us
            for i in range(units // 64):
                work(64)
                if resched_every and (i * 64) % resched_every == 0:
                    need_resched()
            if rcu:
                rcu_read_unlock()
            if lock_mode == "read":
                read_unlock(lock)
            elif lock_mode == "write":
                write_unlock(lock)
            else:
                spin_unlock(lock)

        def waiter():
            if lock_mode == "spin":
                spin_lock(lock)
                spin_unlock(lock)
            else:
                write_lock(lock)
                write_unlock(lock)

        spawn("hog", hog)
        spawn("waiter", waiter)
    scenario.__name__ = f"hog_{lock_mode}_{units}_{resched_every}_{rcu}"
    return scenario


def _categories(fn, schedules=200, strategy="random", params=None):
    r = tdpmmu.explore(fn, strategy=strategy, schedules=schedules, params=params)
    return {f.category for f in r.failures}


def test_soft_lockup_when_a_waiter_spins_on_a_held_lock():
    assert "SoftLockup" in _categories(_hog("read", 4096))
    assert "SoftLockup" in _categories(_hog("spin", 4096))


def test_no_soft_lockup_with_scheduling_points_or_below_the_threshold():
    # negative controls: the same work broken up by need_resched() checks, or too little
    assert _categories(_hog("read", 8192, resched_every=512)) == set()
    assert _categories(_hog("read", 1024)) == set()


def test_soft_lockup_threshold_is_a_knob():
    assert _categories(_hog("read", 1024), params={"_softlockup_thresh": 256}) == {"SoftLockup"}
    assert _categories(_hog("read", 4096), params={"_softlockup_thresh": 100_000}) == set()


def _reader(grace_period: bool, resched: bool):
    """A reader works 8192 units in one RCU read-side section (no lock: only the RCU
    stall detector can see it), having requested a grace period if ``grace_period``,
    with a need_resched check (where RCU would force a quiescent state) per chunk if
    ``resched``."""
    def scenario():
        def reader():
            rcu_read_lock()
            if grace_period:
                call_rcu(lambda: None, "cb")
            for _ in range(8192 // 64):
                work(64)
                if resched:
                    need_resched()
            rcu_read_unlock()
        spawn("reader", reader)
    return scenario


@pytest.mark.parametrize("grace_period, resched, found", [
    (True, False, {"RcuStall"}),
    (False, False, set()),              # no grace period is ever requested
    (True, True, set()),                # the section can be broken up
])
def test_rcu_stall_needs_a_waiting_grace_period_and_an_unbroken_section(grace_period, resched,
                                                                        found):
    assert _categories(_reader(grace_period, resched), strategy="pct") == found


def test_violation_classes_are_stalls():
    assert issubclass(SoftLockup, Stall) and issubclass(RcuStall, Stall)


@pytest.mark.parametrize("scenario", ["mmu-large-guest-migration", "mmu-faults-vs-zap-all-fast",
                                      "mmu-smm-teardown"])
def test_design_r_is_correct_by_itself(scenario):
    r = tdpmmu.explore(scenario, strategy="pct", schedules=150, defects=("last-put-zaps-root",))
    assert not r.failures, r.failures[0].message


def test_design_r_zaps_a_valid_root_at_its_last_put():
    r = tdpmmu.explore("mmu-large-guest-migration", strategy="pct", schedules=20,
                       defects=("last-put-zaps-root",))
    assert r.coverage.get("last-put-zapped-valid-root", 0) > 0


def test_large_guest_migration_is_clean_on_the_correct_model():
    for st in ("pct", "random"):
        r = tdpmmu.explore("mmu-large-guest-migration", strategy=st, schedules=100)
        assert not r.failures, r.failures[0].message
