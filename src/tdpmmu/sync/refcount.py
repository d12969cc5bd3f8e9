"""refcount_t with the kernel's warnings (lib/refcount.c).

Every operation is an atomic read-modify-write (a scheduling point of kind RMW,
fully ordered).  The kernel WARNs and saturates; the model reports a
:class:`~tdpmmu.runtime.errors.RefcountViolation` with the same text:

* ``refcount_inc`` / ``refcount_add`` on 0: "addition on 0; use-after-free."
* an increment past INT_MAX: "saturated; leaking memory."
* ``refcount_dec_and_test`` / ``refcount_dec`` below 0: "underflow; use-after-free."
* ``refcount_dec`` reaching 0: "decrement hit 0; leaking memory."

A refcount living inside an allocation (``owner=``) is freed with it, so touching the
count of a freed object is a use-after-free.
"""

from __future__ import annotations

from ..runtime import traps
from ..runtime.errors import RefcountViolation
from .atomic import Words

INT_MAX = 2**31 - 1
REFCOUNT_SATURATED = -(2**30)   # INT_MIN / 2


class RefCount(Words):
    """refcount_t.  The value is word 0."""

    __slots__ = ()

    def __init__(self, name: str, value: int = 1, owner: Words | None = None):
        super().__init__(name, 1, value, owner)

    def _warn(self, what: str, old: int):
        self.vals[0] = REFCOUNT_SATURATED
        me = traps.current_task().name
        v = RefcountViolation(f"refcount_t: {what} ({self.name} was {old}, by {me})")
        v.add_evidence("refcount", f"{self.name} = {old} before the operation")
        raise v

    def _op(self, verb: str) -> int:
        self._rmw(0, verb)
        old = self.vals[0]
        return old

    def refcount_set(self, v: int) -> None:
        self.write_once(0, v)

    def refcount_read(self) -> int:
        return self.read_once(0)

    def refcount_add(self, n: int = 1, verb: str = "refcount_add") -> None:
        old = self._op(verb)
        if old == 0:
            self._warn("addition on 0; use-after-free.", old)
        if old < 0 or old + n > INT_MAX:
            self._warn("saturated; leaking memory.", old)
        self.vals[0] = old + n
        self._full_barrier(0)
        traps.note(f"{old} -> {old + n}")

    def refcount_inc(self) -> None:
        self.refcount_add(1, "refcount_inc")

    def refcount_inc_not_zero(self) -> bool:
        old = self._op("refcount_inc_not_zero")
        if old == 0:
            traps.note("was 0: not taken")
            return False
        if old < 0 or old + 1 > INT_MAX:
            self._warn("saturated; leaking memory.", old)
        self.vals[0] = old + 1
        self._full_barrier(0)
        traps.note(f"{old} -> {old + 1}")
        return True

    def refcount_dec_and_test(self) -> bool:
        """Returns True when the count dropped to zero (the caller frees)."""
        old = self._op("refcount_dec_and_test")
        if old <= 0:
            self._warn("underflow; use-after-free.", old)
        self.vals[0] = old - 1
        self._full_barrier(0)
        traps.note(f"{old} -> {old - 1}")
        return old == 1

    def refcount_dec(self) -> None:
        old = self._op("refcount_dec")
        if old <= 0:
            self._warn("underflow; use-after-free.", old)
        if old == 1:
            self._warn("decrement hit 0; leaking memory.", old)
        self.vals[0] = old - 1
        self._full_barrier(0)
        traps.note(f"{old} -> {old - 1}")


refcount_set = RefCount.refcount_set
refcount_read = RefCount.refcount_read
refcount_inc = RefCount.refcount_inc
refcount_add = RefCount.refcount_add
refcount_inc_not_zero = RefCount.refcount_inc_not_zero
refcount_dec_and_test = RefCount.refcount_dec_and_test
refcount_dec = RefCount.refcount_dec
