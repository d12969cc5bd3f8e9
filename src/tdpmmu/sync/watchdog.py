"""Stall detection: the soft-lockup watchdog and the RCU CPU stall detector.

Mirrors: kernel/watchdog.c (``BUG: soft lockup - CPU#n stuck for Ns!``) and
kernel/rcu/tree_stall.h (``rcu: INFO: rcu_sched self-detected stall on CPU``), as a
model can see them: time is *work*, counted in units the model code reports with
:func:`work` (the TDP iterator reports one unit per SPTE it visits, and
``handle_removed_pt`` one per entry of a removed table).  The model's guests are tiny,
so the thresholds stand for the kernel's 20 s and 21 s: what they catch is work that
grows with the guest between two scheduling opportunities, where the kernel bounds it.

Scheduling opportunities (:func:`resched_point`): every place where a task asks whether
it should give up the CPU -- ``need_resched()``, ``rwlock_needbreak()`` (callers pair the
two), and ``might_sleep()`` (every sleeping call, including ``cond_resched()``).  With
the kernel's tick, a CPU that wants to run the watchdog thread or that holds up a grace
period gets need_resched set, so the next opportunity would yield; work between two
opportunities is what cannot be broken up.  A need_resched check inside an RCU
read-side section counts for RCU too: a task that yields there must leave the section
first (sleeping inside it is a ``SleepInAtomic``).

Checks (run when a task's count crosses a threshold, then again every fifth of the
threshold, as the kernel's watchdog hrtimer samples every ``softlockup_thresh / 5``):

* :class:`~tdpmmu.runtime.errors.SoftLockup`: more than ``_softlockup_thresh`` units
  (default 2048) since the task's last scheduling opportunity, while another task spins
  on a lock it holds (a spinlock or rwlock waiter; sleeping waiters are not stuck), or
  while it holds a spinning lock exclusively (spinlock, rwlock for write) and some
  other task is still alive (not finished, not a daemon): every one of them that
  touches the lock spins.  In the model every task has its own CPU and the watchdog
  thread of the task's own CPU is not modelled, so the harm a CPU that never schedules
  does is to the rest of the machine.
* :class:`~tdpmmu.runtime.errors.RcuStall`: more than ``_rcu_stall_thresh`` units
  (default 4096) inside one RCU read-side section without an opportunity, counted from
  when a grace period started waiting for this reader (``synchronize_rcu`` or the
  grace-period kthread blocked on it; the kernel's stall timeout also runs from the
  start of the grace period).  The kernel's stall timeout is above the soft-lockup threshold (21 s
  upstream, 60 s in many distribution configs), so where both apply the soft lockup
  is reported first, as in the kernel's logs.

Both thresholds are runtime knobs (``--param _softlockup_thresh=N``).

Deviates: one work unit is one SPTE visit or entry update, whatever it costs in the
kernel (a remote TLB flush, for instance, counts nothing).
"""

from __future__ import annotations

from ..runtime import traps
from ..runtime.errors import RcuStall, SoftLockup
from ..runtime.task import DONE
from ._state import cur_state

#: defaults of the two runtime knobs
SOFTLOCKUP_THRESH = 2048
RCU_STALL_THRESH = 4096

#: the current execution's thresholds (set when it starts; tdpmmu runs one at a time)
#: and their sampling periods (a fifth of each)
_soft = SOFTLOCKUP_THRESH
_rcu = RCU_STALL_THRESH
_soft_period = _soft // 5
_rcu_period = _rcu // 5


def _install(ex) -> None:
    global _soft, _rcu, _soft_period, _rcu_period
    _soft = int(ex.params.get("_softlockup_thresh", SOFTLOCKUP_THRESH))
    _rcu = int(ex.params.get("_rcu_stall_thresh", RCU_STALL_THRESH))
    _soft_period = max(1, _soft // 5)
    _rcu_period = max(1, _rcu // 5)


def _due(count: int, n: int, thresh: int, period: int) -> bool:
    """Whether the count, grown by ``n`` to ``count``, crossed the threshold or one of
    the sampling points after it (threshold + k * period)."""
    if count <= thresh:
        return False
    before = count - n
    return before <= thresh or (count - thresh - 1) // period != (before - thresh - 1) // period


traps.on_execution_start(_install)


def work(n: int = 1) -> None:
    """The current task did ``n`` units of work (SPTEs visited or updated)."""
    ts = cur_state()
    w = ts.work = ts.work + n
    if w > _soft and _due(w, n, _soft, _soft_period):
        _check_soft(ts, w)
    if ts.rcu_nesting:
        r = ts.rcu_work = ts.rcu_work + n
        if r > _rcu and _due(r, n, _rcu, _rcu_period):
            _check_rcu(ts, r)


def resched_point() -> None:
    """The current task reached a scheduling opportunity: both counts start again."""
    ts = cur_state()
    ts.work = 0
    ts.rcu_work = 0


def rcu_section_start(ts) -> None:
    """An outermost RCU read-side section begins (called by rcu_read_lock)."""
    ts.rcu_work = 0


def _spinning_waiters(ts) -> list:
    """(held lock, tasks spinning on it) for the task's held spinning locks."""
    out = []
    for h in ts.held:
        lock = h.lock
        if lock.sleeping:
            continue
        ws = [t for t in getattr(lock, "waiters", ()) if t is not traps.current_task()]
        if ws:
            out.append((h, ws))
    return out


def _others_alive(me) -> list:
    """Tasks other than ``me`` that are not finished and not daemons."""
    return [t for t in traps.tasks() if t is not me and not t.daemon and t.state != DONE]


def _check_soft(ts, w: int) -> None:
    me = traps.current_task()
    if me.id < 0:
        return
    spin = _spinning_waiters(ts)
    if spin:
        names = sorted({t.name for _, ws in spin for t in ws})
        why = f"while {', '.join(names)} spin on {', '.join(h.lock.name for h, _ in spin)}"
    else:
        excl = [h for h in ts.held if not h.lock.sleeping and h.mode in ("write", "exclusive")]
        alive = _others_alive(me) if excl else []
        if not alive:
            return
        why = (f"holding {', '.join(f'{h.lock.name} ({h.mode})' for h in excl)}, which "
               f"{', '.join(t.name for t in alive)} cannot take meanwhile")
    v = SoftLockup(f"watchdog: BUG: soft lockup: {ts.name} did {w} units of work without a "
                   f"scheduling point (threshold {_soft}) {why}")
    for h in ts.held:
        v.add_evidence("held", h.describe(ts.name))
    for h, ws in spin:
        v.add_evidence("spinning", f"{', '.join(t.name for t in ws)} on {h.lock.name}")
    raise v


def _gp_waiting_for(task, ts) -> list:
    """Names of the tasks whose grace period waits for ``task``'s current section."""
    from .rcu import _rcu
    readers = _rcu().readers
    return sorted(w.name for w, snap in readers.waiting.items()
                  if snap.get(task) == ts.rcu_section)


def _check_rcu(ts, r: int) -> None:
    task = traps.current_task()
    if task.id < 0:
        return
    waiting = _gp_waiting_for(task, ts)
    if not waiting:
        return
    v = RcuStall(f"rcu: INFO: rcu_sched self-detected stall: {ts.name} did {r} units of work "
                 f"inside one RCU read-side section without a scheduling point (threshold "
                 f"{_rcu}) while {', '.join(waiting)} wait for a grace period")
    held = ", ".join(f"{h.lock.name} ({h.mode})" for h in ts.held) or "no locks"
    v.add_evidence("held", f"{ts.name}: {held}; rcu_read_lock depth {ts.rcu_nesting}")
    raise v
