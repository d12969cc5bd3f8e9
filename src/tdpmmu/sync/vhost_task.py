"""Kernel worker threads created on demand: struct vhost_task and call_once.

Mirrors: kernel/vhost_task.c (vhost_task_create / _start / _wake / _stop and the thread
function's loop) and include/linux/call_once.h (struct once).  KVM's per-VM NX huge page
recovery thread is a vhost task created by the first KVM_RUN through call_once.

A vhost task is *created* (its struct exists, its task does not run yet: TASK_NEW) and
then *started*.  ``vhost_task_wake`` on a created-but-not-started task does nothing
(try_to_wake_up never wakes a TASK_NEW task); on a started one it makes the thread run
its function again.  The thread function returns whether it did work; when it did not,
the thread sleeps until woken.  The set_current_state(TASK_INTERRUPTIBLE) before the
function runs is the ``woken`` flag: a wake-up that arrives while the function runs
keeps the thread from sleeping, so no wake-up is lost.

Deviates: no signals (SIGKILL handling is not modelled); the task is a daemon of the
runtime (a sleeping kthread is not a deadlock), but whoever stops it waits for it.
"""

from __future__ import annotations

from ..runtime import traps
from ..runtime.ops import SYNC
from .locks import Mutex
from .wait import Completion

ONCE_NOT_STARTED = 0
ONCE_RUNNING = 1
ONCE_COMPLETED = 2


class Once:
    """struct once: ``state`` plus the mutex that serialises the callers."""

    def __init__(self, name: str):
        self.name = name
        #: ONCE_*; written only under ``lock``
        self.state = ONCE_NOT_STARTED
        self.lock = Mutex(f"{name}.lock")

    def __str__(self) -> str:
        return self.name


def call_once(once: Once, cb) -> int:
    """Run ``cb(once)`` exactly once; callers that come while it runs wait for it.

    Requires: nothing held (takes the once's mutex).
    Returns: 0, or the callback's error (then a later caller tries again: the newest
    call_once.h completes only on success).
    """
    traps.schedule_point((SYNC, once, "atomic_read_acquire(once->state)", None))
    if once.state == ONCE_COMPLETED:
        return 0
    once.lock.mutex_lock()
    if once.state != ONCE_NOT_STARTED:
        once.lock.mutex_unlock()
        return 0
    once.state = ONCE_RUNNING
    r = cb(once)
    once.state = ONCE_COMPLETED if r == 0 else ONCE_NOT_STARTED
    once.lock.mutex_unlock()
    return r


class VhostTask:
    """struct vhost_task.

    ``task`` is the model task once started (the kernel's task_struct exists from
    creation, in TASK_NEW, which no wake-up can wake: here None until started).
    """

    def __init__(self, fn, data, name: str):
        self.fn = fn
        self.data = data
        self.name = name
        self.task = None
        self.started = False
        #: VHOST_TASK_FLAGS_STOP
        self.stop = False
        #: the task state the thread set before running fn: a wake-up clears "sleep"
        self.woken = False
        self.sleeping = False
        self.exited = Completion(f"{name}.exited")

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<vhost_task {self.name}{'' if self.started else ' (not started)'}>"


def vhost_task_create(fn, data, name: str) -> VhostTask:
    """Create the thread without starting it (may sleep: copy_process)."""
    traps.schedule_point((SYNC, None, f"vhost_task_create({name})", None))
    return VhostTask(fn, data, name)


def vhost_task_start(vtsk: VhostTask) -> None:
    """wake_up_new_task: the thread starts running its loop."""
    traps.schedule_point((SYNC, vtsk, "vhost_task_start", None))
    vtsk.started = True
    vtsk.task = traps.spawn(vtsk.name, lambda: _vhost_task_fn(vtsk), daemon=True)


def vhost_task_wake(vtsk: VhostTask) -> None:
    """wake_up_process(vtsk->task): a NULL ``vtsk`` is dereferenced like in C."""
    traps.schedule_point((SYNC, vtsk, "vhost_task_wake", None))
    task = vtsk.task
    if not vtsk.started:
        return                      # TASK_NEW: try_to_wake_up does nothing
    vtsk.woken = True
    if vtsk.sleeping:
        traps.wake(task)


def vhost_task_stop(vtsk: VhostTask) -> None:
    """Set the stop flag, wake the thread and wait until it has left its loop."""
    traps.schedule_point((SYNC, vtsk, "vhost_task_stop", None))
    vtsk.stop = True
    vhost_task_wake(vtsk)
    if vtsk.started:
        vtsk.exited.wait_for_completion()


def _vhost_task_fn(vtsk: VhostTask) -> None:
    """vhost_task_fn: run fn while it does work; sleep until woken when it does not."""
    while True:
        vtsk.woken = False                                  # set_current_state()
        traps.schedule_point((SYNC, vtsk, "test_bit(VHOST_TASK_FLAGS_STOP)", None))
        if vtsk.stop:
            break
        if not vtsk.fn(vtsk.data):
            while not vtsk.woken:                           # schedule()
                vtsk.sleeping = True
                traps.block(f"vhost_task({vtsk.name}) asleep")
            vtsk.sleeping = False
    vtsk.exited.complete()
