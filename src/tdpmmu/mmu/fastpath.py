"""The free-run fault path: a whole guest-access fault done as one step.

Under the free-run strategy (a sequential run that never preempts) with a single task,
no defect and no tracing, the common faults of a guest access are done here in one
step instead of the ~37 scheduling points of the faithful path -- the same results, by
the same rules, without the machinery that only exploration needs:

* a first-touch fault: a non-present SPTE where kvm_tdp_mmu_map() would link the
  missing page tables and install the leaf at the goal level of
  kvm_mmu_hugepage_adjust() (kvm_mmu_faultin_pfn, mmu_topup_memory_caches,
  tdp_mmu_link_sp, tdp_mmu_map_handle_target_level, their stats and dirty marking);
* a write-protection fault fixed by fast_page_fault(): a present, MMU-writable 4K
  leaf made writable (fast_pf_fix_direct_spte, the dirty bit in the bitmap).

Anything else -- a slot being deleted or moved, an invalidation in progress, aging
calls, PML, shadow pages, write-tracked or read-only pages, an NX huge page, MMIO, a
frozen or access-tracked SPTE, a huge leaf in the way, a freed table -- answers None
*before changing anything*, and the caller takes the faithful path.

Why this is sound: with one task and a strategy that never switches, no scheduling
point of the faithful path can let anything else run, locks are uncontended (the task
holds none: a fault may sleep), the race detector and the happens-before clocks are
inactive (they order nothing while one task exists, see sync.race), and every check
that could fire on these paths is either a precondition here or a property of the
values built (the same pure SPTE functions).  ``tests/test_mmu_fastpath.py`` proves
the equality on random workloads against the per-step path (tables, stats, TLBs and
paging-structure caches, dirty bitmaps, the oracles' records, allocation order).

The runtime knob ``--param _fused_faults=0`` turns the path off (the differential test
does).  Deviates: lockdep learns no lock order from these faults (the explored scenarios,
which never take this path, are where lock order is checked).
"""

from __future__ import annotations

from ..runtime import traps
from . import spte as S
from .kvm import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, KVM_MEMSLOT_INVALID
from .mmu_internal import HDR_INVALID, HDR_NX
from .mmu import OUTSIDE_GUEST_MODE, mark_page_dirty_in_slot
from .tdp_mmu import _alloc_sp, kvm_update_page_stats, tdp_mmu_init_sp
from ..sync import GFP_ATOMIC, GFP_KERNEL

#: a fault the free-run path did (the caller retries the access, as after a VM exit)
FIRST_TOUCH = "first-touch"
FAST_FIX = "fast-fix"
_MMU_PRESENT = S.SPTE_MMU_PRESENT_MASK
_LARGE = S.PT_PAGE_SIZE_MASK
_ADDR = S.SPTE_BASE_ADDR_MASK
_UNUSABLE_SLOT = KVM_MEMSLOT_INVALID | KVM_MEM_READONLY


#: whether the current execution allows the free-run fault path (set when it starts:
#: tdpmmu runs one execution at a time); a task also needs to be the only one
_allowed = False


def _install(ex) -> None:
    global _allowed
    _allowed = (not ex.tracing and not ex.defects and getattr(ex.strategy, "free_run", False)
                and bool(int(ex.params.get("_fused_faults", 1))))


traps.on_execution_start(_install)


def enabled() -> bool:
    """Whether the current task may take the free-run fault path now."""
    return _allowed and len(traps._EX.tasks) == 1


def leaf_spte_template(kvm, level: int, ad_disabled: bool, nx: bool) -> int:
    """make_spte() of a fault's leaf (ACC_ALL, host-writable, not prefetched, over a
    non-present SPTE, nothing write-protected) with pfn 0: the pfn is the only input
    left, and it enters make_spte as ``pfn << PAGE_SHIFT`` alone.  Kept per VM.
    ``nx``: the NX huge page workaround (it changes only leaves above 4K)."""
    key = (level, ad_disabled, nx)
    spte = kvm.leaf_spte_templates.get(key)
    if spte is None:
        m = kvm.masks
        wrprot, spte = S.make_spte(level=level, gfn=0, pfn=0, ad_disabled=ad_disabled,
                                   nx_huge_page_workaround=nx, m=m)
        assert not wrprot and S.check_spte_writable_invariants(spte, m) is None
        kvm.leaf_spte_templates[key] = spte
    return spte


def free_run_fault_walk(vcpu, gfn: int, write: bool, exec_: bool):
    """The lockless look at what a fault of this access would find, or None.

    Requires: the only task of a free-run execution (:func:`enabled`), holding no lock
    and outside RCU -- asserted here (a fault may sleep: the faithful path reports it).
    Why: it reads the page tables and the memslots without their locks, which is
    exactly what the faithful path would see at every one of its steps.
    Returns ``(tables, idx, spte, level, slot, goal)``: the page tables from the root's
    down to the one where kvm_tdp_mmu_map's walk stops, that entry (index, value,
    level), the memslot and the goal level.  None when the faithful path must handle
    the fault.  Changes nothing.
    """
    kvm = vcpu.kvm
    root = vcpu.root
    ts = traps._EX.current.ext
    if ts is not None and (ts.held or ts.rcu_nesting):
        return None                              # the faithful path reports it (may sleep)
    if (root is None or vcpu.requests.vals[0] or kvm.mmu_invalidate_in_progress
            or kvm.age_calls or kvm.enable_pml or kvm.arch.indirect_shadow_pages
            or kvm.host_readonly_ranges or vcpu.pml_buffer or vcpu.guest_exit_waiters
            or vcpu.mode.vals[0] != OUTSIDE_GUEST_MODE or root.hdr.vals[HDR_INVALID] or (exec_ and kvm.nx_huge_page_workaround_enabled)):
        return None
    # kvm_vcpu_gfn_to_memslot on the published memslots (one task: no update can be in
    # flight between the caller's srcu_read_lock and this lookup)
    for slot in kvm.memslots_cell.vals[1 if vcpu.smm else 0]:
        if slot.base_gfn <= gfn < slot.base_gfn + slot.npages:
            break
    else:
        return None
    if slot.flags & _UNUSABLE_SLOT:
        return None
    pt_by_pfn = kvm.pt_by_pfn
    pt = root.spt
    level = root.role.level
    tables = []
    m = kvm.masks               # a non-leaf SPTE must grant W and X, as KVM's all do
    full = S.PT_WRITABLE_MASK | m.x_mask
    rights = full | m.nx_mask
    while True:                                  # the walk of kvm_tdp_mmu_map
        if pt.freed:
            return None
        tables.append(pt)
        idx = (gfn >> (9 * level - 9)) & 511
        spte = pt.vals[idx]
        if not spte & _MMU_PRESENT or level == 1 or spte & _LARGE:
            break
        if spte & rights != full:
            return None                          # the CPU's walk would fault here
        pt = pt_by_pfn[(spte & _ADDR) >> 12].spt
        level -= 1
    goal = S.PG_LEVEL_4K
    if spte & _MMU_PRESENT:
        # only fast_page_fault's write-protection fix of a 4K leaf
        if (not write or level != S.PG_LEVEL_4K or not spte & S.PT_PRESENT_MASK
                or spte & S.PT_WRITABLE_MASK or not spte & kvm.masks.mmu_writable_mask
                or gfn in kvm.write_tracked):
            return None
    elif spte != S.SHADOW_NONPRESENT_VALUE:
        return None                              # MMIO or frozen
    elif slot.backing_level > S.PG_LEVEL_4K and not slot.dirty_logging():
        # kvm_mmu_hugepage_adjust
        goal = min(S.KVM_MAX_HUGEPAGE_LEVEL, slot.max_mapping_level(gfn))
        if goal > level:
            return None                          # a table where a huge page goes
    return tables, idx, spte, level, slot, goal


def free_run_page_fault(vcpu, gfn: int, walk) -> tuple:
    """Do the fault that :func:`free_run_fault_walk` found (``walk``), in one step.

    Requires: what :func:`free_run_fault_walk` checked, with nothing run in between.
    Why: mmu_lock for read, RCU and kvm->srcu would be uncontended; the SPTE stores are
    the cmpxchgs that could not fail (nothing else runs).
    Returns ``(kind, pt, idx, level)``: what was done and the leaf (``walk``'s table
    list is extended down to the leaf's table).  The stats are the kernel's
    (pf_taken, pf_fixed, pf_fast, pages_*, tdp_mmu_pages).
    """
    kvm = vcpu.kvm
    tables, idx, spte, level, slot, goal = walk
    pt = tables[-1]
    st = vcpu.stat
    st.pf_taken += 1
    st.pf_fixed += 1
    ts = traps._EX.current.ext
    if ts is not None:
        ts.work = ts.rcu_work = 0                # might_sleep and cond_resched did this
    logging = slot.flags & KVM_MEM_LOG_DIRTY_PAGES
    if spte & _MMU_PRESENT:
        # fast_page_fault -> fast_pf_fix_direct_spte
        pt.vals[idx] = spte | S.PT_WRITABLE_MASK
        traps.cover("fast-pf-made-writable")
        if logging:
            mark_page_dirty_in_slot(kvm, slot, gfn)
        st.pf_fast += 1
        return FAST_FIX, pt, idx, level
    m = kvm.masks
    pfn = (slot.remapped.get(gfn) if slot.remapped else None)
    if pfn is None:                              # slot.gfn_to_pfn, aligned to the goal level
        pfn = slot.host_pfn + (gfn - slot.base_gfn)
    pfn &= -(1 << (9 * goal - 9))
    # mmu_topup_memory_caches, then kvm_tdp_mmu_map's walk: link the missing tables
    # (tdp_mmu_alloc_sp, tdp_mmu_init_child_sp, tdp_mmu_link_sp and its accounting)
    cache = vcpu.mmu_page_cache
    while len(cache) < S.PT64_ROOT_MAX_LEVEL:
        cache.append(_alloc_sp(kvm, GFP_KERNEL))
    pt_by_pfn = kvm.pt_by_pfn
    while level > goal:
        sp = cache.pop() if cache else _alloc_sp(kvm, GFP_ATOMIC)
        tdp_mmu_init_sp(sp, (pt, idx), gfn & -(1 << (9 * level - 9)),
                        pt_by_pfn[pt.pfn].role.child())
        sp.hdr.vals[HDR_NX] = 0
        pt.vals[idx] = S.make_nonleaf_spte(sp.spt.pfn, not m.ad_enabled, m)
        kvm.arch.tdp_mmu_pages += 1
        pt = sp.spt
        level -= 1
        idx = (gfn >> (9 * level - 9)) & 511
        tables.append(pt)
    # tdp_mmu_map_handle_target_level
    ad_disabled = pt_by_pfn[pt.pfn].role.ad_disabled
    nx = goal > S.PG_LEVEL_4K and kvm.nx_huge_page_workaround_enabled
    spte = kvm.leaf_spte_templates.get((goal, ad_disabled, nx))
    if spte is None:
        spte = leaf_spte_template(kvm, goal, ad_disabled, nx)
    pt.vals[idx] = spte | pfn << S.PAGE_SHIFT
    if goal == S.PG_LEVEL_4K:                    # kvm_update_page_stats
        kvm.stat.pages_4k += 1
    else:
        kvm_update_page_stats(kvm, goal, 1)
    if logging:
        mark_page_dirty_in_slot(kvm, slot, gfn)
    return FIRST_TOUCH, pt, idx, level
