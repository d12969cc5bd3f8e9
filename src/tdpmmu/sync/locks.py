"""Locks with kernel verbs: spinlock_t, struct mutex, rwlock_t (queued, writer-fair).

Acquiring and releasing are scheduling points ("acquiring a lock is a yield point";
"releasing is a yield point, so a waiter may run before we continue").  Blocking
follows shuttle's rule: a release wakes *every* waiter and the strategy chooses who
runs; the winner takes the lock and the losers block again.  Who wins is therefore a
choice the explorer covers, not a fixed policy.

rwlock_t mirrors the kernel's qrwlock in process context: a reader waits while a
writer holds the lock *or waits for it* (so writers are not starved and a recursive
read_lock behind a waiting writer deadlocks, as in the kernel), and
``rwlock_needbreak`` is true when anyone is queued.  ``cond_resched_rwlock_read`` and
``_write`` drop the lock and reschedule when it is contended or when the strategy
says ``need_resched()``.

The kernel verbs are module functions (``read_lock(lock)``) so that model code reads
like C; they are the class methods themselves, so they cost nothing extra.
"""

from __future__ import annotations

from ..runtime import ops, traps
from ..runtime.ops import ACQUIRE, RELEASE, YIELD
from . import lockdep, watchdog
from .race import SyncClock

_CPU_RELAX = (YIELD, None, "cpu_relax", None)
_COND_RESCHED = (YIELD, None, "cond_resched", None)


class _Lock:
    #: whether holding it allows sleeping (mutex yes, spinlock/rwlock no)
    sleeping = False

    def __init__(self, name: str, cls: str | None = None):
        #: instance name shown in traces ("mmu_lock", "root3.lock")
        self.name = name
        #: lockdep class (defaults to the name): the order graph is between classes
        self.cls = cls or name
        self.waiters: list = []
        self.clock = SyncClock()

    def _wait(self, why: str):
        cur = traps.current_task()
        self.waiters.append(cur)
        traps.block(why)

    def _wake_all(self):
        ws = self.waiters
        if ws:
            self.waiters = []
            for t in ws:
                traps.wake(t)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class _ExclusiveLock(_Lock):
    """One owner at a time: the body of spinlock_t and struct mutex."""

    verb = "lock"

    def __init__(self, name: str, cls: str | None = None):
        super().__init__(name, cls)
        self.owner = None
        self._acq = (ACQUIRE, self, f"{self.verb}_lock", None)
        self._rel = (RELEASE, self, f"{self.verb}_unlock", None)

    def _lock(self) -> None:
        if self.sleeping:
            lockdep.might_sleep(f"{self.verb}_lock({self.name})")
        traps.schedule_point(self._acq)
        lockdep.lock_acquire(self, "exclusive")
        while self.owner is not None:
            self._wait(f"{self.verb}_lock({self.name}) held by {self.owner.name}")
        self._take()

    def _take(self) -> None:
        self.owner = traps.current_task()
        self.clock.acquire()
        lockdep.lock_acquired(self, "exclusive")

    def _trylock(self) -> bool:
        traps.schedule_point(self._acq)
        lockdep.lock_acquire(self, "exclusive", trylock=True)
        if self.owner is not None:
            traps.note("trylock failed")
            return False
        self._take()
        return True

    def _unlock(self) -> None:
        lockdep.lock_release(self, "exclusive")
        traps.schedule_point(self._rel)
        self.owner = None
        self.clock.release()
        self._wake_all()

    def is_locked(self) -> bool:
        return self.owner is not None

    def __enter__(self):
        self._lock()
        return self

    def __exit__(self, *exc):
        self._unlock()


class SpinLock(_ExclusiveLock):
    """spinlock_t.  Waiting is modelled as blocking (no busy steps), so spinning cannot
    livelock the model; the wait is still visible as a ``spin_lock`` step."""

    verb = "spin"
    spin_lock = _ExclusiveLock._lock
    spin_trylock = _ExclusiveLock._trylock
    spin_unlock = _ExclusiveLock._unlock
    spin_is_locked = _ExclusiveLock.is_locked


class Mutex(_ExclusiveLock):
    """struct mutex: a sleeping lock (mutex_lock may sleep, so it checks might_sleep)."""

    sleeping = True
    verb = "mutex"
    mutex_lock = _ExclusiveLock._lock
    mutex_trylock = _ExclusiveLock._trylock
    mutex_unlock = _ExclusiveLock._unlock
    mutex_is_locked = _ExclusiveLock.is_locked


class RwLock(_Lock):
    """rwlock_t (qrwlock semantics in process context).

    Invariant: ``writer`` is None or ``readers`` is empty.  ``writers_waiting`` counts
    tasks inside write_lock that do not hold it yet; new readers queue behind them.
    Happens-before: write_unlock releases into ``clock`` (acquired by every locker);
    read_unlock releases into ``read_clock`` (acquired only by writers), so two readers
    are not ordered by the lock they share.
    """

    def __init__(self, name: str, cls: str | None = None):
        super().__init__(name, cls)
        self.writer = None
        self.readers: list = []
        self.writers_waiting = 0
        self.read_clock = SyncClock()
        self._racq = (ACQUIRE, self, "read_lock", None)
        self._rrel = (RELEASE, self, "read_unlock", None)
        self._wacq = (ACQUIRE, self, "write_lock", None)
        self._wrel = (RELEASE, self, "write_unlock", None)

    def _who(self) -> str:
        if self.writer is not None:
            return f"write-held by {self.writer.name}"
        if self.writers_waiting:
            return "a writer is waiting"
        return "free"

    def read_lock(self) -> None:
        traps.schedule_point(self._racq)
        lockdep.lock_acquire(self, "read")
        while self.writer is not None or self.writers_waiting:
            self._wait(f"read_lock({self.name}): {self._who()}")
        self.readers.append(traps.current_task())
        self.clock.acquire()
        lockdep.lock_acquired(self, "read")

    def read_trylock(self) -> bool:
        traps.schedule_point(self._racq)
        lockdep.lock_acquire(self, "read", trylock=True)
        if self.writer is not None:
            return False
        self.readers.append(traps.current_task())
        self.clock.acquire()
        lockdep.lock_acquired(self, "read")
        return True

    def read_unlock(self) -> None:
        lockdep.lock_release(self, "read")
        traps.schedule_point(self._rrel)
        self.readers.remove(traps.current_task())
        self.read_clock.release()
        self._wake_all()

    def write_lock(self) -> None:
        traps.schedule_point(self._wacq)
        lockdep.lock_acquire(self, "write")
        self.writers_waiting += 1
        try:
            while self.writer is not None or self.readers:
                holders = (self.writer.name if self.writer is not None
                           else ", ".join(t.name for t in self.readers) + " (read)")
                self._wait(f"write_lock({self.name}) held by {holders}")
        finally:
            self.writers_waiting -= 1
        self.writer = traps.current_task()
        self.clock.acquire()
        self.read_clock.acquire()
        lockdep.lock_acquired(self, "write")

    def write_trylock(self) -> bool:
        traps.schedule_point(self._wacq)
        lockdep.lock_acquire(self, "write", trylock=True)
        if self.writer is not None or self.readers:
            return False
        self.writer = traps.current_task()
        self.clock.acquire()
        self.read_clock.acquire()
        lockdep.lock_acquired(self, "write")
        return True

    def write_unlock(self) -> None:
        lockdep.lock_release(self, "write")
        traps.schedule_point(self._wrel)
        self.writer = None
        self.clock.release()
        self._wake_all()

    def rwlock_needbreak(self) -> bool:
        """Someone is queued on the lock (rwlock_is_contended).  Callers pair it with
        need_resched(): the pair is a scheduling opportunity (the watchdogs')."""
        watchdog.resched_point()
        return bool(self.waiters)

    def cond_resched_rwlock_read(self) -> bool:
        """Requires: ``self`` held for read.
        Why: long walks must let writers and other tasks in.
        Returns: True if the lock was dropped and re-taken (the caller must revalidate).
        """
        lockdep.lockdep_assert_held_read(self)
        lockdep.might_sleep(f"cond_resched_rwlock_read({self.name})", except_lock=self)
        if self.rwlock_needbreak() or need_resched():
            self.read_unlock()
            traps.yield_now(_COND_RESCHED)
            self.read_lock()
            return True
        return False

    def cond_resched_rwlock_write(self) -> bool:
        """Requires: ``self`` held for write.  Returns: True if it was dropped and re-taken."""
        lockdep.lockdep_assert_held_write(self)
        lockdep.might_sleep(f"cond_resched_rwlock_write({self.name})", except_lock=self)
        if self.rwlock_needbreak() or need_resched():
            self.write_unlock()
            traps.yield_now(_COND_RESCHED)
            self.write_lock()
            return True
        return False


def need_resched() -> bool:
    """Whether the scheduler wants the CPU back: a strategy choice, made only when some
    other task could run (a non-zero answer counts as a preemption for bounded DFS).
    Asking is a scheduling opportunity (the watchdogs')."""
    watchdog.resched_point()
    if not traps.other_runnable():
        return False
    return traps.choose(2, "need_resched", preemptive=True) == 1


def cond_resched() -> None:
    """A voluntary reschedule point; may sleep."""
    lockdep.might_sleep("cond_resched()")
    traps.yield_now(_COND_RESCHED)


def cpu_relax() -> None:
    """Busy-wait hint inside a spin loop: a voluntary yield that does not sleep."""
    traps.yield_now(_CPU_RELAX)


# kernel verbs
spin_lock = SpinLock.spin_lock
spin_trylock = SpinLock.spin_trylock
spin_unlock = SpinLock.spin_unlock
mutex_lock = Mutex.mutex_lock
mutex_trylock = Mutex.mutex_trylock
mutex_unlock = Mutex.mutex_unlock
read_lock = RwLock.read_lock
read_trylock = RwLock.read_trylock
read_unlock = RwLock.read_unlock
write_lock = RwLock.write_lock
write_trylock = RwLock.write_trylock
write_unlock = RwLock.write_unlock
rwlock_needbreak = RwLock.rwlock_needbreak
cond_resched_rwlock_read = RwLock.cond_resched_rwlock_read
cond_resched_rwlock_write = RwLock.cond_resched_rwlock_write

__all__ = [
    "SpinLock", "Mutex", "RwLock", "need_resched", "cond_resched", "cpu_relax",
    "spin_lock", "spin_trylock", "spin_unlock", "mutex_lock", "mutex_trylock", "mutex_unlock",
    "read_lock", "read_trylock", "read_unlock", "write_lock", "write_trylock", "write_unlock",
    "rwlock_needbreak", "cond_resched_rwlock_read", "cond_resched_rwlock_write", "ops",
]


class RwSemaphore(RwLock):
    """struct rw_semaphore: a *sleeping* reader/writer lock.

    Fair like the kernel's rwsem (a waiting writer blocks new readers: otherwise
    readers arriving back to back would starve it), so, as for rwlock_t, a down_read
    behind a waiting writer waits even though the lock is only read-held -- the source
    of the deadlocks lockdep reports for rwsems nested in other locks.  down_read and
    down_write may sleep (might_sleep); holding it allows sleeping.  Lockdep modes are
    "read" and "write"; read acquisitions are not recursive (as for rwlock_t).
    """

    sleeping = True

    def __init__(self, name: str, cls: str | None = None):
        super().__init__(name, cls)
        self._racq = (ACQUIRE, self, "down_read", None)
        self._rrel = (RELEASE, self, "up_read", None)
        self._wacq = (ACQUIRE, self, "down_write", None)
        self._wrel = (RELEASE, self, "up_write", None)

    def down_read(self) -> None:
        lockdep.might_sleep(f"down_read({self.name})")
        self.read_lock()

    def down_write(self) -> None:
        lockdep.might_sleep(f"down_write({self.name})")
        self.write_lock()

    up_read = RwLock.read_unlock
    up_write = RwLock.write_unlock
    down_read_trylock = RwLock.read_trylock
    down_write_trylock = RwLock.write_trylock


down_read = RwSemaphore.down_read
up_read = RwSemaphore.up_read
down_write = RwSemaphore.down_write
up_write = RwSemaphore.up_write
__all__ += ["RwSemaphore", "down_read", "up_read", "down_write", "up_write"]
