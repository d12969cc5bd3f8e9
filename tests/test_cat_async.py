"""Group async of the catalogue: the new primitives (RwSemaphore, LockdepMap, RcuWait)
with negative controls and correct twins, and the design variants the defects build on
(async-zap-worker, zap-root-as-gfn-range) with the host MAXPHYADDR parameter."""

from __future__ import annotations

import tdpmmu
from tdpmmu.mmu import READ_ACCESS, WRITE_ACCESS, guest_access, kvm_create_vm, kvm_destroy_vm
from tdpmmu.mmu.tdp_iter import kvm_mmu_max_gfn, tdp_mmu_max_gfn_exclusive
from tdpmmu.scenarios import get_defect
from tdpmmu.scenarios.catalogue_async import OUT_OF_SCOPE_VARIANTS
from tdpmmu.scenarios.mmu_core import build_vm, teardown_check
from tdpmmu.sync import (LockdepMap, Mutex, RcuWait, RwSemaphore, SpinLock, cpu_relax, down_read,
                         down_write, join, lock_map_acquire, lock_map_release, mutex_lock,
                         mutex_unlock, spawn, spin_lock, spin_unlock, up_read, up_write)

SCHEDULES = 200


def explore_all(fn, params=None, defects=(), schedules=SCHEDULES):
    out = []
    for st in ("random", "pct"):
        res = tdpmmu.explore(fn, strategy=st, schedules=schedules, params=params,
                             defects=defects, stop_on_first=True)
        out += res.failures
    return out


# -- RwSemaphore: fair, sleeping ---------------------------------------------------

def sc_rwsem_fair():
    """r1 holds the rwsem for read; once w waits for write, r2 starts: its down_read
    must queue behind w (fairness), so r2 gets in only after w has had it."""
    sem = RwSemaphore("sem")
    log = []

    def r1():
        down_read(sem)
        log.append("r1")
        while not sem.writers_waiting and "w" not in log:
            cpu_relax()
        r2_task = spawn("r2", r2)
        for _ in range(3):
            cpu_relax()
        up_read(sem)
        join(r2_task)

    def w():
        down_write(sem)
        log.append("w")
        up_write(sem)

    def r2():
        down_read(sem)
        log.append("r2")
        up_read(sem)

    spawn("r1", r1)
    spawn("w", w)

    def check():
        if "w" in log and log.index("r2") < log.index("w"):
            raise AssertionError(f"a reader overtook a waiting writer: {log}")
    return check


def test_rwsem_pending_writer_blocks_new_readers():
    assert explore_all(sc_rwsem_fair) == []


def sc_rwsem_under_spinlock():
    """Negative control: down_read may sleep, so not under a spinlock."""
    sem, lock = RwSemaphore("sem2"), SpinLock("sl")

    def t():
        spin_lock(lock)
        down_read(sem)
        up_read(sem)
        spin_unlock(lock)
    spawn("t", t)


def test_rwsem_down_read_might_sleep():
    f = explore_all(sc_rwsem_under_spinlock, schedules=5)
    assert f and f[0].category == "SleepInAtomic"


# -- LockdepMap: a pseudo-lock in the order graph -----------------------------------

_MAP = LockdepMap("test_region_map")


def sc_lockdep_map(broken: bool = False):
    """A region annotated with a lockdep map takes a mutex; with ``broken`` another
    task enters the region while holding that mutex (a cycle through the map)."""
    m = Mutex("m")

    def region():
        lock_map_acquire(_MAP)
        mutex_lock(m)
        mutex_unlock(m)
        lock_map_release(_MAP)

    def other():
        mutex_lock(m)
        if broken:
            lock_map_acquire(_MAP)
            lock_map_release(_MAP)
        mutex_unlock(m)

    a = spawn("a", region)
    spawn("b", lambda: (join(a), other()))


def test_lockdep_map_cycle_is_reported_and_its_twin_is_clean():
    assert explore_all(sc_lockdep_map) == []
    f = explore_all(sc_lockdep_map, params={"broken": True}, schedules=5)
    assert f and f[0].category == "LockOrderInversion"
    assert "test_region_map" in f[0].message


def sc_lockdep_map_unbalanced():
    def t():
        lock_map_release(LockdepMap("never_acquired"))
    spawn("t", t)


def test_lockdep_map_release_balance():
    f = explore_all(sc_lockdep_map_unbalanced, schedules=3)
    assert f and f[0].category == "BadUnlock"


# -- RcuWait: no lost wake-up ---------------------------------------------------------

def sc_rcuwait(lost: bool = False):
    """One waiter sleeps while a count is non-zero; the waker drops it under the lock
    and wakes.  ``lost``: the waiter drops the lock before set_current_state (a lost
    wake-up: the step bound / deadlock detector must see it)."""
    lock, w = SpinLock("cnt_lock"), RcuWait("cnt_wait")
    state = {"count": 1}

    def waiter():
        spin_lock(lock)
        w.prepare_to_rcuwait()
        while state["count"]:
            if lost:
                spin_unlock(lock)
                w.set_current_state()
            else:
                w.set_current_state()
                spin_unlock(lock)
            w.schedule()
            spin_lock(lock)
        w.finish_rcuwait()
        spin_unlock(lock)

    def waker():
        spin_lock(lock)
        state["count"] -= 1
        spin_unlock(lock)
        w.rcuwait_wake_up()

    spawn("waiter", waiter)
    spawn("waker", waker)


def test_rcuwait_wakeup_is_not_lost_and_its_broken_twin_deadlocks():
    assert explore_all(sc_rcuwait) == []
    f = explore_all(sc_rcuwait, params={"lost": True})
    assert f and f[0].category == "Deadlock"


# -- the notifier / memslot exclusion ------------------------------------------------

def test_memslot_update_waits_for_the_invalidation_in_flight():
    res = tdpmmu.explore("mmu-notifier-remap-vs-fault", strategy="random", schedules=150,
                         params={"memslot_update": True})
    assert not res.failures
    assert res.coverage.get("memslot-update-waited-for-invalidation", 0) > 0


# -- design A and the catalogue variants on it ------------------------------------------

def test_async_zap_worker_design_is_clean_with_two_memslot_updates():
    res = tdpmmu.explore("mmu-faults-vs-zap-all-fast", strategy="random", schedules=100,
                         params={"updates": 2}, defects=["async-zap-worker"])
    assert not res.failures


def test_async_zap_worker_variant_b_is_listed_out_of_scope_with_a_reason():
    assert set(OUT_OF_SCOPE_VARIANTS) == {"async-zap-worker/b"}
    assert "affinity" in OUT_OF_SCOPE_VARIANTS["async-zap-worker/b"]
    for name in ("async-zap-worker/a", "async-zap-worker/c"):
        assert get_defect(name).catalogue == "async-zap-worker"


# -- host MAXPHYADDR and the v5.10-v5.17 root zap ---------------------------------------

def sc_small_host_teardown(host_maxphyaddr: int = 36, mmio_gpa: int = -1):
    """Single-threaded: map gfn 3 (and maybe probe an unbacked gpa), then destroy."""
    kvm = build_vm(1, host_maxphyaddr=host_maxphyaddr)
    v = kvm.vcpus[0]

    def vcpu():
        guest_access(v, 0x3000, WRITE_ACCESS)
        if mmio_gpa >= 0:
            guest_access(v, mmio_gpa, READ_ACCESS)
        kvm_destroy_vm(kvm)
    spawn("vcpu0", vcpu)
    return lambda: teardown_check(kvm)


def sc_max_gfn():
    kvm = kvm_create_vm(host_maxphyaddr=36)
    assert tdp_mmu_max_gfn_exclusive(kvm) == 1 << 24 and kvm_mmu_max_gfn(kvm) == (1 << 24) - 1
    assert tdp_mmu_max_gfn_exclusive() == 1 << 40
    assert kvm_mmu_max_gfn(kvm_create_vm(name="kvm52")) == (1 << 40) - 1


def test_host_maxphyaddr_bounds_the_max_gfn():
    assert tdpmmu.explore(sc_max_gfn, schedules=1).failures == []


def test_root_zap_designs_leave_nothing_on_a_36_bit_host():
    for defects in ((), ("zap-root-as-gfn-range",)):
        for probe in (-1, 1 << 39, 1 << 35):
            f = explore_all(sc_small_host_teardown, params={"mmio_gpa": probe}, defects=defects,
                            schedules=3)
            assert f == [], (defects, probe, f)


def test_zap_all_range_variants_leak_at_teardown():
    f = explore_all(sc_small_host_teardown, defects=["zap-all-range-misses-top-level/a"],
                    schedules=2)
    assert f and f[0].category == "KernelWarning" and "page(s) left" in f[0].message
    f = explore_all(sc_small_host_teardown, params={"mmio_gpa": 1 << 39},
                    defects=["zap-all-range-misses-top-level/b"], schedules=2)
    assert f and f[0].category == "KernelWarning" and "page(s) left" in f[0].message
    # /a needs a host MAXPHYADDR below a top-level entry's span (39 bits)
    assert explore_all(sc_small_host_teardown, params={"host_maxphyaddr": 39},
                       defects=["zap-all-range-misses-top-level/a"], schedules=2) == []
