"""lockdep: held locks per task, lock-requirement assertions, lock-order graph, might_sleep.

Mirrors: kernel/locking/lockdep.c as far as a model needs it.

* Every task keeps its held locks (lock, mode, acquisition step and, while tracing,
  source site).  ``lockdep_assert_held`` and friends check them; a failed assertion
  is a :class:`~tdpmmu.runtime.errors.LockNotHeld` violation naming who holds what.
* Every acquisition of lock class B while holding class A records the dependency
  A -> B (with where it was first seen).  A new dependency that closes a cycle is a
  :class:`~tdpmmu.runtime.errors.LockOrderInversion` -- reported even in a schedule
  where no deadlock happened, because the graph spans the whole execution, exactly
  as the kernel's spans the whole boot.  Trylocks add no dependency (they cannot
  deadlock).
* ``might_sleep`` reports a sleeping call made while holding a spinlock or rwlock,
  or inside an RCU read-side section.
* A task that finishes with locks held, or inside an RCU read-side section, is
  reported when it exits.

Deviates: recursive locking is reported for the same lock *instance* only (the
kernel reports same *class* unless annotated with a subclass); the model has no
same-class nesting.  Read acquisitions are not treated as recursive-read (qrwlock
readers in process context queue behind a waiting writer, so they can deadlock).
"""

from __future__ import annotations

import sys

from ..runtime import traps
from ..runtime.errors import (BadUnlock, LockHeldAtExit, LockHeldWrongly, LockNotHeld,
                              LockOrderInversion, RcuBadNesting, RecursiveLocking, SleepInAtomic)
from ..runtime.execution import format_site
from ._state import HeldLock, cur_state, tstate


class Lockdep:
    """Per-execution lockdep state: the dependency graph between lock classes."""

    def __init__(self, ex):
        #: (class A, class B) -> (task, step, site) where A was held while B was taken
        self.edges: dict[tuple[str, str], tuple] = {}
        self.succ: dict[str, list[str]] = {}
        self.enabled = ex.params.get("_lockdep", True)

    def path(self, src: str, dst: str) -> list[str] | None:
        """A path of dependencies src -> ... -> dst, if any (BFS, deterministic order)."""
        if src == dst:
            return [src]
        prev = {src: None}
        queue = [src]
        for node in queue:
            for nxt in self.succ.get(node, ()):
                if nxt not in prev:
                    prev[nxt] = node
                    if nxt == dst:
                        out = [dst]
                        while prev[out[-1]] is not None:
                            out.append(prev[out[-1]])
                        return out[::-1]
                    queue.append(nxt)
        return None


def _install(ex):
    ex.state["lockdep"] = Lockdep(ex)
    ex.exit_hooks.append(_on_task_exit)


traps.on_execution_start(_install)


def _graph() -> Lockdep:
    return traps.execution_state("lockdep", Lockdep)


def _held_desc(ts) -> str:
    if not ts.held:
        return "no locks"
    return ", ".join(f"{h.lock.name} ({h.mode})" for h in ts.held)


def _holders_desc(lock) -> str:
    ex = traps.current_execution()
    out = []
    for t in [ex.main] + ex.tasks:
        s = t.ext
        if s is None:
            continue
        for h in s.held:
            if h.lock is lock:
                out.append(h.describe(t.name))
    return "; ".join(out) if out else "nobody"


def _caller_function() -> str:
    f = sys._getframe(2)
    while f is not None and f.f_code.co_filename.startswith(_SYNC_DIR):
        f = f.f_back
    return f.f_code.co_name if f is not None else "?"


_SYNC_DIR = __file__.rsplit("/", 1)[0] + "/"


# -- acquisition and release (called by the lock primitives) ---------------------

def lock_acquire(lock, mode: str, trylock: bool = False) -> None:
    """About to acquire ``lock`` in ``mode``: check recursion and lock order."""
    ts = cur_state()
    for h in ts.held:
        if h.lock is lock and not trylock:    # a trylock on a held lock just fails
            v = RecursiveLocking(
                f"possible recursive locking: {ts.name} takes {lock.name} ({mode}) "
                f"while already holding it ({h.mode})")
            v.add_evidence("held", h.describe(ts.name))
            raise v
    if trylock or not ts.held:
        return
    g = _graph()
    if not g.enabled:
        return
    b = lock.cls
    for h in ts.held:
        a = h.lock.cls
        if a == b or (a, b) in g.edges:
            continue
        back = g.path(b, a)
        if back is not None:
            _report_inversion(g, ts, h, lock, mode, back)
        g.edges[(a, b)] = (ts.name, traps.now(), h.site, traps.site())
        g.succ.setdefault(a, []).append(b)


def _report_inversion(g, ts, h, lock, mode, back):
    a, b = h.lock.cls, lock.cls
    v = LockOrderInversion(
        f"possible circular locking dependency: {ts.name} takes {b} ({mode}) while holding "
        f"{a}, but {' -> '.join(back)} was seen before")
    v.add_evidence("held", h.describe(ts.name))
    v.add_evidence("taking", f"{lock.name} ({mode}) by {ts.name} at step {traps.now()}")
    for x, y in zip(back, back[1:]):
        who, step, sa, sb = g.edges[(x, y)]
        where = f" at {format_site(sb)}" if sb else ""
        v.add_evidence("earlier", f"{who} took {y} while holding {x} (step {step}){where}")
    raise v


def lock_acquired(lock, mode: str) -> None:
    ts = cur_state()
    ts.held.append(HeldLock(lock, mode, traps.now(), traps.site()))


def lock_release(lock, mode: str) -> None:
    """About to release ``lock`` held in ``mode``: it must be held that way."""
    ts = cur_state()
    for i in range(len(ts.held) - 1, -1, -1):
        h = ts.held[i]
        if h.lock is lock:
            if h.mode != mode:
                raise BadUnlock(f"bad unlock balance: {ts.name} releases {lock.name} as {mode} "
                                f"but holds it as {h.mode}")
            del ts.held[i]
            return
    raise BadUnlock(f"bad unlock balance: {ts.name} releases {lock.name} ({mode}) which it "
                    f"does not hold (holds {_held_desc(ts)})")


# -- assertions ------------------------------------------------------------------

def lockdep_is_held(lock) -> bool:
    for h in cur_state().held:
        if h.lock is lock:
            return True
    return False


def lockdep_is_held_type(lock, mode: str) -> bool:
    """``mode`` is "read" or "write"; exclusive locks count as write."""
    for h in cur_state().held:
        if h.lock is lock:
            return h.mode == mode or (mode == "write" and h.mode == "exclusive")
    return False


def _not_held(lock, wanted: str, where: str | None = None):
    ts = cur_state()
    fn = where or _caller_function()
    v = LockNotHeld(f"lockdep_assert_held{wanted}({lock.name}) failed in {fn}: "
                    f"{ts.name} holds {_held_desc(ts)}")
    v.add_evidence("held", f"{ts.name}: {_held_desc(ts)}")
    v.add_evidence("holders", f"{lock.name}: {_holders_desc(lock)}")
    raise v


def lockdep_assert_held(lock, where: str | None = None) -> None:
    """The current task holds ``lock`` in any mode (``where``: the function to name)."""
    for h in cur_state().held:
        if h.lock is lock:
            return
    _not_held(lock, "", where)


def lockdep_assert_held_read(lock, where: str | None = None) -> None:
    for h in cur_state().held:
        if h.lock is lock and h.mode == "read":
            return
    _not_held(lock, "_read", where)


def lockdep_assert_held_write(lock, where: str | None = None) -> None:
    for h in cur_state().held:
        if h.lock is lock and h.mode in ("write", "exclusive"):
            return
    _not_held(lock, "_write", where)


def lockdep_assert_in_rcu_read_lock(where: str | None = None) -> None:
    ts = cur_state()
    if not ts.rcu_nesting:
        v = LockNotHeld(f"lockdep_assert_in_rcu_read_lock() failed in "
                        f"{where or _caller_function()}: "
                        f"{ts.name} is not inside rcu_read_lock()")
        v.add_evidence("held", f"{ts.name}: {_held_desc(ts)}")
        raise v


def lockdep_assert_not_held(lock, where: str | None = None) -> None:
    ts = cur_state()
    for h in ts.held:
        if h.lock is lock:
            raise LockHeldWrongly(f"lockdep_assert_not_held({lock.name}) failed in "
                                  f"{where or _caller_function()}: " + h.describe(ts.name))


# -- atomic context --------------------------------------------------------------

def in_atomic() -> bool:
    ts = cur_state()
    if ts.rcu_nesting:
        return True
    for h in ts.held:
        if not h.lock.sleeping:
            return True
    return False


def might_sleep(what: str, except_lock=None) -> None:
    """``what`` may sleep: the current task must not hold a spinning lock or RCU.

    ``except_lock`` is a lock the sleeping call itself drops first (the rwlock of
    cond_resched_rwlock_read/_write, which allow only that lock to be held).
    """
    ts = cur_state()
    ts.work = ts.rcu_work = 0           # a scheduling opportunity (watchdog.py)
    bad = [h for h in ts.held if not h.lock.sleeping and h.lock is not except_lock]
    if not bad and not ts.rcu_nesting:
        return
    reason = []
    if bad:
        reason.append(", ".join(f"{h.lock.name} ({h.mode})" for h in bad))
    if ts.rcu_nesting:
        reason.append(f"an RCU read-side section (depth {ts.rcu_nesting})")
    v = SleepInAtomic(f"sleeping function {what} called from invalid context by {ts.name}: "
                      f"holds {' and '.join(reason)}")
    for h in bad:
        v.add_evidence("held", h.describe(ts.name))
    raise v


def _on_task_exit(task) -> None:
    ts = tstate(task)
    if ts.held:
        v = LockHeldAtExit(f"{ts.name} finished while holding {_held_desc(ts)}")
        for h in ts.held:
            v.add_evidence("held", h.describe(ts.name))
        raise v
    if ts.rcu_nesting:
        raise RcuBadNesting(f"{ts.name} finished inside an RCU read-side section "
                            f"(depth {ts.rcu_nesting})")
    if any(ts.srcu.values()):
        raise RcuBadNesting(f"{ts.name} finished inside an SRCU read-side section")


# -- lockdep maps: pseudo-locks -----------------------------------------------------

class LockdepMap:
    """struct lockdep_map with no lock behind it (lock_map_acquire/lock_map_release).

    The kernel wraps a region in such a map to tell lockdep "this region may wait for
    whatever its callees wait for" -- e.g. the MMU-notifier core's
    __mmu_notifier_invalidate_range_start_map around every invalidate_range_start and
    _end: a lock held across start..end and also taken inside one of them closes a
    cycle through the map, which lockdep reports although nothing blocks on the map
    itself.  Acquiring never blocks; the dependency graph, recursion and release
    balance are checked as for a lock (mode "exclusive").  The region may sleep.
    """

    sleeping = True

    def __init__(self, name: str):
        self.name = name
        self.cls = name

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<LockdepMap {self.name}>"


def lock_map_acquire(m: LockdepMap) -> None:
    """Enter the region ``m`` stands for: lock order and recursion checks, no wait."""
    lock_acquire(m, "exclusive")
    lock_acquired(m, "exclusive")


def lock_map_release(m: LockdepMap) -> None:
    lock_release(m, "exclusive")
