"""The TDP MMU: roots, SPTE updates, zaps and the page-fault map, as in tdp_mmu.c.

Mirrors: arch/x86/kvm/mmu/tdp_mmu.c of the newest upstream ("N" in
shared/reference/tdp-mmu.md), function by function and step by step.  Every function
that touches mmu_lock-protected state declares its requirement with ``@requires``
(see locking.py), which asserts it on entry and feeds ``tdpmmu locks``.

Shared memory and scheduling points: every SPTE read is a READ_ONCE, every update a
cmpxchg (``_atomic`` paths, read lock), an xchg (volatile SPTEs, or freezing) or a
WRITE_ONCE (write lock); each is one step the explorer can interleave.  The root list
is an RCU list; root refcounts are refcount_t; page tables are freed with call_rcu.

Deviations (each one a modelling choice, not a kernel behaviour):

* Range walks skip a run of non-present entries of one table in a single step (see
  ``tdp_iter.for_each_tdp_pte_min_level``), and ``handle_removed_pt`` freezes such a run
  in a single step, unless the VM was created with ``fine_grained=True``.  Callers skip
  non-present entries anyway; what is lost is only interleavings *inside* a run of
  entries nobody else has made present.
* Under the free-run strategy (a plain sequential run that never preempts) leaf zaps of
  whole 4K tables and the freezing of removed tables are done with numpy in one step;
  ``tests/test_mmu_bulk.py`` proves both paths leave identical tables and stats.
* TDX mirror roots, external page tables and ``gfn_bits`` are left out (a plain EPT/NPT
  VM never has them).
* Statistics are plain ints (see kvm.py).
"""

from __future__ import annotations

import numpy as np

from ..runtime import traps
from ..runtime.errors import KernelWarning
from ..runtime.ops import READ, RMW
from ..sync import (GFP_ATOMIC, GFP_KERNEL, RefCount, alloc_page, call_rcu, cpu_relax, free_page, kzalloc,
                    lockdep_assert_held, lockdep_assert_held_write, lockdep_assert_in_rcu_read_lock, lockdep_is_held_type,
                    need_resched, rcu_barrier, rcu_read_lock, rcu_read_unlock, read_lock,
                    read_unlock, spin_lock, spin_unlock, write_lock, write_unlock)
from ..sync.list import list_add, list_del, list_empty
from ..sync.watchdog import resched_point as watchdog_resched_point
from ..sync.watchdog import work as watchdog_work
from . import oracles
from . import spte as S
from .locking import requires, transparent
from .mmu_internal import (HDR_INVALID, HDR_NX, HDR_TO_ZAP, HDR_WORDS, KVM_ALL_ROOTS,
                           KVM_DIRECT_ROOTS, KVM_INVALID_ROOTS, KVM_VALID_ROOTS, RET_PF_EMULATE,
                           RET_PF_FIXED, RET_PF_RETRY, RET_PF_SPURIOUS, RET_PF_WRITE_PROTECTED,
                           KvmMmuPage, kvm_mmu_page_ad_need_write_protect)
from .tdp_iter import (TdpIter, first_stop, for_each_tdp_pte, for_each_tdp_pte_min_level,
                       for_each_tdp_pte_min_level_all, spte_to_child_pt, tdp_iter_start,
                       tdp_mmu_max_gfn_exclusive)


def WARN(cond: bool, what: str) -> bool:
    """WARN_ON_ONCE / KVM_BUG_ON: a kernel self-check firing is a finding."""
    if cond:
        raise KernelWarning(what)
    return False


# -- SPTE accessors (tdp_iter.h) -----------------------------------------------------

@transparent
def kvm_tdp_mmu_write_spte_atomic(pt, idx: int, new_spte: int) -> int:
    """xchg; returns the previous value."""
    return pt.xchg(idx, new_spte)


@transparent
def __kvm_tdp_mmu_write_spte(pt, idx: int, new_spte: int) -> int:
    """WRITE_ONCE.  x86 stores are ordered (TSO): publishing a table with a plain store
    is safe, so a non-leaf store releases (the race detector sees the publication)."""
    if S.is_shadow_present_pte(new_spte) and not S.is_large_pte(new_spte):
        return pt.store_release(idx, new_spte, "WRITE_ONCE")
    return pt.write_once(idx, new_spte)


@transparent
def kvm_tdp_mmu_write_spte(kvm, pt, idx: int, old_spte: int, new_spte: int, level: int) -> int:
    """xchg when the old SPTE is volatile (hardware A/D, fast page fault), else WRITE_ONCE.

    Returns: the value really replaced (``old_spte`` for the plain store).  The SPTE
    atomicity oracle checks that a plain store did not overwrite a concurrent change.
    """
    if (S.kvm_tdp_mmu_spte_need_atomic_update(old_spte, level, kvm.masks)
            and not traps.defect("write-spte-ignores-volatile")):
        return kvm_tdp_mmu_write_spte_atomic(pt, idx, new_spte)
    found = __kvm_tdp_mmu_write_spte(pt, idx, new_spte)
    oracles.check_plain_store(kvm, pt, idx, old_spte, found)
    return old_spte


# -- pages -----------------------------------------------------------------------

@transparent
def sptep_to_sp(kvm, pt) -> KvmMmuPage:
    """The kvm_mmu_page owning page table ``pt`` (page_private)."""
    return kvm.pt_by_pfn[pt.pfn]


def tdp_mmu_alloc_sp(vcpu) -> KvmMmuPage:
    """Take a header and a page table from the vCPU's caches (topped up before the lock)."""
    if vcpu.mmu_page_cache:
        return vcpu.mmu_page_cache.pop()
    return _alloc_sp(vcpu.kvm, GFP_ATOMIC)


def _alloc_sp(kvm, gfp) -> KvmMmuPage:
    hdr = kzalloc("sp", HDR_WORDS, gfp)
    spt = alloc_page("spt", S.SPTE_ENT_PER_PAGE, gfp, init=S.SHADOW_NONPRESENT_VALUE, u64=True)
    sp = KvmMmuPage(hdr, spt, None)
    kvm.pt_by_pfn[spt.pfn] = sp
    return sp


def tdp_mmu_init_sp(sp: KvmMmuPage, sptep, gfn: int, role) -> None:
    sp.role = role
    sp.gfn = gfn
    sp.ptep = sptep
    sp.tdp_mmu_page = True
    sp.possible_nx_huge_page_link = False


@requires("none", rcu="held")
def tdp_mmu_init_child_sp(child_sp: KvmMmuPage, iter: TdpIter) -> None:
    """Role = parent role with level - 1; gfn and ptep from the iterator.

    Requires: RCU (the parent entry is dereferenced).
    """
    parent_sp = sptep_to_sp(iter.kvm, iter.pt)
    tdp_mmu_init_sp(child_sp, iter.sptep, iter.gfn, parent_sp.role.child())


@requires("none")
def tdp_mmu_free_sp(sp: KvmMmuPage) -> None:
    """Free the page table and the header (never-published pages, or after a GP).

    Requires: nothing: the page is unreachable (never linked, or a grace period passed).
    """
    free_page(sp.spt)
    free_page(sp.hdr)


def tdp_mmu_free_sp_rcu_callback(sp: KvmMmuPage):
    def tdp_mmu_free_sp_rcu_callback():
        tdp_mmu_free_sp(sp)
    return tdp_mmu_free_sp_rcu_callback


def kvm_update_page_stats(kvm, level: int, count: int) -> None:
    st = kvm.stat
    if level == S.PG_LEVEL_4K:
        st.pages_4k += count
    elif level == S.PG_LEVEL_2M:
        st.pages_2m += count
    elif level == S.PG_LEVEL_1G:
        st.pages_1g += count


def tdp_account_mmu_page(kvm, sp) -> None:
    kvm.arch.tdp_mmu_pages += 1
    if tdp_mmu_pages_listed():
        tdp_mmu_pages_list_add(kvm, sp)


def tdp_unaccount_mmu_page(kvm, sp) -> None:
    kvm.arch.tdp_mmu_pages -= 1
    if tdp_mmu_pages_listed():
        tdp_mmu_pages_list_del(kvm, sp)


# -- roots -------------------------------------------------------------------------

@requires("none")
def kvm_tdp_mmu_get_root(root: KvmMmuPage) -> bool:
    """refcount_inc_not_zero: fails only when the root is about to be freed.

    Requires: nothing (tdp_mmu.h): a reference, RCU or mmu_lock keeps ``root`` itself
    alive while we try.
    """
    return root.tdp_mmu_root_count.refcount_inc_not_zero()


@transparent
def root_is_invalid(root: KvmMmuPage) -> bool:
    """role.invalid (protected by mmu_lock; design R also writes it under the read lock,
    so there the access is marked)."""
    if _last_put_zaps():
        return bool(root.hdr.read_once(HDR_INVALID))
    return bool(root.hdr.read(HDR_INVALID))


@requires("none", taken=("tdp_mmu_pages_lock",))
def kvm_tdp_mmu_put_root(kvm, root: KvmMmuPage) -> None:
    """Drop a root reference; the last one unlinks it and frees it after a grace period.

    Requires: nothing (N dropped the assertion: the list is protected by
    tdp_mmu_pages_lock and RCU, so the mmu_lock mode is irrelevant -- the seed's point).
    Why: the last reference can only go after invalidation (KVM_BUG_ON otherwise).
    Design V (v5.18-v6.3): a still-valid root's last put makes it defunct instead
    (tdp_mmu_put_defunct_root).
    Returns: nothing.  No zap and no TLB flush here (design P, v5.15: the last put
    zaps the root first, see tdp_mmu_zap_root_at_last_put).
    """
    if not root.tdp_mmu_root_count.refcount_dec_and_test():
        return
    traps.cover("last-root-put")
    if _last_put_zaps():
        tdp_mmu_put_last_root_ref_zaps(kvm, root)      # design R (v5.13-v6.3)
        return
    if root_lifetime_v5_17():
        tdp_mmu_put_last_root_v5_17(kvm, root)          # design variant (v5.13-v5.17)
        return
    if vcpu_held_roots():
        # Design V: the last vCPU reference of a still-valid root makes it defunct
        if tdp_mmu_put_defunct_root(kvm, root):
            return
    else:
        WARN(not root.tdp_mmu_page or not root.hdr.read(HDR_INVALID),
             f"KVM_BUG_ON in kvm_tdp_mmu_put_root: last reference to a valid root {root!r}")
    spin_lock(kvm.arch.tdp_mmu_pages_lock)
    kvm.arch.tdp_mmu_roots.list_del_rcu(root)
    spin_unlock(kvm.arch.tdp_mmu_pages_lock)
    if traps.defect(LAST_PUT_ZAPS_ROOT_V5_15) or traps.defect("sp-visible-before-linked"):
        tdp_mmu_zap_root_at_last_put(kvm, root)     # design P (v5.15)
    call_rcu(tdp_mmu_free_sp_rcu_callback(root), "tdp_mmu_free_sp_rcu_callback")


@requires("none")
def tdp_mmu_root_match(root: KvmMmuPage, types: int) -> bool:
    """Type filter: invalid roots only when KVM_INVALID_ROOTS is asked for.

    Requires: nothing itself; reads role.invalid, so its callers hold mmu_lock.
    """
    if WARN(not (types & KVM_VALID_ROOTS), "WARN_ON_ONCE in tdp_mmu_root_match: no valid type"):
        return False
    if root_is_invalid(root):
        return bool(types & KVM_INVALID_ROOTS)
    return bool(types & KVM_DIRECT_ROOTS)


@requires("either", taken=("rcu",))
def tdp_mmu_next_root(kvm, prev_root, types: int):
    """The next root after ``prev_root`` matching ``types``, with a reference taken.

    Requires: mmu_lock held, either mode (roots are RCU-protected, but role.invalid is
    protected by mmu_lock).
    Why: the next reference is taken before the previous one is put, and prev's link is
    read while it is still held.  Catalogue root-put-never-frees: prev is dropped with a
    plain decrement (v5.10); root-iter-next-after-free: prev is put before its link is
    read (v1 of the fix).
    Returns: the next root (referenced) or None.
    """
    roots = kvm.arch.tdp_mmu_roots
    next_after_free = prev_root is not None and traps.defect("root-iter-next-after-free")
    if next_after_free:
        # catalogue root-iter-next-after-free (v1 of a889ea54b3da): the previous root
        # is put -- maybe the last reference, which frees it -- before its link is read
        kvm_tdp_mmu_put_root(kvm, prev_root)
    rcu_read_lock()
    if prev_root is not None:
        next_root = roots.list_next_or_null_rcu(prev_root)
    else:
        next_root = roots.list_first_or_null_rcu()
    while next_root is not None:
        if tdp_mmu_root_match(next_root, types) and kvm_tdp_mmu_get_root(next_root):
            break
        next_root = roots.list_next_or_null_rcu(next_root)
    rcu_read_unlock()
    if prev_root is not None and not next_after_free:
        if traps.defect("root-put-never-frees"):
            # catalogue root-put-never-frees (v5.10): the walk's temporary reference is
            # dropped with the plain decrement whose "reached zero" nobody acts on
            prev_root.tdp_mmu_root_count.refcount_dec()
        else:
            kvm_tdp_mmu_put_root(kvm, prev_root)
    return next_root


@requires("either")
def __for_each_tdp_mmu_root_yield_safe(kvm, as_id: int, types: int):
    """Every root of ``as_id`` (all when < 0) matching ``types``; the body may yield.

    Requires: mmu_lock held, either mode (asserted on every step, as the kernel's loop
    condition does).  Breaking out keeps the current root's reference.
    """
    root = tdp_mmu_next_root(kvm, None, types)
    while True:
        lockdep_assert_held(kvm.mmu_lock)
        if root is None:
            return
        if as_id < 0 or root.as_id == as_id:
            yield root
        root = tdp_mmu_next_root(kvm, root, types)


def for_each_valid_tdp_mmu_root_yield_safe(kvm, as_id: int):
    return __for_each_tdp_mmu_root_yield_safe(kvm, as_id, KVM_VALID_ROOTS)


def for_each_tdp_mmu_root_yield_safe(kvm):
    """All roots, valid and invalid, of every address space (no as_id filter: the seed).

    Catalogue seed-root-iter-as-id-filter (B1): the walker keeps the pre-v6.6 one
    address space filter (as_id 0), so SMM roots are never visited."""
    as_id = 0 if traps.defect("seed-root-iter-as-id-filter") else -1
    return __for_each_tdp_mmu_root_yield_safe(kvm, as_id, KVM_ALL_ROOTS)


@requires("write")
def __for_each_tdp_mmu_root(kvm, as_id: int, types: int):
    """Walk roots without references: legal only under the write lock."""
    for root in kvm.arch.tdp_mmu_roots.list_for_each_entry(
            lockdep_is_held_type(kvm.mmu_lock, "write"), "mmu_lock held for write"):
        lockdep_assert_held_write(kvm.mmu_lock)
        if tdp_mmu_root_match(root, types) and (as_id < 0 or root.as_id == as_id):
            yield root


@requires("none", takes="read", taken=("tdp_mmu_pages_lock",))
def kvm_tdp_mmu_alloc_root(vcpu) -> None:
    """Find or create the vCPU's root for its current role (address space).

    Requires: mmu_lock not held; takes it for read.
    Why: reuse under the read lock via the yield-safe walk; a second check under
    tdp_mmu_pages_lock makes creation race-free between vCPUs.
    Returns: nothing; vcpu.root is set.  A new root starts with refcount 2: one for the
    vCPU, one held by the TDP MMU until the root is invalidated (then handed to the
    zapper by kvm_tdp_mmu_invalidate_roots).
    """
    kvm = vcpu.kvm
    role = vcpu.root_role()
    as_id = role.as_id
    read_lock(kvm.mmu_lock)
    found = None
    for root in for_each_valid_tdp_mmu_root_yield_safe(kvm, as_id):
        if root.role == role and not root_is_invalid(root):
            found = root            # leaving the loop keeps the iterator's reference
            break
    if found is None:
        spin_lock(kvm.arch.tdp_mmu_pages_lock)
        for root in kvm.arch.tdp_mmu_roots.list_for_each_entry(True, "tdp_mmu_pages_lock held"):
            if root.role == role and not root_is_invalid(root):
                if valid_roots_may_be_dying():
                    if not kvm_tdp_mmu_get_root(root):
                        continue        # v5.17 / design R: its last put is unlinking it
                    found = root
                    break
                if not WARN(not kvm_tdp_mmu_get_root(root),
                            "WARN_ON_ONCE in kvm_tdp_mmu_alloc_root: matching root not gettable"):
                    found = root
                    break
        if found is None:
            found = tdp_mmu_alloc_sp(vcpu)
            tdp_mmu_init_sp(found, None, 0, role)
            count = (1 if roots_start_with_vcpu_reference()
                     or traps.defect("root-freed-on-last-vcpu-put") else 2)
            found.tdp_mmu_root_count = RefCount(f"{found.spt.name}.tdp_mmu_root_count", count,
                                                owner=found.hdr)
            found.init_link(found.spt.name, owner=found.hdr)
            kvm.arch.tdp_mmu_roots.list_add_rcu(found)
            traps.note(f"new root {found.spt.name} as_id={as_id}")
        spin_unlock(kvm.arch.tdp_mmu_pages_lock)
    read_unlock(kvm.mmu_lock)
    vcpu.root = found


# -- SPTE changes ------------------------------------------------------------------

@requires("none", taken=("tdp_mmu_pages_lock",))
def tdp_mmu_unlink_sp(kvm, sp: KvmMmuPage) -> None:
    """Unaccount a removed page table and untrack it from the possible-NX list.

    Requires: nothing beyond the caller's; always takes tdp_mmu_pages_lock for the NX
    list (since v6.8, even under the write lock).
    """
    tdp_unaccount_mmu_page(kvm, sp)
    if not sp.hdr.read_once(HDR_NX):
        return
    spin_lock(kvm.arch.tdp_mmu_pages_lock)
    sp.hdr.write_once(HDR_NX, 0)
    untrack_possible_nx_huge_page(kvm, sp)
    spin_unlock(kvm.arch.tdp_mmu_pages_lock)


@requires("either", held=("arch.tdp_mmu_pages_lock",), kernel="mmu.c")
def track_possible_nx_huge_page(kvm, sp: KvmMmuPage) -> None:
    """Put ``sp`` on the possible-NX list (once) and count it in nx_lpage_splits.

    Requires: mmu_lock held (either mode) and tdp_mmu_pages_lock.
    """
    if sp.possible_nx_huge_page_link:
        return
    kvm.arch.possible_nx_huge_pages.append(sp)
    sp.possible_nx_huge_page_link = True
    kvm.stat.nx_lpage_splits += 1


@requires("either", held=("arch.tdp_mmu_pages_lock",), kernel="mmu.c")
def untrack_possible_nx_huge_page(kvm, sp: KvmMmuPage) -> None:
    """Take ``sp`` off the possible-NX list.

    Requires: mmu_lock held (either mode) and tdp_mmu_pages_lock.
    """
    if not sp.possible_nx_huge_page_link:
        return
    kvm.arch.possible_nx_huge_pages.remove(sp)
    sp.possible_nx_huge_page_link = False
    kvm.stat.nx_lpage_splits -= 1


@requires("shared", rcu="held")
def handle_removed_pt(kvm, pt, shared: bool) -> None:
    """A page table was unlinked: freeze every entry, account what was there, free it
    after a grace period.

    Requires: mmu_lock held for read if ``shared``, else for write; RCU.
    Why: under the read lock other tasks may still CAS entries of the dying table, so
    each entry is frozen with xchg (waiting for a frozen one to be restored first);
    under the write lock only present entries need an (atomic, A/D-safe) write.
    Returns: nothing.  No TLB flush: the caller flushes before leaving RCU.
    """
    sp = sptep_to_sp(kvm, pt)
    level = sp.role.level
    watchdog_work(S.SPTE_ENT_PER_PAGE)  # every entry is read (and frozen), never yielding
    tdp_mmu_unlink_sp(kvm, sp)
    if level == S.PG_LEVEL_4K and traps.free_run() and not traps.tracing():
        _bulk_remove_leaf_table(kvm, pt, shared)
        call_rcu(tdp_mmu_free_sp_rcu_callback(sp), "tdp_mmu_free_sp_rcu_callback")
        return
    base_gfn = sp.gfn
    as_id = sp.as_id
    step = S.KVM_PAGES_PER_HPAGE(level)
    coarse = not kvm.fine_grained
    i = 0
    while i < S.SPTE_ENT_PER_PAGE:
        if coarse:
            j = _freeze_nonpresent_run(pt, i, shared)
            if j > i:
                i = j
                continue
        gfn = base_gfn + i * step
        if shared:
            while True:
                old_spte = kvm_tdp_mmu_write_spte_atomic(pt, i, S.FROZEN_SPTE)
                if not S.is_frozen_spte(old_spte):
                    break
                traps.cover("frozen-spte-seen")
                cpu_relax()
        else:
            old_spte = pt.read_once(i)
            if not S.is_shadow_present_pte(old_spte):
                i += 1
                continue
            old_spte = kvm_tdp_mmu_write_spte(kvm, pt, i, old_spte, S.FROZEN_SPTE, level)
        handle_changed_spte(kvm, as_id, gfn, old_spte, S.FROZEN_SPTE, level, shared)
        i += 1
    if traps.defect("free-pt-without-rcu"):
        tdp_mmu_free_sp(sp)             # catalogue B9: lockless walkers may still be inside
        return
    call_rcu(tdp_mmu_free_sp_rcu_callback(sp), "tdp_mmu_free_sp_rcu_callback")


@transparent
def _freeze_nonpresent_run(pt, i: int, freeze: bool) -> int:
    """In one step, freeze (``freeze``, the shared case) or just read (exclusive: the
    kernel leaves them alone) the run of non-present, non-frozen entries from ``i``.
    Returns the index after the run (``i`` when entry ``i`` is present or frozen, or
    the run is a single entry).  The run is measured *after* the scheduling point, so
    it is exactly what the step saw."""
    vals = pt.vals
    if _run_end(vals, i) - i < 2:
        return i
    traps.schedule_point((RMW if freeze else READ, pt, "xchg*" if freeze else "READ_ONCE*", i))
    if pt.freed:
        pt.read_once(i)                 # reports the use-after-free
    j = _run_end(vals, i)
    if j == i:                          # someone made it present meanwhile: per entry
        return i
    if freeze:
        for k in range(i, j):
            vals[k] = S.FROZEN_SPTE
        traps.note(f"froze non-present entries {i}..{j - 1}")
    return j


def _run_end(vals, i: int) -> int:
    return first_stop(vals, i, S.SPTE_ENT_PER_PAGE)


@transparent
def _bulk_remove_leaf_table(kvm, pt, shared: bool) -> None:
    """Free-run only: handle_removed_pt of a 4K table in one vectorised step (every
    entry is a leaf or non-present, so the bookkeeping is the pages_4k count)."""
    traps.schedule_point((RMW, pt, "xchg*", 0))
    if pt.freed:
        pt.read_once(0)
    # shared: every entry, as the per-entry xchg loop; else the present ones only
    _replace_4k_leaves(kvm, pt, S.FROZEN_SPTE, every=shared)


@requires("shared", rcu="held")
def handle_changed_spte(kvm, as_id: int, gfn: int, old_spte: int, new_spte: int, level: int,
                        shared: bool) -> None:
    """Bookkeeping for an SPTE change: stats, removed page tables, the kernel's checks.

    Requires: mmu_lock (read if ``shared``, else write); RCU (a removed table is walked).
    Why: every SPTE change funnels through here so that stats and the freeing of
    unlinked tables cannot be forgotten.
    Returns: nothing.
    """
    m = kvm.masks
    was_present = S.is_shadow_present_pte(old_spte)
    is_present = S.is_shadow_present_pte(new_spte)
    was_leaf = was_present and S.is_last_spte(old_spte, level)
    is_leaf = is_present and S.is_last_spte(new_spte, level)
    pfn_changed = S.spte_to_pfn(old_spte) != S.spte_to_pfn(new_spte)

    if level > S.PT64_ROOT_MAX_LEVEL or level < S.PG_LEVEL_4K:
        WARN(True, f"WARN_ON_ONCE in handle_changed_spte: level {level}")
    if gfn & ((1 << (9 * level - 9)) - 1):           # gfn % KVM_PAGES_PER_HPAGE(level)
        WARN(True, f"WARN_ON_ONCE in handle_changed_spte: gfn {gfn:#x} not aligned to "
                   f"level {level}")
    if was_leaf and is_leaf and pfn_changed:
        raise KernelWarning(
            f"BUG in handle_changed_spte: a present leaf SPTE was replaced by a present leaf "
            f"with a different pfn (missing or raced mmu_notifier?): as_id {as_id} gfn "
            f"{gfn:#x} old {old_spte:#x} new {new_spte:#x} level {level}")
    if old_spte == new_spte:
        return
    if kvm.age_calls:
        oracles.aging_disturbed(kvm, as_id, gfn, level)
    if was_leaf:
        oracles.note_leaf_change(kvm, as_id, gfn, old_spte, new_spte, level)
        if root_lifetime_v5_17():
            handle_changed_spte_acc_dirty_v5_17(kvm, old_spte, new_spte, level)
    if is_leaf:
        bad = S.check_spte_writable_invariants(new_spte, m)
        if bad is not None:
            WARN(True, f"WARN_ONCE in check_spte_writable_invariants: {bad}")
    if not was_present and not is_present:
        if not (S.is_mmio_spte(old_spte, m) or S.is_mmio_spte(new_spte, m)
                or S.is_frozen_spte(new_spte)):
            WARN(True, f"WARN_ON_ONCE in handle_changed_spte: unexpected non-present change "
                       f"{old_spte:#x} -> {new_spte:#x} at gfn {gfn:#x} level {level}")
        return
    if is_leaf != was_leaf:
        kvm_update_page_stats(kvm, level, 1 if is_leaf else -1)
    if was_present and not was_leaf and (
            is_leaf or not is_present
            or WARN(pfn_changed, "WARN_ON_ONCE in handle_changed_spte: page table swapped")):
        handle_removed_pt(kvm, spte_to_child_pt(kvm, old_spte, level), shared)


@requires("none", rcu="held")
def __tdp_mmu_set_spte_atomic(kvm, iter: TdpIter, new_spte: int) -> bool:
    """One cmpxchg of the SPTE from ``iter.old_spte`` to ``new_spte``; no bookkeeping.

    Requires: RCU (lockless aging uses it directly).
    Returns: True on success; on failure ``iter.old_spte`` holds the current value and
    nothing else changed (-EBUSY).
    """
    WARN(iter.yielded or S.is_frozen_spte(iter.old_spte),
         "WARN_ON_ONCE in __tdp_mmu_set_spte_atomic: yielded iterator or frozen old SPTE")
    cur = iter.pt.cmpxchg(iter.idx, iter.old_spte, new_spte)
    if cur != iter.old_spte:
        traps.cover("cmpxchg-lost")
        iter.old_spte = cur
        return False
    return True


@requires("read", rcu="held")
def tdp_mmu_set_spte_atomic(kvm, iter: TdpIter, new_spte: int) -> bool:
    """Set an SPTE with cmpxchg and do the bookkeeping.

    Requires: mmu_lock held for read; RCU.
    Why: with the lock shared, other vCPUs (and fast page fault, without the lock) may
    change the SPTE concurrently, so only a cmpxchg from the value we read is safe.
    Returns: True on success; False (-EBUSY) with ``iter.old_spte`` refreshed and no
    other side effect.
    """
    if not __tdp_mmu_set_spte_atomic(kvm, iter, new_spte):
        return False
    handle_changed_spte(kvm, iter.as_id, iter.gfn, iter.old_spte, new_spte, iter.level, True)
    return True


@requires("write", rcu="held")
def tdp_mmu_set_spte(kvm, as_id: int, sptep, old_spte: int, new_spte: int, gfn: int,
                     level: int) -> int:
    """Set an SPTE under the write lock and do the bookkeeping.

    Requires: mmu_lock held for write; RCU.
    Why: nobody else can change the SPTE except hardware A/D updates and fast page
    fault, so volatile SPTEs are written with xchg and the rest with WRITE_ONCE.
    Returns: the value really replaced (it may differ from ``old_spte`` in volatile bits).
    """
    WARN(S.is_frozen_spte(old_spte) or S.is_frozen_spte(new_spte),
         "WARN_ON_ONCE in tdp_mmu_set_spte: frozen SPTE under the write lock")
    pt, idx = sptep
    old_spte = kvm_tdp_mmu_write_spte(kvm, pt, idx, old_spte, new_spte, level)
    handle_changed_spte(kvm, as_id, gfn, old_spte, new_spte, level, False)
    return old_spte


@requires("write", rcu="held")
def tdp_mmu_iter_set_spte(kvm, iter: TdpIter, new_spte: int) -> None:
    """tdp_mmu_set_spte at the iterator; iter.old_spte becomes the previous value.

    Requires: mmu_lock held for write; RCU.
    """
    WARN(iter.yielded, "WARN_ON_ONCE in tdp_mmu_iter_set_spte: iterator yielded")
    iter.old_spte = tdp_mmu_set_spte(kvm, iter.as_id, iter.sptep, iter.old_spte, new_spte,
                                     iter.gfn, iter.level)


# -- yielding ----------------------------------------------------------------------

def tdp_mmu_iter_need_resched(kvm, iter: TdpIter) -> bool:
    """need_resched or contention, and the walk made progress since the last yield."""
    # B/A order (guard first): same result as N, and no need_resched choice is offered
    # to the strategy when the guard would refuse the yield anyway.
    if iter.next_last_level_gfn == iter.yielded_gfn:
        return False
    return kvm.mmu_lock.rwlock_needbreak() or need_resched()


@requires("shared", rcu="held", yields=True)
def tdp_mmu_iter_cond_resched(kvm, iter: TdpIter, flush: bool, shared: bool) -> bool:
    """Maybe drop mmu_lock and RCU mid-walk; flush first if a flush is pending.

    Requires: mmu_lock held for read if ``shared``, else write; RCU.
    Why: long walks must not starve other vCPUs; pending TLB flushes must happen before
    the lock is dropped (flush-before-yield), and a walk must make progress between
    yields (the guard on next_last_level_gfn).
    Returns: True if it yielded: the caller must ``continue`` (the walk restarts from the
    root) and reset its pending flush.
    """
    WARN(iter.yielded, "KVM_MMU_WARN_ON in tdp_mmu_iter_cond_resched: already yielded")
    if not tdp_mmu_iter_need_resched(kvm, iter):
        return False
    if traps.defect("flush-after-rcu-unlock"):
        # before bd29677952fa: RCU was left first, so the grace period deferring the
        # free of a table unlinked by this walk could end while vCPUs still had it in
        # their paging-structure caches
        rcu_read_unlock()
        if flush:
            _mmu_c.kvm_flush_remote_tlbs(kvm)
    else:
        if flush and not traps.defect("cond-resched-skips-flush"):
            _mmu_c.kvm_flush_remote_tlbs(kvm)
        rcu_read_unlock()
    if shared:
        yielded = kvm.mmu_lock.cond_resched_rwlock_read()
    else:
        yielded = kvm.mmu_lock.cond_resched_rwlock_write()
    rcu_read_lock()
    if yielded:
        traps.cover("yield-mid-walk")
        root = sptep_to_sp(kvm, iter.pt_path[iter.root_level - 1])
        if root.hdr.peek(HDR_INVALID):
            traps.cover("resumed-on-invalid-root")
    WARN(iter.gfn > iter.next_last_level_gfn,
         "WARN_ON_ONCE in tdp_mmu_iter_cond_resched: gfn beyond next_last_level_gfn")
    iter.yielded = True
    return True


# -- zapping -----------------------------------------------------------------------

@requires("shared", rcu="held")
def tdp_mmu_zap_entry(kvm, iter: TdpIter, shared: bool) -> bool:
    """Zap the present entry at the iterator: a plain write under the write lock, a
    cmpxchg under the read lock (the step every whole-root zap repeats).

    Requires: mmu_lock per ``shared``; RCU.
    Returns: True when done; False when the cmpxchg lost (``iter.old_spte`` refreshed:
    the caller retries the entry).
    """
    if not shared:
        tdp_mmu_iter_set_spte(kvm, iter, S.SHADOW_NONPRESENT_VALUE)
        return True
    return tdp_mmu_set_spte_atomic(kvm, iter, S.SHADOW_NONPRESENT_VALUE)


@requires("shared", rcu="held", yields=True)
def __tdp_mmu_zap_root(kvm, root: KvmMmuPage, shared: bool, zap_level: int) -> None:
    """One pass of a root zap: every present entry at or below ``zap_level``.

    Requires: mmu_lock per ``shared``; RCU.
    """
    bulk = traps.free_run() and not traps.tracing()
    region = bulk and zap_level == S.PG_LEVEL_4K and _whole_regions()
    for iter in for_each_tdp_pte_min_level_all(kvm, root, zap_level):
        while True:                                     # the kernel's "retry:" label
            if tdp_mmu_iter_cond_resched(kvm, iter, False, shared):
                break
            if region and iter.level == S.PG_LEVEL_2M:  # free run: 4K leaves up to 1G
                _bulk_zap_leaf_region(kvm, iter, 1 << 62, False)
                break
            if bulk and iter.level == S.PG_LEVEL_4K and iter.idx == 0:
                _bulk_zap_leaf_table(kvm, iter)         # free run: the whole 4K table
                break
            if bulk and iter.level == S.PG_LEVEL_2M and zap_level >= S.PG_LEVEL_2M:
                _bulk_zap_table_entries(kvm, iter, shared)  # free run: the rest of it
                break
            if not S.is_shadow_present_pte(iter.old_spte) or iter.level > zap_level:
                break
            if tdp_mmu_zap_entry(kvm, iter, shared):
                break
            # cmpxchg lost: old_spte was refreshed, retry this entry


@requires("shared", taken=("rcu",), yields=True)
def tdp_mmu_zap_root(kvm, root: KvmMmuPage, shared: bool) -> None:
    """Zap a whole root: 4K, then 2M, then 1G, then the top level.

    Requires: mmu_lock held for read if ``shared``, else write; takes RCU.
    Why: the root must stay referenced so mmu_notifiers can reach it while this yields
    (WARN if its refcount is 0); the passes keep each non-yielding unit small.
    Returns: nothing.  No TLB flush (invalid roots need none, see the flush rules).
    """
    WARN(root.tdp_mmu_root_count.refcount_read() == 0,
         "WARN_ON_ONCE in tdp_mmu_zap_root: root refcount is 0")
    if tdp_mmu_zap_root_as_range():
        # design v5.10-v5.17: every zap-all flow is zap_gfn_range over the whole space
        zap_gfn_range(kvm, root, 0, ZAP_ALL_END, True, False, shared)
        return
    rcu_read_lock()
    levels = (S.PG_LEVEL_4K, S.PG_LEVEL_2M, S.PG_LEVEL_1G, root.role.level)
    if traps.defect("zap-root-single-pass-rcu-stall"):
        levels = (root.role.level,)     # before v5.18: top-level entries only, in one pass
    for level in levels:
        __tdp_mmu_zap_root(kvm, root, shared, level)
    rcu_read_unlock()


# -- design variant (v5.10 - v5.17): a root is zapped as one gfn range -------------------

#: the named design variant (``--defect zap-root-as-gfn-range``)
ZAP_ROOT_AS_GFN_RANGE = "zap-root-as-gfn-range"
#: "all ones" as the end gfn: zap everything (524a1e4e381f)
ZAP_ALL_END = (1 << 64) - 1


def tdp_mmu_zap_root_as_range() -> bool:
    """Whether the v5.10-v5.17 root zap is selected (by its name or a catalogue defect
    built on it)."""
    return traps.defect(ZAP_ROOT_AS_GFN_RANGE) or traps.defect(
        "zap-all-range-misses-top-level/a")


@requires("shared", taken=("rcu",), yields=True, kernel="tdp_mmu.c (v5.10-v5.17)")
def zap_gfn_range(kvm, root: KvmMmuPage, start: int, end: int, can_yield: bool,
                  flush: bool, shared: bool) -> bool:
    """Zap every SPTE of [start, end) in one root: leaves, and non-leaf entries whose
    whole range lies inside (handle_removed_pt tears their tables down); a non-leaf
    entry that reaches outside is descended into instead.  "Zap all" (start 0, end at
    or past host.MAXPHYADDR) zaps the top-level entries whatever their span.

    Requires: mmu_lock held for read if ``shared``, else write; takes RCU.
    Why: the walk is bounded at host.MAXPHYADDR (no SPTE is ever made above it), which
    is not a multiple of a top-level entry's span (512 GiB with 4-level paging): without
    the zap-all rule the top-level entries would be skipped and leak their tables.
    Returns: whether a TLB flush is needed.
    """
    max_gfn_host = tdp_mmu_max_gfn_exclusive(kvm)
    # zap-all-range-misses-top-level/a: before 524a1e4e381f there was no zap-all case:
    # "everything" was the range [0, host.MAXPHYADDR) and obeyed the non-leaf rule
    zap_all = (start == 0 and end >= max_gfn_host
               and not traps.defect("zap-all-range-misses-top-level/a"))
    min_level = root.role.level if zap_all else S.PG_LEVEL_4K
    end = min(end, max_gfn_host)
    rcu_read_lock()
    for iter in for_each_tdp_pte_min_level(kvm, root, min_level, start, end):
        while True:                                     # the kernel's "retry:" label
            if can_yield and tdp_mmu_iter_cond_resched(kvm, iter, flush, shared):
                flush = False
                break
            if not S.is_shadow_present_pte(iter.old_spte):
                break
            if (not zap_all and (iter.gfn < start
                                 or iter.gfn + S.KVM_PAGES_PER_HPAGE(iter.level) > end)
                    and not S.is_last_spte(iter.old_spte, iter.level)):
                break
            if tdp_mmu_zap_entry(kvm, iter, shared):
                flush |= not shared             # (v5.17's atomic zap flushed by itself)
                break
            # cmpxchg lost: old_spte was refreshed, retry this entry
    rcu_read_unlock()
    return flush


@requires("write", taken=("rcu",), yields=True)
def tdp_mmu_zap_leafs(kvm, root: KvmMmuPage, start: int, end: int, can_yield: bool,
                      flush: bool) -> bool:
    """Zap leaf SPTEs of [start, end) in one root.

    Requires: mmu_lock held for write; takes RCU.
    Why: only leaves are zapped, so no page table is freed and callers need no RCU.
    Returns: whether a TLB flush is needed before mmu_lock is dropped.
    """
    end = min(end, tdp_mmu_max_gfn_exclusive(kvm))
    rcu_read_lock()
    valid = not root_is_invalid(root)
    bulk = traps.free_run() and not traps.tracing()
    # (can_yield: the per-entry walk's reschedule points, which the region step keeps)
    region = bulk and can_yield and _whole_regions()
    for iter in for_each_tdp_pte_min_level(kvm, root, S.PG_LEVEL_4K, start, end):
        if can_yield and tdp_mmu_iter_cond_resched(kvm, iter, flush, False):
            flush = False
            continue
        if (region and iter.level == S.PG_LEVEL_2M and iter.gfn >= start
                and iter.gfn + S.SPTE_ENT_PER_PAGE <= end):
            if _bulk_zap_leaf_region(kvm, iter, end, True) and valid:
                flush = True
            continue
        if bulk and iter.level == S.PG_LEVEL_4K and iter.idx == 0 and iter.gfn + 512 <= end \
                and iter.gfn >= start:
            if _bulk_zap_leaf_table(kvm, iter) and valid:
                flush = True
            continue
        if not S.is_shadow_present_pte(iter.old_spte) or not S.is_last_spte(iter.old_spte,
                                                                             iter.level):
            continue
        tdp_mmu_iter_set_spte(kvm, iter, S.SHADOW_NONPRESENT_VALUE)
        if valid:
            flush = True
    rcu_read_unlock()
    return flush


@transparent
def _bulk_zap_table_entries(kvm, iter: TdpIter, shared: bool) -> None:
    """Free-run only: zap every present entry of the iterator's table from its entry on
    (2M leaves, or links to 4K tables the 4K pass emptied) in one step, with the
    per-entry bookkeeping (handle_changed_spte frees each linked table); leave the
    iterator on the last entry."""
    pt, first, last, base, a = _bulk_rest_of_table(iter, 1 << 62, "zap*")
    level = iter.level
    span = S.KVM_PAGES_PER_HPAGE(level)
    nonpresent = S.SHADOW_NONPRESENT_VALUE
    vals = pt.vals
    for i in (np.flatnonzero(a[first:] & np.uint64(S.SPTE_MMU_PRESENT_MASK)) + first).tolist():
        old = vals[i]
        watchdog_resched_point()        # the per-entry walk's cond_resched at this entry
        vals[i] = nonpresent
        handle_changed_spte(kvm, iter.as_id, base + i * span, old, nonpresent, level, shared)
    _iter_jump(iter, last, int(a[last]))


@transparent
def _bulk_zap_leaf_table(kvm, iter: TdpIter) -> bool:
    """Free-run only: zap every present 4K leaf of the iterator's table in one step
    (numpy), leave the iterator on the table's last entry.  Returns whether any was
    present."""
    pt = iter.pt
    traps.schedule_point((RMW, pt, "zap-leafs*", 0))
    if pt.freed:
        pt.read_once(0)
    n = _zap_4k_leaves(kvm, pt)
    _iter_jump(iter, S.SPTE_ENT_PER_PAGE - 1, pt.vals[-1])
    return n > 0


def _zap_4k_leaves(kvm, pt) -> int:
    """Every present leaf of the 4K table ``pt`` made non-present (vectorised), counted
    in the stats; returns how many."""
    return _replace_4k_leaves(kvm, pt, S.SHADOW_NONPRESENT_VALUE)


def _replace_4k_leaves(kvm, pt, value: int, every: bool = False) -> int:
    """Store ``value`` in every present entry of the 4K table ``pt`` (in every entry
    with ``every``), vectorised; the present leaves leave the stats.  Returns how many
    there were."""
    a = np.frombuffer(pt.vals, dtype=np.uint64)
    present = a & np.uint64(S.SPTE_MMU_PRESENT_MASK)
    n = int(np.count_nonzero(present))
    if every or n == S.SPTE_ENT_PER_PAGE:
        a.fill(value)                   # (a full table: the common case)
    elif n:
        a[present != 0] = np.uint64(value)
    if n:
        kvm_update_page_stats(kvm, S.PG_LEVEL_4K, -n)
    return n


@transparent
def _bulk_zap_leaf_region(kvm, iter: TdpIter, end: int, huge: bool) -> bool:
    """Free-run only: from the iterator's entry of a table of 2M entries to the last one
    wholly below ``end``, zap every present leaf of the 4K tables they link, and (with
    ``huge``) the 2M leaves themselves through tdp_mmu_set_spte -- what the per-entry
    walk (or _bulk_zap_leaf_table, one 4K table per step) does, in one step.  Leaves the
    iterator where that walk would be.  Returns whether anything was zapped."""
    pt, first, last, a, w, present = _bulk_region(iter, end, "zap-leafs*")
    zapped = False
    child = None
    vals = pt.vals
    base = iter.gfn - first * S.SPTE_ENT_PER_PAGE
    by_pfn = kvm.pt_by_pfn
    for i in (np.flatnonzero(present) + first).tolist():
        old = vals[i]
        watchdog_resched_point()        # the per-entry walk's cond_resched at this entry
        if old & S.PT_PAGE_SIZE_MASK:
            if huge:
                tdp_mmu_set_spte(kvm, iter.as_id, (pt, i), old, S.SHADOW_NONPRESENT_VALUE,
                                 base + i * S.SPTE_ENT_PER_PAGE, S.PG_LEVEL_2M)
                zapped = True
            child = None
            continue
        child = by_pfn[(old & S.SPTE_BASE_ADDR_MASK) >> S.PAGE_SHIFT].spt
        zapped = _zap_4k_leaves(kvm, child) > 0 or zapped
        watchdog_work(S.SPTE_ENT_PER_PAGE)
    if not vals[last] & S.SPTE_MMU_PRESENT_MASK or vals[last] & S.PT_PAGE_SIZE_MASK:
        child = None                        # entry ``last`` links no table (any more)
    _iter_jump_region(iter, last, vals[last], child)
    return zapped


@requires("write", yields=True)
def kvm_tdp_mmu_zap_leafs(kvm, start: int, end: int, flush: bool) -> bool:
    """Zap leaves of [start, end) in every valid root of every address space.

    Requires: mmu_lock held for write.
    Returns: whether the caller must flush TLBs before dropping mmu_lock.
    """
    if traps.defect("flush-lost-across-roots-on-yield"):
        # before a835429cda91 (v5.12): each root's walk starts with no flush pending,
        # so a yield in a later root drops mmu_lock owing the earlier roots' flush
        for root in for_each_valid_tdp_mmu_root_yield_safe(kvm, -1):
            flush |= tdp_mmu_zap_leafs(kvm, root, start, end, True, False)
        return flush
    for root in for_each_valid_tdp_mmu_root_yield_safe(kvm, -1):
        flush = tdp_mmu_zap_leafs(kvm, root, start, end, True, flush)
    return flush


@requires("write", yields=True)
def kvm_tdp_mmu_zap_all(kvm) -> None:
    """Zap every root (VM destruction / mmu_notifier release).  No TLB flush: no vCPU
    will run again.

    Requires: mmu_lock held for write.
    """
    for root in __for_each_tdp_mmu_root_yield_safe(kvm, -1, KVM_DIRECT_ROOTS | KVM_INVALID_ROOTS):
        tdp_mmu_zap_root(kvm, root, False)


@requires("none", takes="read", yields=True)
def kvm_tdp_mmu_zap_invalidated_roots(kvm, shared: bool) -> None:
    """Zap every root invalidated by kvm_tdp_mmu_invalidate_roots and put the TDP MMU's
    reference that was handed over with it.

    Requires: mmu_lock not held; takes it for read if ``shared``, else for write.
    Why: walks every address space (the seed's fix: a walk filtered by as_id would
    never put the reference of an invalidated SMM root); the reference is put *after*
    the zap so the root stays reachable by mmu_notifiers meanwhile.
    Returns: nothing.  No TLB flush.  (Design A: just flush the zap workqueue.)
    """
    if tdp_mmu_async_zap():
        flush_workqueue(kvm)
        return
    if shared:
        read_lock(kvm.mmu_lock)
    else:
        write_lock(kvm.mmu_lock)
    one_as = traps.defect("zap-invalidated-roots-one-as")
    roots = (__for_each_tdp_mmu_root_yield_safe(kvm, 0, KVM_ALL_ROOTS) if one_as
             else for_each_tdp_mmu_root_yield_safe(kvm))
    for root in roots:
        if not root.hdr.read(HDR_TO_ZAP):
            continue
        root.hdr.write(HDR_TO_ZAP, 0)
        WARN(not root_is_invalid(root),
             "KVM_BUG_ON in kvm_tdp_mmu_zap_invalidated_roots: scheduled root is valid")
        tdp_mmu_zap_root(kvm, root, shared)
        kvm_tdp_mmu_put_root(kvm, root)
    if shared:
        read_unlock(kvm.mmu_lock)
    else:
        write_unlock(kvm.mmu_lock)


@requires("write", dying_ok=True)
def kvm_tdp_mmu_invalidate_roots(kvm, root_types: int) -> None:
    """Mark every matching valid root invalid and scheduled for zapping.

    Requires: mmu_lock held for write (waived while the VM is being destroyed).
    Why: must happen in the same write-locked section as the vCPUs' reload request; no
    reference is taken: the TDP MMU's own reference is handed to the zapper.
    Returns: nothing.
    """
    if WARN(bool(root_types & KVM_INVALID_ROOTS), "WARN_ON_ONCE: invalidating invalid roots"):
        root_types &= ~KVM_INVALID_ROOTS
    held = lockdep_is_held_type(kvm.mmu_lock, "write") or kvm.dying
    if vcpu_held_roots():
        tdp_mmu_invalidate_vcpu_held_roots(kvm, root_types)
        return
    if tdp_mmu_async_zap():
        # Design A: with mmu_lock not held while the VM is destroyed, the walk must be
        # guarded by RCU against roots deleted by the asynchronous zap worker.
        rcu_read_lock()
        again = traps.defect("async-zap-worker/c")
        for root in kvm.arch.tdp_mmu_roots.list_for_each_entry_rcu():
            if again and root_is_invalid(root):
                # async-zap-worker/c: zap-once lost -- a root invalidated earlier (still
                # alive: a vCPU holds it) is handed to a worker a second time
                tdp_mmu_schedule_zap_root(kvm, root)
                continue
            if tdp_mmu_root_match(root, root_types) and not root_is_invalid(root):
                root.hdr.write_once(HDR_INVALID, 1)   # read locklessly: is_obsolete_root
                tdp_mmu_schedule_zap_root(kvm, root)    # hand the reference to W
        rcu_read_unlock()
        return
    for root in kvm.arch.tdp_mmu_roots.list_for_each_entry(held, "mmu_lock held for write"):
        if not tdp_mmu_root_match(root, root_types) or root_is_invalid(root):
            continue
        if valid_roots_may_be_dying() and not kvm_tdp_mmu_get_root(root):
            continue                    # v5.17 / design R: a reference for the zapper
        root.hdr.write(HDR_TO_ZAP, 1)
        root.hdr.write_once(HDR_INVALID, 1)   # read locklessly: is_obsolete_root


# -- design variant A (v5.18 - v6.5): invalidated roots zapped by a workqueue --------

#: the named design variant (selected like a defect: ``--defect async-zap-worker``)
ASYNC_ZAP_WORKER = "async-zap-worker"
#: catalogue defects built on design A (scenarios/catalogue_async.py): each implies it
ASYNC_ZAP_WORKER_DEFECTS = ("async-zap-worker/a", "async-zap-worker/c")


def tdp_mmu_async_zap() -> bool:
    """Whether design A's workqueue zaps invalidated roots: design A, selected by its own
    name or by a catalogue defect on it, or design V (built on A's workqueue)."""
    return traps.defect(ASYNC_ZAP_WORKER) or any(
        traps.defect(d) for d in ASYNC_ZAP_WORKER_DEFECTS) or vcpu_held_roots()


@requires("read", taken=("rcu",), yields=True, kernel="tdp_mmu.c (A, v5.18-v6.5)")
def tdp_mmu_zap_root_work(kvm, root: KvmMmuPage) -> None:
    """Design A's work item: zap an invalidated root under the read lock, then put the
    reference the TDP MMU handed over.

    Requires: mmu_lock held for read (the worker takes it around this call).
    """
    tdp_mmu_zap_root(kvm, root, True)
    kvm_tdp_mmu_put_root(kvm, root)


@requires("either", dying_ok=True, kernel="tdp_mmu.c (A, v5.18-v6.5)")
def tdp_mmu_schedule_zap_root(kvm, root: KvmMmuPage) -> None:
    """queue_work() on the per-VM unbound workqueue tdp_mmu_zap_wq: a kworker task runs
    tdp_mmu_zap_root_work with the read lock.

    Requires: mmu_lock held (for write from the invalidation; either mode from the last
    put of a defunct root in design V, which may be a reader's).
    """
    from ..sync import spawn

    def kworker():
        read_lock(kvm.mmu_lock)
        tdp_mmu_zap_root_work(kvm, root)
        read_unlock(kvm.mmu_lock)
    wq = kvm.tdp_mmu_zap_wq
    if wq is None:
        # no workqueue (async-zap-worker/a): the guard proposed for the syzbot report
        # and rejected -- the root is left invalid, unzapped and still referenced
        return
    name = f"kworker/zap:{root.spt.name}"
    queued = sum(1 for t in traps.tasks() if t.name == name or t.name.startswith(name + "/"))
    if queued:                  # the same root queued again (async-zap-worker/c)
        name += f"/{queued + 1}"
    wq.append(spawn(name, kworker))


def flush_workqueue(kvm) -> None:
    """Wait for every work item queued so far on tdp_mmu_zap_wq."""
    from ..sync import join, might_sleep
    might_sleep("flush_workqueue(tdp_mmu_zap_wq)")
    if kvm.tdp_mmu_zap_wq is None:
        return                      # async-zap-worker/a: nothing was ever queued
    pending, kvm.tdp_mmu_zap_wq = kvm.tdp_mmu_zap_wq, []
    for t in pending:
        join(t)


# -- design variant V (v5.18 - v6.3): roots live while vCPUs hold them ------------------
#
# Before edbdb43fc96b ("KVM: x86: Preserve TDP MMU roots until they are explicitly
# invalidated", v6.4) a root started with one reference, the vCPU's.  The last put of a
# root that was still valid made it *defunct*: kvm_tdp_mmu_put_root marked it invalid
# (an xchg of the role word), gave it one reference back and queued it on design A's
# zap workqueue, whose worker zapped it under the read lock and put that reference.
# kvm_tdp_mmu_invalidate_all_roots took a reference of its own for each root it
# invalidated (the worker puts it); already-invalid roots were skipped, their worker
# was queued already.  vCPUs put roots under the write lock (kvm_mmu_free_roots, before
# v6.9).  A correct design: what it costs is performance (a one-vCPU guest that unloads
# its roots, e.g. on every SMI and RSM, has its whole tree zapped and rebuilt).

#: the named design variant (selected like a defect: ``--defect vcpu-held-roots``)
VCPU_HELD_ROOTS = "vcpu-held-roots"
#: defects that re-introduce bugs of design V, and so select it
VCPU_HELD_ROOTS_DEFECTS = (VCPU_HELD_ROOTS, "async-defunct-root-double-put")


def vcpu_held_roots() -> bool:
    """Whether this execution runs design V (the variant, or a defect built on it)."""
    return traps.defect(VCPU_HELD_ROOTS) or traps.defect("async-defunct-root-double-put")


@transparent
def kvm_tdp_root_mark_invalid(root: KvmMmuPage) -> bool:
    """Set role.invalid with one xchg; return whether it was already set.

    Deviation: an already-invalid root (a root never becomes valid again) is only read,
    with READ_ONCE: the xchg would store the same value, which KCSAN does not report
    against the plain role.invalid reads of concurrent readers either.
    """
    if root.hdr.read_once(HDR_INVALID):
        return True
    return bool(root.hdr.xchg(HDR_INVALID, 1))


@requires("either", kernel="tdp_mmu.c (V, v5.18-v6.3)")
def tdp_mmu_put_defunct_root(kvm, root: KvmMmuPage) -> bool:
    """Design V, kvm_tdp_mmu_put_root after the count dropped to 0: if the root was
    still valid, mark it invalid, give it one reference back and queue its zap.

    Requires: mmu_lock held, either mode (the caller's: a vCPU's put under the write
    lock, a reader's yield-safe walk under the read lock, or the zap worker).
    Why: readers never take references to invalid roots or to roots at 0, so the
    resurrected reference belongs to the worker alone, and the root stays reachable by
    mmu_notifiers (refcount 1, on the list) while the worker zaps it with yielding.
    Returns: True if the root became defunct (the caller must not free it); False if it
    was invalid already, so the caller unlinks and frees it.
    """
    WARN(not root.tdp_mmu_page, "WARN_ON in kvm_tdp_mmu_put_root: not a TDP MMU page")
    if kvm_tdp_root_mark_invalid(root):
        return False
    traps.cover("defunct-root")
    root.tdp_mmu_root_count.refcount_set(1)
    tdp_mmu_schedule_zap_root(kvm, root)
    return True


@requires("write", dying_ok=True, kernel="tdp_mmu.c (V, v5.18-v6.3)")
def tdp_mmu_invalidate_vcpu_held_roots(kvm, root_types: int) -> None:
    """Design V's kvm_tdp_mmu_invalidate_all_roots: take a reference on every valid
    root, mark it invalid and queue its zap (the worker puts that reference).

    Requires: mmu_lock held for write (waived while the VM is destroyed: then the walk
    is guarded by RCU against roots deleted by the zap worker, as in design A).
    Why: under the write lock no valid root can be at refcount 0 (a defunct root is
    marked invalid in the same critical section that put its last reference), so the
    reference is always gettable (WARN_ON_ONCE otherwise).
    """
    rcu_read_lock()
    for root in kvm.arch.tdp_mmu_roots.list_for_each_entry_rcu():
        if not tdp_mmu_root_match(root, root_types | KVM_INVALID_ROOTS):
            continue
        if root_is_invalid(root):
            if traps.defect("async-defunct-root-double-put"):
                # v3 of the 2022 series: the invalidated-root zapper also treats a
                # defunct root's resurrected reference as its own
                tdp_mmu_schedule_zap_root(kvm, root)
            continue
        if WARN(not kvm_tdp_mmu_get_root(root),
                "WARN_ON_ONCE in kvm_tdp_mmu_invalidate_all_roots: valid root at refcount 0"):
            continue
        root.hdr.write(HDR_INVALID, 1)
        tdp_mmu_schedule_zap_root(kvm, root)
    rcu_read_unlock()


# -- design variant v5.17 (v5.13 - v5.17): roots live while vCPUs reference them ------

#: the named design variant (selected like a defect: ``--defect root-lifetime-v5.17``)
ROOT_LIFETIME_V5_17 = "root-lifetime-v5.17"


@transparent
def root_lifetime_v5_17() -> bool:
    """The v5.17 root lifetime is in force: the variant, or a catalogue defect built on
    it (put-root-zap-cannot-yield *is* this design: design R before 8351779ce65f)."""
    return (traps.defect(ROOT_LIFETIME_V5_17) or traps.defect("yield-with-unreachable-root")
            or traps.defect("put-root-zap-cannot-yield"))


@requires("either", taken=("tdp_mmu_pages_lock", "rcu"), kernel="tdp_mmu.c (v5.17)")
def tdp_mmu_put_last_root_v5_17(kvm, root: KvmMmuPage) -> None:
    """kvm_tdp_mmu_put_root of v5.17 after the last reference went: unlink the root,
    zap everything it maps, free it after a grace period.  No TLB flush (every vCPU
    flushes when it loads a root).

    Requires: mmu_lock held, either mode (v5.17 passed ``shared``; the model reads the
    mode held).
    Why: the root is unreachable once unlinked -- mmu_notifiers cannot see it -- so its
    zap must not drop mmu_lock: a notifier either ran before (and zapped through the
    listed root) or runs after (and finds nothing).  Catalogue
    yield-with-unreachable-root lets the zap yield anyway.
    """
    WARN(not root.tdp_mmu_page, "WARN_ON in kvm_tdp_mmu_put_root: not a TDP MMU page")
    spin_lock(kvm.arch.tdp_mmu_pages_lock)
    kvm.arch.tdp_mmu_roots.list_del_rcu(root)
    spin_unlock(kvm.arch.tdp_mmu_pages_lock)
    shared = not lockdep_is_held_type(kvm.mmu_lock, "write")
    can_yield = traps.defect("yield-with-unreachable-root")
    zap_unlinked_root_v5_17(kvm, root, shared, can_yield)
    call_rcu(tdp_mmu_free_sp_rcu_callback(root), "tdp_mmu_free_sp_rcu_callback")


@requires("shared", taken=("rcu",), yields=True, kernel="tdp_mmu.c (v5.17)")
def zap_unlinked_root_v5_17(kvm, root: KvmMmuPage, shared: bool, can_yield: bool) -> None:
    """zap_gfn_range(kvm, root, 0, -1ull, can_yield, false, shared) of an unlinked
    root: every present entry, leaves first (N's passes: 4K, 2M, 1G, top level).

    Requires: mmu_lock per ``shared``; takes RCU.
    Deviates: v5.17 zapped the top-level entries in one go; the passes only add the
    points where a yielding zap (the catalogue defect) can drop the lock.
    """
    rcu_read_lock()
    for zap_level in (S.PG_LEVEL_4K, S.PG_LEVEL_2M, S.PG_LEVEL_1G, root.role.level):
        for iter in for_each_tdp_pte_min_level_all(kvm, root, zap_level):
            while True:                                 # "retry:"
                if can_yield and tdp_mmu_iter_cond_resched(kvm, iter, False, shared):
                    break
                if (not S.is_shadow_present_pte(iter.old_spte) or iter.level > zap_level
                        or tdp_mmu_zap_entry(kvm, iter, shared)):
                    break
    rcu_read_unlock()


@requires("none", kernel="tdp_mmu.c (v5.17)")
def handle_changed_spte_acc_dirty_v5_17(kvm, old_spte: int, new_spte: int, level: int) -> None:
    """handle_changed_spte_acc_track and the dirty half of __handle_changed_spte (until
    v6.13): a leaf that goes away (or loses A/D, or changes pfn) hands its Accessed and
    Dirty state to the host page: kvm_set_pfn_accessed / kvm_set_pfn_dirty touch the
    struct page of the old pfn.

    Requires: nothing of its own (the caller's mmu_lock and RCU).
    """
    m = kvm.masks
    pfn = S.spte_to_pfn(old_spte)
    gone = (not S.is_shadow_present_pte(new_spte) or not S.is_last_spte(new_spte, level)
            or S.spte_to_pfn(new_spte) != pfn)
    if S.is_accessed_spte(old_spte, m) and (gone or not S.is_accessed_spte(new_spte, m)):
        oracles.check_host_page_touch(kvm, pfn, "kvm_set_pfn_accessed")
    if old_spte & m.dirty_mask and (gone or not new_spte & m.dirty_mask):
        oracles.check_host_page_touch(kvm, pfn, "kvm_set_pfn_dirty")


# -- design variant R (v5.13-v6.3): roots hold no reference of the TDP MMU's own ------

#: the named design variant (selected like a defect: ``--defect last-put-zaps-root``)
LAST_PUT_ZAPS_ROOT = "last-put-zaps-root"


def _last_put_zaps() -> bool:
    """Design R (v5.18-v6.3) is on.  R before 8351779ce65f (v5.13-v5.17) is the
    root-lifetime-v5.17 variant."""
    return traps.defect(LAST_PUT_ZAPS_ROOT)


# -- what the pre-v6.4 root-lifetime designs share --------------------------------------
#
# Four designs before edbdb43fc96b (v6.4) are selectable: V (vcpu-held-roots: defunct
# roots zapped by the worker), R (last-put-zaps-root: the last put zaps with yielding),
# v5.17 (root-lifetime-v5.17: the last put unlinks, then zaps without yielding) and P
# (last-put-zaps-root-v5.15: the put after invalidation zaps what was mapped since).
# Two facts of theirs decide shared steps; each is one predicate here.

def roots_start_with_vcpu_reference() -> bool:
    """V, R and v5.17: a new root has one reference, its vCPU's (N: two, the TDP MMU
    keeps one until the root is invalidated), so the vCPU puts roots under the write
    lock (kvm_mmu_free_roots before v6.9).  (The catalogue defect
    root-freed-on-last-vcpu-put is N with the TDP MMU's reference forgotten: one
    reference too, but N's put path.)"""
    return vcpu_held_roots() or _last_put_zaps() or root_lifetime_v5_17()


def valid_roots_may_be_dying() -> bool:
    """R and v5.17: a valid root's last put may be unlinking it right now, so a lookup or
    an invalidation takes a reference with inc-not-zero and skips the root if that fails
    (in N and V a valid listed root is always gettable)."""
    return root_lifetime_v5_17() or _last_put_zaps()


@requires("either", taken=("tdp_mmu_pages_lock", "rcu"), yields=True,
          kernel="tdp_mmu.c (R, v5.13-v6.3)")
def tdp_mmu_put_last_root_ref_zaps(kvm, root: KvmMmuPage) -> None:
    """Design R's last put: before edbdb43fc96b (v6.4) a root started with the vCPU's
    reference only, so the last vCPU to drop it dropped it while it was still valid and
    mapped, and the put itself had to zap it.

    Requires: mmu_lock held, either mode (every caller of put_root holds it in R); the
    zap runs in that mode.
    Why: 8351779ce65f (v5.18): a valid root is marked invalid and given one reference
    back, so it stays listed -- reachable by mmu_notifiers -- while it is zapped *with*
    yielding; the put after the zap is the real last one.  Before it (v5.13-v5.17) the
    root was unlinked first and then zapped with can_yield = false: an unlinked root is
    invisible to mmu_notifiers, so that zap must not drop mmu_lock -- that is the
    root-lifetime-v5.17 variant (tdp_mmu_put_last_root_v5_17), whose unyielding zap
    is catalogue put-root-zap-cannot-yield.
    Returns: nothing.  No TLB flush (the vCPUs that used it loaded another root).
    """
    shared = not lockdep_is_held_type(kvm.mmu_lock, "write")
    if not root_is_invalid(root):
        # written under the read lock too (a yield-safe walker's put may be the last):
        # in R every access to role.invalid is marked (see root_is_invalid)
        root.hdr.write_once(HDR_INVALID, 1)
        root.tdp_mmu_root_count.refcount_set(1)
        traps.cover("last-put-zapped-valid-root")
        tdp_mmu_zap_root(kvm, root, shared)
        kvm_tdp_mmu_put_root(kvm, root)
        return
    spin_lock(kvm.arch.tdp_mmu_pages_lock)
    kvm.arch.tdp_mmu_roots.list_del_rcu(root)
    spin_unlock(kvm.arch.tdp_mmu_pages_lock)
    call_rcu(tdp_mmu_free_sp_rcu_callback(root), "tdp_mmu_free_sp_rcu_callback")


@requires("write", yields=True)
def kvm_tdp_mmu_unmap_gfn_range(kvm, as_id: int, start: int, end: int, may_block: bool,
                                flush: bool) -> bool:
    """mmu_notifier / memslot zap of [start, end) in one address space, including
    invalid roots (notifier events must reach every root that may still be used).

    Requires: mmu_lock held for write.
    Why: the walk takes a reference on each root because the zap may yield
    (``may_block``): a root put meanwhile stays alive until the walk moves on.
    Catalogue notifier-unmap-unsafe-root-iter (e1eed5847b09, v5.15): the walk takes no
    references (valid only if mmu_lock is never dropped) but the zap still yields.
    Returns: whether a flush is needed.
    """
    types = KVM_DIRECT_ROOTS | KVM_INVALID_ROOTS
    if traps.defect("notifier-unmap-unsafe-root-iter"):
        roots = __for_each_tdp_mmu_root(kvm, as_id, types)
    else:
        roots = __for_each_tdp_mmu_root_yield_safe(kvm, as_id, types)
    for root in roots:
        flush = tdp_mmu_zap_leafs(kvm, root, start, end, may_block, flush)
    return flush


@requires("read", rcu="held")
def kvm_tdp_mmu_zap_possible_nx_huge_page(kvm, sp: KvmMmuPage) -> bool:
    """Zap one page table (NX recovery) if it is still linked where it was.

    Requires: mmu_lock held for read; RCU (the caller's).
    Returns: True if a flush is needed.
    """
    if WARN(sp.ptep is None, "WARN_ON_ONCE: zapping a root as an NX page"):
        return False
    iter = TdpIter(kvm)
    iter.pt, iter.idx = sp.ptep
    iter.level = sp.role.level + 1
    iter.gfn = sp.gfn
    iter.as_id = sp.as_id
    iter.old_spte = iter.pt.read_once(iter.idx)
    if traps.defect("nx-recovery-readlock-stale-parent/parent"):
        # an early version of the read-lock recovery kept the write-lock era check: the
        # parent SPTE only has to be shadow-present (not necessarily still this page)
        if WARN(not S.is_shadow_present_pte(iter.old_spte),
                "WARN_ON_ONCE in kvm_tdp_mmu_zap_possible_nx_huge_page: parent SPTE not present"):
            return False
    elif spte_to_child_pt(kvm, iter.old_spte, iter.level) is not sp.spt:
        traps.cover("nx-zap-parent-changed")
        return False
    if not tdp_mmu_set_spte_atomic(kvm, iter, S.SHADOW_NONPRESENT_VALUE):
        WARN(spte_to_child_pt(kvm, iter.old_spte, iter.level) is sp.spt,
             "WARN_ON_ONCE: NX zap CAS failed but the SPTE still points at the page")
        return False
    return True


# -- the page fault ----------------------------------------------------------------

@requires("read", rcu="held")
def tdp_mmu_map_handle_target_level(vcpu, fault, iter: TdpIter) -> int:
    """Install the leaf at the goal level.

    Requires: mmu_lock held for read; RCU.
    Returns: RET_PF_FIXED, RET_PF_SPURIOUS, RET_PF_RETRY, RET_PF_EMULATE or
    RET_PF_WRITE_PROTECTED.
    """
    kvm = vcpu.kvm
    m = kvm.masks
    sp = sptep_to_sp(kvm, iter.pt)
    if WARN(sp.role.level != fault.goal_level, "WARN_ON_ONCE: target page level != goal"):
        return RET_PF_RETRY
    old = iter.old_spte
    if S.is_shadow_present_pte(old) and S.is_last_spte(old, iter.level) and (
            fault.prefetch or _is_access_allowed(fault, old, m)):
        WARN(S.spte_to_pfn(old) != fault.pfn,
             "WARN_ON_ONCE in tdp_mmu_map_handle_target_level: spurious fault, other pfn")
        return RET_PF_SPURIOUS
    wrprot = False
    if fault.slot is None:
        new_spte = S.make_mmio_spte(iter.gfn, S.ACC_ALL, fault.mmio_gen & S.MMIO_SPTE_GEN_MASK, m)
    else:
        # make_spte's mmu_try_to_unsync_pages: a writable SPTE for a gfn that shadow
        # pages shadow (nested guests) unsyncs them, or is refused (write-tracked)
        write_protect = False
        if (kvm.arch.indirect_shadow_pages and fault.map_writable
                and not (S.is_writable_pte(old) and S.is_last_spte(old, iter.level))):
            from .shadow_mmu import mmu_try_to_unsync_pages
            write_protect = mmu_try_to_unsync_pages(vcpu, fault.slot, iter.gfn, True,
                                                    fault.prefetch) != 0
        wrprot, new_spte = S.make_spte(
            level=iter.level, gfn=iter.gfn, pfn=fault.pfn, pte_access=S.ACC_ALL,
            old_spte=old, prefetch=fault.prefetch, host_writable=fault.map_writable,
            ad_disabled=sp.role.ad_disabled,
            nx_huge_page_workaround=fault.nx_huge_page_workaround_enabled,
            write_protect=write_protect, m=m,
            ad_need_write_protect=kvm_mmu_page_ad_need_write_protect(kvm, sp))
    if new_spte == old:
        ret = RET_PF_SPURIOUS
    elif not tdp_mmu_set_spte_atomic(kvm, iter, new_spte):
        return RET_PF_RETRY
    elif S.is_shadow_present_pte(old) and (
            not S.is_last_spte(old, iter.level)
            or WARN(S.leaf_spte_change_needs_tlb_flush(old, new_spte, m),
                    "WARN_ON_ONCE: replacing a leaf drops MMU-writable")):
        _mmu_c.kvm_flush_remote_tlbs_gfn(kvm, iter.gfn, iter.level)
        ret = RET_PF_FIXED
    else:
        ret = RET_PF_FIXED
    if (ret == RET_PF_FIXED and fault.slot is not None and S.is_writable_pte(new_spte)
            and fault.slot.dirty_logging()):
        _mmu_c.mark_page_dirty_in_slot(kvm, fault.slot, iter.gfn)
    if wrprot and fault.write:
        ret = RET_PF_WRITE_PROTECTED
    if S.is_mmio_spte(new_spte, m):
        vcpu.stat.pf_mmio_spte_created += 1
        return RET_PF_EMULATE
    return ret


def _is_access_allowed(fault, spte: int, m) -> bool:
    if fault.exec:
        return S.is_executable_pte(spte, m)
    if fault.write:
        return S.is_writable_pte(spte)
    return bool(spte & S.PT_PRESENT_MASK)    # reads: EPT R / NPT P (clear when access-tracked)


@requires("shared", rcu="held")
def tdp_mmu_link_sp(kvm, iter: TdpIter, sp: KvmMmuPage, shared: bool) -> int:
    """Link a new page table at the iterator (CAS if ``shared``, plain set otherwise).

    Requires: mmu_lock per ``shared``; RCU.
    Returns: 0, or -EBUSY (the CAS lost; nothing changed).
    """
    new_spte = S.make_nonleaf_spte(sp.spt.pfn, not kvm.masks.ad_enabled, kvm.masks)
    # design L: the page goes on kvm->arch.tdp_mmu_pages before the SPTE makes it
    # reachable, so a zapper that finds it can always unlink it (v5.10's order, under
    # the write lock); from the parallel faults of v5.12 (a2855afc7ee8) until the list
    # went away it was listed after the cmpxchg (catalogue sp-visible-before-linked)
    listed_first = tdp_mmu_pages_listed() and not traps.defect("sp-visible-before-linked")
    if listed_first:
        tdp_account_mmu_page(kvm, sp)
    if shared:
        if not tdp_mmu_set_spte_atomic(kvm, iter, new_spte):
            if listed_first:
                tdp_unaccount_mmu_page(kvm, sp)
            return -16
    else:
        tdp_mmu_iter_set_spte(kvm, iter, new_spte)
    if not listed_first and not traps.defect("link-sp-skips-accounting"):
        tdp_account_mmu_page(kvm, sp)
    return 0


@requires("shared", rcu="held")
def tdp_mmu_split_huge_page(kvm, iter: TdpIter, sp: KvmMmuPage, shared: bool) -> int:
    """Fill ``sp`` with the small SPTEs of the huge one at the iterator, then link it.

    Requires: mmu_lock per ``shared``; RCU.
    Returns: 0 or -EBUSY.  No TLB flush: both forms translate the same.
    """
    huge = iter.old_spte
    level = iter.level
    # child i = make_small_spte(huge, level - 1, i): child 0 with i pages of the child
    # level added to the address (nothing else depends on the index) -- vectorised
    child0 = S.make_small_spte(huge, level - 1, 0, kvm.nx_huge_page_workaround_enabled,
                               kvm.masks)
    step = S.KVM_PAGES_PER_HPAGE(level - 1) << S.PAGE_SHIFT
    np.frombuffer(sp.spt.vals, dtype=np.uint64)[:] = np.uint64(child0) | (
        _SPLIT_INDEX * np.uint64(step))
    ret = tdp_mmu_link_sp(kvm, iter, sp, shared)
    if ret:
        return ret
    kvm_update_page_stats(kvm, level - 1, S.SPTE_ENT_PER_PAGE)
    return 0


_SPLIT_INDEX = np.arange(S.SPTE_ENT_PER_PAGE, dtype=np.uint64)


@requires("either", kernel="mmu.c")
def disallowed_hugepage_adjust(fault, spte: int, cur_level: int, kvm) -> None:
    """Never replace an existing page table with an NX huge page.

    Requires: mmu_lock held (the fault's read lock): reads the child's
    nx_huge_page_disallowed.
    """
    if (cur_level > S.PG_LEVEL_4K and cur_level == fault.goal_level
            and S.is_shadow_present_pte(spte) and not S.is_large_pte(spte)):
        child = kvm.pt_by_pfn.get(S.spte_to_pfn(spte))
        if child is not None and child.hdr.read_once(HDR_NX):
            fault.goal_level -= 1
            fault.pfn |= fault.gfn & (S.KVM_PAGES_PER_HPAGE(cur_level) - S.KVM_PAGES_PER_HPAGE(cur_level - 1))


@requires("read", taken=("rcu", "tdp_mmu_pages_lock"))
def kvm_tdp_mmu_map(vcpu, fault) -> int:
    """Handle a TDP page fault: walk to the goal level, linking page tables on the way.

    Requires: mmu_lock held for read (taken by kvm_tdp_mmu_page_fault); takes RCU.
    Why: faults run concurrently on many vCPUs; every change is a cmpxchg and any lost
    race, frozen SPTE or early end of walk sends the vCPU back to retry the access.
    Returns: a RET_PF_* code.
    """
    kvm = vcpu.kvm
    root = vcpu.root
    _mmu_c.kvm_mmu_hugepage_adjust(vcpu, fault)
    rcu_read_lock()
    ret = RET_PF_RETRY
    reached = False
    ended = False
    iter = None
    # v6.2-rc (63d28a25e04c .. f5d16bb9be68) tested the goal level before the frozen
    # SPTE: a leaf was then attempted over an entry another task had frozen
    goal_first = traps.defect("frozen-spte-at-goal-level")
    for iter in for_each_tdp_pte(kvm, root, fault.gfn, fault.gfn + 1):
        if fault.nx_huge_page_workaround_enabled:
            disallowed_hugepage_adjust(fault, iter.old_spte, iter.level, kvm)
        if goal_first and iter.level == fault.goal_level:
            reached = True
            break
        if S.is_frozen_spte(iter.old_spte):
            traps.cover("frozen-spte-seen")
            break                                   # RET_PF_RETRY
        if iter.level == fault.goal_level:
            reached = True
            break
        if S.is_shadow_present_pte(iter.old_spte) and not S.is_large_pte(iter.old_spte):
            continue
        sp = tdp_mmu_alloc_sp(vcpu)
        tdp_mmu_init_child_sp(sp, iter)
        sp.hdr.write_once(HDR_NX, 1 if fault.huge_page_disallowed else 0)
        if S.is_shadow_present_pte(iter.old_spte):
            r = tdp_mmu_split_huge_page(kvm, iter, sp, True)
        else:
            r = tdp_mmu_link_sp(kvm, iter, sp, True)
        if r:
            tdp_mmu_free_sp(sp)                     # never published
            break                                   # RET_PF_RETRY
        if (fault.huge_page_disallowed and fault.req_level >= iter.level
                and not traps.defect("nx-split-not-tracked")):
            spin_lock(kvm.arch.tdp_mmu_pages_lock)
            if sp.hdr.read_once(HDR_NX):
                track_possible_nx_huge_page(kvm, sp)
            spin_unlock(kvm.arch.tdp_mmu_pages_lock)
    else:
        ended = True
    if reached:
        ret = tdp_mmu_map_handle_target_level(vcpu, fault, iter)
    elif ended:
        # the walk aborted before the target level (e.g. an upper SPTE was frozen)
        WARN(iter is not None and iter.level == fault.goal_level,
             "WARN_ON_ONCE in kvm_tdp_mmu_map: walk ended at the goal level")
    rcu_read_unlock()
    return ret


# -- design variant O (v5.10 - v5.12): faults under mmu_lock held for write ----------

#: the named design variant (selected like a defect: ``--defect fault-under-write-lock``)
FAULT_UNDER_WRITE_LOCK = "fault-under-write-lock"


@requires("write", taken=("rcu",), kernel="tdp_mmu.c (v5.10-v5.12)")
def kvm_tdp_mmu_map_write_locked(vcpu, fault) -> int:
    """The fault path before parallel faults: the same walk, but every change is a plain
    set under the write lock (tdp_mmu_set_spte), so faults serialise on mmu_lock.

    Requires: mmu_lock held for write; takes RCU.
    Returns: a RET_PF_* code.
    """
    kvm = vcpu.kvm
    _mmu_c.kvm_mmu_hugepage_adjust(vcpu, fault)
    rcu_read_lock()
    ret = RET_PF_RETRY
    for iter in for_each_tdp_pte(kvm, vcpu.root, fault.gfn, fault.gfn + 1):
        if iter.level == fault.goal_level:
            ret = _map_target_level_write_locked(vcpu, fault, iter)
            break
        if S.is_shadow_present_pte(iter.old_spte) and not S.is_large_pte(iter.old_spte):
            continue
        if S.is_shadow_present_pte(iter.old_spte):
            # a huge page in the way: zap it (v5.10 did not split in place)
            tdp_mmu_iter_set_spte(kvm, iter, S.SHADOW_NONPRESENT_VALUE)
            _mmu_c.kvm_flush_remote_tlbs_gfn(kvm, iter.gfn, iter.level)
            iter.old_spte = S.SHADOW_NONPRESENT_VALUE
        sp = tdp_mmu_alloc_sp(vcpu)
        tdp_mmu_init_child_sp(sp, iter)
        tdp_mmu_link_sp(kvm, iter, sp, False)
    rcu_read_unlock()
    return ret


@requires("write", rcu="held", kernel="tdp_mmu.c (v5.10-v5.12)")
def _map_target_level_write_locked(vcpu, fault, iter: TdpIter) -> int:
    """tdp_mmu_map_handle_target_level of the write-locked design.

    Requires: mmu_lock held for write; RCU.
    """
    kvm = vcpu.kvm
    m = kvm.masks
    old = iter.old_spte
    if fault.slot is None:
        new_spte = S.make_mmio_spte(iter.gfn, S.ACC_ALL, fault.mmio_gen & S.MMIO_SPTE_GEN_MASK, m)
    else:
        _, new_spte = S.make_spte(
            level=iter.level, gfn=iter.gfn, pfn=fault.pfn, pte_access=S.ACC_ALL, old_spte=old,
            prefetch=fault.prefetch, host_writable=fault.map_writable,
            ad_disabled=not m.ad_enabled,
            nx_huge_page_workaround=fault.nx_huge_page_workaround_enabled, m=m)
    if new_spte == old:
        return RET_PF_SPURIOUS
    tdp_mmu_iter_set_spte(kvm, iter, new_spte)
    if S.is_shadow_present_pte(old) and not S.is_last_spte(old, iter.level):
        _mmu_c.kvm_flush_remote_tlbs_gfn(kvm, iter.gfn, iter.level)
    if S.is_mmio_spte(new_spte, m):
        vcpu.stat.pf_mmio_spte_created += 1
        return RET_PF_EMULATE
    return RET_PF_FIXED


@requires("either", taken=("rcu",))
def kvm_tdp_mmu_gpa_is_mapped(vcpu, gpa: int) -> bool:
    """Whether the vCPU's root maps ``gpa`` with a present leaf.

    Requires: mmu_lock held, either mode; takes RCU.
    """
    gfn = gpa >> S.PAGE_SHIFT
    rcu_read_lock()
    mapped = False
    for iter in for_each_tdp_pte(vcpu.kvm, vcpu.root, gfn, gfn + 1):
        if S.is_shadow_present_pte(iter.old_spte) and S.is_last_spte(iter.old_spte, iter.level):
            mapped = True
    rcu_read_unlock()
    return mapped


# -- dirty logging (the part the oracles need now; the rest comes with part 2) ------

def tdp_mmu_need_write_protect(kvm, root) -> bool:
    """Dirty state is tracked by write-protection when A/D bits are off, or when the
    root's role needs it (PML with an L2 root: PML is off while L2 runs); otherwise by
    clearing the Dirty bit.  Every page of a tree shares its root's role (but level),
    so the root decides for the whole tree."""
    return kvm_mmu_page_ad_need_write_protect(kvm, root) or not kvm.masks.ad_enabled


@requires("read", taken=("rcu",), yields=True)
def clear_dirty_gfn_range(kvm, root, start: int, end: int) -> bool:
    """Clear the Dirty bit (or W) of every leaf SPTE of [start, end) in one root.

    Requires: mmu_lock held for read; takes RCU.
    Why: vCPUs and the hardware keep running: every update is a cmpxchg from the value
    read (the CPU may set D concurrently), retried on failure.
    Returns: whether an SPTE changed (the caller flushes).
    """
    m = kvm.masks
    if traps.defect("l2-dirty-log-needs-wrprot"):
        # before 2673dfb591a3: kvm_ad_enabled() alone decides, not the root's role
        dbit = m.dirty_mask if m.ad_enabled else S.PT_WRITABLE_MASK
    else:
        dbit = S.PT_WRITABLE_MASK if tdp_mmu_need_write_protect(kvm, root) else m.dirty_mask
    spte_set = False
    rcu_read_lock()
    for iter in for_each_tdp_pte(kvm, root, start, end):
        while True:                                     # "retry:"
            if not S.is_shadow_present_pte(iter.old_spte):
                break
            if not S.is_last_spte(iter.old_spte, iter.level) and not traps.defect(
                    "clear-dirty-non-leaf"):
                break
            if tdp_mmu_iter_cond_resched(kvm, iter, False, True):
                break
            WARN(dbit == m.dirty_mask and S.spte_ad_need_write_protect(iter.old_spte),
                 "KVM_MMU_WARN_ON in clear_dirty_gfn_range: clearing D on a write-protect SPTE")
            if not iter.old_spte & dbit:
                break
            if tdp_mmu_set_spte_atomic(kvm, iter, iter.old_spte & ~dbit):
                spte_set = True
                break
    rcu_read_unlock()
    return spte_set


@requires("read", yields=True)
def kvm_tdp_mmu_clear_dirty_slot(kvm, slot) -> bool:
    """Clear the dirty state of every SPTE mapping the memslot, in every valid root of its
    address space.

    Requires: mmu_lock held for read.
    Returns: whether anything changed (N returns void; the model reports it for the
    caller's flush decision).
    """
    spte_set = False
    for root in for_each_valid_tdp_mmu_root_yield_safe(kvm, slot.as_id):
        spte_set |= clear_dirty_gfn_range(kvm, root, slot.base_gfn, slot.base_gfn + slot.npages)
    return spte_set


# -- write protection ------------------------------------------------------------------

@requires("read", taken=("rcu",), yields=True)
def wrprot_gfn_range(kvm, root, start: int, end: int, min_level: int) -> bool:
    """Clear W (keeping MMU-writable, so fast page fault may restore it and log the page)
    on every writable leaf of [start, end) at or above ``min_level``.

    Requires: mmu_lock held for read; takes RCU.
    Returns: whether an SPTE changed.
    """
    if min_level > S.KVM_MAX_HUGEPAGE_LEVEL:
        raise KernelWarning("BUG_ON in wrprot_gfn_range: min_level above 1G")
    spte_set = False
    bulk = traps.free_run() and not traps.tracing()
    # v5.11 (catalogue yield-only-after-spte-change): the resched check came after the
    # change, so entries that need none (not present, not leaves, already read-only)
    # were skipped without one
    late = traps.defect("yield-only-after-spte-change")
    bulk_2m = bulk and min_level <= S.PG_LEVEL_2M and _whole_regions()
    rcu_read_lock()
    for iter in for_each_tdp_pte_min_level(kvm, root, min_level, start, end):
        if (bulk_2m and iter.level == S.PG_LEVEL_2M and iter.gfn >= start
                and iter.gfn + S.SPTE_ENT_PER_PAGE <= end):
            spte_set |= _bulk_clear_leaf_bits_2m(kvm, iter, S.PT_WRITABLE_MASK, end)
            continue
        if (bulk and iter.level == S.PG_LEVEL_4K and iter.idx == 0 and iter.gfn >= start
                and iter.gfn + S.SPTE_ENT_PER_PAGE <= end):
            spte_set |= _bulk_clear_leaf_bits(kvm, iter, S.PT_WRITABLE_MASK, None)
            continue
        while True:                                     # "retry:"
            if not late and tdp_mmu_iter_cond_resched(kvm, iter, False, True):
                break
            old = iter.old_spte
            if (not S.is_shadow_present_pte(old) or not S.is_last_spte(old, iter.level)
                    or not old & S.PT_WRITABLE_MASK
                    or (iter.level > S.PG_LEVEL_4K and traps.defect("wrprot-skips-huge-leaves"))):
                break
            if tdp_mmu_set_spte_atomic(kvm, iter, old & ~S.PT_WRITABLE_MASK):
                spte_set = True
                if late:
                    tdp_mmu_iter_cond_resched(kvm, iter, False, True)
                break
    rcu_read_unlock()
    return spte_set


@requires("read", yields=True)
def kvm_tdp_mmu_wrprot_slot(kvm, slot, min_level: int) -> bool:
    """Write-protect a memslot (enabling dirty logging), every valid root of its address
    space.

    Requires: mmu_lock held for read.
    Returns: whether anything changed (the caller flushes).
    """
    spte_set = False
    for root in for_each_valid_tdp_mmu_root_yield_safe(kvm, slot.as_id):
        spte_set |= wrprot_gfn_range(kvm, root, slot.base_gfn, slot.base_gfn + slot.npages,
                                     min_level)
    return spte_set


@requires("write", taken=("rcu",))
def write_protect_gfn(kvm, root, gfn: int, min_level: int) -> bool:
    """Remove W *and* MMU-writable from the leaves covering ``gfn`` (shadow-paging write
    tracking): only the slow path may make them writable again.

    Requires: mmu_lock held for write; takes RCU.
    Returns: whether an SPTE changed (the caller must flush).
    """
    if min_level > S.KVM_MAX_HUGEPAGE_LEVEL:
        raise KernelWarning("BUG_ON in write_protect_gfn: min_level above 1G")
    spte_set = False
    rcu_read_lock()
    for iter in for_each_tdp_pte_min_level(kvm, root, min_level, gfn, gfn + 1):
        old = iter.old_spte
        if not S.is_shadow_present_pte(old) or not S.is_last_spte(old, iter.level):
            continue
        new = old & ~(S.PT_WRITABLE_MASK | kvm.masks.mmu_writable_mask)
        if new == old or (traps.defect("wrprot-gfn-checks-w-only")
                          and not S.is_writable_pte(old)):
            # the defect: before 7c8a4742c4ab an SPTE already without W (dirty logging)
            # was skipped, leaving MMU-writable set for the fast path to use
            break
        tdp_mmu_iter_set_spte(kvm, iter, new)
        spte_set = True
    rcu_read_unlock()
    return spte_set


@requires("write")
def kvm_tdp_mmu_write_protect_gfn(kvm, slot, gfn: int, min_level: int) -> bool:
    """Requires: mmu_lock held for write.  Returns: whether the caller must flush."""
    spte_set = False
    for root in for_each_valid_tdp_mmu_root_yield_safe(kvm, slot.as_id):
        spte_set |= write_protect_gfn(kvm, root, gfn, min_level)
    return spte_set


def _clear_dirty_pt_masked_bit(kvm, root, wrprot: bool) -> int:
    """The bit clear_dirty_pt_masked clears: W when asked to write-protect or when the
    root's role needs write protection, else D."""
    m = kvm.masks
    if traps.defect("l2-dirty-log-needs-wrprot"):
        # before 2673dfb591a3: (wrprot || !kvm_ad_enabled()), not the root's role
        return S.PT_WRITABLE_MASK if wrprot or not m.ad_enabled else m.dirty_mask
    return S.PT_WRITABLE_MASK if wrprot or tdp_mmu_need_write_protect(kvm, root) else m.dirty_mask


@requires("write", taken=("rcu",))
def clear_dirty_pt_masked(kvm, root, gfn: int, mask: int, wrprot: bool) -> None:
    """Clear D (or W) on the 4K leaves of the 64 gfns from ``gfn`` whose bit is in ``mask``.

    Requires: mmu_lock held for write; takes RCU.
    Why: only W/D change, so no handle_changed_spte; an atomic fetch-and when the SPTE is
    volatile (the CPU may set D concurrently), a plain store otherwise.
    """
    dbit = _clear_dirty_pt_masked_bit(kvm, root, wrprot)
    if not mask:
        return
    start = gfn + ((mask & -mask).bit_length() - 1)
    bulk = traps.free_run() and not traps.tracing()
    span = max(64, mask.bit_length())      # BITS_PER_LONG (wider words when free-running)
    rcu_read_lock()
    for iter in for_each_tdp_pte(kvm, root, start, gfn + span):
        if not mask:
            break
        if bulk and iter.level == S.PG_LEVEL_4K:
            # the rest of this table's share of the word, in one step
            base = iter.gfn - iter.idx
            hi = min(gfn + span, base + S.SPTE_ENT_PER_PAGE)
            word = mask & ((1 << (hi - gfn)) - 1) & ~((1 << (iter.gfn - gfn)) - 1)
            mask &= ~word
            if word:
                nbytes = (span + 7) // 8
                bits = np.flatnonzero(np.unpackbits(np.frombuffer(
                    word.to_bytes(nbytes, "little"), dtype=np.uint8), bitorder="little"))
                _bulk_clear_leaf_bits(kvm, iter, dbit, bits + (gfn - base))
            continue
        old = iter.old_spte
        if not S.is_shadow_present_pte(old) or not S.is_last_spte(old, iter.level):
            continue
        if iter.level > S.PG_LEVEL_4K or not mask & (1 << (iter.gfn - gfn)):
            continue
        mask &= ~(1 << (iter.gfn - gfn))
        if not old & dbit:
            continue
        iter.old_spte = tdp_mmu_clear_spte_bits(kvm, iter, dbit)
    rcu_read_unlock()


@transparent
def _bulk_clear_leaf_bits(kvm, iter: TdpIter, bits: int, idxs) -> bool:
    """Free-run only: clear ``bits`` (W, or D) on the present 4K leaves of the
    iterator's table -- all of them, or those at ``idxs`` -- in one vectorised step, and
    leave the iterator on the last entry handled.  Only W/D change: no stats, no
    handle_changed_spte effect (W is cleared with MMU-writable kept, so no flush
    obligation either).  Returns whether anything changed."""
    pt = iter.pt
    traps.schedule_point((RMW, pt, "clear-bits*", iter.idx))
    if pt.freed:
        pt.read_once(iter.idx)
    a = np.frombuffer(pt.vals, dtype=np.uint64)
    b = np.uint64(bits)
    if idxs is None:
        sel = np.nonzero(((a & np.uint64(S.SPTE_MMU_PRESENT_MASK)) != 0) & ((a & b) != 0))[0]
        last = S.SPTE_ENT_PER_PAGE - 1
    else:
        idxs = np.asarray(idxs, dtype=np.int64)
        v = a[idxs]
        sel = idxs[((v & np.uint64(S.SPTE_MMU_PRESENT_MASK)) != 0) & ((v & b) != 0)]
        last = int(idxs[-1])
    if sel.size:
        a[sel] &= ~b
    _iter_jump(iter, last, int(a[last]))
    return bool(sel.size)


#: SPTE_MMU_PRESENT_MASK's bit: shifted onto a lower bit, it selects present SPTEs
_PRESENT_BIT = S.SPTE_MMU_PRESENT_MASK.bit_length() - 1


def _present_shift(bit: int):
    """The shift that moves the present bit onto ``bit`` (a single bit below it)."""
    assert 0 < bit < S.SPTE_MMU_PRESENT_MASK and bit & (bit - 1) == 0
    return np.uint64(_PRESENT_BIT - (bit.bit_length() - 1))


def _clear_on_present(v, shift, mask):
    """Clear ``mask`` (the bit of ``shift``, for all entries or per entry) in the present
    SPTEs of ``v`` (a writable view), without boolean indexing: the present bit shifted
    onto it, and-ed with the SPTEs and the mask, is exactly what to clear.  Returns
    the bits cleared."""
    t = v >> shift
    t &= v
    t &= mask
    v ^= t
    return t


@transparent
def _bulk_clear_leaf_bits_2m(kvm, iter: TdpIter, bits: int, end: int) -> bool:
    """Free-run only: clear ``bits`` (W: one bit below the present bit) on every present
    leaf under the iterator's table of 2M entries, from its entry to the last one wholly
    below ``end``, in one vectorised step: the 2M leaves themselves and, when the walk
    goes down to 4K, every present 4K leaf of the page tables the others point to --
    what the per-entry walk (or _bulk_clear_leaf_bits, one 4K table per step) does to
    them, with the same rules:
    only W changes, MMU-writable is kept, so there are no stats, no handle_changed_spte
    effect and no flush obligation.  Leaves the iterator where the per-entry walk would
    be after the region: on the last entry (inside its table, at its last entry, when it
    points to one).  Returns whether anything changed."""
    pt, first, last, a, w, present = _bulk_region(iter, end, "clear-bits*")
    b = np.uint64(bits)
    large = (w & np.uint64(S.PT_PAGE_SIZE_MASK)) != 0
    leaves = present & large & ((w & b) != 0)
    changed = bool(leaves.any())
    if changed:
        w[leaves] &= ~b
    child = None
    if iter.min_level < S.PG_LEVEL_2M:
        pointers = np.flatnonzero(present & ~large)
        if pointers.size:
            by_pfn = kvm.pt_by_pfn
            shift = _present_shift(bits)
            for pfn in ((w[pointers] & np.uint64(S.SPTE_BASE_ADDR_MASK))
                        >> np.uint64(S.PAGE_SHIFT)).tolist():
                child = by_pfn[pfn].spt
                t = _clear_on_present(np.frombuffer(child.vals, dtype=np.uint64), shift, b)
                changed = changed or bool(t.any())
            if int(pointers[-1]) != last - first:
                child = None
            # the per-entry walk reaches a reschedule point at every 2M entry: the
            # watchdogs count only the last table's entries
            watchdog_resched_point()
            watchdog_work(S.SPTE_ENT_PER_PAGE)
    _iter_jump_region(iter, last, int(a[last]), child)
    return changed


def _iter_jump_region(iter: TdpIter, last: int, spte: int, child) -> None:
    """Free-run only: leave an iterator on a table of 2M entries where the per-entry walk
    down to 4K is after entry ``last``: on it, or -- when it links the 4K table
    ``child`` -- inside that table, on its last entry."""
    _iter_jump(iter, last, spte)
    if child is not None:
        iter.level = S.PG_LEVEL_4K
        iter.pt_path[0] = child
        iter.gfn += S.SPTE_ENT_PER_PAGE - 1
        iter.next_last_level_gfn = iter.gfn
        iter.pt = child
        iter.idx = S.SPTE_ENT_PER_PAGE - 1
        iter.old_spte = child.vals[iter.idx]


def _whole_regions() -> bool:
    """Whether a free-run walk (the caller checks free_run and tracing) may do a whole
    1G region in one step: only on the correct model, since a defect may live in the
    per-entry steps (the per-table bulk paths keep the 2M entries' steps)."""
    return not traps.current_execution().defects


def _bulk_region(iter: TdpIter, end: int, verb: str):
    """Free-run only: one step (an RMW ``verb``) over the iterator's table of 2M entries
    from its entry to the last one wholly below ``end``.  Returns (table, first index,
    last index, the table's SPTEs as a writable numpy array, the view of entries
    first..last, their present mask)."""
    pt = iter.pt
    first = iter.idx
    last = min(S.SPTE_ENT_PER_PAGE - 1, first + (end - iter.gfn) // S.SPTE_ENT_PER_PAGE - 1)
    traps.schedule_point((RMW, pt, verb, first))
    if pt.freed:
        pt.read_once(first)                 # reports the use-after-free
    a = np.frombuffer(pt.vals, dtype=np.uint64)
    w = a[first:last + 1]                   # a view: stores go to the table
    return pt, first, last, a, w, (w & np.uint64(S.SPTE_MMU_PRESENT_MASK)) != 0


def _iter_jump(iter: TdpIter, last: int, spte: int) -> None:
    """Free-run only: leave the iterator on entry ``last`` of its table (holding
    ``spte``), as if it had stepped over the entries in between."""
    watchdog_work(last - iter.idx)
    iter.gfn += (last - iter.idx) * S.KVM_PAGES_PER_HPAGE(iter.level)
    iter.idx = last
    iter.next_last_level_gfn = iter.gfn
    iter.old_spte = spte


@requires("write", taken=("rcu",))
def _bulk_clear_dirty_bitmap(kvm, root, base_gfn: int, bitmap, wrprot: bool) -> None:
    """Free-run only: clear_dirty_pt_masked for every set bit of ``bitmap`` (a bool array
    over the pages from ``base_gfn``) in one walk of ``root`` down to the 2M level,
    then one vectorised step over all the 4K tables found -- what one
    clear_dirty_pt_masked per 64-page word does (present 4K leaves only; huge leaves
    are left alone).

    Requires: mmu_lock held for write; takes RCU.
    """
    offs = np.flatnonzero(bitmap)
    if not offs.size:
        return
    dbit = _clear_dirty_pt_masked_bit(kvm, root, wrprot)
    start, end = base_gfn + int(offs[0]), base_gfn + int(offs[-1]) + 1
    tables, firsts = [], []
    rcu_read_lock()
    for iter in for_each_tdp_pte_min_level(kvm, root, S.PG_LEVEL_2M, start, end):
        if iter.level == S.PG_LEVEL_2M:
            pt = spte_to_child_pt(kvm, iter.old_spte, iter.level)
            if pt is not None:
                tables.append(pt)
                firsts.append(iter.gfn & ~(S.SPTE_ENT_PER_PAGE - 1))
    if tables:
        n = S.SPTE_ENT_PER_PAGE
        # the bitmap over the tables' entries (zero outside the slot)
        lo, hi = firsts[0], firsts[-1] + n
        padded = np.zeros(hi - lo, dtype=np.bool_)
        s_lo, s_hi = max(lo, base_gfn), min(hi, base_gfn + len(bitmap))
        padded[s_lo - lo:s_hi - lo] = bitmap[s_lo - base_gfn:s_hi - base_gfn]
        rows = (np.asarray(firsts, dtype=np.int64) - lo) // n
        want = padded.reshape(-1, n)[rows]
        for pt in tables:
            traps.schedule_point((RMW, pt, "clear-bits*", 0))
            if pt.freed:
                pt.read_once(0)
            watchdog_work(n)
        # per table: dbit cleared on the present leaves of the wanted pages
        shift = _present_shift(dbit)
        for pt, w in zip(tables, want.astype(np.uint64) * np.uint64(dbit)):
            _clear_on_present(np.frombuffer(pt.vals, dtype=np.uint64), shift, w)
    rcu_read_unlock()


@requires("write")
def kvm_tdp_mmu_clear_dirty_bitmap_bulk(kvm, slot, bitmap, wrprot: bool) -> None:
    """Free-run only: kvm_tdp_mmu_clear_dirty_pt_masked for a whole slot's bitmap (a bool
    array over its pages), every valid root of its address space, one walk each.

    Requires: mmu_lock held for write.
    """
    for root in __for_each_tdp_mmu_root(kvm, slot.as_id, KVM_VALID_ROOTS):
        _bulk_clear_dirty_bitmap(kvm, root, slot.base_gfn, bitmap, wrprot)


@transparent
def tdp_mmu_clear_spte_bits(kvm, iter, mask: int) -> int:
    """Atomic fetch-and when the SPTE is volatile, else a plain store (tdp_iter.h)."""
    old = iter.old_spte
    if S.kvm_tdp_mmu_spte_need_atomic_update(old, iter.level, kvm.masks):
        return iter.pt.fetch_and(iter.idx, ~mask & S.U64_MASK)
    found = __kvm_tdp_mmu_write_spte(iter.pt, iter.idx, old & ~mask)
    oracles.check_plain_store(kvm, iter.pt, iter.idx, old, found)
    return old


@requires("write")
def kvm_tdp_mmu_clear_dirty_pt_masked(kvm, slot, gfn: int, mask: int, wrprot: bool) -> None:
    """Requires: mmu_lock held for write.  Every valid root of the slot's address space."""
    for root in __for_each_tdp_mmu_root(kvm, slot.as_id, KVM_VALID_ROOTS):
        clear_dirty_pt_masked(kvm, root, gfn, mask, wrprot)


# -- eager huge-page splitting (dirty logging) ---------------------------------------

ENOMEM = 12


def tdp_mmu_alloc_sp_for_split(kvm) -> KvmMmuPage | None:
    """A zeroed header and page table, GFP_KERNEL_ACCOUNT: may sleep, so the caller has
    dropped mmu_lock and RCU (might_sleep checks it).  None on allocation failure."""
    return _alloc_sp(kvm, GFP_KERNEL)


@requires("shared", taken=("rcu",), yields=True)
def tdp_mmu_split_huge_pages_root(kvm, root: KvmMmuPage, start: int, end: int,
                                  target_level: int, shared: bool) -> int:
    """Split every huge leaf of [start, end) above ``target_level`` into one level
    smaller; pre-order, so a 1G page becomes 512 2M pages which are then split in turn.

    Requires: mmu_lock per ``shared`` (read when enabling dirty logging, write from the
    CLEAR_DIRTY_LOG path); takes RCU.
    Why: the page tables are allocated with the lock *dropped* (GFP_KERNEL may sleep);
    the walk then restarts from the root, and a page another task linked meanwhile
    (an NX-split fault) leaves the spare table unused.
    Returns: 0, or -ENOMEM (allocation failed; the lock is held again, RCU is not).
    """
    sp = None
    bulk = (traps.free_run() and not traps.tracing() and target_level == S.PG_LEVEL_4K
            and not any(traps.defect(d) for d in _SPLIT_PATH_DEFECTS))
    rcu_read_lock()
    for iter in for_each_tdp_pte_min_level(kvm, root, target_level + 1, start, end):
        while True:                                     # "retry:"
            if tdp_mmu_iter_cond_resched(kvm, iter, False, shared):
                break
            if (bulk and iter.level == S.PG_LEVEL_2M
                    and _bulk_split_huge_leaf_table(kvm, iter, shared, end)):
                break                                   # free run: the rest of the table
            if not S.is_shadow_present_pte(iter.old_spte) or not S.is_large_pte(iter.old_spte):
                break
            if sp is None:
                locked = not traps.defect("split-alloc-under-mmu-lock")
                if locked:
                    rcu_read_unlock()
                    (read_unlock if shared else write_unlock)(kvm.mmu_lock)
                sp = tdp_mmu_alloc_sp_for_split(kvm)
                if locked:
                    (read_lock if shared else write_lock)(kvm.mmu_lock)
                if sp is None:
                    if not locked:
                        rcu_read_unlock()
                    return -ENOMEM
                if locked:
                    rcu_read_lock()
                    traps.cover("split-dropped-lock-to-allocate")
                iter.yielded = True
                break                                   # "continue": restart from the root
            tdp_mmu_init_child_sp(sp, iter)
            if tdp_mmu_split_huge_page(kvm, iter, sp, shared):
                traps.cover("split-lost-race")
                continue                                # "goto retry" (old_spte refreshed)
            sp = None
            break
    rcu_read_unlock()
    if sp is not None:
        traps.cover("split-spare-table-freed")
        tdp_mmu_free_sp(sp)
    return 0


def _bulk_rest_of_table(iter: TdpIter, end: int, verb: str):
    """Free-run only: one step (an RMW ``verb``) over the iterator's table from its entry
    to the last one before ``end``.  Returns (table, first index, last index, the gfn
    of entry 0, the table's SPTEs as a writable numpy array)."""
    pt = iter.pt
    first = iter.idx
    span = S.KVM_PAGES_PER_HPAGE(iter.level)
    last = min(S.SPTE_ENT_PER_PAGE - 1, first + (end - 1 - iter.gfn) // span)
    traps.schedule_point((RMW, pt, verb, first))
    if pt.freed:
        pt.read_once(first)                 # reports the use-after-free
    return pt, first, last, iter.gfn - first * span, np.frombuffer(pt.vals, dtype=np.uint64)


#: defects in the split path's own steps: the free-run bulk split leaves them to it
_SPLIT_PATH_DEFECTS = ("split-alloc-under-mmu-lock", "link-sp-skips-accounting",
                       "sp-visible-before-linked")


@transparent
def _bulk_split_huge_leaf_table(kvm, iter: TdpIter, shared: bool, end: int) -> bool:
    """Free-run only: split every present 2M leaf of the iterator's table (a table of 2M
    entries) from the iterator's entry to the last one before ``end`` at once -- the lock is
    dropped once to allocate every page table, then each is filled (vectorised),
    initialised, accounted and linked as tdp_mmu_split_huge_page does, one table of
    children per leaf -- and leave the iterator on the last entry.  The children map
    what their leaf mapped with its rights (the same translation: no flush, as in the
    per-entry path).  Returns False, with nothing changed, when an allocation fails
    (the per-entry path then takes over and reports -ENOMEM)."""
    pt, first, last, base, a = _bulk_rest_of_table(iter, end, "split*")
    w = a[first:last + 1]
    huge = np.flatnonzero(((w & np.uint64(S.SPTE_MMU_PRESENT_MASK)) != 0)
                          & ((w & np.uint64(S.PT_PAGE_SIZE_MASK)) != 0)) + first
    n = int(huge.size)
    if n:
        rcu_read_unlock()
        (read_unlock if shared else write_unlock)(kvm.mmu_lock)
        sps = []
        while len(sps) < n:
            sp = tdp_mmu_alloc_sp_for_split(kvm)
            if sp is None:
                break
            sps.append(sp)
        (read_lock if shared else write_lock)(kvm.mmu_lock)
        rcu_read_lock()
        if len(sps) < n:
            for sp in sps:
                tdp_mmu_free_sp(sp)
            return False
        m = kvm.masks
        nxw = kvm.nx_huge_page_workaround_enabled
        step = np.uint64(S.KVM_PAGES_PER_HPAGE(S.PG_LEVEL_4K) << S.PAGE_SHIFT)
        child0 = np.array([S.make_small_spte(int(old), S.PG_LEVEL_4K, 0, nxw, m)
                           for old in a[huge].tolist()], dtype=np.uint64)
        children = child0[:, None] | (_SPLIT_INDEX * step)[None, :]
        role = sptep_to_sp(kvm, pt).role
        links = np.empty(n, dtype=np.uint64)
        for k, (i, sp) in enumerate(zip(huge.tolist(), sps)):
            tdp_mmu_init_sp(sp, (pt, i), base + i * S.SPTE_ENT_PER_PAGE, role.child())
            np.frombuffer(sp.spt.vals, dtype=np.uint64)[:] = children[k]
            links[k] = S.make_nonleaf_spte(sp.spt.pfn, not m.ad_enabled, m)
            tdp_account_mmu_page(kvm, sp)
        a[huge] = links
        kvm_update_page_stats(kvm, S.PG_LEVEL_2M, -n)
        kvm_update_page_stats(kvm, S.PG_LEVEL_4K, n * S.SPTE_ENT_PER_PAGE)
        if kvm.age_calls:
            for i in huge.tolist():
                oracles.aging_disturbed(kvm, iter.as_id, base + i * S.SPTE_ENT_PER_PAGE,
                                        S.PG_LEVEL_2M)
        watchdog_work(n * S.SPTE_ENT_PER_PAGE)
    _iter_jump(iter, last, int(a[last]))
    return True


@requires("shared", yields=True)
def kvm_tdp_mmu_try_split_huge_pages(kvm, slot, start: int, end: int, target_level: int,
                                     shared: bool) -> None:
    """Eager page splitting: split the huge pages of [start, end) in every valid root of
    the slot's address space down to ``target_level``.

    Requires: mmu_lock held, mode matching ``shared`` (kvm_lockdep_assert_mmu_lock_held):
    the one ``bool shared`` API left in N, because its two callers really hold different
    modes.
    Returns: nothing; on -ENOMEM it puts the root it stopped at (an early exit from a
    yield-safe loop keeps that reference) and gives up.
    """
    for root in for_each_valid_tdp_mmu_root_yield_safe(kvm, slot.as_id):
        r = tdp_mmu_split_huge_pages_root(kvm, root, start, end, target_level, shared)
        if r:
            kvm_tdp_mmu_put_root(kvm, root)
            break


# -- huge-page recovery when dirty logging is disabled (in place since v6.13) -------------

EAGAIN = 11
ENOENT = 2


@requires("none", rcu="held")
def tdp_mmu_make_huge_spte(kvm, parent: TdpIter) -> tuple[int, int]:
    """The huge SPTE replacing the page table under ``parent``: made from its first
    present leaf (make_huge_spte keeps that leaf's attributes and clears the low
    address bits).

    Requires: RCU (the caller's walk); no lock of its own.
    Returns: (0, huge_spte), (-EAGAIN, 0) when the parent walk should yield first, or
    (-ENOENT, 0) when the table maps nothing.
    """
    child = kvm.pt_by_pfn[S.spte_to_pfn(parent.old_spte)]      # spte_to_child_sp
    start = parent.gfn
    end = start + S.KVM_PAGES_PER_HPAGE(parent.level)
    for it in for_each_tdp_pte(kvm, child, start, end):
        if not S.is_shadow_present_pte(it.old_spte) or not S.is_last_spte(it.old_spte, it.level):
            continue                                    # tdp_root_for_each_leaf_pte
        if tdp_mmu_iter_need_resched(kvm, parent):
            return -EAGAIN, 0
        return 0, S.make_huge_spte(it.old_spte, parent.level,
                                   kvm.nx_huge_page_workaround_enabled, kvm.masks)
    return -ENOENT, 0


@requires("read", taken=("rcu",), yields=True)
def recover_huge_pages_range(kvm, root: KvmMmuPage, slot) -> None:
    """Replace each page table of the slot that could be one huge mapping (the slot and
    host backing allow it) by that huge SPTE, with one cmpxchg; flush the memslot at the
    end (and before any yield).

    Requires: mmu_lock held for read; takes RCU.
    Why: vCPUs keep faulting in the range meanwhile; the cmpxchg from the non-leaf
    value read makes a concurrent change (a fault linking below, a zap) win, and the
    retry sees it.  The freed table goes through handle_removed_pt as for a zap.
    """
    from .kvm import KVM_MEM_LOG_DIRTY_PAGES
    if WARN(bool(slot.flags & KVM_MEM_LOG_DIRTY_PAGES),
            "WARN_ON_ONCE in recover_huge_pages_range: slot is dirty-logging"):
        return
    start = slot.base_gfn
    end = start + slot.npages
    flush = False
    bulk = traps.free_run() and not traps.tracing()
    rcu_read_lock()
    for iter in for_each_tdp_pte_min_level(kvm, root, S.PG_LEVEL_2M, start, end):
        while True:                                     # "retry:"
            if tdp_mmu_iter_cond_resched(kvm, iter, flush, True):
                flush = False
                break
            if bulk and iter.level == S.PG_LEVEL_2M:
                flush |= _bulk_recover_huge_leaf_table(kvm, iter, slot, start, end)
                break                                   # free run: the rest of the table
            old = iter.old_spte
            if iter.level > S.KVM_MAX_HUGEPAGE_LEVEL or not S.is_shadow_present_pte(old):
                break
            if S.is_last_spte(old, iter.level):
                break
            if iter.gfn < start or iter.gfn >= end:
                break
            if (slot.max_mapping_level(iter.gfn) < iter.level
                    and not traps.defect("recover-ignores-host-level")):
                break
            r, huge_spte = tdp_mmu_make_huge_spte(kvm, iter)
            if r == -EAGAIN:
                continue
            if r:
                break
            if not tdp_mmu_set_spte_atomic(kvm, iter, huge_spte):
                traps.cover("recover-lost-race")
                continue
            traps.cover("huge-page-recovered")
            flush = True
            break
    if flush and not traps.defect("recover-skips-flush"):
        _mmu_c.kvm_flush_remote_tlbs_memslot(kvm, slot)
    rcu_read_unlock()


@transparent
def _bulk_recover_huge_leaf_table(kvm, iter: TdpIter, slot, start: int, end: int) -> bool:
    """Free-run only: the rest of recover_huge_pages_range's work in the iterator's table
    of 2M entries (from its entry to the last one before ``end``) in one step: each
    entry that links a 4K table the slot may map huge becomes the huge SPTE made from
    the table's first present leaf, with the same bookkeeping (handle_changed_spte
    frees the table).  Leaves the iterator on the last entry.  Returns whether anything
    was recovered (the caller flushes)."""
    pt, first, last, base, a = _bulk_rest_of_table(iter, end, "recover*")
    level = S.PG_LEVEL_2M
    present = np.uint64(S.SPTE_MMU_PRESENT_MASK)
    w = a[first:last + 1]
    tables = np.flatnonzero(((w & present) != 0) & ((w & np.uint64(S.PT_PAGE_SIZE_MASK)) == 0))
    nxw = kvm.nx_huge_page_workaround_enabled
    by_pfn = kvm.pt_by_pfn
    vals = pt.vals
    recovered = False
    for i in (tables + first).tolist():                 # present non-leaf entries
        old = vals[i]
        gfn = base + i * S.SPTE_ENT_PER_PAGE
        if gfn < start or gfn >= end or (slot.max_mapping_level(gfn) < level and not
                                         traps.defect("recover-ignores-host-level")):
            continue
        cvals = by_pfn[(old & S.SPTE_BASE_ADDR_MASK) >> S.PAGE_SHIFT].spt.vals
        leaf = cvals[0]                                 # the first present leaf
        if not leaf & S.SPTE_MMU_PRESENT_MASK:
            child = np.frombuffer(cvals, dtype=np.uint64)
            leaves = np.flatnonzero(child & present)
            if not leaves.size:
                continue                                # -ENOENT: maps nothing
            leaf = int(child[leaves[0]])
        huge_spte = S.make_huge_spte(leaf, level, nxw, kvm.masks)
        watchdog_resched_point()        # the per-entry walk's cond_resched at this entry
        vals[i] = huge_spte                             # the cmpxchg (nobody else runs)
        handle_changed_spte(kvm, iter.as_id, gfn, old, huge_spte, level, True)
        recovered = True
    _iter_jump(iter, last, int(a[last]))
    return recovered


@requires("read", yields=True)
def kvm_tdp_mmu_recover_huge_pages(kvm, slot) -> None:
    """Recover huge mappings in every valid root of the slot's address space.

    Requires: mmu_lock held for read.
    """
    for root in for_each_valid_tdp_mmu_root_yield_safe(kvm, slot.as_id):
        recover_huge_pages_range(kvm, root, slot)


# -- aging (MMU-notifier clear_young / test_young; lockless since v6.15) -----------------

@requires("none", rcu="held")
def for_each_tdp_mmu_root_rcu(kvm, as_id: int, types: int):
    """Roots of ``as_id`` matching ``types``, walked under RCU alone: no references are
    taken, so the body must not yield (v6.15's lockless aging).

    Requires: RCU (asserted on every step): a root unlinked concurrently stays readable
    until a grace period has passed.
    """
    for root in kvm.arch.tdp_mmu_roots.list_for_each_entry_rcu():
        lockdep_assert_in_rcu_read_lock("for_each_tdp_mmu_root_rcu")
        if tdp_mmu_root_match(root, types) and (as_id < 0 or root.as_id == as_id):
            yield root


@requires("none", rcu="held")
def kvm_tdp_mmu_age_spte(kvm, iter: TdpIter) -> None:
    """Make one leaf SPTE old.

    Requires: RCU only.
    Why: with A/D bits an atomic AND clears A, so a concurrent hardware A/D assist
    (a locked OR) is never lost; without, the SPTE is marked for access tracking with one
    cmpxchg, and a lost cmpxchg just leaves the SPTE young.  No TLB flush (the kernel's
    documented imprecision: cached translations keep being used without setting A).
    """
    m = kvm.masks
    if S.spte_ad_enabled(iter.old_spte):
        if traps.defect("age-plain-store"):
            # a read-modify-write that is not atomic: loses a concurrent A/D assist
            cur = iter.pt.read_once(iter.idx)
            iter.pt.write_once(iter.idx, cur & ~m.accessed_mask)
            iter.old_spte = cur
            return
        iter.old_spte = iter.pt.fetch_and(iter.idx, ~m.accessed_mask & S.U64_MASK)
        return
    new_spte = S.mark_spte_for_access_track(iter.old_spte, m)
    __tdp_mmu_set_spte_atomic(kvm, iter, new_spte)


@requires("none", taken=("rcu",))
def __kvm_tdp_mmu_age_gfn_range(kvm, as_id: int, start: int, end: int, test_only: bool) -> bool:
    """Age (or, with ``test_only``, test) every leaf SPTE of [start, end) in the valid
    roots of ``as_id``.

    Requires: nothing: mmu_lock is not taken (v6.15); takes RCU for the whole walk.
    Why: page tables are freed only after a grace period, and every change is atomic
    against vCPUs, the hardware and lock holders alike.
    Returns: whether any SPTE was young.
    """
    young = False
    aid = 0 if traps.defect("age-wrong-as-id") else as_id
    skip_huge = traps.defect("age-skips-huge")
    rcu_read_lock()
    for root in for_each_tdp_mmu_root_rcu(kvm, aid, KVM_VALID_ROOTS):
        for iter in for_each_tdp_pte_min_level(kvm, root, S.PG_LEVEL_4K, start, end):
            old = iter.old_spte
            if not S.is_shadow_present_pte(old) or not S.is_last_spte(old, iter.level):
                continue
            if skip_huge and iter.level > S.PG_LEVEL_4K:
                continue
            if not S.is_accessed_spte(old, kvm.masks):
                continue
            if test_only:
                if traps.defect("test-age-clears"):
                    kvm_tdp_mmu_age_spte(kvm, iter)
                rcu_read_unlock()
                return True
            young = True
            kvm_tdp_mmu_age_spte(kvm, iter)
    rcu_read_unlock()
    return young


@requires("none", taken=("rcu",))
def kvm_tdp_mmu_age_gfn_range(kvm, as_id: int, start: int, end: int) -> bool:
    """clear_young: make [start, end) old.  Requires: nothing (lockless).
    Returns: whether any SPTE was young."""
    return __kvm_tdp_mmu_age_gfn_range(kvm, as_id, start, end, False)


@requires("none", taken=("rcu",))
def kvm_tdp_mmu_test_age_gfn(kvm, as_id: int, start: int, end: int) -> bool:
    """test_young: whether any SPTE of [start, end) is young, changing nothing.
    Requires: nothing (lockless)."""
    return __kvm_tdp_mmu_age_gfn_range(kvm, as_id, start, end, True)


# -- the lockless fast path --------------------------------------------------------------

@requires("none", rcu="held")
def kvm_tdp_mmu_fast_pf_get_last_sptep(vcpu, gfn: int):
    """Walk the vCPU's root for ``gfn`` without mmu_lock; return the last SPTE pointer
    reached (the lowest entry, possibly non-present) and its value.

    Requires: RCU only (walk_shadow_page_lockless_begin): page tables are freed after a
    grace period, so the walk never touches freed memory.
    """
    sptep, spte = None, S.FROZEN_SPTE
    for iter in for_each_tdp_pte(vcpu.kvm, vcpu.root, gfn, gfn + 1):
        sptep, spte = iter.sptep, iter.old_spte
        level = iter.level
    return sptep, spte, (level if sptep is not None else 0)


# -- init / uninit -----------------------------------------------------------------

@requires("none")
def kvm_mmu_init_tdp_mmu(kvm) -> None:
    """Nothing to allocate since the async zap workqueue is gone (void since v6.6).

    Design A allocates the per-VM workqueue tdp_mmu_zap_wq here (alloc_workqueue);
    async-zap-worker/a: the allocation fails and v5.18 ignores it ("This should not
    fail, but it's not worth handling it"), so the VM runs without a zap worker.
    """
    kvm.arch.tdp_mmu_pages = 0
    if traps.defect("async-zap-worker/a"):
        kvm.tdp_mmu_zap_wq = None       # alloc_workqueue() == NULL, not checked


@requires("none", takes="write", taken=("rcu",), yields=True)
def kvm_mmu_uninit_tdp_mmu(kvm) -> None:
    """VM teardown: invalidate and zap every root, check nothing is left, wait for RCU.

    Requires: mmu_lock not held (taken for write through
    kvm_tdp_mmu_zap_invalidated_roots(kvm, false)).
    Returns: nothing.  The kernel's WARNs (pages or roots left) are checks here.
    """
    kvm_tdp_mmu_invalidate_roots(kvm, KVM_VALID_ROOTS)
    kvm_tdp_mmu_zap_invalidated_roots(kvm, False)
    WARN(kvm.arch.tdp_mmu_pages != 0,
         f"WARN_ON in kvm_mmu_uninit_tdp_mmu: {kvm.arch.tdp_mmu_pages} TDP MMU page(s) left")
    if tdp_mmu_pages_listed():
        WARN(not list_empty(kvm.arch.tdp_mmu_pages_list),
             "WARN_ON in kvm_mmu_uninit_tdp_mmu: tdp_mmu_pages list not empty")
    rcu_read_lock()
    left = []
    for r in kvm.arch.tdp_mmu_roots.list_for_each_entry_rcu():
        left.append(r.spt.name)
    rcu_read_unlock()
    WARN(bool(left), f"WARN_ON in kvm_mmu_uninit_tdp_mmu: tdp_mmu_roots not empty: "
                     f"{', '.join(left)}")
    # the callbacks freeing zapped page tables (and those the last puts of zapped roots
    # queue) must all have run before the VM is freed
    if not traps.defect("uninit-no-rcu-barrier"):
        rcu_barrier()


# -- design variant L (v5.10 - d25ceb926436, Oct 2022): the list of TDP MMU pages -----

#: the named design variant (selected like a defect: ``--defect tdp-mmu-pages-list``)
TDP_MMU_PAGES_LIST = "tdp-mmu-pages-list"


def tdp_mmu_pages_listed() -> bool:
    """Whether design L is in force: kvm->arch.tdp_mmu_pages is a list of every linked
    non-root page (sp->link), not just a count (the catalogue defect
    sp-visible-before-linked is that design's historical bug, so it implies it)."""
    return traps.defect(TDP_MMU_PAGES_LIST) or traps.defect("sp-visible-before-linked")


@requires("none", taken=("tdp_mmu_pages_lock",), kernel="tdp_mmu.c (L, v5.10-v6.1)")
def tdp_mmu_pages_list_add(kvm, sp: KvmMmuPage) -> None:
    """list_add(&sp->link, &kvm->arch.tdp_mmu_pages) under tdp_mmu_pages_lock (the
    v5.15 tdp_mmu_link_page).

    Requires: nothing beyond the caller's mmu_lock; takes tdp_mmu_pages_lock (faults
    add pages in parallel under the read lock).
    """
    spin_lock(kvm.arch.tdp_mmu_pages_lock)
    list_add(sp.page_link, kvm.arch.tdp_mmu_pages_list)
    spin_unlock(kvm.arch.tdp_mmu_pages_lock)


@requires("none", taken=("tdp_mmu_pages_lock",), kernel="tdp_mmu.c (L, v5.10-v6.1)")
def tdp_mmu_pages_list_del(kvm, sp: KvmMmuPage) -> None:
    """list_del(&sp->link) under tdp_mmu_pages_lock (the v5.15 tdp_mmu_unlink_page).

    Requires: nothing beyond the caller's mmu_lock; takes tdp_mmu_pages_lock.
    Deviates: v5.15 took the spinlock only when ``shared`` and relied on the write lock
    otherwise; the model always takes it (same exclusion, one path).
    """
    spin_lock(kvm.arch.tdp_mmu_pages_lock)
    list_del(sp.page_link)
    spin_unlock(kvm.arch.tdp_mmu_pages_lock)


# -- design variant P (v5.15 and before): the last root put zaps the root ----------------

#: the named design variant (selected like a defect: ``--defect last-put-zaps-root-v5.15``)
LAST_PUT_ZAPS_ROOT_V5_15 = "last-put-zaps-root-v5.15"


@requires("either", taken=("rcu",), kernel="tdp_mmu.c (P, v5.15)")
def tdp_mmu_zap_root_at_last_put(kvm, root: KvmMmuPage) -> None:
    """v5.15's kvm_tdp_mmu_put_root(kvm, root, shared): on the last reference,
    zap_gfn_range(kvm, root, 0, -1ull, can_yield=false, flush=false, shared) before the
    root is freed -- whatever was mapped into the root since its zap (if any) goes too.

    Requires: mmu_lock held, either mode (v5.15 asserted the mode its caller passed as
    ``shared``; the model reads it from lockdep); takes RCU.
    Why: no yield (the root is already off tdp_mmu_roots, nobody can find it again); each
    top-level entry is zapped (cmpxchg under the read lock) and handle_removed_pt frees
    the subtree.
    """
    lockdep_assert_held(kvm.mmu_lock)
    shared = not lockdep_is_held_type(kvm.mmu_lock, "write")
    rcu_read_lock()
    for iter in for_each_tdp_pte_min_level(kvm, root, root.role.level, 0,
                                           tdp_mmu_max_gfn_exclusive()):
        while S.is_shadow_present_pte(iter.old_spte):  # "retry:"
            if tdp_mmu_zap_entry(kvm, iter, shared):
                break
    rcu_read_unlock()


# mmu.c (the callers) is imported last: it imports this module, and the functions above
# only look it up when they run.
from . import mmu as _mmu_c  # noqa: E402

__all__ = [name for name in dir() if not name.startswith("_") or name.startswith("__tdp")
           or name.startswith("__for_each") or name.startswith("__kvm")]
_ = (READ, KVM_ALL_ROOTS, RET_PF_FIXED)
