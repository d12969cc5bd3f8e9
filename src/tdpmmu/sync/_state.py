"""Per-task state owned by the sync layer, hung off ``task.ext``.

Kept in one place so that every primitive agrees on what a task holds: its locks (in
acquisition order), its RCU read-side nesting, its SRCU sections and its vector clock
for the data-race detector.
"""

from __future__ import annotations

from ..runtime import traps
from ..runtime.execution import format_site


class HeldLock:
    __slots__ = ("lock", "mode", "step", "site")

    def __init__(self, lock, mode: str, step: int, site):
        self.lock = lock
        #: "read", "write" (rwlock) or "exclusive" (spinlock, mutex)
        self.mode = mode
        self.step = step
        self.site = site

    def describe(self, task_name: str) -> str:
        where = f" at {format_site(self.site)}" if self.site else ""
        return f"{self.lock.name} ({self.mode}) by {task_name} since step {self.step}{where}"


class TaskSync:
    __slots__ = ("held", "rcu_nesting", "rcu_section", "srcu", "vc", "name", "id", "work",
                 "rcu_work")

    def __init__(self, task):
        self.id = task.id
        self.name = task.name
        #: Invariant: in acquisition order; written only by the owning task.
        self.held: list[HeldLock] = []
        self.rcu_nesting = 0
        #: Id of the current outermost RCU read-side section (0 when outside).
        self.rcu_section = 0
        #: srcu_struct -> nesting depth
        self.srcu: dict = {}
        #: Vector clock, indexed by task id + 1 (index 0 is "main").
        self.vc: list[int] = [0] * (task.id + 2)
        self.vc[task.id + 1] = 1
        #: watchdog (watchdog.py): work since the last scheduling opportunity, and
        #: inside the current RCU read-side section
        self.work = 0
        self.rcu_work = 0


def tstate(task=None) -> TaskSync:
    if task is None:
        task = traps.current_task()
    s = task.ext
    if s is None:
        s = task.ext = TaskSync(task)
    return s


def cur_state() -> TaskSync:
    task = traps.current_task()
    s = task.ext
    if s is None:
        s = task.ext = TaskSync(task)
    return s
