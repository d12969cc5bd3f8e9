"""RCU and SRCU: read-side sections, grace periods, callbacks, checked dereferences.

Mirrors: the semantics of kernel/rcu (Tree RCU as seen by its users) and SRCU.

Grace periods.  A grace period ends only after every reader that was inside a
read-side section when it started has left that section.  ``synchronize_rcu`` starts
one and sleeps until it ends.  ``call_rcu`` queues a callback; a daemon task,
``rcu_gp`` (the grace-period kthread, spawned on first use), takes the queued batch,
starts a grace period, waits for the pre-existing readers and then invokes the
callbacks one per step.  Because ``rcu_gp`` is an ordinary task, *when* a grace period
starts and when each callback runs are strategy choices like any other.
``rcu_barrier`` waits until every callback queued before it has run.

Checks.  ``rcu_dereference`` outside a read-side section (and without the protecting
lock given by a ``_check``/``_protected`` variant) is an
:class:`~tdpmmu.runtime.errors.RcuUnprotectedDereference`.  Grace-period waits inside a
read-side section, unbalanced unlocks and sections left open at task exit are
:class:`~tdpmmu.runtime.errors.RcuViolation` s.  Sleeping inside a read-side section is
reported by ``might_sleep`` (lockdep).

Happens-before (for the race detector): the end of every read-side section
happens-before the end of any later grace period; ``call_rcu`` happens-before its
callback; ``rcu_assign_pointer`` -> ``rcu_dereference`` is release -> acquire.

Deviates: one global RCU flavour (no expedited or Tasks RCU); callbacks of a batch run
in queue order.
"""

from __future__ import annotations

from ..runtime import traps
from ..runtime.errors import RcuBadNesting, RcuGracePeriodInReader, RcuUnprotectedDereference
from ..runtime.ops import SYNC
from . import lockdep
from ._state import cur_state, tstate
from .race import SyncClock


class _Readers:
    """Tasks inside read-side sections of one domain, with a section id per entry.

    Invariant: ``active`` maps a task to the id of the section it is in (outermost);
    a snapshot is satisfied once no task in it is still in the same section.
    """

    def __init__(self, name: str):
        self.name = name
        self.active: dict = {}
        self.next_id = 1
        self.waiters: list = []
        #: waiter -> the snapshot it waits for (the RCU stall detector asks who waits)
        self.waiting: dict = {}
        #: every finished section releases into it; grace-period ends acquire it
        self.clock = SyncClock()

    def enter(self, task) -> int:
        sid = self.next_id
        self.next_id += 1
        self.active[task] = sid
        return sid

    def exit(self, task) -> None:
        del self.active[task]
        self.clock.release()
        ws = self.waiters
        if ws:
            self.waiters = []
            for t in ws:
                traps.wake(t)

    def snapshot(self) -> dict:
        return dict(self.active)

    def wait_for(self, snap: dict, what: str) -> None:
        """Block until every (task, section) of ``snap`` has ended."""
        while True:
            left = [t.name for t, sid in snap.items() if self.active.get(t) == sid]
            if not left:
                break
            me = traps.current_task()
            if me not in self.waiting:
                _stall_clock_starts(self, snap)
            self.waiters.append(me)
            self.waiting[me] = snap
            traps.block(f"{what}: waiting for readers {', '.join(left)}")
            self.waiting.pop(me, None)
        self.clock.acquire()


def _stall_clock_starts(readers: _Readers, snap: dict) -> None:
    """A grace period starts waiting for the readers of ``snap``: for those no earlier
    grace period waits for, the RCU stall detector's count starts now (watchdog.py; the
    kernel's stall timeout runs from the start of the grace period)."""
    for t, sid in snap.items():
        if not any(s.get(t) == sid for s in readers.waiting.values()):
            tstate(t).rcu_work = 0


class RcuState:
    """Per-execution RCU state."""

    def __init__(self, ex):
        #: empty: RCU operations print as "rcu_read_lock()"
        self.name = ""
        self.readers = _Readers("rcu")
        #: queued callbacks: (fn, label, clock)
        self.pending: list = []
        self.queued = 0
        self.completed = 0
        self.gp_task = None
        self.gp_idle = False
        self.barrier_waiters: list = []
        #: every invoked callback releases into it; rcu_barrier acquires it on return
        self.barrier_clock = SyncClock()
        self.gp_count = 0
        self._lock_op = (SYNC, self, "rcu_read_lock", None)
        self._unlock_op = (SYNC, self, "rcu_read_unlock", None)

    def __str__(self) -> str:
        return "rcu"


def _rcu() -> RcuState:
    return traps.execution_state("rcu", RcuState)


# -- read side -------------------------------------------------------------------

def rcu_read_lock() -> None:
    st = _rcu()
    traps.schedule_point(st._lock_op)
    ts = cur_state()
    ts.rcu_nesting += 1
    if ts.rcu_nesting == 1:
        ts.rcu_section = st.readers.enter(traps.current_task())
        ts.rcu_work = 0                 # the RCU stall detector's count (watchdog.py)


def rcu_read_unlock() -> None:
    st = _rcu()
    ts = cur_state()
    if ts.rcu_nesting <= 0:
        raise RcuBadNesting(f"rcu_read_unlock() by {ts.name} outside any read-side section")
    traps.schedule_point(st._unlock_op)
    ts.rcu_nesting -= 1
    if ts.rcu_nesting == 0:
        ts.rcu_section = 0
        st.readers.exit(traps.current_task())


def rcu_read_lock_held() -> bool:
    return cur_state().rcu_nesting > 0


class rcu_read_section:
    """``with rcu_read_section():`` -- rcu_read_lock/unlock as a context manager."""

    def __enter__(self):
        rcu_read_lock()
        return self

    def __exit__(self, *exc):
        rcu_read_unlock()


def _unprotected(cell, i, verb: str, cond_desc: str | None):
    ts = cur_state()
    where = cell.name if i is None else f"{cell.name}[{i}]"
    msg = f"suspicious {verb}({where}) usage by {ts.name}: not inside rcu_read_lock()"
    if cond_desc:
        msg += f" and {cond_desc} does not hold"
    v = RcuUnprotectedDereference(msg)
    held = ", ".join(f"{h.lock.name} ({h.mode})" for h in ts.held) or "no locks"
    v.add_evidence("held", f"{ts.name}: {held}; rcu_read_lock depth 0")
    raise v


def rcu_dereference(cell, i: int = 0):
    """Load an RCU-protected pointer; must be inside rcu_read_lock()."""
    if not cur_state().rcu_nesting:
        _unprotected(cell, i, "rcu_dereference", None)
    return cell.load_acquire(i, "rcu_dereference")


def rcu_dereference_check(cell, i: int, cond: bool, cond_desc: str = "the lockdep condition"):
    """rcu_dereference that is also legal when ``cond`` holds (e.g. lockdep_is_held(lock))."""
    if not cond and not cur_state().rcu_nesting:
        _unprotected(cell, i, "rcu_dereference_check", cond_desc)
    return cell.load_acquire(i, "rcu_dereference_check")


def rcu_dereference_protected(cell, i: int, cond: bool, cond_desc: str = "the lockdep condition"):
    """Updater-side access: legal only when ``cond`` holds (no read section needed)."""
    if not cond:
        ts = cur_state()
        raise RcuUnprotectedDereference(
            f"suspicious rcu_dereference_protected({cell.name}[{i}]) usage by {ts.name}: "
            f"{cond_desc} does not hold")
    return cell.read_once(i)


def rcu_dereference_raw(cell, i: int = 0):
    return cell.load_acquire(i, "rcu_dereference_raw")


def rcu_assign_pointer(cell, i: int, value) -> None:
    cell.store_release(i, value, "rcu_assign_pointer")


# -- update side -----------------------------------------------------------------

def synchronize_rcu() -> None:
    """Wait for a full grace period.  Sleeps."""
    ts = cur_state()
    if ts.rcu_nesting:
        raise RcuGracePeriodInReader(
            f"synchronize_rcu() called by {ts.name} inside an RCU read-side section: "
            f"the grace period would wait for this reader forever")
    lockdep.might_sleep("synchronize_rcu()")
    st = _rcu()
    traps.schedule_point((SYNC, st, "synchronize_rcu", None))
    snap = st.readers.snapshot()
    st.readers.wait_for(snap, "synchronize_rcu")
    st.gp_count += 1


def call_rcu(fn, label: str | None = None) -> None:
    """Queue ``fn()`` to run after a grace period, in the ``rcu_gp`` task."""
    st = _rcu()
    traps.schedule_point((SYNC, st, "call_rcu", None))
    clock = SyncClock()
    clock.release()
    st.pending.append((fn, label or getattr(fn, "__name__", "callback"), clock))
    st.queued += 1
    if st.gp_task is None:
        st.gp_task = traps.spawn("rcu_gp", _gp_kthread, daemon=True)
    elif st.gp_idle:
        traps.wake(st.gp_task)


def rcu_barrier() -> None:
    """Wait until every callback queued so far has been invoked.  Sleeps."""
    ts = cur_state()
    if ts.rcu_nesting:
        raise RcuGracePeriodInReader(f"rcu_barrier() called by {ts.name} inside an RCU "
                                     f"read-side section")
    lockdep.might_sleep("rcu_barrier()")
    st = _rcu()
    traps.schedule_point((SYNC, st, "rcu_barrier", None))
    target = st.queued
    while st.completed < target:
        st.barrier_waiters.append(traps.current_task())
        traps.block(f"rcu_barrier: {target - st.completed} callback(s) pending")
    st.barrier_clock.acquire()


def rcu_pending_callbacks() -> int:
    """Callbacks queued and not yet invoked (for teardown oracles)."""
    st = _rcu()
    return st.queued - st.completed


def _gp_kthread() -> None:
    st = _rcu()
    while True:
        while not st.pending:
            st.gp_idle = True
            traps.block("call_rcu (no callbacks queued)")
            st.gp_idle = False
        batch, st.pending = st.pending, []
        traps.schedule_point((SYNC, st, "rcu_gp_start", None))
        snap = st.readers.snapshot()
        if snap:
            traps.cover("rcu-gp-waited-for-reader")
        st.readers.wait_for(snap, "grace period")
        st.gp_count += 1
        for fn, label, clock in batch:
            traps.schedule_point((SYNC, st, f"rcu_callback:{label}", None))
            clock.acquire()
            fn()
            st.completed += 1
            st.barrier_clock.release()
            ws = st.barrier_waiters
            if ws:
                st.barrier_waiters = []
                for t in ws:
                    traps.wake(t)


# -- SRCU ------------------------------------------------------------------------

class SrcuStruct:
    """struct srcu_struct: sleepable RCU (readers may sleep; separate grace periods)."""

    def __init__(self, name: str):
        self.name = name
        self.readers = _Readers(name)
        self._lock_op = (SYNC, self, "srcu_read_lock", None)
        self._unlock_op = (SYNC, self, "srcu_read_unlock", None)

    def __str__(self) -> str:
        return self.name

    def srcu_read_lock(self) -> int:
        traps.schedule_point(self._lock_op)
        ts = cur_state()
        depth = ts.srcu.get(self, 0)
        ts.srcu[self] = depth + 1
        if depth == 0:
            return self.readers.enter(traps.current_task())
        return self.readers.active[traps.current_task()]

    def srcu_read_unlock(self, idx: int) -> None:
        ts = cur_state()
        depth = ts.srcu.get(self, 0)
        if depth <= 0:
            raise RcuBadNesting(f"srcu_read_unlock({self.name}) by {ts.name} outside any "
                                f"SRCU read-side section")
        traps.schedule_point(self._unlock_op)
        ts.srcu[self] = depth - 1
        if depth == 1:
            self.readers.exit(traps.current_task())

    def srcu_read_lock_held(self) -> bool:
        return cur_state().srcu.get(self, 0) > 0

    def synchronize_srcu(self) -> None:
        ts = cur_state()
        if ts.srcu.get(self, 0):
            raise RcuGracePeriodInReader(f"synchronize_srcu({self.name}) called by {ts.name} "
                                         f"inside its own read-side section")
        lockdep.might_sleep(f"synchronize_srcu({self.name})")
        traps.schedule_point((SYNC, self, "synchronize_srcu", None))
        self.readers.wait_for(self.readers.snapshot(), f"synchronize_srcu({self.name})")

    def srcu_dereference(self, cell, i: int = 0):
        if not self.srcu_read_lock_held():
            ts = cur_state()
            raise RcuUnprotectedDereference(
                f"suspicious srcu_dereference({cell.name}[{i}]) usage by {ts.name}: not "
                f"inside srcu_read_lock({self.name})")
        return cell.load_acquire(i, "srcu_dereference")


srcu_read_lock = SrcuStruct.srcu_read_lock
srcu_read_unlock = SrcuStruct.srcu_read_unlock
synchronize_srcu = SrcuStruct.synchronize_srcu
srcu_dereference = SrcuStruct.srcu_dereference
