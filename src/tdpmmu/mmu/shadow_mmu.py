"""The shadow MMU beside the TDP MMU: nested EPT shadow pages of an L2 guest.

Owns: ``kvm->arch.active_mmu_pages`` (newest first), ``kvm->arch.mmu_page_hash`` (gfn ->
shadow pages), ``n_used_mmu_pages`` / ``n_max_mmu_pages``, ``indirect_shadow_pages``,
the unsync state of shadow pages (``unsync``, ``unsync_children``,
``unsync_child_bitmap``) and ``mmu_unsync_pages_lock``.  Everything here is written
under mmu_lock held for write -- except marking pages unsync, which TDP MMU faults do
under the read lock and therefore under ``mmu_unsync_pages_lock`` (ce25681d59ff).

Why it exists in a TDP MMU model: with nested virtualization L1 runs on the TDP MMU
while the EPT tables L1 builds for its L2 guest (EPT12) are shadowed by indirect shadow
pages (EPT02).  The guest page tables those pages shadow are L1 memory: when L1 writes
one, its TDP MMU fault (read lock) must unsync the 4K shadow pages of that gfn
(mmu_try_to_unsync_pages, called from make_spte), or map it read-only when the gfn is
write-tracked (upper-level shadow pages).  The common fault path must not reclaim shadow
pages (make_mmu_pages_available) under the read lock (47b0c2e4c220).

Mirrors: arch/x86/kvm/mmu/mmu.c (kvm_mmu_get_shadow_page, account_shadowed,
link_shadow_page, mmu_try_to_unsync_pages, kvm_unsync_page, mark_unsync,
mmu_sync_children, clear_unsync_child_bit, make_mmu_pages_available,
kvm_mmu_zap_oldest_mmu_pages, __kvm_mmu_prepare_zap_page, kvm_mmu_commit_zap_page).

Deviates: only the page-table hierarchy of the shadow pages is modelled (links from a
shadow page to its children, and their parent_ptes); the leaves that map L2 memory
and L2's hardware walks through EPT02 are not (nothing in the TDP MMU depends on
them).  The guest's EPT12 walk is an input (the gfns of its tables per level).
``sp->unsync`` is accessed with READ_ONCE/WRITE_ONCE (the kernel's lockless check of it
is a benign race, documented in mmu_try_to_unsync_pages); ``unsync_children`` and the
bitmap are plain, as in the kernel.  kvm_mmu_sync_roots skips the lockless
smp_load_acquire peek at ``unsync_children`` and looks under the write lock.  Huge
pages are not disallowed for shadowed gfns (scenarios back such memory with 4K pages).
"""

from __future__ import annotations

from ..runtime import traps
from ..sync import (GFP_ATOMIC, GFP_KERNEL, alloc_page, free_page, kzalloc, spin_lock,
                    spin_unlock, write_lock, write_unlock)
from . import spte as S
from .locking import requires
from .mmu_internal import KvmMmuPageRole
from .tdp_mmu import WARN

#: hdr word indices of a shadow page
SP_UNSYNC = 0
SP_UNSYNC_CHILDREN = 1
SP_BITMAP = 2                     #: unsync_child_bitmap: 512 bits in 8 words
SP_WORDS = SP_BITMAP + S.SPTE_ENT_PER_PAGE // 64

KVM_MIN_FREE_MMU_PAGES = 5
KVM_REFILL_PAGES = 25
#: KVM_MIN_ALLOC_MMU_PAGES: the default n_max_mmu_pages of a small VM
KVM_MIN_ALLOC_MMU_PAGES = 64

EPERM = 1
EEXIST = 17
ENOSPC = 28


class ShadowMmuPage:
    """struct kvm_mmu_page of the shadow MMU (an indirect nested-EPT page)."""

    def __init__(self, hdr, spt, role: KvmMmuPageRole, gfn: int):
        #: unsync / unsync_children / unsync_child_bitmap (see SP_*)
        self.hdr = hdr
        self.spt = spt
        self.role = role
        self.gfn = gfn
        self.tdp_mmu_page = False
        #: rmap of the parent SPTEs pointing here: (parent sp, index).
        #: Written only under: mmu_lock held for write.
        self.parent_ptes: list = []
        #: index -> child shadow page linked there.  Written only under: mmu_lock write.
        self.children: dict = {}
        #: vCPUs using this page as their nested root.  Written only under: mmu_lock write.
        self.root_count = 0
        #: role.invalid.  Written only under: mmu_lock write.
        self.invalid = False

    @property
    def name(self) -> str:
        return self.spt.name

    def __repr__(self) -> str:
        return f"<shadow sp {self.spt.name} L{self.role.level} gfn={self.gfn:#x}>"


def shadow_ept_role(level: int) -> KvmMmuPageRole:
    """The role of a nested EPT shadow page: indirect, guest mode."""
    return KvmMmuPageRole(level=level, guest_mode=True, direct=False)


def kvm_mmu_available_pages(kvm) -> int:
    """n_max_mmu_pages - n_used_mmu_pages, or 0 (TDP MMU pages are not counted)."""
    a = kvm.arch
    return a.n_max_mmu_pages - a.n_used_mmu_pages if a.n_max_mmu_pages > a.n_used_mmu_pages else 0


def kvm_mmu_change_mmu_pages(kvm, goal_nr_mmu_pages: int) -> None:
    """KVM_SET_NR_MMU_PAGES at VM setup (before any shadow page exists)."""
    kvm.arch.n_max_mmu_pages = goal_nr_mmu_pages


# -- creating and linking shadow pages ---------------------------------------------------

def shadow_mmu_topup_cache(vcpu, n: int) -> list:
    """mmu_topup_memory_caches for shadow pages (before mmu_lock: may sleep)."""
    return [(kzalloc("ssp", SP_WORDS, GFP_KERNEL),
             alloc_page("sspt", S.SPTE_ENT_PER_PAGE, GFP_KERNEL, init=S.SHADOW_NONPRESENT_VALUE))
            for _ in range(n)]


def shadow_mmu_free_cache(cache: list) -> None:
    for hdr, spt in cache:
        free_page(spt)
        free_page(hdr)
    cache.clear()


@requires("write")
def account_shadowed(kvm, sp: ShadowMmuPage) -> None:
    """The guest page table ``sp`` shadows must not change behind KVM's back: upper
    levels are write-tracked (writes to them are emulated), the last level is
    write-protected in the TDP MMU (a write then unsyncs it: mmu_try_to_unsync_pages).

    Requires: mmu_lock held for write.
    """
    from .mmu import kvm_flush_remote_tlbs, kvm_mmu_slot_gfn_write_protect
    kvm.arch.indirect_shadow_pages += 1
    gfn = sp.gfn
    slot = kvm.gfn_to_memslot(sp.role.as_id, gfn)
    if sp.role.level > S.PG_LEVEL_4K:
        n = kvm.arch.shadow_write_track.get(gfn, 0)
        kvm.arch.shadow_write_track[gfn] = n + 1
        kvm.write_tracked.add(gfn)                     # __kvm_write_track_add_gfn
        if slot is not None and kvm_mmu_slot_gfn_write_protect(kvm, slot, gfn, S.PG_LEVEL_4K):
            kvm_flush_remote_tlbs(kvm)
        return
    if slot is not None and kvm_mmu_slot_gfn_write_protect(kvm, slot, gfn, S.PG_LEVEL_4K):
        kvm_flush_remote_tlbs(kvm)                     # kvm_flush_remote_tlbs_gfn


@requires("write")
def unaccount_shadowed(kvm, sp: ShadowMmuPage) -> None:
    """Requires: mmu_lock held for write."""
    kvm.arch.indirect_shadow_pages -= 1
    if sp.role.level > S.PG_LEVEL_4K:
        n = kvm.arch.shadow_write_track[sp.gfn] - 1
        if n:
            kvm.arch.shadow_write_track[sp.gfn] = n
        else:
            del kvm.arch.shadow_write_track[sp.gfn]
            kvm.write_tracked.discard(sp.gfn)          # __kvm_write_track_remove_gfn
            kvm.write_track_enforced.discard(sp.gfn)


@requires("write")
def kvm_mmu_get_shadow_page(vcpu, gfn: int, role: KvmMmuPageRole, cache: list) -> ShadowMmuPage:
    """The shadow page for (gfn, role): found in mmu_page_hash (synced first if unsync),
    or made from ``cache`` and accounted.

    Requires: mmu_lock held for write.
    """
    kvm = vcpu.kvm
    for sp in kvm.arch.mmu_page_hash.get(gfn, ()):
        if sp.role == role and not sp.invalid:
            if sp.hdr.read_once(SP_UNSYNC):
                kvm_sync_page(vcpu, sp)
            return sp
    hdr, spt = cache.pop() if cache else (kzalloc("ssp", SP_WORDS, GFP_ATOMIC), alloc_page(
        "sspt", S.SPTE_ENT_PER_PAGE, GFP_ATOMIC, init=S.SHADOW_NONPRESENT_VALUE))
    sp = ShadowMmuPage(hdr, spt, role, gfn)
    kvm.arch.mmu_page_hash.setdefault(gfn, []).append(sp)
    kvm.arch.active_mmu_pages.insert(0, sp)            # list_add: newest first
    kvm.arch.n_used_mmu_pages += 1                     # kvm_account_mmu_page
    account_shadowed(kvm, sp)
    return sp


@requires("write")
def link_shadow_page(vcpu, parent: ShadowMmuPage, index: int, sp: ShadowMmuPage) -> None:
    """Point parent's entry ``index`` at ``sp``; a child that has unsync pages below it
    makes the parent's entry unsync too.

    Requires: mmu_lock held for write.
    """
    parent.spt.write(index, S.make_nonleaf_spte(sp.spt.pfn, False, vcpu.kvm.masks))
    parent.children[index] = sp
    sp.parent_ptes.append((parent, index))             # mmu_page_add_parent_pte
    if sp.hdr.read(SP_UNSYNC_CHILDREN) or sp.hdr.read_once(SP_UNSYNC):
        mark_unsync(vcpu.kvm, parent, index)


@requires("none", takes="write")
def kvm_mmu_load_nested_root(vcpu, root_gfn: int) -> ShadowMmuPage:
    """Nested VM-entry with EPT: load the shadow root for L1's EPTP (root_count++).

    Requires: mmu_lock not held; takes it for write.
    """
    cache = shadow_mmu_topup_cache(vcpu, 1)
    write_lock(vcpu.kvm.mmu_lock)
    root = kvm_mmu_get_shadow_page(vcpu, root_gfn, shadow_ept_role(vcpu.kvm.root_level), cache)
    root.root_count += 1
    write_unlock(vcpu.kvm.mmu_lock)
    shadow_mmu_free_cache(cache)
    vcpu.nested_root = root
    return root


@requires("none", takes="write")
def kvm_mmu_free_nested_root(vcpu) -> None:
    """Nested VM-exit / vCPU teardown: put the nested root; an invalid root nobody uses
    any more is zapped and freed (mmu_free_root_page).

    Requires: mmu_lock not held; takes it for write.
    """
    root = getattr(vcpu, "nested_root", None)
    if root is None:
        return
    kvm = vcpu.kvm
    write_lock(kvm.mmu_lock)
    root.root_count -= 1
    if not root.root_count and root.invalid:
        invalid_list: list = []
        __kvm_mmu_prepare_zap_page(kvm, root, invalid_list)
        kvm_mmu_commit_zap_page(kvm, invalid_list)
    write_unlock(kvm.mmu_lock)
    vcpu.nested_root = None


def _index(l2_gfn: int, level: int) -> int:
    return (l2_gfn >> (9 * (level - 1))) & (S.SPTE_ENT_PER_PAGE - 1)


@requires("none", takes="write")
def kvm_mmu_nested_ept_page_fault(vcpu, l2_gfn: int, table_gfns) -> int:
    """An EPT violation in L2 (FNAME(page_fault) of the nested EPT MMU): L1's EPT12 walk
    gave the gfns of its tables below the root (``table_gfns``, level root-1 down to
    4K); shadow each of them and link the hierarchy (FNAME(fetch)).

    Requires: mmu_lock not held; takes it for write (the shadow MMU has no parallel
    faults), after topping up the caches.
    Why: make_mmu_pages_available may zap the oldest shadow pages: write lock only.
    Returns: 0, or -ENOSPC when no shadow page can be made available.
    """
    kvm = vcpu.kvm
    cache = shadow_mmu_topup_cache(vcpu, len(table_gfns))
    write_lock(kvm.mmu_lock)
    r = make_mmu_pages_available(vcpu)
    root = vcpu.nested_root
    if not r and root is not None and not root.invalid:
        parent = root
        for level, gfn in zip(range(root.role.level - 1, 0, -1), table_gfns):
            idx = _index(l2_gfn, level + 1)
            child = parent.children.get(idx)
            if child is None:
                child = kvm_mmu_get_shadow_page(vcpu, gfn, shadow_ept_role(level), cache)
                link_shadow_page(vcpu, parent, idx, child)
            parent = child
    write_unlock(kvm.mmu_lock)
    shadow_mmu_free_cache(cache)
    return r


# -- unsync (the TDP MMU fault path calls in under the read lock) -------------------------

@requires("either", taken=("mmu_unsync_pages_lock",))
def mmu_try_to_unsync_pages(vcpu, slot, gfn: int, can_unsync: bool, prefetch: bool) -> int:
    """A writable SPTE is about to map ``gfn``: unsync its (4K) shadow pages so L1 may
    write the guest page table without exits, or refuse.

    Requires: mmu_lock held, either mode; takes mmu_unsync_pages_lock to mark pages
    unsync (TDP MMU faults hold mmu_lock only for read).
    Why: marking a page unsync updates plain fields of its parents (the unsync-children
    count and bitmap); two vCPUs faulting under the read lock on gfns below the same
    parent would lose updates.  The recheck after taking the lock is needed because
    another vCPU may have unsynced the page meanwhile (unsync cannot go 1 -> 0 while
    mmu_lock is held, even for read).
    Returns: 0, or -EPERM (write-tracked, or unsync not allowed) / -EEXIST (prefetch):
    make the SPTE read-only.
    """
    kvm = vcpu.kvm
    if gfn in kvm.write_tracked:                       # kvm_gfn_is_write_tracked
        return -EPERM
    lockless = traps.defect("unsync-race-under-read-lock")   # before ce25681d59ff
    locked = False
    for sp in list(kvm.arch.mmu_page_hash.get(gfn, ())):      # for_each_gfn_valid_sp
        if sp.role.direct or sp.invalid:
            continue
        if not can_unsync:
            return -EPERM
        if sp.hdr.read_once(SP_UNSYNC):
            continue
        if prefetch:
            return -EEXIST
        if not locked and not lockless:
            locked = True
            spin_lock(kvm.arch.mmu_unsync_pages_lock)
            if sp.hdr.read_once(SP_UNSYNC):
                continue
        WARN(sp.role.level != S.PG_LEVEL_4K,
             "WARN_ON in mmu_try_to_unsync_pages: unsync of a page above 4K")
        kvm_unsync_page(kvm, sp)
    if locked:
        spin_unlock(kvm.arch.mmu_unsync_pages_lock)
    return 0


@requires("either")
def kvm_unsync_page(kvm, sp: ShadowMmuPage) -> None:
    """Mark ``sp`` unsync and its parents' entries unsync.

    Requires: mmu_lock held for write, or for read plus mmu_unsync_pages_lock.
    """
    traps.cover("shadow-page-unsync")
    kvm.stat.mmu_unsync += 1
    sp.hdr.write_once(SP_UNSYNC, 1)
    kvm_mmu_mark_parents_unsync(kvm, sp)


@requires("either")
def kvm_mmu_mark_parents_unsync(kvm, sp: ShadowMmuPage) -> None:
    """Requires: as kvm_unsync_page."""
    for parent, index in sp.parent_ptes:
        mark_unsync(kvm, parent, index)


@requires("either")
def mark_unsync(kvm, sp: ShadowMmuPage, index: int) -> None:
    """Set bit ``index`` of sp's unsync_child_bitmap (__test_and_set_bit, non-atomic);
    the first unsync child marks sp's own parents.

    Requires: as kvm_unsync_page (plain read-modify-writes of sp's fields).
    """
    w = SP_BITMAP + index // 64
    bit = 1 << (index % 64)
    word = sp.hdr.read(w)
    if word & bit:
        return
    sp.hdr.write(w, word | bit)
    n = sp.hdr.read(SP_UNSYNC_CHILDREN)
    sp.hdr.write(SP_UNSYNC_CHILDREN, n + 1)
    if n:
        return
    kvm_mmu_mark_parents_unsync(kvm, sp)


@requires("write")
def clear_unsync_child_bit(kvm, sp: ShadowMmuPage, index: int) -> None:
    """Requires: mmu_lock held for write.  The count must not go negative (the kernel
    WARNs: a lost increment makes it reach zero early, and KVM skips syncing pages)."""
    n = sp.hdr.read(SP_UNSYNC_CHILDREN) - 1
    sp.hdr.write(SP_UNSYNC_CHILDREN, n)
    WARN(n < 0, "WARN_ON in clear_unsync_child_bit: unsync_children < 0")
    w = SP_BITMAP + index // 64
    sp.hdr.write(w, sp.hdr.read(w) & ~(1 << (index % 64)))


@requires("write")
def kvm_sync_page(vcpu, sp: ShadowMmuPage) -> None:
    """Write-protect the guest page table again, then resync ``sp`` from it
    (kvm_vcpu_write_protect_gfn, flush, kvm_unlink_unsync_page, FNAME(sync_spte)).

    Requires: mmu_lock held for write.
    """
    from .mmu import kvm_flush_remote_tlbs, kvm_mmu_slot_gfn_write_protect
    kvm = vcpu.kvm
    slot = kvm.gfn_to_memslot(sp.role.as_id, sp.gfn)
    if slot is not None and kvm_mmu_slot_gfn_write_protect(kvm, slot, sp.gfn, S.PG_LEVEL_4K):
        kvm_flush_remote_tlbs(kvm)
    kvm_unlink_unsync_page(kvm, sp)


@requires("write")
def kvm_unlink_unsync_page(kvm, sp: ShadowMmuPage) -> None:
    """Requires: mmu_lock held for write (unsync goes 1 -> 0 only here)."""
    sp.hdr.write_once(SP_UNSYNC, 0)
    kvm.stat.mmu_unsync -= 1


@requires("write")
def mmu_sync_children(vcpu, parent: ShadowMmuPage) -> None:
    """Sync every unsync page below ``parent`` (mmu_unsync_walk), clearing the bits and
    counts on the way up.

    Requires: mmu_lock held for write.
    """
    kvm = vcpu.kvm
    for w in range(SP_BITMAP, SP_WORDS):
        word = parent.hdr.read(w)
        while word:
            bit = word & -word
            word &= ~bit
            index = (w - SP_BITMAP) * 64 + bit.bit_length() - 1
            child = parent.children.get(index)
            if child is not None and child.hdr.read(SP_UNSYNC_CHILDREN):
                mmu_sync_children(vcpu, child)
            if child is not None and child.hdr.read_once(SP_UNSYNC):
                traps.cover("shadow-page-synced")
                kvm_sync_page(vcpu, child)
            if child is None or not (child.hdr.read(SP_UNSYNC_CHILDREN)
                                     or child.hdr.read_once(SP_UNSYNC)):
                clear_unsync_child_bit(kvm, parent, index)


@requires("none", takes="write")
def kvm_mmu_sync_roots(vcpu) -> None:
    """Nested VM-entry / INVEPT: sync the unsync pages below the nested root.

    Requires: mmu_lock not held; takes it for write.
    """
    root = getattr(vcpu, "nested_root", None)
    if root is None:
        return
    write_lock(vcpu.kvm.mmu_lock)
    if root.hdr.read(SP_UNSYNC_CHILDREN):
        mmu_sync_children(vcpu, root)
    write_unlock(vcpu.kvm.mmu_lock)


# -- reclaim and zapping (write lock only) ---------------------------------------------------

@requires("write")
def make_mmu_pages_available(vcpu) -> int:
    """Before a shadow-MMU fault or root load allocates: if fewer than
    KVM_MIN_FREE_MMU_PAGES shadow pages are left, zap the oldest ones.

    Requires: mmu_lock held for write.
    Why: zapping unlinks pages from their parents and frees them; only the shadow MMU's
    write-locked paths may call it -- never the TDP MMU fault path, which runs under the
    read lock in parallel with other vCPUs (47b0c2e4c220).
    Returns: 0, or -ENOSPC.
    """
    kvm = vcpu.kvm
    avail = kvm_mmu_available_pages(kvm)
    if avail >= KVM_MIN_FREE_MMU_PAGES:
        return 0
    traps.cover("shadow-pages-recycled")
    kvm_mmu_zap_oldest_mmu_pages(kvm, KVM_REFILL_PAGES - avail)
    if not kvm_mmu_available_pages(kvm):
        return -ENOSPC
    return 0


@requires("write")
def kvm_mmu_zap_oldest_mmu_pages(kvm, nr_to_zap: int) -> int:
    """Zap up to ``nr_to_zap`` of the oldest shadow pages that are not roots in use.

    Requires: mmu_lock held for write.
    Returns: the number zapped.
    """
    total = 0
    invalid_list: list = []
    restart = True
    while restart:
        restart = False
        for sp in reversed(list(kvm.arch.active_mmu_pages)):
            if sp.root_count or sp.invalid:
                continue
            unstable, nr = __kvm_mmu_prepare_zap_page(kvm, sp, invalid_list)
            total += nr
            if total >= nr_to_zap:
                break
            if unstable:
                restart = True
                break
    kvm_mmu_commit_zap_page(kvm, invalid_list)
    kvm.stat.mmu_recycled += total
    return total


@requires("write")
def __kvm_mmu_prepare_zap_page(kvm, sp: ShadowMmuPage, invalid_list: list):
    """Unlink ``sp`` from its children and its parents, mark it invalid and move it to
    ``invalid_list`` -- or, while it is a root in use, leave it (invalid) on the active
    list for its last user to free.

    Requires: mmu_lock held for write.
    Returns: (list_unstable, number of pages moved to ``invalid_list``).
    """
    unstable = False
    if not sp.invalid:
        for index, child in sorted(sp.children.items()):   # kvm_mmu_page_unlink_children
            child.parent_ptes.remove((sp, index))
            sp.spt.write(index, S.SHADOW_NONPRESENT_VALUE)
        sp.children.clear()
        for parent, index in list(sp.parent_ptes):           # kvm_mmu_unlink_parents
            parent.spt.write(index, S.SHADOW_NONPRESENT_VALUE)
            del parent.children[index]
        sp.parent_ptes.clear()
        if sp.hdr.read_once(SP_UNSYNC):
            kvm_unlink_unsync_page(kvm, sp)
        unaccount_shadowed(kvm, sp)
        sp.invalid = True
        unstable = True
    if sp.root_count:
        return unstable, 0
    kvm.arch.active_mmu_pages.remove(sp)
    invalid_list.append(sp)
    kvm.arch.n_used_mmu_pages -= 1                     # kvm_unaccount_mmu_page
    return True, 1


@requires("write")
def kvm_mmu_commit_zap_page(kvm, invalid_list: list) -> None:
    """Flush, then free the zapped pages (no vCPU can still walk them).

    Requires: mmu_lock held for write.
    """
    from .mmu import kvm_flush_remote_tlbs
    if not invalid_list:
        return
    kvm_flush_remote_tlbs(kvm)
    for sp in invalid_list:
        WARN(not sp.invalid or sp.root_count, "WARN_ON in kvm_mmu_commit_zap_page")
        bucket = kvm.arch.mmu_page_hash[sp.gfn]
        bucket.remove(sp)
        if not bucket:
            del kvm.arch.mmu_page_hash[sp.gfn]
        free_page(sp.spt)
        free_page(sp.hdr)
    invalid_list.clear()


@requires("write", yields=True)
def kvm_shadow_mmu_zap_all(kvm) -> None:
    """The shadow half of kvm_mmu_zap_all (VM destruction): zap every shadow page; roots
    still in use stay (invalid) until their vCPU puts them.

    Requires: mmu_lock held for write.
    """
    invalid_list: list = []
    for sp in list(kvm.arch.active_mmu_pages):
        if not sp.invalid:
            __kvm_mmu_prepare_zap_page(kvm, sp, invalid_list)
    kvm_mmu_commit_zap_page(kvm, invalid_list)
