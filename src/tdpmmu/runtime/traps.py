"""The doorway: the only functions that hand control to the runtime.

Primitives (the sync layer) and scenarios call these and nothing else of the
runtime.  The contract:

* :func:`schedule_point(op) <schedule_point>` -- the current task is about to perform
  ``op`` on shared state.  The strategy may let another task run first.  Returns when
  the current task is chosen to perform ``op``.
* :func:`yield_now(op) <yield_now>` -- like ``schedule_point`` but voluntary
  (``cond_resched``, ``cpu_relax``): strategies prefer another task and bounded DFS
  does not count the switch as a preemption.
* :func:`block(waits_on) <block>` -- the current task cannot continue until someone
  calls :func:`wake` on it.  Returns after that, when the strategy chooses it again;
  the caller must re-check its condition (wakeups are hints, as in the kernel).
* :func:`wake(task) <wake>` -- make a blocked task runnable.  No-op otherwise.
* :func:`current_task` -- the running task (the pseudo-task ``main`` during setup and
  final checks, where scheduling points are no-ops).
* :func:`choose(n, label) <choose>` -- a nondeterministic value in ``range(n)`` decided
  by the strategy and recorded in the schedule (``need_resched()``, for example).

Everything else here is bookkeeping around an execution: spawning and joining tasks,
per-execution state for the primitives, defects, and hooks.
"""

from __future__ import annotations

from .errors import ModelInternalError, _Aborted
from .execution import caller_site
from .task import DONE

#: The running Execution (one per thread; tdpmmu is single-threaded by design).
_EX = None

#: Called with each new Execution before its setup runs: how the layers above install
#: their per-execution state (lockdep, the race detector) without the runtime knowing them.
_EXECUTION_INIT: list = []


def on_execution_start(fn) -> None:
    """Register ``fn(execution)`` to run at the start of every execution (once per fn)."""
    if fn not in _EXECUTION_INIT:
        _EXECUTION_INIT.append(fn)


def _ex():
    ex = _EX
    if ex is None:
        raise ModelInternalError("tdpmmu primitive used outside an execution")
    return ex


def schedule_point(op) -> None:
    """The current task is about to perform ``op``; let the strategy decide who goes first."""
    ex = _EX
    cur = ex.current
    if cur.id < 0:           # main: setup or final check, nothing else runs
        return
    cur.pending = op
    if ex.tracing:
        cur.pending_site = caller_site(2)
    elif len(ex.runnable) == 1 and not ex.consult_forced:
        # fast path: the running task is the only runnable one (nothing to decide)
        step = ex.step + 1
        if step <= ex.max_steps:
            ex.step = step
            ex.choices.append(cur.id)
            return
    nxt = ex.decide(cur, False)
    if nxt is not cur:
        ex.switch_to(cur, nxt)


def yield_now(op) -> None:
    """A voluntary scheduling point (cond_resched, cpu_relax)."""
    ex = _EX
    cur = ex.current
    if cur.id < 0:
        return
    cur.pending = op
    if ex.tracing:
        cur.pending_site = caller_site(2)
    nxt = ex.decide(cur, True)
    if nxt is not cur:
        ex.switch_to(cur, nxt)


def block(waits_on) -> None:
    """Block the current task until :func:`wake`; then wait to be chosen again."""
    ex = _ex()
    cur = ex.current
    if cur.id < 0:
        if ex.aborting:
            raise _Aborted()
        raise ModelInternalError(f"setup code would block on {waits_on}")
    ex.block(cur, waits_on)


def wake(task) -> None:
    _ex().wake(task)


def current_task():
    return _EX.current


def current_execution():
    return _ex()


def in_execution() -> bool:
    return _EX is not None


def choose(n: int, label: str, preemptive: bool = False) -> int:
    """A strategy-decided value in range(n), recorded in the schedule.

    ``preemptive`` marks choices whose non-zero answer forces a context switch the
    task did not ask for (need_resched): bounded DFS counts them as preemptions.
    """
    ex = _ex()
    return ex.choose(n, label, preemptive)


def other_runnable() -> bool:
    """Whether some task other than the current one could run now."""
    ex = _ex()
    return len(ex.runnable) > 1 or (len(ex.runnable) == 1 and ex.runnable[0] is not ex.current)


def spawn(name: str, fn, daemon: bool = False):
    """Create a task; it becomes runnable with its ``start`` step pending."""
    return _ex().spawn(name, fn, daemon)


def join(task) -> None:
    """Block until ``task`` has finished."""
    ex = _ex()
    if task.state is DONE:
        for hook in ex.join_hooks:
            hook(ex.current, task)
        return
    task.joiners.append(ex.current)
    while task.state is not DONE:
        block(f"join({task.name})")


def execution_state(key, factory):
    """Per-execution state of a subsystem, created on first use with ``factory(ex)``."""
    ex = _ex()
    st = ex.state.get(key)
    if st is None:
        st = ex.state[key] = factory(ex)
    return st


def defect(name: str) -> bool:
    """Whether the named defect is active in this execution (re-introduced bug).

    The correct model pays one attribute test: ``ex.defects`` is empty."""
    ex = _EX
    return ex is not None and bool(ex.defects) and name in ex.defects


def param(name: str, default=None):
    return _ex().params.get(name, default)


def free_run() -> bool:
    """Whether the strategy never preempts (so a range of steps may be done as one)."""
    ex = _EX
    return ex is not None and getattr(ex.strategy, "free_run", False)


def tracing() -> bool:
    ex = _EX
    return ex is not None and ex.tracing


def note(effect: str) -> None:
    """Attach an effect ("cmpxchg ok", "lock taken") to the current step, when tracing."""
    ex = _EX
    if ex is not None and ex.tracing and ex.trace:
        last = ex.trace[-1]
        if last.task == ex.current.id:
            last.effects.append(effect)


def site():
    """The caller's source site in model code, when tracing; else None."""
    ex = _EX
    if ex is not None and ex.tracing:
        return caller_site(2)
    return None


def cover(branch: str) -> None:
    """Count that this execution reached a racy branch (racy-branch coverage)."""
    ex = _EX
    if ex is not None:
        c = ex.coverage
        c[branch] = c.get(branch, 0) + 1


def now() -> int:
    """The current step number (the model's only clock)."""
    return _ex().step


def tasks():
    return list(_ex().tasks)
