"""The runtime's self-check scenarios: small kernel idioms with a correct form and
re-introducible bugs (defects), one per checker.

Each scenario is a correct program; each defect switches one line of it to the
classic mistake.  They are the negative controls of the runtime and sync layers: the
explorer must find every defect with the expected violation class, and must find
nothing in the correct forms.  Scenario names start with ``sync-``.
"""

from __future__ import annotations

from ..runtime.errors import InvariantViolation
from ..sync import (RefCount, RwLock, SpinLock, WaitQueue, Words, alloc_page,
                    assert_no_leaks, call_rcu, cond_resched_rwlock_read, cpu_relax, defect,
                    free_page, lockdep_assert_held_write, lockdep_is_held, rcu_assign_pointer,
                    rcu_dereference, rcu_dereference_protected, rcu_dereference_raw,
                    rcu_read_lock, rcu_read_unlock, read_lock, read_unlock, spawn, spin_lock,
                    spin_unlock, write_lock, write_unlock)
from .registry import register_defect, scenario

SELFTEST = ("selftest",)


# -- a counter ---------------------------------------------------------------------

@scenario("sync-counter", tags=SELFTEST, dfs_bound=2)
def sync_counter(tasks: int = 2, incs: int = 2):
    """Tasks increment a shared counter under a spinlock; the total must be exact."""
    lock = SpinLock("counter_lock")
    counter = Words("counter")

    def body():
        for _ in range(incs):
            if defect("counter-racy-rmw"):
                v = counter.read_once(0)          # BUG: non-atomic read-modify-write
                counter.write_once(0, v + 1)
            elif defect("counter-unlocked"):
                v = counter.read(0)               # BUG: plain accesses without the lock
                counter.write(0, v + 1)
            else:
                spin_lock(lock)
                v = counter.read(0)
                counter.write(0, v + 1)
                spin_unlock(lock)

    for i in range(tasks):
        spawn(f"t{i}", body)

    def check():
        if counter.peek() != tasks * incs:
            raise InvariantViolation(f"lost update: counter is {counter.peek()}, "
                                     f"expected {tasks * incs}")
    return check


register_defect("counter-racy-rmw", "non-atomic increment of a shared counter (lost update)",
                "InvariantViolation", ["sync-counter"],
                "READ_ONCE then WRITE_ONCE without the lock: two increments can collapse.")
register_defect("counter-unlocked", "plain counter accesses without the lock (data race)",
                "DataRace", ["sync-counter"],
                "Plain loads and stores race with each other's tasks.")


# -- two locks ---------------------------------------------------------------------

@scenario("sync-lock-order", tags=SELFTEST, dfs_bound=2)
def sync_lock_order(rounds: int = 1):
    """Two tasks each take lock_a then lock_b to update two words consistently."""
    a = SpinLock("lock_a")
    b = SpinLock("lock_b")
    x = Words("x")
    y = Words("y")

    def forward():
        for _ in range(rounds):
            spin_lock(a)
            spin_lock(b)
            x.write(0, x.read(0) + 1)
            y.write(0, y.read(0) + 1)
            spin_unlock(b)
            spin_unlock(a)

    def backward():
        for _ in range(rounds):
            if defect("lock-order-abba"):
                first, second = b, a              # BUG: the opposite order
            else:
                first, second = a, b
            spin_lock(first)
            spin_lock(second)
            x.write(0, x.read(0) + 1)
            y.write(0, y.read(0) + 1)
            spin_unlock(second)
            spin_unlock(first)

    spawn("t0", forward)
    spawn("t1", backward)

    def check():
        if x.peek() != y.peek() or x.peek() != 2 * rounds:
            raise InvariantViolation(f"x={x.peek()} y={y.peek()}, expected both {2 * rounds}")
    return check


register_defect("lock-order-abba", "two locks taken in opposite orders (ABBA)",
                "LockOrderInversion", ["sync-lock-order"],
                "lockdep reports the inversion in every schedule that takes both orders, "
                "deadlocked or not; with _lockdep=false the explorer finds the deadlock.")


# -- an RCU-protected pointer ------------------------------------------------------

@scenario("sync-rcu-pointer", tags=SELFTEST, dfs_bound=2)
def sync_rcu_pointer(readers: int = 1, updates: int = 1):
    """Readers follow an RCU-protected pointer; an updater replaces the object and
    frees the old one after a grace period (call_rcu)."""
    lock = SpinLock("update_lock")
    gp = Words("global_ptr")
    first = alloc_page("obj", 2)
    first.write(0, 1)
    rcu_assign_pointer(gp, 0, first)

    def reader():
        if defect("rcu-reader-unlocked"):
            p = rcu_dereference_raw(gp, 0)        # BUG: no read-side section
            p.read_once(0)
            p.read_once(1)
            return
        if defect("rcu-deref-unprotected"):
            p = rcu_dereference(gp, 0)            # BUG: rcu_dereference outside the section
            rcu_read_lock()
        else:
            rcu_read_lock()
            p = rcu_dereference(gp, 0)
        p.read_once(0)
        p.read_once(1)
        rcu_read_unlock()

    def updater():
        for k in range(updates):
            new = alloc_page("obj", 2)
            new.write(0, k + 2)
            spin_lock(lock)
            old = rcu_dereference_protected(gp, 0, lockdep_is_held(lock), "update_lock held")
            rcu_assign_pointer(gp, 0, new)
            spin_unlock(lock)
            if defect("rcu-free-no-grace-period"):
                free_page(old)                    # BUG: readers may still use it
            else:
                call_rcu(lambda old=old: free_page(old), "free_obj")

    for i in range(readers):
        spawn(f"reader{i}", reader)
    spawn("updater", updater)

    def check():
        free_page(gp.peek(0))
        assert_no_leaks("after the last object was freed")
    return check


register_defect("rcu-reader-unlocked", "RCU reader outside a read-side section",
                "UseAfterFree", ["sync-rcu-pointer"],
                "The grace period does not wait for the reader, so call_rcu frees the "
                "object while it is still being read.")
register_defect("rcu-deref-unprotected", "rcu_dereference outside rcu_read_lock",
                "RcuUnprotectedDereference", ["sync-rcu-pointer"])
register_defect("rcu-free-no-grace-period", "object freed without waiting for a grace period",
                "UseAfterFree", ["sync-rcu-pointer"])


# -- a refcounted object -----------------------------------------------------------

@scenario("sync-refcount", tags=SELFTEST, dfs_bound=2)
def sync_refcount(users: int = 1):
    """An object published in a slot holds one reference for its owner; users look it
    up under RCU, take a reference with refcount_inc_not_zero, use it and put it.
    The owner unpublishes it and puts its reference; the last put frees it after a
    grace period."""
    obj = alloc_page("kobj", 2)
    ref = RefCount("kobj.ref", 1, owner=obj)
    slot = Words("kobj_slot")
    rcu_assign_pointer(slot, 0, obj)

    def put():
        if ref.refcount_dec_and_test():
            call_rcu(lambda: free_page(obj), "free_kobj")

    def user():
        rcu_read_lock()
        p = rcu_dereference(slot, 0)
        if p is None:
            rcu_read_unlock()
            return
        got = ref.refcount_inc_not_zero()
        if defect("refcount-ignore-inc-not-zero"):
            got = True                            # BUG: the failed get is treated as success
            p.read_once(0)
            put()
            rcu_read_unlock()
            return
        rcu_read_unlock()
        if not got:
            return
        if defect("refcount-put-then-use"):
            put()                                 # BUG: reference dropped before the use
            p.read_once(0)
        else:
            p.read_once(0)
            put()

    def owner():
        rcu_assign_pointer(slot, 0, None)
        put()

    for i in range(users):
        spawn(f"user{i}", user)
    spawn("owner", owner)

    def check():
        assert_no_leaks("after every reference was put")
    return check


register_defect("refcount-ignore-inc-not-zero", "a failed refcount_inc_not_zero is ignored",
                "RefcountViolation", ["sync-refcount"],
                "The user puts a reference it never got: refcount_t underflow.")
register_defect("refcount-put-then-use", "reference put before the last use",
                "UseAfterFree", ["sync-refcount"])


# -- a table under an rwlock -------------------------------------------------------

@scenario("sync-rwlock-table", tags=SELFTEST, dfs_bound=2)
def sync_rwlock_table(readers: int = 1, entries: int = 2):
    """Readers scan a table under read_lock (yielding with cond_resched_rwlock_read);
    a writer updates it under write_lock through a helper that asserts the lock."""
    lock = RwLock("table_lock")
    table = Words("table", entries)

    def table_update(i, v):
        """Requires: table_lock held for write."""
        lockdep_assert_held_write(lock)
        table.write(i, v)

    def __table_update(i, v):
        table.write(i, v)

    def writer():
        for i in range(entries):
            if defect("rwlock-update-under-read"):
                read_lock(lock)                   # BUG: read lock for an update
                table_update(i, i + 1)
                read_unlock(lock)
            elif defect("rwlock-plain-write-under-read"):
                read_lock(lock)                   # BUG: and the unchecked helper
                __table_update(i, i + 1)
                read_unlock(lock)
            else:
                write_lock(lock)
                table_update(i, i + 1)
                write_unlock(lock)

    def reader():
        read_lock(lock)
        for i in range(entries):
            table.read(i)
            cond_resched_rwlock_read(lock)
        read_unlock(lock)

    for i in range(readers):
        spawn(f"reader{i}", reader)
    spawn("writer", writer)

    def check():
        for i in range(entries):
            if table.peek(i) != i + 1:
                raise InvariantViolation(f"table[{i}] = {table.peek(i)}, expected {i + 1}")
    return check


register_defect("rwlock-update-under-read", "update path called with mmu-style lock held for read",
                "LockNotHeld", ["sync-rwlock-table"],
                "The helper's lockdep_assert_held_write fires in every schedule.")
register_defect("rwlock-plain-write-under-read", "plain write under a read lock",
                "DataRace", ["sync-rwlock-table"],
                "Readers are not ordered by the lock they share: the write races with them.")


# -- a frozen slot (spin until another task finishes) ------------------------------

FROZEN = 0x5A0


@scenario("sync-frozen-slot", tags=SELFTEST, max_steps=2_000, dfs_bound=2)
def sync_frozen_slot(tasks: int = 2, updates: int = 2):  # updates >= 2 for the defect
    """Tasks update a slot by freezing it with cmpxchg, doing their work, then writing
    the new value; others spin (cpu_relax) while it is frozen."""
    slot = Words("slot")
    slot.write(0, 1)

    def body(me):
        def run():
            for k in range(updates):
                while True:
                    old = slot.read_once(0)
                    if old == FROZEN:
                        cpu_relax()
                        continue
                    if slot.cmpxchg(0, old, FROZEN) == old:
                        break
                if defect("frozen-slot-left-frozen") and me == 0 and k == 0:
                    continue                      # BUG: this path forgets to unfreeze
                slot.write_once(0, old + 1)
        return run

    for i in range(tasks):
        spawn(f"t{i}", body(i))

    def check():
        if slot.peek() != 1 + tasks * updates:
            raise InvariantViolation(f"slot = {slot.peek():#x}, expected {1 + tasks * updates}")
    return check


register_defect("frozen-slot-left-frozen", "a frozen value never restored (others spin forever)",
                "Livelock", ["sync-frozen-slot"])


# -- sleeping until a flag is set --------------------------------------------------

@scenario("sync-wait-event", tags=SELFTEST, dfs_bound=2)
def sync_wait_event(waiters: int = 1):
    """Waiters sleep on a wait queue until a flag is set; a waker sets it and wakes them."""
    wq = WaitQueue("wq")
    flag = Words("flag")

    def waiter():
        if defect("wait-event-lost-wakeup"):
            while not flag.read_once(0):          # BUG: checks before queueing itself
                e = wq.prepare_to_wait()
                wq.schedule(e)
                wq.finish_wait(e)
        else:
            wq.wait_event(lambda: flag.read_once(0))

    def waker():
        flag.write_once(0, 1)
        wq.wake_up()

    for i in range(waiters):
        spawn(f"waiter{i}", waiter)
    spawn("waker", waker)


register_defect("wait-event-lost-wakeup", "condition checked before joining the wait queue",
                "Deadlock", ["sync-wait-event"],
                "A wake-up between the check and the sleep is lost; the waiter sleeps forever.")
