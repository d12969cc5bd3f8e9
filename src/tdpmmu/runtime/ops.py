"""What a scheduling point does: the operation a task is about to perform.

An operation is a plain 4-tuple ``(kind, obj, verb, arg)`` (tuples are the cheapest
thing Python can build, and the hot path builds one per scheduling point):

* ``kind`` -- one of the integer constants below: *how* the shared object is
  touched.  This is the information a partial-order reduction (DPOR, sleep sets)
  needs to decide whether two steps commute, so every primitive states it.
* ``obj`` -- the shared object touched (a lock, a word array, an RCU domain...).
  Objects have a stable ``name``; identity is only compared, never ordered.
* ``verb`` -- the kernel verb, for traces and reports (``"read_lock"``, ``"cmpxchg"``).
* ``arg`` -- an index into ``obj`` (a word of a page table) or ``None``.

Two operations *conflict* (do not commute) when they touch the same object and at
least one of them writes it: see :func:`conflicts`.
"""

from __future__ import annotations

# How a scheduling point touches its object.
START = 0          # a task's first step (touches nothing shared)
READ = 1           # marked read: READ_ONCE, smp_load_acquire, rcu_dereference
WRITE = 2          # marked write: WRITE_ONCE, smp_store_release, rcu_assign_pointer
RMW = 3            # atomic read-modify-write: cmpxchg, xchg, fetch_or, refcount_t ops
PLAIN_READ = 4     # plain (unmarked) load: the data-race detector checks these
PLAIN_WRITE = 5    # plain (unmarked) store
ACQUIRE = 6        # lock acquisition (exclusive or shared: see verb)
RELEASE = 7        # lock release
YIELD = 8          # voluntary yield (cond_resched, cpu_relax): not a preemption
SYNC = 9           # other synchronisation (RCU read-side markers, grace periods, wakeups)
ALLOC = 10         # page allocation
FREE = 11          # page free

KIND_NAMES = {
    START: "start", READ: "read", WRITE: "write", RMW: "rmw", PLAIN_READ: "plain-read",
    PLAIN_WRITE: "plain-write", ACQUIRE: "acquire", RELEASE: "release", YIELD: "yield",
    SYNC: "sync", ALLOC: "alloc", FREE: "free",
}

_WRITES = frozenset({WRITE, RMW, PLAIN_WRITE, ACQUIRE, RELEASE, FREE, SYNC})


def label(op) -> str:
    """Human form of an operation: ``cmpxchg(root0.spt[3])``."""
    kind, obj, verb, arg = op
    name = getattr(obj, "name", None) if obj is not None else None
    if name is None:
        return verb
    if name == "":
        return f"{verb}()"
    if arg is None:
        return f"{verb}({name})"
    return f"{verb}({name}[{arg}])"


def conflicts(a, b) -> bool:
    """Whether two operations may not commute (same object, at least one writes).

    Lock acquisitions and releases count as writes of the lock; two reads of the
    same word commute.  Operations without an object (task start, yields) commute
    with everything.
    """
    ka, oa, _, ia = a
    kb, ob, _, ib = b
    if oa is None or ob is None or oa is not ob:
        return False
    if ia is not None and ib is not None and ia != ib:
        return False
    return ka in _WRITES or kb in _WRITES
