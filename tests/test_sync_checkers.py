"""Negative controls and correct twins for the sync-layer checkers.

Every checker of :mod:`tdpmmu.sync` (lockdep, the RCU checks, the page allocator,
refcount_t, the data-race detector) and the runtime's deadlock detection is driven
through real executions of tiny programs:

* a *negative control* breaks exactly one rule and must be reported with the exact
  violation class (and, where the text is part of the contract, a key phrase of the
  message);
* its *correct twin* is the same program with the rule respected and must pass every
  schedule tried (a few hundred with ``random`` and with ``pct``, or every schedule
  with unbounded DFS for the small programs whose point is "never").

Scenario functions are module-level ``sc_*`` functions: :func:`tdpmmu.explore`
registers an ad-hoc scenario under the function's ``__name__``, so each name is
unique.  Most of them take a ``case``/``fixed`` parameter selecting the variant.
"""

from __future__ import annotations

import pytest

import tdpmmu
from tdpmmu.runtime import Execution, RandomWalk, traps
from tdpmmu.sync import (GFP_ATOMIC, GFP_NOWAIT, Completion, Mutex, RefCount, RwLock,
                         SpinLock, SrcuStruct, WaitQueue, Words, alloc_page,
                         assert_no_leaks, call_rcu, cond_resched, cond_resched_rwlock_read,
                         cpu_relax, free_page, in_atomic, leak_check, lockdep_assert_held,
                         lockdep_assert_held_read, lockdep_assert_held_write,
                         lockdep_assert_not_held, lockdep_is_held, lockdep_is_held_type,
                         mutex_lock, mutex_unlock, rcu_assign_pointer, rcu_barrier,
                         rcu_dereference, rcu_dereference_check, rcu_dereference_protected,
                         rcu_pending_callbacks, rcu_read_lock, rcu_read_unlock, read_lock,
                         read_unlock, refcount_add, refcount_dec, refcount_dec_and_test,
                         refcount_inc, refcount_inc_not_zero, refcount_read, spawn,
                         spin_lock, spin_trylock, spin_unlock, srcu_dereference,
                         srcu_read_lock, srcu_read_unlock, synchronize_rcu,
                         synchronize_srcu, wait_for_completion, write_lock, write_unlock,
                         READ_ONCE, WRITE_ONCE, smp_load_acquire, smp_store_release)

#: schedules per strategy for every correct twin
TWIN_SCHEDULES = 300
INT_MAX = 2**31 - 1


# -- helpers -----------------------------------------------------------------------

def first_failure(fn, *, strategy="random", schedules=200, seed=0, params=None, **kw):
    """Explore ``fn`` and return its first (confirmed, shrunk) Failure, or None."""
    res = tdpmmu.explore(fn, strategy=strategy, schedules=schedules, seed=seed,
                         params=params, stop_on_first=True, **kw)
    return res.failures[0] if res.failures else None


def expect(fn, category, *phrases, params=None, strategy="random", schedules=200, seed=0):
    """The program must fail with ``category``; its message must contain ``phrases``."""
    f = first_failure(fn, strategy=strategy, schedules=schedules, seed=seed, params=params)
    assert f is not None, (f"{fn.__name__}({params}): expected {category}, but "
                           f"{schedules} {strategy} schedules found nothing")
    assert f.category == category, tdpmmu.render_failure(f)
    assert not f.nondeterministic, f.note
    for p in phrases:
        assert p in f.message, f"{p!r} not in {f.message!r}"
    return f


def assert_clean(fn, params=None, schedules=TWIN_SCHEDULES, strategies=("random", "pct")):
    """The program must pass ``schedules`` schedules of every strategy in ``strategies``."""
    for strategy in strategies:
        res = tdpmmu.explore(fn, strategy=strategy, schedules=schedules, seed=0,
                             params=params, stop_on_first=True)
        assert not res.failures, tdpmmu.render_failure(res.failures[0])
        assert res.executions == schedules


def explore_all(fn, params=None, limit=20_000, **kw):
    """Every schedule (DFS without a preemption bound); the search must be exhausted."""
    res = tdpmmu.explore(fn, strategy="dfs", schedules=limit, params=params,
                         strategy_options={"preemption_bound": None}, **kw)
    assert res.exhausted, f"{fn.__name__}: more than {limit} schedules, search not exhausted"
    return res


def assert_clean_exhaustive(fn, params=None, limit=20_000):
    res = explore_all(fn, params, limit, stop_on_first=True)
    assert not res.failures, tdpmmu.render_failure(res.failures[0])
    assert res.executions > 1      # there was something to interleave
    return res


def run_once(setup, seed=0, params=None):
    """One execution of a plain setup function under RandomWalk(seed)."""
    strategy = RandomWalk(seed)
    strategy.new_execution()
    r = Execution(strategy, params=params).run(setup)
    assert r.error is None, r.error
    return r


def violation_name(r) -> str | None:
    return None if r.failure is None else type(r.failure).__name__


# == 1. SleepInAtomic ===============================================================

#: atomic contexts and how might_sleep describes them
CONTEXT_DESC = {
    "spin": "holds s_lock (exclusive)",
    "read": "holds rw_lock (read)",
    "write": "holds rw_lock (write)",
    "rcu": "holds an RCU read-side section (depth 1)",
}
#: sleeping calls and how might_sleep names them
SLEEPER_DESC = {
    "mutex_lock": "mutex_lock(m_lock)",
    "cond_resched": "cond_resched()",
    "alloc_page": "alloc_page(GFP_KERNEL)",
    "synchronize_rcu": "synchronize_rcu()",
    "wait_for_completion": "wait_for_completion(ready)",
}


def sc_sleep_in_atomic(context: str = "spin", sleeper: str = "mutex_lock", fixed: bool = False):
    """Two tasks enter an atomic context and call something that may sleep; when
    ``fixed`` they leave the atomic context first."""
    spin = SpinLock("s_lock")
    rw = RwLock("rw_lock")
    mtx = Mutex("m_lock")
    ready = Completion("ready")
    ready.complete_all()
    counter = Words("counter")

    def enter():
        assert not in_atomic()
        if context == "spin":
            spin_lock(spin)
        elif context == "read":
            read_lock(rw)
        elif context == "write":
            write_lock(rw)
        else:
            rcu_read_lock()
        assert in_atomic()

    def leave():
        if context == "spin":
            spin_unlock(spin)
        elif context == "read":
            read_unlock(rw)
        elif context == "write":
            write_unlock(rw)
        else:
            rcu_read_unlock()
        assert not in_atomic()

    def sleep():
        if sleeper == "mutex_lock":
            mutex_lock(mtx)
            counter.write(0, counter.read(0) + 1)
            mutex_unlock(mtx)
        elif sleeper == "cond_resched":
            cond_resched()
        elif sleeper == "alloc_page":
            free_page(alloc_page("pg", 4))
        elif sleeper == "synchronize_rcu":
            synchronize_rcu()
        else:
            ready.wait_for_completion()

    def body():
        enter()
        if fixed:
            leave()
        sleep()
        if not fixed:
            leave()

    spawn("t0", body)
    spawn("t1", body)


SLEEP_CASES = [
    ("spin", "mutex_lock"),            # mutex_lock while holding a spinlock
    ("read", "cond_resched"),          # cond_resched under an rwlock read lock
    ("read", "alloc_page"),            # GFP_KERNEL allocation under an rwlock read lock
    ("rcu", "mutex_lock"),             # mutex_lock inside rcu_read_lock
    ("spin", "synchronize_rcu"),
    ("spin", "alloc_page"),
    ("write", "wait_for_completion"),
    ("rcu", "cond_resched"),
    ("rcu", "alloc_page"),
]


@pytest.mark.parametrize("context,sleeper", SLEEP_CASES)
def test_sleep_in_atomic_reported(context, sleeper):
    f = expect(sc_sleep_in_atomic, "SleepInAtomic",
               f"sleeping function {SLEEPER_DESC[sleeper]} called from invalid context",
               CONTEXT_DESC[context],
               params={"context": context, "sleeper": sleeper})
    assert f.family == "LockdepViolation"
    if context != "rcu":
        assert [label for label, _ in f.evidence] == ["held"]


@pytest.mark.parametrize("context,sleeper", SLEEP_CASES)
def test_sleep_after_leaving_atomic_is_fine(context, sleeper):
    assert_clean(sc_sleep_in_atomic, {"context": context, "sleeper": sleeper, "fixed": True})


def sc_atomic_safe_calls():
    """Non-sleeping allocations in atomic context; sleeping calls under mutexes."""
    spin = SpinLock("s_lock")
    rw = RwLock("rw_lock")
    outer = Mutex("outer_mutex")
    inner = Mutex("inner_mutex")

    def body():
        spin_lock(spin)
        a = alloc_page("atomic_pg", 4, gfp=GFP_ATOMIC)
        b = alloc_page("nowait_pg", 4, gfp=GFP_NOWAIT)
        spin_unlock(spin)
        read_lock(rw)
        rcu_read_lock()
        c = alloc_page("rcu_pg", 4, gfp=GFP_ATOMIC)
        rcu_read_unlock()
        read_unlock(rw)
        mutex_lock(outer)              # sleeping locks may nest and may sleep
        mutex_lock(inner)
        assert not in_atomic()
        cond_resched()
        d = alloc_page("kernel_pg", 4)
        mutex_unlock(inner)
        mutex_unlock(outer)
        for page in (a, b, c, d):
            free_page(page)

    spawn("t0", body)
    spawn("t1", body)
    return lambda: assert_no_leaks("at the end")


def test_gfp_atomic_under_spinlock_and_sleeping_under_mutex_are_fine():
    assert_clean(sc_atomic_safe_calls)


def sc_cond_resched_rwlock_in_atomic(context: str = "rcu", mode: str = "read",
                                     fixed: bool = False):
    """cond_resched_rwlock_read/_write() may sleep: the kernel's macros start with
    __might_resched(PREEMPT_LOCK_RESCHED_OFFSETS), which allows exactly the rwlock
    itself -- no RCU read-side section and no other spinning lock.  The TDP MMU's
    tdp_mmu_iter_cond_resched() drops RCU around it for that reason (``fixed``)."""
    rw = RwLock("mmu_lock")
    outer = SpinLock("outer_lock")
    lock, unlock, resched = ((read_lock, read_unlock, cond_resched_rwlock_read)
                             if mode == "read" else
                             (write_lock, write_unlock, RwLock.cond_resched_rwlock_write))

    def walker():
        if context == "spin":
            spin_lock(outer)               # an outer spinning lock: never legal here
        lock(rw)
        if context == "rcu":
            rcu_read_lock()
            if fixed:
                rcu_read_unlock()
        resched(rw)
        if context == "rcu":
            if fixed:
                rcu_read_lock()
            rcu_read_unlock()
        unlock(rw)
        if context == "spin":
            spin_unlock(outer)

    def other():
        write_lock(rw)
        write_unlock(rw)

    spawn("walker", walker)
    spawn("other", other)


@pytest.mark.parametrize("mode", ["read", "write"])
@pytest.mark.parametrize("context", ["rcu", "spin"])
def test_cond_resched_rwlock_in_atomic_reported(context, mode):
    expect(sc_cond_resched_rwlock_in_atomic, "SleepInAtomic",
           params={"context": context, "mode": mode})


@pytest.mark.parametrize("mode", ["read", "write"])
def test_cond_resched_rwlock_outside_rcu_is_fine(mode):
    # the TDP MMU idiom: rcu_read_unlock(); cond_resched_rwlock_*(); rcu_read_lock()
    assert_clean(sc_cond_resched_rwlock_in_atomic, {"context": "rcu", "mode": mode, "fixed": True})


# == 2. RecursiveLocking ============================================================

def sc_recursive_locking(case: str = "spin"):
    s = SpinLock("s_lock")
    rw = RwLock("rw_lock")
    m = Mutex("m_lock")

    def body():
        if case == "spin":
            spin_lock(s)
            spin_lock(s)
        elif case == "read":
            read_lock(rw)
            read_lock(rw)
        elif case == "read_then_write":
            read_lock(rw)
            write_lock(rw)
        elif case == "mutex":
            mutex_lock(m)
            mutex_lock(m)
        raise AssertionError("unreachable: the second acquisition must be reported")

    spawn("t0", body)
    spawn("t1", body)


@pytest.mark.parametrize("case,phrase", [
    ("spin", "takes s_lock (exclusive) while already holding it (exclusive)"),
    ("read", "takes rw_lock (read) while already holding it (read)"),
    ("read_then_write", "takes rw_lock (write) while already holding it (read)"),
    ("mutex", "takes m_lock (exclusive) while already holding it (exclusive)"),
])
def test_recursive_locking_reported(case, phrase):
    f = expect(sc_recursive_locking, "RecursiveLocking", "possible recursive locking", phrase,
               params={"case": case})
    assert f.evidence[0][0] == "held"


def sc_distinct_and_shared_locks():
    """Nesting two different locks in one order, shared readers, re-locking after unlock."""
    a = SpinLock("lock_a")
    b = SpinLock("lock_b")
    rw = RwLock("rw_lock")
    x = Words("x")

    def body():
        read_lock(rw)                  # both tasks may hold it for read at once
        spin_lock(a)
        spin_lock(b)
        x.write(0, x.read(0) + 1)
        spin_unlock(b)
        spin_unlock(a)
        read_unlock(rw)
        spin_lock(a)                   # taking it again after releasing it is fine
        x.write(0, x.read(0) + 1)
        spin_unlock(a)

    spawn("t0", body)
    spawn("t1", body)

    def check():
        assert x.peek() == 4
    return check


def test_distinct_nested_and_shared_read_locks_are_fine():
    assert_clean(sc_distinct_and_shared_locks)


# == 3. BadUnlock ===================================================================

def sc_bad_unlock(case: str = "spin_not_held"):
    s = SpinLock("s_lock")
    rw = RwLock("rw_lock")
    m = Mutex("m_lock")
    taken = Completion("taken")
    released = Completion("released")

    def t0():
        if case == "spin_not_held":
            spin_unlock(s)
        elif case == "read_unlock_of_write":
            write_lock(rw)
            read_unlock(rw)
        elif case == "write_unlock_of_read":
            read_lock(rw)
            write_unlock(rw)
        elif case == "other_tasks_mutex":
            mutex_lock(m)
            taken.complete()
            released.wait_for_completion()
            mutex_unlock(m)

    def t1():
        if case == "other_tasks_mutex":
            taken.wait_for_completion()
            mutex_unlock(m)            # BUG: t0 holds it, not t1
            released.complete()

    spawn("t0", t0)
    spawn("t1", t1)


@pytest.mark.parametrize("case,phrases", [
    ("spin_not_held", ["bad unlock balance: t0 releases s_lock (exclusive) which it does not "
                       "hold (holds no locks)"]),
    ("read_unlock_of_write", ["bad unlock balance: t0 releases rw_lock as read but holds it "
                              "as write"]),
    ("write_unlock_of_read", ["releases rw_lock as write but holds it as read"]),
    ("other_tasks_mutex", ["t1 releases m_lock (exclusive) which it does not hold"]),
])
def test_bad_unlock_reported(case, phrases):
    expect(sc_bad_unlock, "BadUnlock", *phrases, params={"case": case})


def sc_balanced_unlocks():
    s = SpinLock("s_lock")
    rw = RwLock("rw_lock")
    m = Mutex("m_lock")

    def reader():
        read_lock(rw)
        read_unlock(rw)
        spin_lock(s)
        spin_unlock(s)

    def writer():
        write_lock(rw)
        write_unlock(rw)
        mutex_lock(m)
        mutex_unlock(m)

    spawn("reader", reader)
    spawn("writer", writer)
    spawn("reader2", reader)


def test_balanced_unlocks_are_fine():
    assert_clean(sc_balanced_unlocks)


# == 4. LockHeldAtExit and RcuBadNesting ============================================

def sc_exit_state(case: str = "spin"):
    s = SpinLock("s_lock")
    rw = RwLock("rw_lock")
    m = Mutex("m_lock")
    ss = SrcuStruct("ss")

    def body():
        if case == "spin":
            spin_lock(s)
        elif case == "read":
            read_lock(rw)
        elif case == "mutex":
            mutex_lock(m)
        elif case == "rcu":
            rcu_read_lock()
        elif case == "rcu_nested":
            rcu_read_lock()
            rcu_read_lock()
            rcu_read_unlock()
        elif case == "srcu":
            srcu_read_lock(ss)
        elif case == "rcu_unlock_unbalanced":
            rcu_read_unlock()
        elif case == "rcu_double_unlock":
            rcu_read_lock()
            rcu_read_unlock()
            rcu_read_unlock()
        elif case == "srcu_unlock_unbalanced":
            srcu_read_unlock(ss, 0)

    spawn("t0", body)


@pytest.mark.parametrize("case,phrase", [
    ("spin", "t0 finished while holding s_lock (exclusive)"),
    ("read", "t0 finished while holding rw_lock (read)"),
    ("mutex", "t0 finished while holding m_lock (exclusive)"),
])
def test_lock_held_at_exit_reported(case, phrase):
    f = expect(sc_exit_state, "LockHeldAtExit", phrase, params={"case": case})
    assert f.evidence[0][0] == "held"
    assert f.failing_task == "t0"


@pytest.mark.parametrize("case,phrase", [
    ("rcu", "t0 finished inside an RCU read-side section (depth 1)"),
    ("rcu_nested", "t0 finished inside an RCU read-side section (depth 1)"),
    ("srcu", "t0 finished inside an SRCU read-side section"),
    ("rcu_unlock_unbalanced", "rcu_read_unlock() by t0 outside any read-side section"),
    ("rcu_double_unlock", "rcu_read_unlock() by t0 outside any read-side section"),
    ("srcu_unlock_unbalanced", "srcu_read_unlock(ss) by t0 outside any SRCU read-side section"),
])
def test_rcu_bad_nesting_reported(case, phrase):
    f = expect(sc_exit_state, "RcuBadNesting", phrase, params={"case": case})
    assert f.family == "RcuViolation"


def sc_balanced_sections():
    s = SpinLock("s_lock")
    ss = SrcuStruct("ss")

    def body():
        rcu_read_lock()
        rcu_read_lock()
        rcu_read_unlock()
        rcu_read_unlock()
        idx = srcu_read_lock(ss)
        assert srcu_read_lock(ss) == idx       # nested: same section
        srcu_read_unlock(ss, idx)
        srcu_read_unlock(ss, idx)
        spin_lock(s)
        spin_unlock(s)

    spawn("t0", body)
    spawn("t1", body)


def test_balanced_sections_and_locks_at_exit_are_fine():
    assert_clean(sc_balanced_sections)


# == 5. RcuGracePeriodInReader ======================================================

def sc_gp_in_reader(case: str = "synchronize_rcu", fixed: bool = False):
    """A task waits for a grace period from inside a read-side section (``fixed``:
    after leaving it); another reader runs concurrently."""
    ss = SrcuStruct("ss")
    ran: list[str] = []

    def callback(me):
        def cb():
            ran.append(me)
        cb.__name__ = f"cb_{me}"
        return cb

    def updater(me):
        def run():
            if case == "rcu_barrier":
                call_rcu(callback(me))
            if case == "synchronize_srcu":
                srcu_read_lock(ss)
            else:
                rcu_read_lock()
            if fixed:
                if case == "synchronize_srcu":
                    srcu_read_unlock(ss, 0)
                else:
                    rcu_read_unlock()
            if case == "synchronize_rcu":
                synchronize_rcu()
            elif case == "rcu_barrier":
                rcu_barrier()
                assert me in ran, "rcu_barrier returned before this task's callback ran"
            else:
                synchronize_srcu(ss)
            if not fixed:
                if case == "synchronize_srcu":
                    srcu_read_unlock(ss, 0)
                else:
                    rcu_read_unlock()
        return run

    def reader():
        rcu_read_lock()
        rcu_read_unlock()
        srcu_read_lock(ss)
        srcu_read_unlock(ss, 0)

    spawn("u0", updater("u0"))
    spawn("u1", updater("u1"))
    spawn("reader", reader)

    def check():
        assert rcu_pending_callbacks() == 0 or case != "rcu_barrier"
    return check


@pytest.mark.parametrize("case,phrases", [
    ("synchronize_rcu", ["synchronize_rcu() called by", "inside an RCU read-side section"]),
    ("rcu_barrier", ["rcu_barrier() called by", "inside an RCU read-side section"]),
    ("synchronize_srcu", ["synchronize_srcu(ss) called by", "inside its own read-side section"]),
])
def test_grace_period_in_reader_reported(case, phrases):
    f = expect(sc_gp_in_reader, "RcuGracePeriodInReader", *phrases, params={"case": case})
    assert f.family == "RcuViolation"


@pytest.mark.parametrize("case", ["synchronize_rcu", "rcu_barrier", "synchronize_srcu"])
def test_grace_period_outside_reader_is_fine(case):
    assert_clean(sc_gp_in_reader, {"case": case, "fixed": True})


# == 6. RcuUnprotectedDereference ===================================================

def sc_rcu_deref(case: str = "rcu_dereference"):
    lock = SpinLock("update_lock")
    gp = Words("gp")
    ss = SrcuStruct("ss")
    other_ss = SrcuStruct("other_ss")
    rcu_assign_pointer(gp, 0, alloc_page("obj", 2))
    held = Completion("held")

    def reader():
        if case == "rcu_dereference":
            rcu_dereference(gp, 0)
        elif case == "check_false":
            rcu_dereference_check(gp, 0, False, "update_lock held")
        elif case == "check_lock_held_by_other":
            held.wait_for_completion()
            rcu_dereference_check(gp, 0, lockdep_is_held(lock), "lockdep_is_held(update_lock)")
        elif case == "protected_false":
            rcu_dereference_protected(gp, 0, False, "update_lock held")
        elif case == "protected_in_rcu":
            rcu_read_lock()            # a read-side section does not make it "protected"
            rcu_dereference_protected(gp, 0, lockdep_is_held(lock), "update_lock held")
        elif case == "srcu_outside":
            srcu_dereference(ss, gp, 0)
        elif case == "srcu_in_rcu":
            rcu_read_lock()
            srcu_dereference(ss, gp, 0)
        elif case == "srcu_other_domain":
            srcu_read_lock(other_ss)
            srcu_dereference(ss, gp, 0)
        raise AssertionError("unreachable: the dereference must be reported")

    def holder():
        if case == "check_lock_held_by_other":
            spin_lock(lock)
            held.complete()
            spin_unlock(lock)

    spawn("reader", reader)
    spawn("holder", holder)


@pytest.mark.parametrize("case,phrases", [
    ("rcu_dereference", ["suspicious rcu_dereference(gp[0]) usage by reader: not inside "
                         "rcu_read_lock()"]),
    ("check_false", ["suspicious rcu_dereference_check(gp[0]) usage by reader: not inside "
                     "rcu_read_lock() and update_lock held does not hold"]),
    ("check_lock_held_by_other", ["lockdep_is_held(update_lock) does not hold"]),
    ("protected_false", ["suspicious rcu_dereference_protected(gp[0]) usage by reader: "
                         "update_lock held does not hold"]),
    ("protected_in_rcu", ["rcu_dereference_protected(gp[0])", "does not hold"]),
    ("srcu_outside", ["suspicious srcu_dereference(gp[0]) usage by reader: not inside "
                      "srcu_read_lock(ss)"]),
    ("srcu_in_rcu", ["not inside srcu_read_lock(ss)"]),
    ("srcu_other_domain", ["not inside srcu_read_lock(ss)"]),
])
def test_unprotected_dereference_reported(case, phrases):
    f = expect(sc_rcu_deref, "RcuUnprotectedDereference", *phrases, params={"case": case})
    assert f.family == "RcuViolation"


def sc_rcu_deref_ok(updates: int = 1):
    """RCU and SRCU readers follow a pointer that an updater replaces under a lock and
    retires after both grace periods; every dereference is legal."""
    lock = SpinLock("update_lock")
    gp = Words("gp")
    ss = SrcuStruct("ss")
    first = alloc_page("obj", 2)
    first.write(0, 1)
    rcu_assign_pointer(gp, 0, first)

    def rcu_reader():
        rcu_read_lock()
        p = rcu_dereference(gp, 0)
        p.read(0)
        q = rcu_dereference_check(gp, 0, False, "not needed inside rcu_read_lock")
        q.read(0)
        rcu_read_unlock()

    def srcu_reader():
        idx = srcu_read_lock(ss)
        p = srcu_dereference(ss, gp, 0)
        mutex = Mutex("srcu_reader_private")     # SRCU readers may sleep
        mutex_lock(mutex)
        p.read(0)
        mutex_unlock(mutex)
        srcu_read_unlock(ss, idx)

    def updater():
        for k in range(updates):
            new = alloc_page("obj", 2)
            new.write(0, k + 2)
            spin_lock(lock)
            # rcu_dereference_check is legal outside any section when the lock is held
            old = rcu_dereference_check(gp, 0, lockdep_is_held(lock), "update_lock held")
            assert old is rcu_dereference_protected(gp, 0, lockdep_is_held(lock),
                                                    "update_lock held")
            rcu_assign_pointer(gp, 0, new)
            spin_unlock(lock)
            synchronize_rcu()
            synchronize_srcu(ss)
            free_page(old)

    spawn("rcu_reader", rcu_reader)
    spawn("srcu_reader", srcu_reader)
    spawn("updater", updater)

    def check():
        free_page(gp.peek(0))
        assert_no_leaks("after the last object was freed")
    return check


def test_protected_dereferences_are_fine():
    assert_clean(sc_rcu_deref_ok)


def test_rcu_dereference_check_with_lock_held_passes_unit():
    def setup():
        lock = SpinLock("l")
        cell = Words("cell")
        rcu_assign_pointer(cell, 0, 7)

        def t0():
            spin_lock(lock)
            assert rcu_dereference_check(cell, 0, lockdep_is_held(lock)) == 7
            spin_unlock(lock)
        spawn("t0", t0)

    for seed in range(5):
        r = run_once(setup, seed)
        assert r.failure is None, r.failure


# == 7. DoubleFree, UseAfterFree, MemoryLeak ========================================

def sc_memory(case: str = "double_free"):
    shared = alloc_page("shared", 4)

    def t0():
        if case == "double_free":
            page = alloc_page("pg", 4)
            free_page(page)
            free_page(page)
        elif case == "double_free_two_tasks":
            free_page(shared)
        elif case == "uaf_member":
            page = alloc_page("pg", 4)
            hdr = Words("hdr", 2, owner=page)
            hdr.write(0, 1)
            free_page(page)
            hdr.read(0)
        elif case == "uaf_refcount_member":
            page = alloc_page("pg", 4)
            ref = RefCount("pg.ref", 1, owner=page)
            free_page(page)
            refcount_inc(ref)
        elif case == "uaf_marked":
            page = alloc_page("pg", 4)
            free_page(page)
            WRITE_ONCE(page, 0, 1)
        elif case == "leak":
            a = alloc_page("a", 4)
            b = alloc_page("b", 4)
            c = alloc_page("c", 4)
            free_page(b)
            assert [p.name for p in leak_check()] == ["shared#1", "a#2", "c#4"]
            free_page(shared)
            del a, c
            assert_no_leaks("when t0 finishes")

    def t1():
        if case == "double_free_two_tasks":
            free_page(shared)

    spawn("t0", t0)
    spawn("t1", t1)

    def check():
        if case == "leak_in_final_check":
            assert_no_leaks("at the end")
    return check


def test_double_free_reported():
    f = expect(sc_memory, "DoubleFree", "double free of pg#2 by t0; first freed at step",
               params={"case": "double_free"})
    assert [label for label, _ in f.evidence] == ["allocated", "freed", "freed again"]
    assert f.family == "MemoryViolation"


def test_double_free_by_two_tasks_reported():
    expect(sc_memory, "DoubleFree", "double free of shared#1", params={"case": "double_free_two_tasks"})


@pytest.mark.parametrize("case,phrase", [
    ("uaf_member", "use-after-free: read of hdr[0] by t0; it was freed at step"),
    ("uaf_refcount_member", "use-after-free: refcount_inc of pg.ref[0] by t0"),
    ("uaf_marked", "use-after-free: WRITE_ONCE of pg#2[0] by t0"),
])
def test_use_after_free_reported(case, phrase):
    f = expect(sc_memory, "UseAfterFree", phrase, params={"case": case})
    assert [label for label, _ in f.evidence] == ["allocated", "freed", "accessed"]


def test_memory_leak_reported_with_live_page_names():
    f = expect(sc_memory, "MemoryLeak", "2 allocation(s) still live when t0 finishes: a#2, c#4",
               params={"case": "leak"})
    assert [text.split(":")[0] for _, text in f.evidence] == ["a#2", "c#4"]


def test_memory_leak_in_final_check_reported():
    f = expect(sc_memory, "MemoryLeak", "1 allocation(s) still live at the end: shared#1",
               params={"case": "leak_in_final_check"})
    assert f.failing_task is None      # raised by the final check, not by a task


def sc_memory_ok():
    """Two tasks allocate, use and free pages (with members); nothing leaks."""
    def body():
        page = alloc_page("pg", 4)
        hdr = Words("hdr", 2, owner=page)
        ref = RefCount("pg.ref", 1, owner=page)
        hdr.write(0, 1)
        refcount_inc(ref)
        refcount_dec(ref)
        assert page in leak_check()
        if refcount_dec_and_test(ref):
            free_page(page)
        assert page not in leak_check()

    spawn("t0", body)
    spawn("t1", body)

    def check():
        assert leak_check() == []
        assert_no_leaks("after everything was freed")
    return check


def test_no_leak_after_freeing_everything():
    assert_clean(sc_memory_ok)


# == 8. RefcountViolation ===========================================================

def sc_refcount(case: str = "inc_on_zero"):
    ref = RefCount("ref", {"inc_on_zero": 0, "add_on_zero": 0, "dec_and_test_on_zero": 0,
                           "dec_hits_zero": 1, "saturate": INT_MAX, "add_saturate": INT_MAX - 1,
                           "inc_not_zero_saturate": INT_MAX, "double_put": 1}[case])

    def put():
        if refcount_dec_and_test(ref):
            pass

    def t0():
        if case == "inc_on_zero":
            refcount_inc(ref)
        elif case == "add_on_zero":
            refcount_add(ref, 2)
        elif case == "dec_and_test_on_zero":
            refcount_dec_and_test(ref)
        elif case == "dec_hits_zero":
            refcount_dec(ref)
        elif case == "saturate":
            refcount_inc(ref)
        elif case == "add_saturate":
            refcount_add(ref, 2)
        elif case == "inc_not_zero_saturate":
            refcount_inc_not_zero(ref)
        elif case == "double_put":
            put()

    def t1():
        if case == "double_put":
            put()                      # BUG: both tasks put the only reference

    spawn("t0", t0)
    spawn("t1", t1)


@pytest.mark.parametrize("case,phrase", [
    ("inc_on_zero", "refcount_t: addition on 0; use-after-free. (ref was 0, by t0)"),
    ("add_on_zero", "addition on 0; use-after-free."),
    ("dec_and_test_on_zero", "refcount_t: underflow; use-after-free. (ref was 0, by t0)"),
    ("double_put", "underflow; use-after-free."),
    ("dec_hits_zero", "refcount_t: decrement hit 0; leaking memory. (ref was 1, by t0)"),
    ("saturate", f"refcount_t: saturated; leaking memory. (ref was {INT_MAX}, by t0)"),
    ("add_saturate", "saturated; leaking memory."),
    ("inc_not_zero_saturate", "saturated; leaking memory."),
])
def test_refcount_violation_reported(case, phrase):
    f = expect(sc_refcount, "RefcountViolation", phrase, params={"case": case})
    assert f.evidence[0][0] == "refcount"


def test_refcount_inc_not_zero_on_zero_unit():
    seen = []

    def setup():
        ref = RefCount("ref", 0)

        def t0():
            seen.append(refcount_inc_not_zero(ref))
            seen.append(refcount_read(ref))
        spawn("t0", t0)

    r = run_once(setup)
    assert r.failure is None, r.failure
    assert seen == [False, 0]


def sc_refcount_ok(users: int = 2):
    """An object published in a slot holds one reference for its owner; users look it
    up under RCU and take a reference with refcount_inc_not_zero (which may fail once
    the count hit 0), use it and put it.  The owner unpublishes it and drops its
    reference; exactly one put sees zero and frees it after a grace period."""
    obj = alloc_page("kobj", 2)
    ref = RefCount("kobj.ref", 1, owner=obj)
    slot = Words("kobj_slot")
    rcu_assign_pointer(slot, 0, obj)
    frees = []

    def put():
        if refcount_dec_and_test(ref):
            frees.append(traps.current_task().name)
            obj.write(0, 0xDEAD)       # plain: ordered after every user's read by the puts
            call_rcu(lambda: free_page(obj), "free_kobj")

    def user():
        rcu_read_lock()
        p = rcu_dereference(slot, 0)
        got = p is not None and refcount_inc_not_zero(ref)
        rcu_read_unlock()
        if got:
            p.read(0)
            put()

    def owner():
        rcu_assign_pointer(slot, 0, None)
        put()

    for i in range(users):
        spawn(f"user{i}", user)
    spawn("owner", owner)

    def check():
        assert len(frees) == 1, frees
        assert_no_leaks()
    return check


def test_refcount_correct_get_put_is_fine():
    assert_clean(sc_refcount_ok)


# == 9. LockNotHeld and LockHeldWrongly =============================================

def sc_lockdep_assert(case: str = "read_when_write"):
    rw = RwLock("rw_lock")
    s = SpinLock("s_lock")
    m = Mutex("m_lock")
    taken = Completion("taken")
    checked = Completion("checked")

    def update_table():
        """Requires: rw_lock held for write."""
        lockdep_assert_held_write(rw)

    def t0():
        if case == "read_when_write":
            write_lock(rw)
            lockdep_assert_held_read(rw)
        elif case == "write_when_read":
            read_lock(rw)
            update_table()
        elif case == "write_when_missing":
            update_table()
        elif case == "held_when_missing":
            lockdep_assert_held(s)
        elif case == "read_on_spinlock":
            spin_lock(s)
            lockdep_assert_held_read(s)
        elif case == "held_by_other_task":
            taken.wait_for_completion()
            lockdep_assert_held(m)     # t1 holds it, not t0
        elif case == "not_held":
            mutex_lock(m)
            lockdep_assert_not_held(m)

    def t1():
        if case == "held_by_other_task":
            mutex_lock(m)
            taken.complete()
            checked.wait_for_completion()
            mutex_unlock(m)

    spawn("t0", t0)
    spawn("t1", t1)


@pytest.mark.parametrize("case,phrase", [
    ("read_when_write", "lockdep_assert_held_read(rw_lock) failed in t0: t0 holds rw_lock (write)"),
    ("write_when_read", "lockdep_assert_held_write(rw_lock) failed in update_table: "
                        "t0 holds rw_lock (read)"),
    ("write_when_missing", "lockdep_assert_held_write(rw_lock) failed in update_table: "
                           "t0 holds no locks"),
    ("held_when_missing", "lockdep_assert_held(s_lock) failed in t0: t0 holds no locks"),
    ("read_on_spinlock", "lockdep_assert_held_read(s_lock) failed"),
    ("held_by_other_task", "lockdep_assert_held(m_lock) failed in t0: t0 holds no locks"),
])
def test_lock_not_held_reported(case, phrase):
    f = expect(sc_lockdep_assert, "LockNotHeld", phrase, params={"case": case})
    ev = dict(map(tuple, f.evidence))
    assert set(ev) == {"held", "holders"}
    if case == "held_by_other_task":
        assert ev["holders"].startswith("m_lock: m_lock (exclusive) by t1 since step")
    elif case in ("held_when_missing", "write_when_missing"):
        assert ev["holders"].endswith(": nobody")


def test_lock_held_wrongly_reported():
    f = expect(sc_lockdep_assert, "LockHeldWrongly",
               "lockdep_assert_not_held(m_lock) failed in t0: m_lock (exclusive) by t0 since step",
               params={"case": "not_held"})
    assert f.family == "LockdepViolation"


def sc_lockdep_assert_ok():
    rw = RwLock("rw_lock")
    s = SpinLock("s_lock")
    m = Mutex("m_lock")

    def reader():
        lockdep_assert_not_held(rw)
        read_lock(rw)
        lockdep_assert_held_read(rw)
        lockdep_assert_held(rw)
        assert lockdep_is_held_type(rw, "read") and not lockdep_is_held_type(rw, "write")
        read_unlock(rw)
        lockdep_assert_not_held(rw)
        spin_lock(s)
        lockdep_assert_held_write(s)       # exclusive locks count as write
        lockdep_assert_held(s)
        lockdep_assert_not_held(m)         # whoever else holds it, this task does not
        spin_unlock(s)

    def writer():
        write_lock(rw)
        lockdep_assert_held_write(rw)
        lockdep_assert_held(rw)
        assert lockdep_is_held_type(rw, "write") and not lockdep_is_held_type(rw, "read")
        write_unlock(rw)
        mutex_lock(m)
        lockdep_assert_held_write(m)
        lockdep_assert_held(m)
        lockdep_assert_not_held(s)
        mutex_unlock(m)
        lockdep_assert_not_held(m)

    spawn("reader", reader)
    spawn("writer", writer)


def test_lockdep_assertions_with_correct_modes_pass():
    assert_clean(sc_lockdep_assert_ok)


# == 10. LockOrderInversion and Deadlock ============================================

def sc_abba(serialized: bool = True, trylock: bool = False, same_order: bool = False):
    """t1 takes lock_a then lock_b; t2 takes lock_b then lock_a (``same_order``: a then b;
    ``trylock``: b then spin_trylock(a)).  When ``serialized`` t2 first waits for a
    completion that t1 signals at its very end, so they can never deadlock."""
    a = SpinLock("lock_a")
    b = SpinLock("lock_b")
    t1_done = Completion("t1_done")
    x = Words("x")

    def t1():
        spin_lock(a)
        spin_lock(b)
        x.write(0, x.read(0) + 1)
        spin_unlock(b)
        spin_unlock(a)
        if serialized:
            t1_done.complete()

    def t2():
        if serialized:
            t1_done.wait_for_completion()
        first, second = (a, b) if same_order else (b, a)
        spin_lock(first)
        if trylock:
            if spin_trylock(second):
                spin_unlock(second)
        else:
            spin_lock(second)
            x.write(0, x.read(0) + 1)
            spin_unlock(second)
        spin_unlock(first)

    spawn("t1", t1)
    spawn("t2", t2)


def test_lock_order_inversion_reported_without_deadlock():
    f = expect(sc_abba, "LockOrderInversion",
               "possible circular locking dependency: t2 takes lock_a (exclusive) while "
               "holding lock_b, but lock_a -> lock_b was seen before")
    labels = [label for label, _ in f.evidence]
    assert labels == ["held", "taking", "earlier"]
    assert f.evidence[2][1].startswith("t1 took lock_b while holding lock_a")


def test_lock_order_inversion_reported_in_every_schedule_dfs():
    res = explore_all(sc_abba, shrink=False)
    assert res.executions > 1
    assert sum(res.hits.values()) == res.executions       # every schedule failed
    assert [key[0] for key in res.hits] == ["LockOrderInversion"]
    assert len(res.failures) == 1


def test_serialized_abba_cannot_deadlock_without_lockdep():
    # the negative control of the test above: the program itself is deadlock-free
    assert_clean_exhaustive(sc_abba, {"_lockdep": False})


def test_unserialized_abba_deadlocks_without_lockdep():
    f = expect(sc_abba, "Deadlock", "all tasks are blocked",
               params={"serialized": False, "_lockdep": False}, strategy="pct", schedules=500)
    ev = dict(map(tuple, f.evidence))
    assert set(ev) == {"t1", "t2"}
    assert ev["t1"] == "blocked on spin_lock(lock_b) held by t2"
    assert ev["t2"] == "blocked on spin_lock(lock_a) held by t1"


def test_unserialized_abba_with_lockdep_reports_inversion():
    expect(sc_abba, "LockOrderInversion", "possible circular locking dependency",
           params={"serialized": False})


@pytest.mark.parametrize("params", [{"same_order": True}, {"same_order": True, "serialized": False},
                                    {"trylock": True}, {"trylock": True, "serialized": False}])
def test_consistent_order_and_trylock_are_fine(params):
    assert_clean(sc_abba, params)
    assert_clean_exhaustive(sc_abba, params)


# == 11. DataRace ===================================================================

def sc_race(mode: str = "none"):
    """A writer task and a reader task share ``data``; ``mode`` says what orders them."""
    data = Words("data")
    flag = Words("flag")
    result = Words("result")
    rw = RwLock("rw_lock")
    done = Completion("done")
    gp = Words("gp")
    obj = Words("obj")
    if mode == "rcu_gp":
        rcu_assign_pointer(gp, 0, obj)

    def writer():
        if mode == "none":
            data.write(0, 42)
        elif mode == "completion":
            data.write(0, 42)
            done.complete()
        elif mode == "release_acquire":
            data.write(0, 42)
            smp_store_release(flag, 0, 1)
        elif mode == "once_flag":
            data.write(0, 42)
            WRITE_ONCE(flag, 0, 1)         # relaxed: orders nothing
        elif mode == "once_only":
            WRITE_ONCE(data, 0, 42)
        elif mode == "read_lock":
            read_lock(rw)
            data.write(0, 42)              # BUG: a write under the shared lock
            read_unlock(rw)
        elif mode in ("write_lock", "rw_mixed"):
            write_lock(rw)
            data.write(0, data.read(0) + 1)
            write_unlock(rw)
        elif mode == "call_rcu":
            data.write(0, 42)

            def cb():
                data.write(0, data.read(0) + 1)
            call_rcu(cb)
        elif mode == "rcu_barrier":
            def cb():
                data.write(0, 42)
            call_rcu(cb)
            rcu_barrier()
            data.read(0)                   # the callback ran before rcu_barrier returned
        elif mode == "rcu_gp":
            rcu_assign_pointer(gp, 0, None)
            synchronize_rcu()
            obj.write(0, 0x6B)             # "free" the old object
        elif mode in ("spawn_join", "spawn_late", "no_join"):
            if mode != "spawn_late":
                data.write(0, 42)

            def child():
                result.write(0, data.read(0) + 1)
            task = spawn("child", child)
            if mode == "spawn_late":
                data.write(0, 42)          # BUG: after the spawn
            if mode != "no_join":
                traps.join(task)
            assert result.read(0) in (0, 43)

    def reader():
        if mode in ("none", "once_only"):
            (READ_ONCE if mode == "once_only" else Words.read)(data, 0)
        elif mode == "completion":
            done.wait_for_completion()
            assert data.read(0) == 42
        elif mode == "release_acquire":
            while not smp_load_acquire(flag, 0):
                cpu_relax()
            assert data.read(0) == 42
        elif mode == "once_flag":
            while not READ_ONCE(flag, 0):
                cpu_relax()
            data.read(0)
        elif mode == "read_lock":
            read_lock(rw)
            data.read(0)
            read_unlock(rw)
        elif mode == "write_lock":
            write_lock(rw)
            data.write(0, data.read(0) + 1)
            write_unlock(rw)
        elif mode == "rw_mixed":
            read_lock(rw)
            data.read(0)
            read_unlock(rw)
        elif mode == "rcu_gp":
            rcu_read_lock()
            p = rcu_dereference(gp, 0)
            if p is not None:
                assert p.read(0) == 0
            rcu_read_unlock()

    spawn("writer", writer)
    spawn("reader", reader)


@pytest.mark.parametrize("mode,phrase", [
    ("none", "data race on data[0]"),
    ("once_flag", "data race on data[0]: plain read (read) by reader is concurrent with an "
                  "earlier plain write by writer (no happens-before between them)"),
    ("read_lock", "data race on data[0]"),
    ("spawn_late", "data race on data[0]"),
    ("no_join", "data race on result[0]"),
])
def test_data_race_reported(mode, phrase):
    f = expect(sc_race, "DataRace", phrase, params={"mode": mode})
    labels = [label for label, _ in f.evidence]
    assert labels == ["access", "racing"]


@pytest.mark.parametrize("mode", ["completion", "release_acquire", "once_only", "write_lock",
                                  "rw_mixed", "call_rcu", "rcu_gp", "spawn_join"])
def test_ordered_accesses_do_not_race(mode):
    assert_clean(sc_race, {"mode": mode})


def test_rcu_barrier_orders_callbacks_before_its_return():
    assert_clean(sc_race, {"mode": "rcu_barrier"})


@pytest.mark.parametrize("mode", ["none", "once_flag", "read_lock"])
def test_racy_programs_pass_with_race_detection_off(mode):
    assert_clean(sc_race, {"mode": mode, "_race_detection": False})


def test_spawn_from_setup_orders_setup_writes_unit():
    def setup():
        data = Words("data")
        data.write(0, 5)               # main, before the spawn
        spawn("t0", lambda: data.read(0))
        spawn("t1", lambda: data.read(0))

    for seed in range(10):
        assert run_once(setup, seed).failure is None


# == 12. RCU grace-period semantics =================================================

def sc_rcu_gp_waits_for_readers(sections: int = 2):
    """A reader runs ``sections`` read-side sections and publishes where it is in one
    word: odd = inside section k, even = left it.  The updater samples the word, runs
    synchronize_rcu and samples it again: a reader inside a section at the first
    sample must have left that section by the second."""
    state = Words("reader_state")
    junk = Words("junk")

    def reader():
        for k in range(sections):
            rcu_read_lock()
            WRITE_ONCE(state, 0, 2 * k + 1)
            READ_ONCE(junk, 0)
            WRITE_ONCE(state, 0, 2 * k + 2)
            rcu_read_unlock()

    def updater():
        before = READ_ONCE(state, 0)
        synchronize_rcu()
        after = READ_ONCE(state, 0)
        if before % 2 == 1:
            assert after > before, (f"synchronize_rcu returned while a reader that was in "
                                    f"its section before it started is still inside "
                                    f"(state {before} -> {after})")

    spawn("reader", reader)
    spawn("updater", updater)


def test_synchronize_rcu_waits_for_preexisting_readers_exhaustive():
    assert_clean_exhaustive(sc_rcu_gp_waits_for_readers)


#: (late reader began while synchronize_rcu was waiting, it was still inside when
#: synchronize_rcu returned) -- one entry per execution of sc_rcu_late_reader
LATE_READER_SEEN: list[tuple[bool, bool]] = []


def sc_rcu_late_reader():
    """An early reader keeps synchronize_rcu waiting; a late reader enters meanwhile."""
    inside = Words("late_inside")
    began_during_gp = []
    tasks = {}

    def early():
        rcu_read_lock()
        rcu_read_unlock()

    def updater():
        synchronize_rcu()
        still_inside = READ_ONCE(inside, 0) == 1
        LATE_READER_SEEN.append((bool(began_during_gp and began_during_gp[0]), still_inside))

    def late():
        rcu_read_lock()
        # the updater blocks only inside synchronize_rcu
        began_during_gp.append(tasks["updater"].state == "blocked")
        WRITE_ONCE(inside, 0, 1)
        WRITE_ONCE(inside, 0, 0)
        rcu_read_unlock()

    spawn("early", early)
    tasks["updater"] = spawn("updater", updater)
    spawn("late", late)


def test_synchronize_rcu_does_not_wait_for_late_readers():
    LATE_READER_SEEN.clear()
    res = explore_all(sc_rcu_late_reader, stop_on_first=True)
    assert not res.failures, tdpmmu.render_failure(res.failures[0])
    assert len(LATE_READER_SEEN) == res.executions
    # some schedule: the late reader entered while synchronize_rcu was waiting for the
    # early one, and synchronize_rcu returned while the late reader was still inside
    assert (True, True) in LATE_READER_SEEN


# == 13. SRCU =======================================================================

def sc_srcu_gp_waits_for_sleeping_readers():
    """Like sc_rcu_gp_waits_for_readers, with SRCU; the reader sleeps (takes a mutex)
    inside its section, which is legal for SRCU."""
    ss = SrcuStruct("ss")
    m = Mutex("m_lock")
    state = Words("reader_state")

    def reader():
        idx = srcu_read_lock(ss)
        WRITE_ONCE(state, 0, 1)
        mutex_lock(m)
        mutex_unlock(m)
        WRITE_ONCE(state, 0, 2)
        srcu_read_unlock(ss, idx)

    def updater():
        before = READ_ONCE(state, 0)
        synchronize_srcu(ss)
        after = READ_ONCE(state, 0)
        if before == 1:
            assert after == 2, "synchronize_srcu returned while a pre-existing reader is inside"

    spawn("reader", reader)
    spawn("updater", updater)


def test_synchronize_srcu_waits_for_preexisting_readers_exhaustive():
    assert_clean_exhaustive(sc_srcu_gp_waits_for_sleeping_readers)


def sc_srcu_readers_may_sleep():
    ss = SrcuStruct("ss")
    m = Mutex("m_lock")
    ready = Completion("ready")
    counter = Words("counter")

    def reader():
        idx = srcu_read_lock(ss)
        assert not in_atomic()
        mutex_lock(m)                  # NOT SleepInAtomic: SRCU readers may sleep
        counter.write(0, counter.read(0) + 1)
        mutex_unlock(m)
        cond_resched()
        free_page(alloc_page("pg", 4))
        synchronize_rcu()              # waits for RCU readers only: legal here
        ready.wait_for_completion()
        srcu_read_unlock(ss, idx)

    def completer():
        ready.complete_all()
        synchronize_srcu(ss)

    spawn("r0", reader)
    spawn("r1", reader)
    spawn("completer", completer)


def test_srcu_readers_may_sleep():
    assert_clean(sc_srcu_readers_may_sleep)


def test_mutex_in_srcu_section_nested_in_rcu_is_still_sleep_in_atomic():
    def setup():
        ss = SrcuStruct("ss")
        m = Mutex("m_lock")

        def t0():
            srcu_read_lock(ss)
            rcu_read_lock()
            mutex_lock(m)
        spawn("t0", t0)

    r = run_once(setup)
    assert violation_name(r) == "SleepInAtomic"
    assert "RCU read-side section (depth 1)" in r.failure.message


# == 14. Completion and WaitQueue ===================================================

def sc_completion_ok(case: str = "two_completes"):
    c = Completion("c")
    other = Completion("other")

    def waiter():
        c.wait_for_completion()

    def signaller():
        if case == "two_completes":
            c.complete()
            c.complete()
        elif case == "complete_all":
            c.complete_all()

    if case == "ping_pong":
        def ping():
            c.complete()
            other.wait_for_completion()

        def pong():
            wait_for_completion(c)
            other.complete()
        spawn("ping", ping)
        spawn("pong", pong)
        return
    spawn("w0", waiter)
    spawn("w1", waiter)
    spawn("signaller", signaller)


@pytest.mark.parametrize("case", ["two_completes", "complete_all", "ping_pong"])
def test_completion_never_deadlocks_exhaustive(case):
    assert_clean_exhaustive(sc_completion_ok, {"case": case})


def sc_wait_queue_ok(waiters: int = 2):
    wq = WaitQueue("wq")
    flag = Words("flag")

    def waiter():
        wq.wait_event(lambda: READ_ONCE(flag, 0))
        assert READ_ONCE(flag, 0) == 1

    def waker():
        WRITE_ONCE(flag, 0, 1)
        wq.wake_up()

    for i in range(waiters):
        spawn(f"waiter{i}", waiter)
    spawn("waker", waker)


def test_wait_queue_never_deadlocks_exhaustive():
    assert_clean_exhaustive(sc_wait_queue_ok, {"waiters": 1})
    # two waiters: ~21k schedules unbounded, too slow here; every schedule with at
    # most two preemptions, plus the random and pct budgets
    res = tdpmmu.explore(sc_wait_queue_ok, strategy="dfs", schedules=20_000,
                         strategy_options={"preemption_bound": 2}, stop_on_first=True)
    assert res.exhausted and not res.failures
    assert_clean(sc_wait_queue_ok, {"waiters": 2})


def sc_completion_missing_complete():
    c = Completion("never")

    def waiter():
        c.wait_for_completion()

    spawn("waiter", waiter)
    spawn("bystander", lambda: None)


def test_wait_without_complete_is_a_deadlock():
    f = expect(sc_completion_missing_complete, "Deadlock",
               "all tasks are blocked: waiter waits on wait_for_completion(never)")
    ev = dict(map(tuple, f.evidence))
    assert ev == {"waiter": "blocked on wait_for_completion(never)", "bystander": "done"}
