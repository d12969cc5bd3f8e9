"""Execution: one run of a scenario under a strategy.

An execution owns its tasks, the current task, the step counter, the record of
choices (the schedule) and, when asked, a full trace.  It is the only module that
calls ``greenlet.switch``; primitives reach it only through :mod:`tdpmmu.runtime.traps`.

Model of time.  A *step* is one operation performed by one task.  At every
scheduling point the current task announces the operation it is about to perform
(``task.pending``); the strategy then chooses which runnable task performs its
pending operation next.  Everything a task computes between two scheduling points
belongs to the step that resumed it.  A task's first step is its ``start``.

Switching.  Tasks switch *directly* to the task the strategy chose (one greenlet
switch per context switch).  Every task greenlet has the hub -- the greenlet that
called :meth:`Execution.run` -- as its parent, so a finishing task returns control
to the hub, which picks the next task.

Ending.  An execution ends when no task is runnable.  If a non-daemon task is still
blocked, that is a deadlock; daemons (RCU's grace-period kthread) may be left
blocked.  Tasks that have not finished are unwound by throwing ``_Aborted`` into
them, so that no greenlet is ever resumed later by the garbage collector.

Invariant: ``runnable`` holds exactly the RUNNABLE tasks, sorted by id.
"""

from __future__ import annotations

import sys
from bisect import insort
from functools import partial

from greenlet import greenlet, GreenletExit

from . import ops
from .errors import (Deadlock, Livelock, ModelInternalError, Oops, TdpmmuError,
                     Violation, _Aborted)
from .task import BLOCKED, DONE, RUNNABLE, Task

DEFAULT_MAX_STEPS = 20_000

_START_OP = (ops.START, None, "start", None)


class TraceStep:
    """One step of a traced execution (only built while tracing)."""

    __slots__ = ("step", "task", "op", "site", "preempted", "effects")

    def __init__(self, step, task, op, site, preempted):
        self.step = step
        self.task = task
        self.op = op
        self.site = site
        self.preempted = preempted
        self.effects: list[str] = []

    def to_dict(self, names) -> dict:
        return {
            "step": self.step,
            "task": names[self.task],
            "op": ops.label(self.op),
            "kind": ops.KIND_NAMES[self.op[0]],
            "object": getattr(self.op[1], "name", None),
            "effect": "; ".join(self.effects),
            "site": format_site(self.site),
            "preempted": self.preempted,
        }


# -- source sites ------------------------------------------------------------------

_PKG_DIR = __file__.rsplit("/runtime/", 1)[0]
#: frames not shown as "where" in traces and reports: the machinery, and the wrapper
#: that asserts declared lock requirements (the declared function's caller is the site)
_INTERNAL_DIRS = (_PKG_DIR + "/runtime/", _PKG_DIR + "/sync/", _PKG_DIR + "/mmu/locking.py")
_internal_code: dict = {}


def _is_internal(code) -> bool:
    r = _internal_code.get(code)
    if r is None:
        fn = code.co_filename
        r = fn.startswith(_INTERNAL_DIRS) or "/greenlet/" in fn
        _internal_code[code] = r
    return r


def mark_transparent(code) -> None:
    """Never report frames of ``code`` as a site (tiny accessors that inherit their
    caller's context, like the kernel's static inline helpers)."""
    _internal_code[code] = True


def caller_site(skip: int = 1):
    """(file, line, function) of the nearest frame outside the runtime and sync layers."""
    f = sys._getframe(skip)
    while f is not None and _is_internal(f.f_code):
        f = f.f_back
    if f is None:
        return None
    return (f.f_code.co_filename, f.f_lineno, f.f_code.co_name)


def format_site(site) -> str:
    if site is None:
        return "?"
    fn, line, func = site
    short = fn
    marker = "/src/"
    if marker in fn:
        short = fn.rsplit(marker, 1)[1]
    elif fn.startswith(_PKG_DIR):
        short = "tdpmmu" + fn[len(_PKG_DIR):]
    else:
        short = fn.rsplit("/", 2)[-1] if "/" in fn else fn
    return f"{short}:{line} in {func}"


class ExecutionResult:
    """What one execution produced.  Plain data; the explorer turns it into reports."""

    __slots__ = ("failure", "failure_task", "steps", "choices", "preemptions", "trace",
                 "task_names", "error", "coverage")

    def __init__(self, ex: "Execution"):
        self.failure: Violation | None = ex.failure
        self.failure_task: str | None = ex.failure_task.name if ex.failure_task else None
        self.steps: int = ex.step
        self.choices: list[int] = ex.choices
        self.preemptions: int = ex.preemptions
        self.trace: list[TraceStep] | None = ex.trace if ex.tracing else None
        self.task_names: list[str] = [t.name for t in ex.tasks]
        self.error = ex.error
        self.coverage: dict = ex.coverage


class Execution:
    """One run.  Create, then :meth:`run` once with the scenario's setup function."""

    def __init__(self, strategy, *, max_steps: int = DEFAULT_MAX_STEPS, tracing: bool = False,
                 defects=frozenset(), params: dict | None = None):
        self.strategy = strategy
        self.max_steps = max_steps
        #: When tracing, every step is recorded with its source site and effects,
        #: and checkers capture sites for their evidence.  Off while exploring.
        self.tracing = tracing
        self.defects = frozenset(defects)
        self.params = dict(params or {})
        self.consult_forced = bool(getattr(strategy, "consult_forced", False))
        self.tasks: list[Task] = []
        self.runnable: list[Task] = []
        #: The hub's pseudo-task: setup code and final checks run as "main".
        self.main = Task(-1, "main", None)
        self.main.started = True
        self.current: Task = self.main
        self.step = 0
        self.preemptions = 0
        #: One entry per step (a task id) and per data choice (``~value``).
        self.choices: list[int] = []
        self.trace: list[TraceStep] = []
        self.failure: Violation | None = None
        self.failure_task: Task | None = None
        self.error: BaseException | None = None
        self.aborting = False
        self.hub = None
        #: Per-execution state of the primitives (lockdep graph, RCU, allocator...).
        self.state: dict = {}
        #: racy-branch coverage: branch name -> times reached in this execution
        self.coverage: dict = {}
        self.spawn_hooks: list = []
        self.exit_hooks: list = []
        self.join_hooks: list = []
        self.end_hooks: list = []

    # -- tasks -----------------------------------------------------------------

    def spawn(self, name: str, fn, daemon: bool = False) -> Task:
        from .errors import UsageError
        for t in self.tasks:
            if t.name == name:
                raise UsageError(f"two tasks named {name!r}: task names must be unique")
        task = Task(len(self.tasks), name, fn, daemon)
        task.pending = _START_OP
        if self.tracing:
            code = getattr(fn, "__code__", None)
            if code is not None:
                task.pending_site = (code.co_filename, code.co_firstlineno, code.co_name)
        task.glet = greenlet(partial(self._task_main, task), parent=self.hub)
        self.tasks.append(task)
        self.runnable.append(task)   # highest id so far: stays sorted
        parent = self.current
        for hook in self.spawn_hooks:
            hook(parent, task)
        on_spawn = getattr(self.strategy, "on_spawn", None)
        if on_spawn is not None:
            on_spawn(task)
        return task

    def _task_main(self, task: Task):
        task.started = True
        try:
            task.fn()
            for hook in self.exit_hooks:
                hook(task)
        except _Aborted:
            return
        except GreenletExit:
            raise
        except Violation as v:
            self._fail(v, task)
        except TdpmmuError as e:
            self.error = e
        except Exception as e:  # an oops in model or scenario code
            self._fail(_oops(e), task)
        task.state = DONE
        self._remove_runnable(task)
        for j in task.joiners:
            for hook in self.join_hooks:
                hook(j, task)
            self.wake(j)
        task.joiners.clear()
        # returning hands control to the hub (our parent greenlet)

    def _fail(self, v: Violation, task: Task):
        if self.failure is None:
            self.failure = v
            self.failure_task = task

    def _remove_runnable(self, task: Task):
        try:
            self.runnable.remove(task)
        except ValueError:
            pass

    # -- the decision ----------------------------------------------------------

    def decide(self, cur: Task, yielding: bool) -> Task | None:
        """Choose who performs the next step.  Returns None when nothing can run."""
        runnable = self.runnable
        n = len(runnable)
        if n == 0:
            self._no_runnable()
            return None
        self.step += 1
        if self.step > self.max_steps:
            self.step = self.max_steps      # the step that would exceed it never happens
            raise Livelock(
                f"execution exceeded its bound of {self.max_steps} steps without finishing",
                [("tasks", ", ".join(f"{t.name} ({t.state})" for t in self.tasks))])
        if n == 1 and not self.consult_forced:
            nxt = runnable[0]
        else:
            nxt = self.strategy.next_task(runnable, cur, yielding)
        preempted = nxt is not cur and cur.state is RUNNABLE and not yielding and cur.id >= 0
        if preempted:
            self.preemptions += 1
        self.choices.append(nxt.id)
        if self.tracing:
            self.trace.append(TraceStep(self.step, nxt.id, nxt.pending, nxt.pending_site, preempted))
        return nxt

    def _no_runnable(self):
        stuck = [t for t in self.tasks if t.state is BLOCKED and not t.daemon]
        if stuck:
            lines = []
            for t in self.tasks:
                if t.state is BLOCKED:
                    lines.append((t.name, f"blocked on {t.waits_on}" + (" (daemon)" if t.daemon else "")))
                else:
                    lines.append((t.name, t.state))
            raise Deadlock(
                "all tasks are blocked: " + ", ".join(f"{t.name} waits on {t.waits_on}" for t in stuck),
                lines)

    def choose(self, n: int, label: str, preemptive: bool) -> int:
        if n <= 1:
            return 0
        v = self.strategy.next_value(n, label, preemptive)
        if not 0 <= v < n:
            raise ModelInternalError(f"strategy returned {v} for a choice among {n}")
        if preemptive and v:
            self.preemptions += 1
        self.choices.append(~v)
        if self.tracing and self.trace:
            self.trace[-1].effects.append(f"{label}={v}")
        return v

    def switch_to(self, cur: Task, nxt: Task):
        self.current = nxt
        nxt.glet.switch()
        # resumed: whoever switched to us set self.current = cur
        if self.aborting:
            raise _Aborted()

    def block(self, cur: Task, waits_on):
        cur.state = BLOCKED
        cur.waits_on = waits_on
        self._remove_runnable(cur)
        nxt = self.decide(cur, False)
        if nxt is None:
            # only blocked daemons are left: the execution is over; hand back to the hub
            self.current = self.main
            self.hub.switch()
            raise _Aborted()
        self.switch_to(cur, nxt)

    def wake(self, task: Task):
        if task.state is BLOCKED:
            task.state = RUNNABLE
            task.waits_on = None
            insort(self.runnable, task, key=_task_id)

    # -- running ---------------------------------------------------------------

    def run(self, setup) -> ExecutionResult:
        from . import traps
        if traps._EX is not None:
            raise ModelInternalError("an execution is already running in this thread")
        self.hub = greenlet.getcurrent()
        traps._EX = self
        try:
            try:
                for init in traps._EXECUTION_INIT:
                    init(self)
                check = setup()
                self._loop()
                if self.failure is None and self.error is None:
                    self.current = self.main
                    for t in self.tasks:
                        if t.state is DONE:
                            for hook in self.join_hooks:
                                hook(self.main, t)
                    for hook in self.end_hooks:
                        hook()
                    if callable(check):
                        check()
            except Violation as v:
                self._fail(v, self.current if self.current.id >= 0 else None)
            except TdpmmuError as e:
                self.error = e
            except Exception as e:
                self._fail(_oops(e), None)
            finally:
                self._abort_all()
        finally:
            traps._EX = None
        return ExecutionResult(self)

    def _loop(self):
        cur = self.main
        while self.failure is None and self.error is None:
            nxt = self.decide(cur, False)
            if nxt is None:
                return
            self.current = nxt
            nxt.glet.switch()
            # back in the hub: some task finished (or failed)
            cur = self.current

    def _abort_all(self):
        self.aborting = True
        self.current = self.main
        for t in self.tasks:
            g = t.glet
            if g is not None and t.started and not g.dead:
                try:
                    g.throw(_Aborted())
                except _Aborted:
                    pass
            t.glet = None


def _task_id(t: Task) -> int:
    return t.id


def _is_null_dereference(e: Exception) -> bool:
    """Whether ``e`` is Python's form of a NULL dereference: an attribute of None
    (AttributeError.obj, Python 3.10+), or None subscripted or called."""
    if isinstance(e, AttributeError):
        return getattr(e, "obj", _NO_OBJ) is None
    if isinstance(e, TypeError):
        msg = str(e)
        return msg.startswith("'NoneType' object is not ")
    return False


_NO_OBJ = object()


def _oops(e: Exception) -> Oops:
    if isinstance(e, AssertionError):
        from .errors import InvariantViolation
        v = InvariantViolation(str(e) or "assertion failed")
    elif _is_null_dereference(e):
        from .errors import NullPointerDereference
        v = NullPointerDereference(f"{type(e).__name__}: {e}")
    else:
        v = Oops(f"{type(e).__name__}: {e}")
    v.__cause__ = e
    v.__traceback__ = e.__traceback__
    return v
