"""The TDP page-table iterator: a pre-order walk with restart after a yield.

Mirrors: arch/x86/kvm/mmu/tdp_iter.c and tdp_iter.h.  Every SPTE read is a
``READ_ONCE`` (a scheduling point), made inside an RCU read-side section: page tables
are freed only after a grace period, so a walker holding a stale pointer reads frozen
or non-present values, never freed memory.

``tdp_iter_next``: after a yield, restart from the root heading for
``next_last_level_gfn``; otherwise step down (re-reading the SPTE so a just-unlinked
table is never followed), else step sideways, else up and sideways.
``next_last_level_gfn`` advances only in ``try_step_side``: that is what the
forward-progress guard of ``tdp_mmu_iter_cond_resched`` relies on.

Every SPTE visited is one unit of work for the watchdogs (sync/watchdog.py), including
each entry of a run of non-present entries read in one step.

A SPTE pointer (``tdp_ptep_t``) is the pair (page table, index): ``iter.pt`` and
``iter.idx``.

The ``for_each_*`` loop macros are generators: a ``continue`` in the caller's loop
body steps the iterator exactly as the C macros do.
"""

from __future__ import annotations

from array import array

import numpy as np

from ..runtime.errors import KernelWarning
from ..sync.watchdog import work
from . import spte as S
from .locking import requires, transparent


@transparent
def kvm_tdp_mmu_read_spte(pt, idx: int) -> int:
    """READ_ONCE of one SPTE."""
    return pt.read_once(idx)


def spte_to_child_pt(kvm, spte: int, level: int):
    """The child page table an SPTE points to, or None (not present, or a leaf)."""
    if not S.is_shadow_present_pte(spte) or S.is_last_spte(spte, level):
        return None
    return kvm.pt_by_pfn[S.spte_to_pfn(spte)].spt


class TdpIter:
    """struct tdp_iter."""

    __slots__ = ("kvm", "next_last_level_gfn", "yielded_gfn", "pt_path", "pt", "idx", "gfn",
                 "root_level", "min_level", "level", "as_id", "old_spte", "valid", "yielded")

    def __init__(self, kvm):
        self.kvm = kvm
        self.pt_path = [None] * S.PT64_ROOT_MAX_LEVEL
        self.pt = None
        self.idx = 0
        self.gfn = 0
        self.next_last_level_gfn = 0
        self.yielded_gfn = 0
        self.root_level = 0
        self.min_level = 0
        self.level = 0
        self.as_id = 0
        self.old_spte = 0
        self.valid = False
        self.yielded = False

    @property
    def sptep(self):
        return (self.pt, self.idx)

    def __repr__(self) -> str:
        return (f"<tdp_iter L{self.level} gfn={self.gfn:#x} next={self.next_last_level_gfn:#x}"
                f" old={self.old_spte:#x}{' yielded' if self.yielded else ''}>")


#: shift of a level's GFN span (index 1..5); hot-path tables for SPTE_INDEX and friends
_SHIFT = (0, 0, 9, 18, 27, 36)


@transparent
def tdp_iter_refresh_sptep(iter: TdpIter) -> None:
    iter.pt = pt = iter.pt_path[iter.level - 1]
    iter.idx = idx = (iter.gfn >> _SHIFT[iter.level]) & 511        # SPTE_INDEX
    iter.old_spte = pt.read_once(idx)


@requires("none", rcu="held", kernel="tdp_iter.c")
def tdp_iter_restart(iter: TdpIter) -> None:
    """Restart the walk from the root, heading for ``next_last_level_gfn``.

    Requires: RCU (the SPTE read).
    """
    work(1)
    iter.yielded = False
    iter.yielded_gfn = iter.next_last_level_gfn
    iter.level = iter.root_level
    iter.gfn = iter.next_last_level_gfn & -(1 << _SHIFT[iter.level])   # gfn_round_for_level
    tdp_iter_refresh_sptep(iter)
    iter.valid = True


@requires("none", rcu="held", kernel="tdp_iter.c")
def tdp_iter_start(iter: TdpIter, root, min_level: int, next_last_level_gfn: int) -> None:
    """Start a walk of ``root`` towards ``next_last_level_gfn``, down to ``min_level``.

    Requires: RCU.
    """
    if root is None or root.role.level < 1 or root.role.level > S.PT64_ROOT_MAX_LEVEL:
        iter.valid = False
        raise KernelWarning(f"WARN_ON_ONCE in tdp_iter_start: bad root {root!r}")
    iter.next_last_level_gfn = next_last_level_gfn
    iter.root_level = root.role.level
    iter.min_level = min_level
    iter.pt_path[iter.root_level - 1] = root.spt
    iter.as_id = root.as_id
    tdp_iter_restart(iter)


@transparent
def try_step_down(iter: TdpIter) -> bool:
    """Step into the child table; re-reads the SPTE so an unlinked table is not followed.

    Requires: RCU.
    """
    if iter.level == iter.min_level:
        return False
    # Reread: the SPTE may have been changed (e.g. zapped) since the last step.
    iter.old_spte = spte = iter.pt.read_once(iter.idx)
    # spte_to_child_pt, inlined: present and not a leaf
    if not spte & S.SPTE_MMU_PRESENT_MASK or spte & S.PT_PAGE_SIZE_MASK:
        return False
    child = iter.kvm.pt_by_pfn[(spte & S.SPTE_BASE_ADDR_MASK) >> 12].spt
    iter.level = level = iter.level - 1
    iter.pt_path[level - 1] = child
    iter.gfn = iter.next_last_level_gfn & -(1 << _SHIFT[level])
    tdp_iter_refresh_sptep(iter)
    return True


@transparent
def try_step_side(iter: TdpIter) -> bool:
    """Step to the next entry of the same table; advances ``next_last_level_gfn``.

    Requires: RCU.
    """
    if iter.idx == S.SPTE_ENT_PER_PAGE - 1:
        return False
    iter.gfn += 1 << _SHIFT[iter.level]
    iter.next_last_level_gfn = iter.gfn
    iter.idx += 1
    iter.old_spte = iter.pt.read_once(iter.idx)
    return True


@transparent
def try_step_up(iter: TdpIter) -> bool:
    """Step back to the parent table's entry.  Requires: RCU."""
    if iter.level == iter.root_level:
        return False
    iter.level += 1
    iter.gfn &= -(1 << _SHIFT[iter.level])
    tdp_iter_refresh_sptep(iter)
    return True


@requires("none", rcu="held", kernel="tdp_iter.c")
def tdp_iter_next(iter: TdpIter) -> None:
    """Pre-order step: restart after a yield, else down, else side, else up + side.

    Requires: RCU.
    """
    if iter.yielded:
        tdp_iter_restart(iter)
        return
    work(1)
    if try_step_down(iter):
        return
    while True:
        if try_step_side(iter):
            return
        if not try_step_up(iter):
            break
    iter.valid = False


@requires("none", rcu="held")
def for_each_tdp_pte_min_level(kvm, root, min_level: int, start: int, end: int):
    """Walk every SPTE of ``root`` covering [start, end), down to ``min_level``.

    Requires: RCU (asserted when the loop starts).

    Unless ``kvm.fine_grained``, a run of non-present entries of one table is read in
    one step (every caller skips non-present entries of a range walk).
    """
    it = TdpIter(kvm)
    tdp_iter_start(it, root, min_level, start)
    coarse = not kvm.fine_grained
    while it.valid and it.gfn < end:
        yield it
        tdp_iter_next(it)
        if coarse and it.valid and not it.yielded:
            _skip_nonpresent_run(it, end)


@transparent
def _skip_nonpresent_run(it: TdpIter, end: int) -> None:
    """Scan, as one step, the non-present entries after the current non-present one;
    leave the iterator on the last of them (the next side step reads the next entry).
    The run is measured after the scheduling point, i.e. exactly what the step read."""
    v = it.old_spte
    if v & S.SPTE_MMU_PRESENT_MASK or v == S.FROZEN_SPTE:
        return
    if _run_last(it, end) - it.idx < 2:
        return
    it.pt.read_once(it.idx + 1)         # one step for the run (and the use-after-free check)
    j = _run_last(it, end)
    if j - it.idx < 2:
        return                          # changed meanwhile: go on entry by entry
    work(j - it.idx)
    it.gfn += (j - it.idx) * S.KVM_PAGES_PER_HPAGE(it.level)
    it.idx = j
    it.next_last_level_gfn = it.gfn
    it.old_spte = it.pt.vals[j]


def _run_last(it: TdpIter, end: int) -> int:
    """Index of the last entry of the non-present run after ``it.idx`` (within ``end``)."""
    step = S.KVM_PAGES_PER_HPAGE(it.level)
    # the last entry of this table whose gfn is still below ``end``
    last = min(S.SPTE_ENT_PER_PAGE - 1, it.idx + (end - 1 - it.gfn) // step)
    return first_stop(it.pt.vals, it.idx + 1, last + 1) - 1


_PRESENT = np.uint64(S.SPTE_MMU_PRESENT_MASK)
_FROZEN = np.uint64(S.FROZEN_SPTE)


def first_stop(vals, i: int, n: int) -> int:
    """First index in [i, n) whose SPTE is present or frozen, else ``n`` (vectorised)."""
    if i >= n:
        return n
    if not isinstance(vals, array):                 # a poisoned (freed) table
        return i
    seg = np.frombuffer(vals, dtype=np.uint64)[i:n]
    hit = ((seg & _PRESENT) != 0) | (seg == _FROZEN)
    k = int(hit.argmax())
    return i + k if hit[k] else n


def for_each_tdp_pte(kvm, root, start: int, end: int):
    return for_each_tdp_pte_min_level(kvm, root, S.PG_LEVEL_4K, start, end)


def tdp_mmu_max_gfn_exclusive(kvm=None) -> int:
    """One past the largest GFN the host can map: kvm_mmu_max_gfn() + 1, from the host
    MAXPHYADDR (``kvm.shadow_phys_bits``, 52 unless the VM was created with another)."""
    bits = 52 if kvm is None else kvm.shadow_phys_bits
    return 1 << (bits - S.PAGE_SHIFT)


def kvm_mmu_max_gfn(kvm) -> int:
    """The largest GFN KVM may map (mmu.h: host.MAXPHYADDR with TDP)."""
    return tdp_mmu_max_gfn_exclusive(kvm) - 1


def for_each_tdp_pte_min_level_all(kvm, root, min_level: int):
    return for_each_tdp_pte_min_level(kvm, root, min_level, 0, tdp_mmu_max_gfn_exclusive(kvm))
