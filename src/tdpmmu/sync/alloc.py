"""The page allocator: poisoned frees, use-after-free, double free and leak checks.

Mirrors: alloc_page/__free_page and kmem_cache_zalloc/kmem_cache_free as far as the
model needs (with KASAN-style reporting).  An allocation is a :class:`Words` whose
``alloc_info`` records the allocating task, step and (while tracing) source site.
Freeing poisons it (``POISON``) and records the free; every later access through any
verb raises :class:`~tdpmmu.runtime.errors.UseAfterFree` with the three sites.  Freeing
twice raises :class:`~tdpmmu.runtime.errors.DoubleFree`.  :func:`leak_check` lists
what is still allocated, in allocation order.

Allocation is not a scheduling point (the memory is private until published); a
``GFP_KERNEL`` allocation may sleep and so checks ``might_sleep``.  Freeing *is* a
scheduling point: it changes what every other task may still touch.
"""

from __future__ import annotations

from ..runtime import traps
from ..runtime.errors import DoubleFree, MemoryLeak
from ..runtime.ops import FREE
from . import lockdep
from .atomic import POISON, AllocInfo, Words

GFP_KERNEL = "GFP_KERNEL"
GFP_ATOMIC = "GFP_ATOMIC"
GFP_NOWAIT = "GFP_NOWAIT"


class PageAllocator:
    """Per-execution allocator state."""

    def __init__(self, ex):
        self.next_pfn = 1
        #: live allocations in allocation order (dicts keep insertion order)
        self.live: dict[int, Words] = {}
        self.total_allocs = 0
        self.total_frees = 0


def _allocator() -> PageAllocator:
    return traps.execution_state("page_alloc", PageAllocator)


def alloc_page(name: str, nwords: int = 512, gfp: str = GFP_KERNEL, init: int = 0,
               u64: bool = False) -> Words:
    """Allocate a page of ``nwords`` words (all ``init``) named ``<name>#<pfn>``;
    ``u64`` stores them in an ``array('Q')`` (see :class:`Words`)."""
    if gfp == GFP_KERNEL:
        lockdep.might_sleep(f"alloc_page({gfp})")
    a = _allocator()
    pfn = a.next_pfn
    a.next_pfn += 1
    page = Words(f"{name}#{pfn}", nwords, init, u64=u64)
    page.alloc_info = AllocInfo()
    a.live[pfn] = page
    a.total_allocs += 1
    page.pfn = pfn
    return page


def kzalloc(name: str, nwords: int = 8, gfp: str = GFP_KERNEL) -> Words:
    """A small zeroed allocation (a struct); same checks as a page."""
    return alloc_page(name, nwords, gfp)


def free_page(page: Words) -> None:
    """Free ``page`` (and everything living inside it); poisons its words."""
    traps.schedule_point((FREE, page, "free_page", None))
    if page.freed:
        me = traps.current_task().name
        v = DoubleFree(f"double free of {page.name} by {me}; first freed at step "
                       f"{page.free_info.step} by {page.free_info.task}")
        if page.alloc_info:
            v.add_evidence("allocated", page.alloc_info.describe())
        v.add_evidence("freed", page.free_info.describe())
        v.add_evidence("freed again", AllocInfo().describe())
        raise v
    info = AllocInfo()
    for w in [page] + page.members:
        w.freed = True
        w.free_info = info
        w.vals = [POISON] * len(w.vals)
    a = _allocator()
    a.live.pop(page.pfn, None)
    a.total_frees += 1
    traps.note(f"freed {page.name}")


kfree = free_page


def leak_check() -> list[Words]:
    """Allocations still live, in allocation order."""
    return list(_allocator().live.values())


def assert_no_leaks(what: str = "at this point") -> None:
    live = leak_check()
    if live:
        v = MemoryLeak(f"{len(live)} allocation(s) still live {what}: "
                       + ", ".join(p.name for p in live[:8]) + (" ..." if len(live) > 8 else ""))
        for p in live[:8]:
            if p.alloc_info:
                v.add_evidence("allocated", f"{p.name}: {p.alloc_info.describe()}")
        raise v
