"""Data-race detector for plain accesses (vector clocks, in the style of FastTrack/KCSAN).

Happens-before comes from: task spawn and join; lock release -> acquire (rwlocks keep
separate clocks for their read and write sides, so two readers are *not* ordered by
the lock they share); fully-ordered atomics (successful cmpxchg, xchg, value-returning
RMWs, refcount_t); release/acquire pairs (smp_store_release/smp_load_acquire,
rcu_assign_pointer/rcu_dereference); RCU grace periods (every read-side section that
ended happens-before the grace period that waited for it and the callbacks after it);
completions.  READ_ONCE/WRITE_ONCE and failed cmpxchg are relaxed: they never create
happens-before.

A *race* is two accesses to the same word, by different tasks, unordered by
happens-before, at least one a write and at least one *plain* (unmarked).  Two marked
accesses never race (KCSAN's rule): a lost update between WRITE_ONCE and cmpxchg is
an oracle's business, not this detector's.

Shadow state per word index: for each task, the clock of its last plain write, marked
write, plain read and marked read (and, when tracing, their sites), which is enough
to decide every race against a later access.

Deviates: epochs are not collapsed into a single last-writer as in FastTrack proper;
with the handful of tasks of a scenario a per-task record is cheap and simpler.
"""

from __future__ import annotations

from ..runtime import traps
from ..runtime.errors import DataRace
from ..runtime.execution import format_site
from ._state import cur_state, tstate

PW, MW, PR, MR = 0, 1, 2, 3
KIND_WORDS = ("plain write", "marked write", "plain read", "marked read")
#: for an access of kind k, which earlier kinds conflict with it
_CONFLICTS = (
    (PW, MW, PR, MR),   # plain write vs anything
    (PW, PR),           # marked write vs plain accesses
    (PW, MW),           # plain read vs writes
    (PW,),              # marked read vs plain writes
)


def vc_join(dst: list[int], src: list[int]) -> None:
    """dst := max(dst, src), extending dst as needed."""
    n = len(src)
    if len(dst) < n:
        dst.extend([0] * (n - len(dst)))
    for i in range(n):
        s = src[i]
        if s > dst[i]:
            dst[i] = s


class SyncClock:
    """The clock a synchronisation object carries from its releases to its acquires."""

    __slots__ = ("vc",)

    def __init__(self):
        self.vc: list[int] = []

    def release(self) -> None:
        """The current task releases into this clock, then starts a new epoch.
        (Nothing to order while at most one task exists: see check_access.)"""
        if len(traps._EX.tasks) < 2:
            return
        ts = cur_state()
        vc_join(self.vc, ts.vc)
        ts.vc[ts.id + 1] += 1

    def acquire(self) -> None:
        if len(traps._EX.tasks) < 2:
            return
        vc_join(cur_state().vc, self.vc)


class RaceDetector:
    """Per-execution state: installs the spawn/join hooks that carry clocks."""

    def __init__(self, ex):
        self.enabled = ex.params.get("_race_detection", True)
        ex.spawn_hooks.append(self._on_spawn)
        ex.join_hooks.append(self._on_join)

    @staticmethod
    def _on_spawn(parent, child):
        ps = tstate(parent)
        cs = tstate(child)
        vc_join(cs.vc, ps.vc)
        cs.vc[child.id + 1] = 1
        ps.vc[parent.id + 1] += 1

    @staticmethod
    def _on_join(joiner, joined):
        vc_join(tstate(joiner).vc, tstate(joined).vc)


def detector():
    return traps.execution_state("race", RaceDetector)


def check_access(shadow: dict, idx, kind: int, obj, verb: str) -> None:
    """Record an access of ``kind`` to ``obj[idx]`` and report a race with an earlier one.

    While at most one task exists nothing can race, and nothing needs recording: a task
    spawned later is spawned by that task (or by main, which never runs mid-execution),
    so everything done so far happens-before it.
    """
    if len(traps._EX.tasks) < 2:
        return
    ts = cur_state()
    vc = ts.vc
    me = ts.id
    rec_by_task = shadow.get(idx)
    if rec_by_task is None:
        rec_by_task = shadow[idx] = {}
    else:
        nvc = len(vc)
        for u, rec in rec_by_task.items():
            if u == me:
                continue
            seen = vc[u + 1] if u + 1 < nvc else 0
            for k in _CONFLICTS[kind]:
                c = rec[k]
                if c and c > seen:
                    _report(obj, idx, kind, verb, u, k, rec)
    rec = rec_by_task.get(me)
    if rec is None:
        rec = rec_by_task[me] = [0, 0, 0, 0, None, None, None, None, None]
    rec[kind] = vc[me + 1]
    if traps._EX.tracing:
        rec[4 + kind] = (traps.site(), verb)
        rec[8] = ts.name


def _report(obj, idx, kind, verb, other_id, other_kind, rec):
    ex = traps.current_execution()
    other = ex.tasks[other_id].name if other_id >= 0 else "main"
    me = traps.current_task().name
    where = obj.name if idx is None else f"{obj.name}[{idx}]"
    v = DataRace(
        f"data race on {where}: {KIND_WORDS[kind]} ({verb}) by {me} is concurrent with "
        f"an earlier {KIND_WORDS[other_kind]} by {other} (no happens-before between them)")
    here = traps.site()
    v.add_evidence("access", f"{verb} by {me}" + (f" at {format_site(here)}" if here else ""))
    prev = rec[4 + other_kind]
    if prev is not None:
        site, pverb = prev
        v.add_evidence("racing", f"{pverb} by {other} at {format_site(site)}")
    else:
        v.add_evidence("racing", f"{KIND_WORDS[other_kind]} by {other}")
    raise v


def _install(ex):
    ex.state["race"] = RaceDetector(ex)


traps.on_execution_start(_install)
