"""Task: one kernel-style thread of an execution (a vCPU, a zap worker, an RCU kthread).

A task is a greenlet plus the bookkeeping the runtime needs.  Nothing else lives here:
per-task state of the primitives (held locks, RCU nesting, vector clocks) hangs off
``task.ext``, which the runtime never interprets.
"""

from __future__ import annotations

RUNNABLE = "runnable"
BLOCKED = "blocked"
DONE = "done"


class Task:
    __slots__ = ("id", "name", "fn", "glet", "state", "pending", "pending_site",
                 "waits_on", "daemon", "joiners", "ext", "started")

    def __init__(self, tid: int, name: str, fn, daemon: bool = False):
        #: Invariant: ids are assigned in spawn order, 0, 1, 2... and never reused.
        self.id = tid
        #: Stable human name chosen by the scenario ("vcpu0", "zap_worker").
        self.name = name
        self.fn = fn
        self.glet = None
        #: RUNNABLE, BLOCKED or DONE.  Written only by the execution.
        self.state = RUNNABLE
        #: The operation the task performs when it is next chosen (see ops.py).
        self.pending = None
        #: Source site of ``pending`` (only recorded while tracing).
        self.pending_site = None
        #: What a BLOCKED task waits on (anything with a useful ``str``).
        self.waits_on = None
        #: Daemons (RCU's grace-period kthread) do not keep an execution alive and
        #: may be left blocked at its end without that being a deadlock.
        self.daemon = daemon
        self.joiners: list[Task] = []
        #: Per-task state owned by the sync layer (held locks, RCU nesting, clocks).
        self.ext = None
        self.started = False

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.name} {self.state}>"
