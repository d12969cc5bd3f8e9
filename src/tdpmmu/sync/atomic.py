"""Shared memory: arrays of 64-bit words with kernel access verbs.

:class:`Words` is a small array of shared words (a page table of 512 SPTEs, the fields
of a struct, a single counter).  Every access is a scheduling point whose operation
says how it touches the word (see :mod:`tdpmmu.runtime.ops`):

=====================  ===========  =========================================
verb                   kind         ordering (for the race detector)
=====================  ===========  =========================================
``read`` / ``write``   plain        none; checked for data races
``read_once``          READ         relaxed (READ_ONCE)
``write_once``         WRITE        relaxed (WRITE_ONCE)
``load_acquire``       READ         acquire (smp_load_acquire, rcu_dereference)
``store_release``      WRITE        release (smp_store_release, rcu_assign_pointer)
``cmpxchg``, ``xchg``  RMW          fully ordered on success; failed cmpxchg relaxed
``fetch_or/and/add``   RMW          fully ordered (value-returning atomics)
``atomic_or/and/add``  RMW          relaxed (non-returning atomics)
=====================  ===========  =========================================

Words allocated by the page allocator (or owned by such an allocation) are poisoned
when freed: any later access is a :class:`~tdpmmu.runtime.errors.UseAfterFree` naming
the allocation, free and access sites.

Values are Python ints kept to 64 bits by the arithmetic verbs; a word may also hold a
reference (an RCU-protected pointer), compared by identity/equality in cmpxchg.
"""

from __future__ import annotations

from array import array

from ..runtime import traps
from ..runtime.errors import UseAfterFree
from ..runtime.ops import PLAIN_READ, PLAIN_WRITE, READ, RMW, WRITE
from . import race
from .race import MR, MW, PR, PW, SyncClock

MASK64 = (1 << 64) - 1
POISON = 0x6B6B6B6B6B6B6B6B   # the slab poison byte, POISON_FREE


class AllocInfo:
    """Where and when an allocation or a free happened (for reports)."""

    __slots__ = ("task", "step", "site")

    def __init__(self):
        self.task = traps.current_task().name
        self.step = traps.now()
        self.site = traps.site()

    def describe(self) -> str:
        from ..runtime.execution import format_site
        where = f" at {format_site(self.site)}" if self.site else ""
        return f"step {self.step} by {self.task}{where}"


class Words:
    """``n`` shared 64-bit words named ``name`` (indices shown as ``name[i]``)."""

    __slots__ = ("name", "vals", "freed", "alloc_info", "free_info", "members", "_shadow",
                 "_sync", "_race", "pfn")

    def __init__(self, name: str, n: int = 1, init=0, owner: "Words | None" = None,
                 u64: bool = False):
        self.name = name
        #: a list (any values), or with ``u64`` an ``array('Q')`` of 64-bit ints that
        #: numpy can view without copying (``numpy.frombuffer``) for vectorised range work
        self.vals = array("Q", [init]) * n if u64 else [init] * n
        #: Invariant: once True, every access raises UseAfterFree.  Written by free_page.
        self.freed = False
        self.alloc_info: AllocInfo | None = None
        self.free_info: AllocInfo | None = None
        #: other Words living inside this allocation (freed together with it)
        self.members: list[Words] = []
        #: page frame number when allocated by the page allocator
        self.pfn: int | None = None
        if owner is not None:
            owner.members.append(self)
            self.alloc_info = owner.alloc_info
        self._shadow: dict = {}
        self._sync: dict = {}
        self._race = race.detector().enabled

    def __len__(self) -> int:
        return len(self.vals)

    def __repr__(self) -> str:
        return f"<Words {self.name}{' (freed)' if self.freed else ''}>"

    # -- checks ------------------------------------------------------------------

    def _uaf(self, i, verb: str):
        me = traps.current_task().name
        where = self.name if i is None else f"{self.name}[{i}]"
        fi = self.free_info
        v = UseAfterFree(f"use-after-free: {verb} of {where} by {me}"
                         + (f"; it was freed at step {fi.step} by {fi.task}" if fi else ""))
        if self.alloc_info:
            v.add_evidence("allocated", self.alloc_info.describe())
        if fi:
            v.add_evidence("freed", fi.describe())
        here = traps.site()
        from ..runtime.execution import format_site
        v.add_evidence("accessed", f"step {traps.now()} by {me}"
                       + (f" at {format_site(here)}" if here else ""))
        raise v

    def _sc(self, i) -> SyncClock:
        c = self._sync.get(i)
        if c is None:
            c = self._sync[i] = SyncClock()
        return c

    # -- plain accesses ----------------------------------------------------------

    def read(self, i: int = 0):
        """Plain load (checked for data races)."""
        traps.schedule_point((PLAIN_READ, self, "read", i))
        if self.freed:
            self._uaf(i, "read")
        if self._race:
            race.check_access(self._shadow, i, PR, self, "read")
        return self.vals[i]

    def write(self, i: int, v) -> None:
        """Plain store (checked for data races)."""
        traps.schedule_point((PLAIN_WRITE, self, "write", i))
        if self.freed:
            self._uaf(i, "write")
        if self._race:
            race.check_access(self._shadow, i, PW, self, "write")
        self.vals[i] = v

    # -- marked accesses ---------------------------------------------------------

    def read_once(self, i: int = 0):
        traps.schedule_point((READ, self, "READ_ONCE", i))
        if self.freed:
            self._uaf(i, "READ_ONCE")
        if self._race:
            race.check_access(self._shadow, i, MR, self, "READ_ONCE")
        return self.vals[i]

    def write_once(self, i: int, v):
        """WRITE_ONCE.  Returns the value overwritten (for oracles; C returns nothing)."""
        traps.schedule_point((WRITE, self, "WRITE_ONCE", i))
        if self.freed:
            self._uaf(i, "WRITE_ONCE")
        if self._race:
            race.check_access(self._shadow, i, MW, self, "WRITE_ONCE")
        prev = self.vals[i]
        self.vals[i] = v
        return prev

    def load_acquire(self, i: int = 0, verb: str = "smp_load_acquire"):
        traps.schedule_point((READ, self, verb, i))
        if self.freed:
            self._uaf(i, verb)
        if self._race:
            race.check_access(self._shadow, i, MR, self, verb)
        self._sc(i).acquire()
        return self.vals[i]

    def store_release(self, i: int, v, verb: str = "smp_store_release"):
        """Returns the value overwritten (for oracles)."""
        traps.schedule_point((WRITE, self, verb, i))
        if self.freed:
            self._uaf(i, verb)
        if self._race:
            race.check_access(self._shadow, i, MW, self, verb)
        self._sc(i).release()
        prev = self.vals[i]
        self.vals[i] = v
        return prev

    # -- atomic read-modify-write ------------------------------------------------

    def _rmw(self, i: int, verb: str):
        traps.schedule_point((RMW, self, verb, i))
        if self.freed:
            self._uaf(i, verb)
        if self._race:
            race.check_access(self._shadow, i, MW, self, verb)

    def _full_barrier(self, i: int) -> None:
        c = self._sc(i)
        c.acquire()
        c.release()

    def cmpxchg(self, i: int, old, new):
        """Store ``new`` if the word equals ``old``.  Returns the previous value."""
        self._rmw(i, "cmpxchg")
        cur = self.vals[i]
        if cur == old:
            self.vals[i] = new
            self._full_barrier(i)
            if traps._EX.tracing:
                traps.note(f"ok {_fmt(cur)} -> {_fmt(new)}")
        elif traps._EX.tracing:
            traps.note(f"failed: found {_fmt(cur)}, expected {_fmt(old)}")
        return cur

    def try_cmpxchg(self, i: int, old, new) -> tuple[bool, object]:
        """Returns (succeeded, value found) -- the kernel's try_cmpxchg updates *old."""
        cur = self.cmpxchg(i, old, new)
        return cur == old, cur

    def xchg(self, i: int, new):
        self._rmw(i, "xchg")
        cur = self.vals[i]
        self.vals[i] = new
        self._full_barrier(i)
        if traps._EX.tracing:
            traps.note(f"{_fmt(cur)} -> {_fmt(new)}")
        return cur

    def _fetch_op(self, i: int, verb: str, fn, ordered: bool):
        self._rmw(i, verb)
        cur = self.vals[i]
        self.vals[i] = fn(cur) & MASK64
        if ordered:
            self._full_barrier(i)
        if traps._EX.tracing:
            traps.note(f"{_fmt(cur)} -> {_fmt(self.vals[i])}")
        return cur

    def fetch_or(self, i: int, mask: int) -> int:
        return self._fetch_op(i, "fetch_or", lambda x: x | mask, True)

    def fetch_and(self, i: int, mask: int) -> int:
        return self._fetch_op(i, "fetch_and", lambda x: x & mask, True)

    def fetch_add(self, i: int, delta: int) -> int:
        return self._fetch_op(i, "fetch_add", lambda x: x + delta, True)

    def atomic_or(self, i: int, mask: int) -> None:
        self._fetch_op(i, "atomic_or", lambda x: x | mask, False)

    def atomic_and(self, i: int, mask: int) -> None:
        self._fetch_op(i, "atomic_and", lambda x: x & mask, False)

    def atomic_add(self, i: int, delta: int) -> None:
        self._fetch_op(i, "atomic_add", lambda x: x + delta, False)

    # -- outside the model's view ------------------------------------------------

    def peek(self, i: int = 0):
        """Read without a scheduling point or checks: for oracles and reports only."""
        return self.vals[i]


def _fmt(v) -> str:
    if isinstance(v, int):
        return hex(v) if v > 9 else str(v)
    return getattr(v, "name", None) or repr(v)


class Atomic64(Words):
    """atomic64_t: one word with atomic64_* verbs."""

    __slots__ = ()

    def __init__(self, name: str, init: int = 0, owner: Words | None = None):
        super().__init__(name, 1, init, owner)

    def atomic64_read(self) -> int:
        return self.read_once(0)

    def atomic64_set(self, v: int) -> None:
        self.write_once(0, v)

    def atomic64_cmpxchg(self, old: int, new: int) -> int:
        return self.cmpxchg(0, old, new)

    def atomic64_xchg(self, new: int) -> int:
        return self.xchg(0, new)

    def atomic64_add_return(self, d: int) -> int:
        return (self.fetch_add(0, d) + d) & MASK64

    def atomic64_inc(self) -> None:
        self.atomic_add(0, 1)

    def atomic64_dec(self) -> None:
        self.atomic_add(0, -1)


# kernel verbs over (words, index)
READ_ONCE = Words.read_once
WRITE_ONCE = Words.write_once
smp_load_acquire = Words.load_acquire
smp_store_release = Words.store_release
cmpxchg = Words.cmpxchg
try_cmpxchg = Words.try_cmpxchg
xchg = Words.xchg
