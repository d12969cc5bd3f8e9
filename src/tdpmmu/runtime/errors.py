"""Violations (bugs found in the model under test) and errors (misuse of, or bugs in, tdpmmu).

A *Violation* is what the explorer is looking for: a checker (lockdep, RCU, the page
allocator, refcount_t, the race detector, an oracle, the runtime's deadlock and
livelock detection) saw the model break a rule.  Violations carry labelled evidence
lines in loom's style (``("held", "mmu_lock (read) by vcpu0 since step 3 at ...")``)
so that the report can print them aligned.

An *Error* is about the tool itself: a bad schedule string, an unknown scenario, a
replay that no longer matches, or an internal fault (``ModelInternalError``: a bug in
tdpmmu, never in the model).

The class hierarchy is the vocabulary of reports and of ``--json`` output: a
violation's ``category`` is its class name, and ``family`` is the checker family
(the direct subclass of :class:`Violation`) so that callers can ask for "any lockdep
problem" without listing every subclass.
"""

from __future__ import annotations


class Violation(Exception):
    """A rule of the model was broken.  Raised inside a task; aborts the execution."""

    #: one-sentence description of the class, shown in ``tdpmmu list``
    summary = "a rule of the model was broken"

    def __init__(self, message: str, evidence: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.message = message
        self.evidence: list[tuple[str, str]] = list(evidence or [])

    @property
    def category(self) -> str:
        return type(self).__name__

    @property
    def family(self) -> str:
        for klass in type(self).__mro__:
            if Violation in klass.__bases__:
                return klass.__name__
        return "Violation"

    def add_evidence(self, label: str, text: str) -> "Violation":
        self.evidence.append((label, text))
        return self


# -- invariants and oracles --------------------------------------------------------

class InvariantViolation(Violation):
    summary = "an invariant or oracle of the scenario does not hold"


class KernelWarning(Violation):
    """One of the kernel's own WARN_ON / KVM_BUG_ON / BUG checks fired in the model."""

    summary = "a WARN_ON/KVM_BUG_ON/BUG that the kernel itself has fired in the model"


class Oops(Violation):
    """An unexpected Python exception escaped model or scenario code (a kernel oops)."""

    summary = "model code crashed with an unexpected exception (a kernel oops)"


class NullPointerDereference(Oops):
    """Model code dereferenced a NULL pointer: an attribute, item or call of ``None``
    (the kernel's "BUG: kernel NULL pointer dereference" oops)."""

    summary = "BUG: kernel NULL pointer dereference (model code used None as an object)"


# -- lockdep -----------------------------------------------------------------------

class LockdepViolation(Violation):
    summary = "lock discipline broken"


class LockNotHeld(LockdepViolation):
    summary = "a lockdep assertion failed: a required lock (or lock mode) is not held"


class LockHeldWrongly(LockdepViolation):
    summary = "lockdep_assert_not_held failed: a lock is held where it must not be"


class LockOrderInversion(LockdepViolation):
    summary = "possible circular locking dependency (ABBA), even if no deadlock happened"


class RecursiveLocking(LockdepViolation):
    summary = "possible recursive locking: a task takes a lock it already holds"


class SleepInAtomic(LockdepViolation):
    summary = "sleeping function called from invalid context (spinlock, rwlock or RCU held)"


class BadUnlock(LockdepViolation):
    summary = "bad unlock balance: releasing a lock the task does not hold (in that mode)"


class LockHeldAtExit(LockdepViolation):
    summary = "a task finished while still holding a lock"


# -- RCU ---------------------------------------------------------------------------

class RcuViolation(Violation):
    summary = "RCU rules broken"


class RcuUnprotectedDereference(RcuViolation):
    summary = "suspicious rcu_dereference usage: outside a read-side section and without the protecting lock"


class RcuBadNesting(RcuViolation):
    summary = "unbalanced rcu_read_lock/unlock, or a read-side section left open"


class RcuGracePeriodInReader(RcuViolation):
    summary = "synchronize_rcu/rcu_barrier called inside an RCU read-side section"


# -- memory ------------------------------------------------------------------------

class MemoryViolation(Violation):
    summary = "memory safety broken"


class UseAfterFree(MemoryViolation):
    summary = "access to freed memory"


class DoubleFree(MemoryViolation):
    summary = "memory freed twice"


class MemoryLeak(MemoryViolation):
    summary = "memory still allocated when it must all have been freed"


class ListCorruption(MemoryViolation):
    """CONFIG_DEBUG_LIST (lib/list_debug.c) caught a corrupted list_head."""

    summary = ("list_add/list_del corruption (CONFIG_DEBUG_LIST): a node never added, "
               "deleted twice, added twice, or neighbours not pointing back")


# -- refcount_t --------------------------------------------------------------------

class RefcountViolation(Violation):
    summary = "refcount_t warning (addition on 0, underflow, saturation, dec to 0)"


# -- data races --------------------------------------------------------------------

class DataRace(Violation):
    summary = "a plain access races with another access to the same word (no happens-before)"


# -- progress ----------------------------------------------------------------------

class Deadlock(Violation):
    summary = "every remaining task is blocked"


class Livelock(Violation):
    summary = "the execution exceeded its step bound (tasks keep running without finishing)"


class Stall(Violation):
    """The watchdogs (sync/watchdog.py): work that is never broken by a scheduling point."""

    summary = "a task worked too long without a scheduling point (watchdog)"


class SoftLockup(Stall):
    summary = "soft lockup: too much work without a scheduling point while others spin on a held lock"


class RcuStall(Stall):
    summary = "RCU CPU stall: too much work inside one RCU read-side section while a grace period waits"


# -- errors about the tool ---------------------------------------------------------

class TdpmmuError(Exception):
    """Base class for errors that are not findings."""


class UsageError(TdpmmuError):
    """Bad input: unknown scenario, malformed schedule, bad option.  Exit code 2."""


class ScheduleMismatch(UsageError):
    """A replayed schedule does not fit the execution (wrong scenario, parameters or model)."""


class ModelInternalError(TdpmmuError):
    """A bug in tdpmmu itself (its runtime, explorer or report), never in the model."""

    def __init__(self, message: str):
        super().__init__(f"internal error in tdpmmu - please file a bug: {message}")


class _Aborted(BaseException):
    """Thrown into tasks that must unwind because the execution is over.

    A BaseException so that model code's ``except Exception`` cannot swallow it.
    """
