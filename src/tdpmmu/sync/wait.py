"""Sleeping and waking: struct completion and wait queues (wait_event / wake_up).

A wait queue entry carries a ``woken`` flag, the model of the task state the kernel
sets in prepare_to_wait() and wake_up() resets: ``schedule()`` after a wake-up that
already happened does not sleep.  That is what makes the canonical

    prepare_to_wait(); if (cond) break; schedule();

free of lost wake-ups -- and what a checker needs in order to find code that checks
the condition *before* queueing itself.
"""

from __future__ import annotations

from ..runtime import traps
from ..runtime.ops import SYNC
from . import lockdep
from .race import SyncClock


class Completion:
    """struct completion."""

    def __init__(self, name: str):
        self.name = name
        self.done = 0
        self.waiters: list = []
        self.clock = SyncClock()

    def __str__(self) -> str:
        return self.name

    def complete(self) -> None:
        traps.schedule_point((SYNC, self, "complete", None))
        self.done += 1
        self.clock.release()
        ws, self.waiters = self.waiters, []
        for t in ws:
            traps.wake(t)

    def complete_all(self) -> None:
        traps.schedule_point((SYNC, self, "complete_all", None))
        self.done = 1 << 30
        self.clock.release()
        ws, self.waiters = self.waiters, []
        for t in ws:
            traps.wake(t)

    def wait_for_completion(self) -> None:
        lockdep.might_sleep(f"wait_for_completion({self.name})")
        traps.schedule_point((SYNC, self, "wait_for_completion", None))
        while self.done == 0:
            self.waiters.append(traps.current_task())
            traps.block(f"wait_for_completion({self.name})")
        if self.done < (1 << 30):
            self.done -= 1
        self.clock.acquire()

    def completion_done(self) -> bool:
        return self.done > 0


class _Entry:
    __slots__ = ("task", "woken")

    def __init__(self, task):
        self.task = task
        self.woken = False


class WaitQueue:
    """wait_queue_head_t."""

    def __init__(self, name: str):
        self.name = name
        self.entries: list[_Entry] = []
        self.clock = SyncClock()

    def __str__(self) -> str:
        return self.name

    def prepare_to_wait(self) -> _Entry:
        traps.schedule_point((SYNC, self, "prepare_to_wait", None))
        e = _Entry(traps.current_task())
        self.entries.append(e)
        return e

    def schedule(self, e: _Entry) -> None:
        """Sleep unless a wake-up already reached this entry."""
        lockdep.might_sleep("schedule()")
        while not e.woken:
            traps.block(f"wait queue {self.name}")
        self.clock.acquire()

    def finish_wait(self, e: _Entry) -> None:
        if e in self.entries:
            self.entries.remove(e)

    def wake_up(self) -> None:
        traps.schedule_point((SYNC, self, "wake_up", None))
        self.clock.release()
        es, self.entries = self.entries, []
        for e in es:
            e.woken = True
            traps.wake(e.task)

    def wait_event(self, cond) -> None:
        """Sleep until ``cond()`` is true (the kernel's wait_event)."""
        while True:
            e = self.prepare_to_wait()
            if cond():
                self.finish_wait(e)
                return
            self.schedule(e)
            self.finish_wait(e)


wait_event = WaitQueue.wait_event
wake_up = WaitQueue.wake_up
complete = Completion.complete
wait_for_completion = Completion.wait_for_completion


class RcuWait:
    """struct rcuwait: a wait slot for at most one task (callers serialise waiters,
    e.g. under a mutex), woken by rcuwait_wake_up.

    The waiter's loop is the kernel's: prepare_to_rcuwait; while the condition fails
    (checked under the waker's lock): set_current_state, drop the lock, schedule(),
    retake it; finish_rcuwait.  A wake-up between set_current_state and schedule() is
    not lost: the task is runnable again and schedule() returns at once.
    Happens-before: rcuwait_wake_up releases into the waiter's schedule().
    """

    def __init__(self, name: str):
        self.name = name
        self.task = None
        self._woken = False
        self.clock = SyncClock()

    def __str__(self) -> str:
        return self.name

    def prepare_to_rcuwait(self) -> None:
        self.task = traps.current_task()

    def set_current_state(self) -> None:
        """set_current_state(TASK_UNINTERRUPTIBLE) before the condition is dropped
        (smp_store_mb: a step of its own)."""
        traps.schedule_point((SYNC, self, "set_current_state", None))
        self._woken = False

    def schedule(self) -> None:
        """Sleep unless woken since set_current_state."""
        lockdep.might_sleep("schedule()")
        while not self._woken:
            traps.block(f"rcuwait {self.name}")
        self.clock.acquire()

    def finish_rcuwait(self) -> None:
        self.task = None
        self._woken = True

    def rcuwait_wake_up(self) -> None:
        traps.schedule_point((SYNC, self, "rcuwait_wake_up", None))
        self.clock.release()
        task = self.task
        if task is not None:
            self._woken = True
            traps.wake(task)
