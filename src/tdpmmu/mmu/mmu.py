"""mmu.c: the page-fault entry, root load/unload, zap-all-fast, range zaps, TLB flushes,
VM creation and destruction -- the callers of the TDP MMU.

Mirrors: arch/x86/kvm/mmu/mmu.c (and the bits of x86.c / kvm_main.c they rely on:
vCPU requests with KVM_REQUEST_WAIT, kvm_flush_remote_tlbs, memslot creation).

vCPU requests and guest mode follow the kernel's handshake: a vCPU publishes
``mode = IN_GUEST_MODE`` and then checks its requests; a requester sets the request
bit and then waits for every vCPU it sees in guest mode to leave it.  Either the vCPU
sees the request before entering, or the requester sees the vCPU inside and waits.
"""

from __future__ import annotations

import numpy as np

from ..runtime import traps
from ..runtime.ops import READ, SYNC, WRITE
from ..runtime.errors import KernelWarning, UsageError
from ..sync import (GFP_KERNEL, RefCount, free_page, might_sleep, mutex_lock, mutex_unlock,  # noqa: F401
                    need_resched, cond_resched,
                    rcu_read_lock, rcu_read_unlock, read_lock, read_unlock, spin_lock,
                    spin_unlock, srcu_read_lock, srcu_read_unlock, write_lock, write_unlock)
from ..sync.vhost_task import (call_once, vhost_task_create, vhost_task_start, vhost_task_stop,
                               vhost_task_wake)
from ..sync import LockdepMap, down_read, down_write, lock_map_acquire, lock_map_release, up_read, up_write
from . import oracles
from . import spte as S
from .kvm import (DirtyBitmap, HOST_PFN_ALIGN, HOST_PFN_BASE, INVALID_GPA, KVM_REQ_MMU_FREE_OBSOLETE_ROOTS,
                  KVM_REQ_TLB_FLUSH, Kvm, KvmMemorySlot, KvmVcpu)
from .locking import requires, transparent
from .mmu_internal import (HDR_INVALID, HDR_NX, KVM_DIRECT_ROOTS, PFERR_FETCH_MASK, PFERR_PRESENT_MASK,
                           PFERR_RSVD_MASK,
                           PFERR_USER_MASK, PFERR_WRITE_MASK, RET_PF_CONTINUE, RET_PF_EMULATE,
                           RET_PF_FIXED, RET_PF_INVALID, RET_PF_RETRY, RET_PF_SPURIOUS,
                           RET_PF_WRITE_PROTECTED, KvmPageFault)
from .tdp_mmu import (FAULT_UNDER_WRITE_LOCK, kvm_tdp_mmu_clear_dirty_bitmap_bulk, kvm_tdp_mmu_clear_dirty_pt_masked,
                      kvm_tdp_mmu_clear_dirty_slot,
                      kvm_tdp_mmu_fast_pf_get_last_sptep, kvm_tdp_mmu_wrprot_slot,
                      kvm_tdp_mmu_write_protect_gfn, WARN, _alloc_sp, kvm_tdp_mmu_map_write_locked, kvm_tdp_mmu_zap_possible_nx_huge_page,
                      untrack_possible_nx_huge_page, kvm_mmu_init_tdp_mmu, kvm_mmu_uninit_tdp_mmu,
                      kvm_tdp_mmu_alloc_root, kvm_tdp_mmu_invalidate_roots, kvm_tdp_mmu_map,
                      kvm_tdp_mmu_put_root, kvm_tdp_mmu_zap_all, kvm_tdp_mmu_zap_invalidated_roots,
                      kvm_tdp_mmu_zap_leafs, root_is_invalid, tdp_mmu_free_sp,
                      kvm_tdp_mmu_recover_huge_pages, kvm_tdp_mmu_try_split_huge_pages)
from .tdp_iter import kvm_mmu_max_gfn

OUTSIDE_GUEST_MODE = 0
IN_GUEST_MODE = 1


# -- VM and vCPU lifecycle ---------------------------------------------------------

def kvm_create_vm(*, masks=S.EPT, root_level: int = 4, nx_huge_pages: bool = False,
                  fine_grained: bool = False, name: str = "kvm",
                  mmu_invalidate_seq: int = 0, host_maxphyaddr: int = 52) -> Kvm:
    """KVM_CREATE_VM: a VM with its TDP MMU initialised (kvm_mmu_init_vm).

    ``mmu_invalidate_seq`` starts the (unsigned long) invalidation sequence elsewhere
    than 0: a VM that has already seen that many mmu_notifier invalidations.
    ``host_maxphyaddr``: the host's MAXPHYADDR (e.g. 36 or 39 on older or nested hosts).
    Bad arguments (KVM would not get that far) are a :class:`UsageError`.
    """
    if not 32 <= host_maxphyaddr <= 52:
        raise UsageError(f"host_maxphyaddr={host_maxphyaddr}: an x86 host's MAXPHYADDR is "
                         "32 to 52 bits")
    if root_level not in (4, 5):
        raise UsageError(f"root_level={root_level}: TDP roots have 4 or 5 levels")
    kvm = Kvm(masks=masks, root_level=root_level, nx_huge_pages=nx_huge_pages, name=name)
    kvm.shadow_phys_bits = host_maxphyaddr
    kvm.fine_grained = fine_grained
    kvm.mmu_invalidate_seq.vals[0] = mmu_invalidate_seq & S.U64_MASK
    kvm_mmu_init_tdp_mmu(kvm)
    return kvm


def kvm_create_vcpu(kvm: Kvm) -> KvmVcpu:
    """KVM_CREATE_VCPU (with its hardware TLB)."""
    from .hw import Tlb
    vcpu = KvmVcpu(kvm, len(kvm.vcpus))
    vcpu.tlb = Tlb(vcpu)
    kvm.vcpus.append(vcpu)
    kvm.created_vcpus += 1
    return vcpu


def _new_memslot(kvm: Kvm, as_id: int, slot_id: int, base_gfn: int, npages: int,
                 backing_level: int, flags: int, host_pfn: int | None = None) -> KvmMemorySlot:
    """A memslot backed by fresh host memory (never handed out before), aligned like the
    guest range so it can be mapped with pages up to its backing size -- or by the host
    memory at ``host_pfn`` (aliasing another slot's memory).  Arguments KVM_SET_USER_MEMORY_REGION
    would refuse with -EINVAL are a :class:`UsageError`."""
    if backing_level not in (S.PG_LEVEL_4K, S.PG_LEVEL_2M, S.PG_LEVEL_1G):
        raise UsageError(f"backing level {backing_level}: host pages are 1 (4K), 2 (2M) or "
                         "3 (1G)")
    if npages < 1 or base_gfn < 0:
        raise UsageError(f"memslot of {npages} pages at gfn {base_gfn}: needs >= 1 page at a "
                         "gfn >= 0")
    if host_pfn is None:
        kvm.host_regions += 1
        host_pfn = (HOST_PFN_BASE + HOST_PFN_ALIGN * kvm.host_regions * 4
                    + base_gfn % HOST_PFN_ALIGN)
    host = host_pfn
    return KvmMemorySlot(as_id, slot_id, base_gfn, npages, host, backing_level, flags)


def kvm_set_memory_region(kvm: Kvm, as_id: int, slot_id: int, base_gfn: int, npages: int,
                          backing_level: int = S.PG_LEVEL_4K, flags: int = 0,
                          host_pfn: int | None = None) -> KvmMemorySlot:
    """Create a memslot while setting the VM up (before any task runs), backed by host
    memory made of pages of ``backing_level`` (4K/2M/1G).  At run time use
    :func:`kvm_create_memslot`."""
    slot = _new_memslot(kvm, as_id, slot_id, base_gfn, npages, backing_level, flags, host_pfn)
    kvm.memslots[as_id].append(slot)
    kvm.memslots_cell.vals[as_id] = tuple(kvm.memslots[as_id])   # before any vCPU runs
    kvm.memslots_generation += 2      # advances by the number of address spaces
    return slot


@requires("none", held=("slots_lock",), yields=True, kernel="kvm_main.c")
def kvm_create_memslot(kvm: Kvm, as_id: int, slot_id: int, base_gfn: int, npages: int,
                       backing_level: int = S.PG_LEVEL_4K, flags: int = 0) -> KvmMemorySlot:
    """KVM_SET_USER_MEMORY_REGION creating a slot while vCPUs run (kvm_set_memslot,
    CREATE): publish the new memslots (a new generation: MMIO SPTEs made before it are
    stale) and wait for SRCU readers.

    Requires: slots_lock held.
    """
    slot = _new_memslot(kvm, as_id, slot_id, base_gfn, npages, backing_level, flags)
    from .kvm import KVM_MEM_LOG_DIRTY_PAGES
    if flags & KVM_MEM_LOG_DIRTY_PAGES:
        slot.dirty_bitmap = slot.alloc_dirty_bitmap()
        slot.logging_active = True
    _publish_memslots(kvm, as_id, kvm.memslots[as_id] + [slot])
    kvm.srcu.synchronize_srcu()
    return slot


def kvm_vcpu_gfn_to_memslot(vcpu: KvmVcpu, gfn: int):
    """The vCPU's memslot for ``gfn`` (srcu_dereference: kvm->srcu must be held)."""
    slots = vcpu.kvm.srcu.srcu_dereference(vcpu.kvm.memslots_cell, vcpu.as_id)
    for slot in slots:
        if slot.contains(gfn):
            return slot
    return None


def _publish_memslots(kvm: Kvm, as_id: int, slots) -> None:
    """rcu_assign_pointer of the new memslots; the oracles' view (kvm.memslots) and the
    generation change in the same step as the publication.

    kvm_swap_active_memslots: not while an MMU-notifier invalidation is between
    range_start and range_end (mn_active_invalidate_count), or their conditional
    locking would be unbalanced; the updater sleeps on mn_memslots_update_rcuwait
    (one waiter: updates hold slots_lock).  notifier-vs-memslot-rwsem-deadlock: the
    first version took a fair rwsem for write instead.
    """
    from ..sync import rcu_assign_pointer
    slots = list(slots)
    if traps.defect(NOTIFIER_SLOTS_RWSEM):
        down_write(kvm.mmu_notifier_slots_lock)
        rcu_assign_pointer(kvm.memslots_cell, as_id, tuple(slots))
        kvm.memslots[as_id] = slots
        kvm.memslots_generation += 1
        up_write(kvm.mmu_notifier_slots_lock)
        return
    w = kvm.mn_memslots_update_rcuwait
    spin_lock(kvm.mn_invalidate_lock)
    w.prepare_to_rcuwait()
    while kvm.mn_active_invalidate_count:
        traps.cover("memslot-update-waited-for-invalidation")
        w.set_current_state()
        spin_unlock(kvm.mn_invalidate_lock)
        w.schedule()
        spin_lock(kvm.mn_invalidate_lock)
    w.finish_rcuwait()
    rcu_assign_pointer(kvm.memslots_cell, as_id, tuple(slots))
    kvm.memslots[as_id] = slots
    kvm.memslots_generation += 1
    spin_unlock(kvm.mn_invalidate_lock)


#: catalogue defect (A7): memslot installation excluded by a fair rwsem held by
#: notifiers from range_start to range_end (the first version of 52ac8b358b0c)
NOTIFIER_SLOTS_RWSEM = "notifier-vs-memslot-rwsem-deadlock"


@requires("none", held=("slots_lock",), yields=True, kernel="kvm_main.c")
def kvm_invalidate_memslot(kvm: Kvm, slot):
    """First half of a DELETE or MOVE: publish the slot as INVALID (faults on it retry),
    wait for SRCU readers, then zap its SPTEs (kvm_arch_flush_shadow_memslot).

    Requires: slots_lock held.
    Returns: the INVALID copy, still published.
    """
    from dataclasses import replace
    from .kvm import KVM_MEMSLOT_INVALID
    as_id = slot.as_id
    kvm.memslot_updates_in_progress += 1
    invalid = replace(slot, flags=slot.flags | KVM_MEMSLOT_INVALID)
    _publish_memslots(kvm, as_id, [invalid if s is slot else s for s in kvm.memslots[as_id]])
    kvm.srcu.synchronize_srcu()
    if not traps.defect("flush-shadow-memslot-skipped"):
        kvm_arch_flush_shadow_memslot(kvm, slot)
    return invalid


@requires("none", held=("slots_lock",), yields=True, kernel="kvm_main.c")
def kvm_delete_memslot(kvm: Kvm, slot) -> None:
    """KVM_SET_USER_MEMORY_REGION with size 0 (kvm_set_memslot, DELETE): invalidate and
    zap the slot, publish the memslots without it, wait for SRCU readers; then the host
    may reuse the memory.

    Requires: slots_lock held.
    """
    invalid = kvm_invalidate_memslot(kvm, slot)
    _publish_memslots(kvm, slot.as_id, [s for s in kvm.memslots[slot.as_id] if s is not invalid])
    kvm.srcu.synchronize_srcu()
    kvm.memslot_updates_in_progress -= 1
    aliased = any(s.host_pfn < slot.host_pfn + slot.npages and slot.host_pfn < s.host_pfn + s.npages
                  for slots in kvm.memslots for s in slots)
    if not aliased:                 # memory another slot still maps is not given back
        kvm.freed_host_ranges.append((slot.host_pfn, slot.npages,
                                      f"memslot {slot.name} deleted"))


@requires("none", held=("slots_lock",), yields=True, kernel="kvm_main.c")
def kvm_move_memslot(kvm: Kvm, slot, new_base_gfn: int) -> KvmMemorySlot:
    """KVM_SET_USER_MEMORY_REGION changing guest_phys_addr (kvm_set_memslot, MOVE): the
    same host memory appears at another gfn.  Invalidate and zap the old slot, publish
    the moved one, wait for SRCU readers.

    Requires: slots_lock held.
    Returns: the new (moved) memslot; ``slot`` is gone from the memslots.
    """
    from dataclasses import replace
    invalid = kvm_invalidate_memslot(kvm, slot)
    # the bitmap moves with the slot (its bits are page offsets in the slot)
    moved = replace(slot, base_gfn=new_base_gfn, remapped=dict(slot.remapped), dirty_writes=None,
                    dirty_bitmap=None if slot.dirty_bitmap is None
                    else slot.dirty_bitmap.rebased(new_base_gfn))
    _publish_memslots(kvm, slot.as_id, [moved if s is invalid else s
                                        for s in kvm.memslots[slot.as_id]])
    kvm.srcu.synchronize_srcu()
    kvm.memslot_updates_in_progress -= 1
    return moved


EINVAL = 22
EFAULT = 14
EAGAIN = 11
ENOENT = 2
EIO = 5


@requires("none", held=("slots_lock",), yields=True, kernel="kvm_main.c")
def kvm_change_memslot_flags(kvm: Kvm, slot, flags: int) -> int:
    """KVM_SET_USER_MEMORY_REGION of an existing slot with new flags (FLAGS_ONLY).

    Requires: slots_lock held.
    Returns: 0, or -EINVAL: KVM_MEM_READONLY can only be chosen when a slot is created
    (kvm_main.c refuses to toggle it), and unknown flags are refused.
    """
    from .kvm import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY
    if flags & ~(KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY):
        return -EINVAL
    if (flags ^ slot.flags) & KVM_MEM_READONLY:
        return -EINVAL
    kvm_set_memslot_dirty_logging(kvm, slot, bool(flags & KVM_MEM_LOG_DIRTY_PAGES))
    return 0


def kvm_arch_flush_shadow_memslot(kvm: Kvm, slot) -> None:
    """With KVM_X86_QUIRK_SLOT_ZAP_ALL (default VMs): zap everything, fast; with the quirk
    disabled, zap only the slot's range."""
    if kvm.slot_zap_all_quirk:
        kvm_mmu_zap_all_fast(kvm)
    else:
        kvm_mmu_zap_memslot(kvm, slot)


@requires("none", takes="write", yields=True)
def kvm_mmu_zap_memslot(kvm: Kvm, slot) -> None:
    """Zap the SPTEs of one memslot's range and flush.

    Requires: mmu_lock not held; takes it for write.
    """
    write_lock(kvm.mmu_lock)
    flush = kvm_unmap_gfn_range(kvm, slot.as_id, slot.base_gfn, slot.base_gfn + slot.npages,
                                False)
    if flush:
        kvm_flush_remote_tlbs_memslot(kvm, slot)
    write_unlock(kvm.mmu_lock)


def kvm_destroy_vm(kvm: Kvm) -> None:
    """Teardown: mmu_notifier release (zap all), vCPUs put their roots and free their
    caches, then kvm_mmu_uninit_vm, which must leave no root, no page table and no
    pending RCU callback."""
    kvm.dying = True
    kvm_mmu_pre_destroy_vm(kvm)           # kvm_arch_pre_destroy_vm
    kvm_mmu_zap_all(kvm)
    for vcpu in kvm.vcpus:
        kvm_mmu_unload(vcpu)
        kvm_mmu_free_memory_caches(vcpu)
    kvm_mmu_uninit_vm(kvm)


def kvm_mmu_uninit_vm(kvm: Kvm) -> None:
    kvm_mmu_uninit_tdp_mmu(kvm)


# -- memory caches -----------------------------------------------------------------

def mmu_topup_memory_caches(vcpu: KvmVcpu) -> None:
    """Fill the page cache before mmu_lock is taken (may sleep): nothing sleeps under it."""
    might_sleep("mmu_topup_memory_caches()")
    while len(vcpu.mmu_page_cache) < S.PT64_ROOT_MAX_LEVEL:
        vcpu.mmu_page_cache.append(_alloc_sp(vcpu.kvm, GFP_KERNEL))


def kvm_mmu_free_memory_caches(vcpu: KvmVcpu) -> None:
    while vcpu.mmu_page_cache:
        sp = vcpu.mmu_page_cache.pop()
        vcpu.kvm.pt_by_pfn.pop(sp.spt.pfn, None)
        tdp_mmu_free_sp(sp)


# -- requests and guest mode ---------------------------------------------------------

def kvm_make_request(req: int, vcpu: KvmVcpu) -> None:
    """smp_wmb(); set_bit(): what the requester did before is visible to the vCPU."""
    vcpu.requests.fetch_or(0, req)


def kvm_request_pending(vcpu: KvmVcpu) -> bool:
    return vcpu.requests.read_once(0) != 0


def kvm_check_request(req: int, vcpu: KvmVcpu) -> bool:
    """test, clear, smp_mb__after_atomic(): the vCPU then sees what preceded the request."""
    if vcpu.requests.load_acquire(0, "kvm_test_request") & req:
        vcpu.requests.fetch_and(0, ~req)
        return True
    return False


def kvm_make_all_cpus_request(kvm: Kvm, req: int) -> None:
    """Set ``req`` on every vCPU, kick those in guest mode and wait until each of them
    has left guest mode once (KVM_REQUEST_WAIT, which both requests the model uses
    carry: the IPI is acknowledged at VM exit; re-entering afterwards is fine, because
    the vCPU then sees the request first)."""
    for vcpu in kvm.vcpus:
        kvm_make_request(req, vcpu)
    for vcpu in kvm.vcpus:
        if vcpu.mode.read_once(0) != IN_GUEST_MODE:
            continue
        seen = vcpu.guest_exits
        while vcpu.guest_exits == seen:
            vcpu.guest_exit_waiters.append(traps.current_task())
            traps.block(f"{vcpu.name} to leave guest mode (IPI ack)")


def kvm_flush_remote_tlbs(kvm: Kvm) -> None:
    """Flush every vCPU's TLB: KVM_REQ_TLB_FLUSH to all, waiting for vCPUs in guest mode."""
    kvm.stat.remote_tlb_flush_requests += 1
    kvm_make_all_cpus_request(kvm, KVM_REQ_TLB_FLUSH)
    kvm.stat.remote_tlb_flush += 1
    oracles.note_flush(kvm)
    for hook in kvm.flush_hooks:
        hook(kvm)


def kvm_flush_remote_tlbs_gfn(kvm: Kvm, gfn: int, level: int) -> None:
    """Ranged flush of one level-sized range: without Hyper-V, a full flush."""
    kvm_flush_remote_tlbs(kvm)


def kvm_flush_remote_tlbs_range(kvm: Kvm, start: int, npages: int) -> None:
    kvm_flush_remote_tlbs(kvm)


@requires("none", held=("slots_lock",))
def kvm_flush_remote_tlbs_memslot(kvm: Kvm, slot) -> None:
    """Flush every TLB entry of a memslot's range.

    Requires: slots_lock (any mmu_lock mode, or none): every memslot operation that
    flushes is serialized by slots_lock, so one operation's flush is seen by the next
    one on the same slot.
    """
    kvm_flush_remote_tlbs_range(kvm, slot.base_gfn, slot.npages)


# -- roots -------------------------------------------------------------------------

def kvm_mmu_load(vcpu: KvmVcpu) -> None:
    """Load a root for the vCPU's current role, then flush its own TLB (a root of
    unknown history: KVM relies on this instead of flushing when roots are freed)."""
    mmu_topup_memory_caches(vcpu)
    kvm_tdp_mmu_alloc_root(vcpu)
    vcpu.tlb.flush()


def kvm_mmu_reload(vcpu: KvmVcpu) -> None:
    if vcpu.root is None:
        kvm_mmu_load(vcpu)


@requires("read")
def mmu_free_root_page(kvm: Kvm, root) -> None:
    """Requires: mmu_lock held for read (TDP pages).  Puts the vCPU's root reference."""
    kvm_tdp_mmu_put_root(kvm, root)


@requires("none", takes="read")
def kvm_mmu_free_roots(kvm: Kvm, vcpu: KvmVcpu) -> None:
    """Put the vCPU's root.

    Requires: mmu_lock not held; takes it for read (since v6.9; the write lock before,
    which design V (tdp_mmu.py, v5.18-v6.3) keeps: there the last put of a valid root
    marks it invalid, and readers read role.invalid).
    """
    root = vcpu.root
    if root is None:
        return
    from .tdp_mmu import roots_start_with_vcpu_reference
    if roots_start_with_vcpu_reference():
        # designs V, R and v5.17 (before v6.9): the write lock, and put_root directly
        write_lock(kvm.mmu_lock)
        kvm_tdp_mmu_put_root(kvm, root)
        write_unlock(kvm.mmu_lock)
        vcpu.root = None
        return
    read_lock(kvm.mmu_lock)
    mmu_free_root_page(kvm, root)
    read_unlock(kvm.mmu_lock)
    vcpu.root = None


def kvm_mmu_unload(vcpu: KvmVcpu) -> None:
    kvm_mmu_free_roots(vcpu.kvm, vcpu)
    if vcpu.nested_root is not None:            # the guest_mmu's (nested EPT) root
        from .shadow_mmu import kvm_mmu_free_nested_root
        kvm_mmu_free_nested_root(vcpu)


@transparent
def is_obsolete_root(kvm: Kvm, root) -> bool:
    # lockless: a later invalidation may set role.invalid meanwhile (benign, its own
    # request follows), so both sides are marked accesses
    return bool(root.hdr.read_once(HDR_INVALID))


@requires("none", takes="read")
def kvm_mmu_free_obsolete_roots(vcpu: KvmVcpu) -> None:
    """KVM_REQ_MMU_FREE_OBSOLETE_ROOTS: drop the root if it was invalidated.

    Requires: mmu_lock not held (kvm_mmu_free_roots takes it for read).
    Why: role.invalid is read without mmu_lock, as the kernel does: the request that
    brought us here was made after the invalidation, and the request's barriers order
    the two.
    """
    root = vcpu.root
    if root is None:
        return
    if is_obsolete_root(vcpu.kvm, root):
        kvm_mmu_free_roots(vcpu.kvm, vcpu)


# -- the page fault ------------------------------------------------------------------

def kvm_mmu_page_fault(vcpu: KvmVcpu, gpa: int, error_code: int) -> int:
    """The EPT-violation / NPF handler.  Returns a RET_PF_* code; the vCPU re-enters the
    guest and retries the access (RET_PF_RETRY, RET_PF_FIXED, RET_PF_SPURIOUS)."""
    if vcpu.root is None:
        vcpu.stat.pf_retry += 1
        return RET_PF_RETRY
    r = RET_PF_INVALID
    if error_code & PFERR_RSVD_MASK:
        r = handle_mmio_page_fault(vcpu, gpa)
        if r == RET_PF_EMULATE:
            return r                        # no stat: the kernel counts kvm_mmu_do_page_fault
        error_code &= ~PFERR_RSVD_MASK
    if r == RET_PF_INVALID:
        r = kvm_mmu_do_page_fault(vcpu, gpa, error_code, False)
    if r == RET_PF_INVALID:
        raise KernelWarning("KVM_BUG_ON in kvm_mmu_page_fault: RET_PF_INVALID")
    if r == RET_PF_FIXED:
        vcpu.stat.pf_fixed += 1
    elif r == RET_PF_EMULATE:
        vcpu.stat.pf_emulate += 1
    elif r == RET_PF_SPURIOUS:
        vcpu.stat.pf_spurious += 1
    elif r == RET_PF_RETRY:
        vcpu.stat.pf_retry += 1
        traps.cover("fault-retry")
    elif r == RET_PF_WRITE_PROTECTED:
        vcpu.stat.pf_emulate += 1
    return r


@requires("none", taken=("rcu",))
def handle_mmio_page_fault(vcpu: KvmVcpu, gpa: int) -> int:
    """An EPT misconfiguration (reserved-bit fault): the SPTE is an MMIO SPTE.  Emulate
    if its memslot generation is current; otherwise the memslots changed since it was
    made (a slot may now back the gfn): take the slow path, which replaces it.

    Requires: no mmu_lock: a lockless walk under RCU.
    Returns: RET_PF_EMULATE, RET_PF_INVALID (stale generation), or RET_PF_RETRY (the
    SPTE changed meanwhile: let the CPU fault again).
    """
    rcu_read_lock()
    _sptep, spte, _level = kvm_tdp_mmu_fast_pf_get_last_sptep(vcpu, gpa >> S.PAGE_SHIFT)
    rcu_read_unlock()
    if not S.is_mmio_spte(spte, vcpu.kvm.masks):
        return RET_PF_RETRY
    gen = vcpu.kvm.memslots_generation & S.MMIO_SPTE_GEN_MASK
    if S.get_mmio_spte_generation(spte) != gen and not traps.defect("mmio-ignores-generation"):
        traps.cover("stale-mmio-spte")
        return RET_PF_INVALID
    # the access is decided here (under kvm->srcu): it is MMIO for the memslots of now
    oracles.check_host_access(vcpu, gpa >> S.PAGE_SHIFT, None, "an MMIO SPTE")
    return RET_PF_EMULATE


def kvm_mmu_do_page_fault(vcpu: KvmVcpu, gpa: int, error_code: int, prefetch: bool,
                          level: list | None = None) -> int:
    kvm = vcpu.kvm
    fault = KvmPageFault(
        addr=gpa, error_code=error_code, prefetch=prefetch,
        exec=bool(error_code & PFERR_FETCH_MASK), write=bool(error_code & PFERR_WRITE_MASK),
        present=bool(error_code & PFERR_PRESENT_MASK), user=bool(error_code & PFERR_USER_MASK),
        nx_huge_page_workaround_enabled=kvm.nx_huge_page_workaround_enabled,
        max_level=S.KVM_MAX_HUGEPAGE_LEVEL, gfn=gpa >> S.PAGE_SHIFT)
    if not prefetch:
        vcpu.stat.pf_taken += 1
    r = kvm_tdp_page_fault(vcpu, fault)
    if level is not None:
        level[0] = fault.goal_level          # the u8 *level out-parameter
    return r


def kvm_tdp_page_fault(vcpu: KvmVcpu, fault: KvmPageFault) -> int:
    return kvm_tdp_mmu_page_fault(vcpu, fault)


@requires("none", takes="read")
def kvm_tdp_mmu_page_fault(vcpu: KvmVcpu, fault: KvmPageFault) -> int:
    """Resolve the pfn without locks, then map it under mmu_lock held for read.

    Requires: mmu_lock not held; takes it for read.
    Why: faults are the hot path and run in parallel on every vCPU.
    Returns: RET_PF_*.
    """
    kvm = vcpu.kvm
    if fault.write and fault.present and fault.gfn in kvm.write_tracked:
        return RET_PF_WRITE_PROTECTED       # page_fault_handle_page_track: emulate it
    r = fast_page_fault(vcpu, fault)
    if r != RET_PF_INVALID:
        return r
    mmu_topup_memory_caches(vcpu)
    r = kvm_mmu_faultin_pfn(vcpu, fault)
    if r != RET_PF_CONTINUE:
        return r
    r = RET_PF_RETRY
    if traps.defect(FAULT_UNDER_WRITE_LOCK):               # design variant (v5.10-v5.12)
        write_lock(kvm.mmu_lock)
        if not is_page_fault_stale(vcpu, fault):
            r = kvm_tdp_mmu_map_write_locked(vcpu, fault)
        write_unlock(kvm.mmu_lock)
        return r
    locked = not traps.defect("fault-without-mmu-lock")    # test-only negative control
    if locked:
        read_lock(kvm.mmu_lock)
    if not is_page_fault_stale(vcpu, fault):
        r = 0
        if traps.defect("write-lock-helper-under-read-lock"):   # v5.13-v6.0 direct_page_fault
            from .shadow_mmu import make_mmu_pages_available
            r = make_mmu_pages_available(vcpu)
        r = kvm_tdp_mmu_map(vcpu, fault) if not r else r
    if locked:
        read_unlock(kvm.mmu_lock)
    return r


@requires("none")
def kvm_mmu_faultin_pfn(vcpu: KvmVcpu, fault: KvmPageFault) -> int:
    """Snapshot mmu_invalidate_seq, find the slot and the host pfn.

    Requires: no mmu_lock (it may sleep resolving the pfn); kvm->srcu (memslots).
    Returns: RET_PF_CONTINUE, RET_PF_RETRY when an invalidation is in flight,
    RET_PF_EMULATE for a write to a read-only memslot, or -EFAULT for a write to a page
    the host maps read-only.
    """
    from .kvm import KVM_MEMSLOT_INVALID
    kvm = vcpu.kvm
    fault.mmu_seq = kvm.mmu_invalidate_seq.load_acquire(0, "READ_ONCE+smp_rmb")
    slot = kvm_vcpu_gfn_to_memslot(vcpu, fault.gfn)
    fault.mmio_gen = kvm.memslots_generation        # published with the slots it read
    fault.slot = slot
    if slot is None:
        fault.pfn = 0
        fault.map_writable = False
        # kvm_handle_noslot_fault (86931ff7207b): no MMIO SPTE for a gfn above
        # host.MAXPHYADDR (only a nested guest misled about MAXPHYADDR makes one), since
        # every zap stops there; zap-all-range-misses-top-level/b drops the check
        if (fault.gfn > kvm_mmu_max_gfn(kvm)
                and not traps.defect("zap-all-range-misses-top-level/b")):
            return RET_PF_EMULATE
        return RET_PF_CONTINUE              # no slot: an MMIO SPTE will be created
    if slot.flags & KVM_MEMSLOT_INVALID:
        # being deleted or moved: retry, so the old SPTEs are zapped before a new MMIO
        # SPTE is made; a prefault punts to userspace (its ABI promises no forward
        # progress: it retries inside one SRCU read section, which the deletion waits
        # for -- 3ccbf6f47098)
        if fault.prefetch and not traps.defect("prefault-vs-memslot-delete-deadlock"):
            traps.cover("prefault-invalid-slot")
            return -EAGAIN
        return RET_PF_RETRY
    if (mmu_invalidate_retry_gfn_unsafe(kvm, fault.mmu_seq, fault.gfn)
            and not traps.defect("fault-ignores-mmu-seq")):
        return RET_PF_RETRY
    if fault.write and slot.readonly():
        return RET_PF_EMULATE               # KVM_PFN_ERR_RO_FAULT: userspace handles it
    fault.pfn = slot.gfn_to_pfn(fault.gfn)
    host_ro = kvm.host_page_readonly(fault.pfn)
    if fault.write and host_ro:
        return -EFAULT                      # KVM_PFN_ERR_FAULT: KVM_RUN fails with EFAULT
    fault.map_writable = not slot.readonly() and not host_ro
    return RET_PF_CONTINUE


@requires("none", kernel="kvm_host.h")
def mmu_invalidate_retry_gfn_unsafe(kvm: Kvm, mmu_seq: int, gfn: int) -> bool:
    """Lockless early check (may be wrong both ways; confirmed under the lock).  An
    in-progress invalidation whose range is still INVALID_GPA matches no gfn here."""
    if kvm.mmu_invalidate_in_progress and kvm.mmu_invalidate_range[0] <= gfn < kvm.mmu_invalidate_range[1]:
        return True
    return kvm.mmu_invalidate_seq.read_once(0) != mmu_seq


@requires("either", kernel="kvm_host.h")
def mmu_invalidate_retry_gfn(kvm: Kvm, mmu_seq: int, gfn: int) -> bool:
    """Requires: mmu_lock held (either mode).

    Returns: True (retry) if an invalidation in progress covers ``gfn`` -- or has no
    range yet: mmu_lock was dropped between kvm_mmu_invalidate_begin and
    kvm_mmu_invalidate_range_add, a KVM bug the kernel WARNs about -- or if
    mmu_invalidate_seq moved since ``mmu_seq`` was read.
    """
    if kvm.mmu_invalidate_in_progress:
        lo, hi = kvm.mmu_invalidate_range
        if WARN(lo == INVALID_GPA or hi == INVALID_GPA,
                "WARN_ON_ONCE in mmu_invalidate_retry_gfn: invalidation in progress "
                "without a range (mmu_lock dropped before kvm_mmu_invalidate_range_add)"):
            return True
        if lo <= gfn < hi:
            return True
    return kvm.mmu_invalidate_seq.read_once(0) != mmu_seq


@requires("either")
def is_page_fault_stale(vcpu: KvmVcpu, fault: KvmPageFault) -> bool:
    """The root was invalidated, or an mmu_notifier invalidation hit this gfn.

    Requires: mmu_lock held (either mode: read in N, write in the pre-2021 design).
    Why: the TDP MMU ignores the memslot generation; a root goes stale only by being
    invalidated (kvm_mmu_zap_all_fast), and its zapper may already have passed the gfn.
    Before a955cad84cda (v5.16) only the notifier sequence was checked (catalogue
    fault-into-invalidated-root; 5.15 kept it: sp-visible-before-linked).
    """
    kvm = vcpu.kvm
    if (root_is_invalid(vcpu.root) and not traps.defect("fault-into-invalidated-root")
            and not traps.defect("sp-visible-before-linked")):
        return True
    if traps.defect("fault-ignores-mmu-seq"):
        return False                        # test-only: the pfn may be stale
    mmu_seq = fault.mmu_seq
    if traps.defect("mmu-seq-sign-extension-livelock"):
        # v5.16-v6.2: is_page_fault_stale(vcpu, fault, int mmu_seq) -- the unsigned long
        # snapshot is truncated to int here and sign-extended back to unsigned long by
        # mmu_invalidate_retry_hva(kvm, unsigned long mmu_seq, hva)
        mmu_seq = _c_int_to_unsigned_long(mmu_seq)
    return fault.slot is not None and mmu_invalidate_retry_gfn(kvm, mmu_seq, fault.gfn)


def _c_int_to_unsigned_long(value: int) -> int:
    """C's ``(unsigned long)(int)value`` on x86-64: keep the low 32 bits, sign-extend."""
    low = value & 0xFFFF_FFFF
    return (low - (1 << 32) if low & 0x8000_0000 else low) & S.U64_MASK


def kvm_mmu_hugepage_adjust(vcpu: KvmVcpu, fault: KvmPageFault) -> None:
    fault.huge_page_disallowed = fault.exec and fault.nx_huge_page_workaround_enabled
    if fault.max_level == S.PG_LEVEL_4K or fault.slot is None or fault.slot.dirty_logging():
        return
    fault.req_level = min(fault.max_level, fault.slot.max_mapping_level(fault.gfn))
    if fault.req_level == S.PG_LEVEL_4K or fault.huge_page_disallowed:
        return
    fault.goal_level = fault.req_level
    fault.pfn &= ~(S.KVM_PAGES_PER_HPAGE(fault.goal_level) - 1)


# -- zapping -------------------------------------------------------------------------

@requires("none", takes="write", held=("slots_lock",), yields=True)
def kvm_mmu_zap_all_fast(kvm: Kvm) -> None:
    """Invalidate every root and zap them (memslot deletion / move, MMIO gen wrap).

    Requires: slots_lock held; mmu_lock not held (takes write, then read).
    Why: invalidation and the vCPUs' reload request must be in one write-locked
    section; the zap runs under the read lock so vCPUs can fault on new roots meanwhile,
    and must finish before the memslot update completes.
    """
    write_lock(kvm.mmu_lock)
    kvm.arch.mmu_valid_gen ^= 1
    kvm_tdp_mmu_invalidate_roots(kvm, KVM_DIRECT_ROOTS)
    kvm_make_all_cpus_request(kvm, KVM_REQ_MMU_FREE_OBSOLETE_ROOTS)
    write_unlock(kvm.mmu_lock)
    kvm_tdp_mmu_zap_invalidated_roots(kvm, True)


@requires("write", kernel="kvm_main.c")
def kvm_mmu_invalidate_begin(kvm: Kvm) -> None:
    """Open an invalidation; the first one resets the range start to INVALID_GPA (a
    range must be added before mmu_lock is dropped).

    Requires: mmu_lock held for write.
    """
    kvm.mmu_invalidate_in_progress += 1
    if kvm.mmu_invalidate_in_progress == 1:
        kvm.mmu_invalidate_range = (INVALID_GPA, kvm.mmu_invalidate_range[1])


@requires("write", kernel="kvm_main.c")
def kvm_mmu_invalidate_range_add(kvm: Kvm, start: int, end: int) -> None:
    """Add [start, end) to the in-progress range: the first range replaces
    INVALID_GPA, later ones (more memslots, concurrent invalidations) widen it to the
    smallest range covering all of them, until every invalidation has ended.

    Requires: mmu_lock held for write; an invalidation in progress.
    """
    WARN(not kvm.mmu_invalidate_in_progress,
         "WARN_ON_ONCE in kvm_mmu_invalidate_range_add: no invalidation in progress")
    lo, hi = kvm.mmu_invalidate_range
    if traps.defect("range-add-overwrites"):
        # the first version of 'KVM: Use gfn instead of hva for mmu_notifier_retry'
        # (caught in review): "the first range" meant "one invalidation in progress"
        first = kvm.mmu_invalidate_in_progress == 1
    else:
        first = lo == INVALID_GPA
    if first:
        kvm.mmu_invalidate_range = (start, end)
    else:
        kvm.mmu_invalidate_range = (min(lo, start), max(hi, end))


@requires("write", kernel="kvm_main.c")
def kvm_mmu_invalidate_end(kvm: Kvm) -> None:
    """Requires: mmu_lock held for write.  Bumps mmu_invalidate_seq (with smp_wmb)."""
    kvm.mmu_invalidate_seq.store_release(0, kvm.mmu_invalidate_seq.peek(0) + 1, "seq++ + smp_wmb")
    kvm.mmu_invalidate_in_progress -= 1
    if kvm.mmu_invalidate_in_progress < 0:
        raise KernelWarning("KVM_BUG_ON in kvm_mmu_invalidate_end: count went negative")
    WARN(kvm.mmu_invalidate_range[0] == INVALID_GPA,
         "WARN_ON_ONCE in kvm_mmu_invalidate_end: no range was added since "
         "kvm_mmu_invalidate_begin")


@requires("none", takes="write", yields=True)
def kvm_zap_gfn_range(kvm: Kvm, gfn_start: int, gfn_end: int) -> None:
    """Zap [start, end) in every valid root and flush, inside an invalidation.

    Requires: mmu_lock not held; takes it for write.
    """
    if gfn_end <= gfn_start:
        raise KernelWarning("WARN_ON_ONCE in kvm_zap_gfn_range: empty range")
    write_lock(kvm.mmu_lock)
    kvm_mmu_invalidate_begin(kvm)
    kvm_mmu_invalidate_range_add(kvm, gfn_start, gfn_end)
    flush = kvm_tdp_mmu_zap_leafs(kvm, gfn_start, gfn_end, False)
    if flush and not traps.defect("zap-gfn-range-no-flush"):
        kvm_flush_remote_tlbs_range(kvm, gfn_start, gfn_end - gfn_start)
    kvm_mmu_invalidate_end(kvm)
    write_unlock(kvm.mmu_lock)


@requires("none", takes="write", yields=True)
def kvm_mmu_zap_all(kvm: Kvm) -> None:
    """kvm_arch_flush_shadow_all: zap everything (VM destruction).

    Requires: mmu_lock not held; takes it for write.
    """
    write_lock(kvm.mmu_lock)
    if kvm.arch.active_mmu_pages:                   # shadow pages of nested guests
        from .shadow_mmu import kvm_shadow_mmu_zap_all
        kvm_shadow_mmu_zap_all(kvm)
    kvm_tdp_mmu_zap_all(kvm)
    write_unlock(kvm.mmu_lock)


_ = (RefCount, free_page, srcu_read_lock, srcu_read_unlock)


# -- NX huge page recovery -------------------------------------------------------------

@requires("either", held=("arch.tdp_mmu_pages_lock",))
def unaccount_nx_huge_page(kvm: Kvm, sp) -> None:
    """Clear nx_huge_page_disallowed and untrack.

    Requires: mmu_lock held (either mode) and tdp_mmu_pages_lock.
    """
    sp.hdr.write_once(HDR_NX, 0)
    untrack_possible_nx_huge_page(kvm, sp)


@requires("either")
def kvm_mmu_sp_dirty_logging_enabled(kvm: Kvm, sp) -> bool:
    """Whether the memslot of ``sp``'s gfn, in ``sp``'s address space, is being
    dirty-logged (NX recovery leaves such pages alone: they would fault back in at 4K).

    Requires: mmu_lock held (either mode: read for the TDP MMU pass) and kvm->srcu.
    Why: the memslot lookup is skipped while no slot logs (nr_memslots_dirty_logging is
    read racily: a stale value only costs efficiency); the slots are those of the page's
    role (kvm_memslots_for_spte_role), and a possible NX huge page always lies in one.
    Returns: True if the page's slot has dirty logging on.
    """
    slot = None
    if kvm.nr_memslots_dirty_logging:
        as_id = sp.as_id
        if traps.defect("nx-recovery-wrong-address-space"):
            as_id = 0      # eb298605705a: gfn_to_memslot(kvm, gfn), i.e. kvm_memslots(kvm)
        slots = kvm.srcu.srcu_dereference(kvm.memslots_cell, as_id)
        for cand in slots:                          # __gfn_to_memslot
            if cand.contains(sp.gfn):
                slot = cand
        WARN(slot is None, "WARN_ON_ONCE in kvm_mmu_sp_dirty_logging_enabled: no memslot "
                           f"for gfn {sp.gfn:#x} of an NX huge page (as_id {as_id})")
    return slot is not None and slot.dirty_logging()


@requires("none", takes="read", taken=("kvm->srcu", "rcu", "tdp_mmu_pages_lock"), yields=True)
def kvm_recover_nx_huge_pages(kvm: Kvm, ratio: int | None = None) -> None:
    """Zap a share of the page tables that exist only because of the NX huge page
    mitigation, so huge pages can come back (N: under the read lock).

    Requires: mmu_lock not held; takes it for read, plus kvm->srcu and RCU.
    Why: each page is popped from the possible-NX list under tdp_mmu_pages_lock, then
    zapped with a cmpxchg of its parent SPTE only if it is still linked there; a flush
    is due before yielding and before leaving RCU (its table is freed via call_rcu).
    """
    import math
    if ratio is None:
        ratio = kvm.nx_huge_pages_recovery_ratio
    nr = len(kvm.arch.possible_nx_huge_pages)
    to_zap = math.ceil(nr / ratio) if ratio else 0
    idx = srcu_read_lock(kvm.srcu)
    read_lock(kvm.mmu_lock)
    rcu_read_lock()
    flush = False
    for _ in range(to_zap):
        spin_lock(kvm.arch.tdp_mmu_pages_lock)
        if not kvm.arch.possible_nx_huge_pages:
            spin_unlock(kvm.arch.tdp_mmu_pages_lock)
            break
        sp = kvm.arch.possible_nx_huge_pages[0]
        WARN(not sp.hdr.read_once(HDR_NX), "WARN_ON_ONCE in kvm_recover_nx_huge_pages: page on "
                                      "the NX list without nx_huge_page_disallowed")
        unaccount_nx_huge_page(kvm, sp)
        spin_unlock(kvm.arch.tdp_mmu_pages_lock)
        if not kvm_mmu_sp_dirty_logging_enabled(kvm, sp):
            if traps.defect("nx-recovery-drops-tdp-flush"):
                # 29cf0f5007a2: the TDP MMU zap's "a flush is needed" is discarded
                kvm_tdp_mmu_zap_possible_nx_huge_page(kvm, sp)
            else:
                flush |= kvm_tdp_mmu_zap_possible_nx_huge_page(kvm, sp)
        else:
            traps.cover("nx-recovery-skipped-dirty-logging")
        WARN(bool(sp.hdr.read_once(HDR_NX)), "WARN_ON_ONCE in kvm_recover_nx_huge_pages: flag set")
        if kvm.mmu_lock.rwlock_needbreak() or need_resched():
            if flush:
                kvm_flush_remote_tlbs(kvm)
                flush = False
            rcu_read_unlock()
            if traps.defect("nx-recovery-readlock-stale-parent/resched"):
                # v2 of the read-lock series: the write-lock era yield, kept unchanged
                kvm.mmu_lock.cond_resched_rwlock_write()
            else:
                kvm.mmu_lock.cond_resched_rwlock_read()
            rcu_read_lock()
    if flush:
        kvm_flush_remote_tlbs(kvm)
    rcu_read_unlock()
    read_unlock(kvm.mmu_lock)
    srcu_read_unlock(kvm.srcu, idx)


def calc_nx_huge_pages_recovery_period(kvm: Kvm) -> int:
    """The recovery worker's period in ms, or 0 when recovery is off (the mitigation
    disabled, or ratio 0): the period_ms parameter, else one hour / ratio (ratio capped
    at 3600, so never below one second)."""
    if not kvm.nx_huge_pages or not kvm.nx_huge_pages_recovery_ratio:
        return 0
    if kvm.nx_huge_pages_recovery_period_ms:
        return kvm.nx_huge_pages_recovery_period_ms
    return 60 * 60 * 1000 // min(kvm.nx_huge_pages_recovery_ratio, 3600)


def kvm_nx_huge_page_recovery_worker(kvm: Kvm, now_ms: int) -> bool:
    """One wake-up of the per-VM recovery thread at model time ``now_ms`` (the model has
    no clock: callers pass time explicitly).  Runs kvm_recover_nx_huge_pages when a
    period has elapsed since the last run.  Returns whether it ran."""
    period = calc_nx_huge_pages_recovery_period(kvm)
    if not period or now_ms < kvm.nx_huge_page_last + period:
        return False
    kvm.nx_huge_page_last = now_ms
    kvm_recover_nx_huge_pages(kvm)
    return True


@requires("none", yields=True)
def set_nx_huge_pages(kvm: Kvm, enable: bool) -> None:
    """Writing the nx_huge_pages module parameter: when it changes, every VM zaps all
    its SPTEs (kvm_mmu_zap_all_fast under slots_lock), so no mapping made under the old
    policy survives, and its recovery thread is woken.

    Requires: no mmu_lock; takes slots_lock (the kernel walks the VM list under
    kvm_lock: one VM here).
    """
    if kvm.nx_huge_pages == enable:
        return
    kvm.nx_huge_pages = enable
    if not traps.defect("nx-toggle-skips-zap"):
        mutex_lock(kvm.slots_lock)
        kvm_mmu_zap_all_fast(kvm)
        mutex_unlock(kvm.slots_lock)
    if traps.defect("nx-worker-published-before-start"):
        vhost_task_wake(kvm.arch.nx_huge_page_recovery_thread)     # 931656b9e2ff
    else:
        kvm_wake_nx_recovery_thread(kvm)
    kvm.nx_enforced = kvm.nx_huge_page_workaround_enabled


def set_nx_huge_pages_recovery_param(kvm: Kvm, ratio: int | None = None,
                                     period_ms: int | None = None) -> None:
    """Writing nx_huge_pages_recovery_ratio or _period_ms: if recovery becomes enabled,
    or its period shorter, every VM's recovery thread is woken to recompute its timeout.

    Requires: nothing (the kernel holds kvm_lock to walk the VM list: one VM here).
    """
    was = calc_nx_huge_pages_recovery_period(kvm)
    if ratio is not None:
        kvm.nx_huge_pages_recovery_ratio = ratio
    if period_ms is not None:
        kvm.nx_huge_pages_recovery_period_ms = period_ms
    new = calc_nx_huge_pages_recovery_period(kvm)
    if new and (not was or was > new):
        if traps.defect("nx-worker-published-before-start"):
            vhost_task_wake(kvm.arch.nx_huge_page_recovery_thread)     # 931656b9e2ff
        else:
            kvm_wake_nx_recovery_thread(kvm)


def kvm_wake_nx_recovery_thread(kvm: Kvm) -> None:
    """Wake the VM's NX recovery thread if it exists: it is spawned on demand at the
    first KVM_RUN, so a VM the module-param setters can see may have none yet (and then
    no possible NX huge page either).  Mirrors: mmu.c (43fb96ae7855)."""
    traps.schedule_point((READ, None, "READ_ONCE(kvm->arch.nx_huge_page_recovery_thread)",
                          None))
    nx_thread = kvm.arch.nx_huge_page_recovery_thread
    if nx_thread is not None:
        vhost_task_wake(nx_thread)


def kvm_nx_huge_page_recovery_thread_fn(kvm: Kvm) -> bool:
    """The recovery vhost task's function (the kernel's kvm_nx_huge_page_recovery_worker
    with its ``void *data``): whether recovery is on decides how long to sleep.

    Deviates: the model has no clock of its own, so "sleep until the period elapses"
    (schedule_timeout) is "sleep until woken"; the runs that a period's expiry triggers
    are played by scenarios calling :func:`kvm_nx_huge_page_recovery_worker` with an
    explicit time.  Returns False (nothing done: sleep)."""
    calc_nx_huge_pages_recovery_period(kvm)
    return False


def kvm_mmu_start_lpage_recovery(kvm: Kvm) -> int:
    """call_once callback of the first KVM_RUN: create the recovery thread, start it,
    and only then publish it (WRITE_ONCE), so a module-param setter never sees a thread
    that is not running.  Returns 0 (the model's vhost_task_create does not fail).
    Deviates: takes the VM (the kernel's callback gets the once, container_of)."""
    nx_thread = vhost_task_create(kvm_nx_huge_page_recovery_thread_fn, kvm,
                                  "kvm-nx-lpage-recovery")
    if traps.defect("nx-worker-published-before-start"):
        # 931656b9e2ff: the pointer is stored at creation, before the task starts
        kvm.arch.nx_huge_page_recovery_thread = nx_thread
        vhost_task_start(nx_thread)
        return 0
    vhost_task_start(nx_thread)
    traps.schedule_point((WRITE, None, "WRITE_ONCE(kvm->arch.nx_huge_page_recovery_thread)",
                          None))
    kvm.arch.nx_huge_page_recovery_thread = nx_thread
    return 0


@requires("none", taken=("kvm->arch.nx_once.lock",), yields=True)
def kvm_mmu_post_init_vm(kvm: Kvm) -> int:
    """Start the NX recovery thread once per VM (from KVM_RUN).

    Requires: mmu_lock not held; takes the once's mutex (call_once).
    Why: creating the task may sleep; concurrent first KVM_RUNs of several vCPUs must
    create one thread, and the later ones return only once it exists.
    Returns: 0 or the creation error.
    """
    return call_once(kvm.arch.nx_once, lambda _once: kvm_mmu_start_lpage_recovery(kvm))


def kvm_arch_vcpu_ioctl_run(vcpu: KvmVcpu) -> int:
    """KVM_RUN's prologue: the VM's on-demand work (the NX recovery thread) is started
    by the first vCPU to run.  Scenarios that model the recovery thread call this at the
    start of each vCPU thread (guest_access models the guest running, not the ioctl).
    Returns: 0 or -errno."""
    return kvm_mmu_post_init_vm(vcpu.kvm)


@requires("none", yields=True)
def kvm_mmu_pre_destroy_vm(kvm: Kvm) -> None:
    """Stop the recovery thread, if one was started, before the VM goes away.

    Requires: mmu_lock not held (vhost_task_stop waits for the thread to exit).
    """
    if kvm.arch.nx_huge_page_recovery_thread is not None:
        vhost_task_stop(kvm.arch.nx_huge_page_recovery_thread)


def kvm_vm_enable_cap_disable_nx_huge_pages(kvm: Kvm) -> int:
    """KVM_ENABLE_CAP(KVM_CAP_VM_DISABLE_NX_HUGE_PAGES): only before any vCPU exists
    (its faults would already follow the old policy).  Returns 0 or -EINVAL."""
    if kvm.created_vcpus:
        return -EINVAL
    kvm.arch.disable_nx_huge_pages = True
    kvm.nx_enforced = False
    return 0


@requires("none", takes="read", yields=True)
def kvm_mmu_slot_leaf_clear_dirty(kvm: Kvm, slot) -> None:
    """Clear the dirty state of a memslot's SPTEs (dirty-log enable with PML, or a
    dirty-log collection pass), then flush: the dirty-log code flushes whenever dirty
    state was harvested, so no vCPU keeps writing through a cached D=1 translation.

    Requires: mmu_lock not held; takes it for read.
    """
    read_lock(kvm.mmu_lock)
    changed = kvm_tdp_mmu_clear_dirty_slot(kvm, slot)
    read_unlock(kvm.mmu_lock)
    if changed:
        kvm_flush_remote_tlbs(kvm)


# -- MMU notifiers (kvm_main.c) ---------------------------------------------------------

def _memslot_ranges(kvm: Kvm, start: int, end: int):
    """(as_id, lo, hi) for every memslot of every address space that overlaps host frames
    [start, end), clipped to it (kvm_handle_hva_range's slot walk)."""
    for as_id, slots in enumerate(kvm.memslots):
        for slot in slots:
            lo = max(start, slot.base_gfn)
            hi = min(end, slot.base_gfn + slot.npages)
            if lo < hi:
                yield as_id, lo, hi


@requires("none", takes="write", yields=True, kernel="kvm_main.c")
def kvm_mmu_notifier_invalidate_range_start(kvm: Kvm, start: int, end: int) -> None:
    """The host is about to change the mapping of guest frames [start, end): open an
    invalidation and zap their SPTEs (every memslot, every address space), then flush.

    Requires: mmu_lock not held; takes it for write -- only if a memslot overlaps the
    range (kvm_handle_hva_range's on_lock), so memslots must not change until
    range_end: mn_active_invalidate_count holds memslot updates off meanwhile.
    Why: faults that resolved a pfn before this must not install it: they see
    mmu_invalidate_in_progress / a changed mmu_invalidate_seq and retry.
    """
    if traps.defect(NOTIFIER_SLOTS_RWSEM):
        down_read(kvm.mmu_notifier_slots_lock)      # held until range_end
    else:
        spin_lock(kvm.mn_invalidate_lock)
        kvm.mn_active_invalidate_count += 1
        spin_unlock(kvm.mn_invalidate_lock)
    ranges = list(_memslot_ranges(kvm, start, end))
    if not ranges:
        return
    write_lock(kvm.mmu_lock)
    kvm_mmu_invalidate_begin(kvm)                   # on_lock
    flush = False
    for as_id, lo, hi in ranges:                    # kvm_mmu_unmap_gfn_range per memslot
        kvm_mmu_invalidate_range_add(kvm, lo, hi)
        flush = kvm_unmap_gfn_range(kvm, as_id, lo, hi, flush)
    if flush:
        kvm_flush_remote_tlbs(kvm)
    for as_id, lo, hi in ranges:        # what the host relies on once this returns
        oracles.check_range_unmapped(kvm, as_id, lo, hi)
    write_unlock(kvm.mmu_lock)


@requires("write", yields=True)
def kvm_unmap_gfn_range(kvm: Kvm, as_id: int, start: int, end: int, flush: bool) -> bool:
    """Zap a gfn range of one address space for an mmu_notifier event.

    Requires: mmu_lock held for write (and an invalidation in progress).
    Returns: whether a flush is needed.
    """
    if traps.defect("notifier-skips-unmap"):
        return flush
    from .tdp_mmu import kvm_tdp_mmu_unmap_gfn_range
    return kvm_tdp_mmu_unmap_gfn_range(kvm, as_id, start, end, True, flush)


@requires("none", takes="write", kernel="kvm_main.c")
def kvm_mmu_notifier_invalidate_range_end(kvm: Kvm, start: int, end: int) -> None:
    """Close the invalidation: bump mmu_invalidate_seq, drop the in-progress count;
    then let a waiting memslot update go on.

    Requires: mmu_lock not held; takes it for write if a memslot overlaps the range
    (the same memslots range_start saw: updates wait for mn_active_invalidate_count).
    """
    if any(True for _ in _memslot_ranges(kvm, start, end)):
        write_lock(kvm.mmu_lock)
        kvm_mmu_invalidate_end(kvm)
        write_unlock(kvm.mmu_lock)
    if traps.defect(NOTIFIER_SLOTS_RWSEM):
        up_read(kvm.mmu_notifier_slots_lock)
        return
    spin_lock(kvm.mn_invalidate_lock)
    if not WARN(not kvm.mn_active_invalidate_count,
                "WARN_ON_ONCE in kvm_mmu_notifier_invalidate_range_end: no invalidation"):
        kvm.mn_active_invalidate_count -= 1
    wake = not kvm.mn_active_invalidate_count
    spin_unlock(kvm.mn_invalidate_lock)
    # one waiter at most: memslot updates hold slots_lock
    if wake:
        kvm.mn_memslots_update_rcuwait.rcuwait_wake_up()


#: mm/mmu_notifier.c: the lockdep map the MMU-notifier core holds around every
#: invalidate_range_start and invalidate_range_end call (one per model: one mm)
__mmu_notifier_invalidate_range_start_map = LockdepMap("mmu_notifier_invalidate_range_start")


@requires("none", takes="write", yields=True, kernel="mmu_notifier.h")
def mmu_notifier_invalidate_range_start(kvm: Kvm, start: int, end: int) -> None:
    """The mm core: the notifiers' invalidate_range_start inside the lockdep map.

    Requires: mmu_lock not held (KVM's notifier takes it for write); nothing held that
    a notifier may wait for (it may sleep).
    Why: the map makes lockdep see every lock a notifier takes as nested in the map.
    """
    might_sleep("mmu_notifier_invalidate_range_start()")
    lock_map_acquire(__mmu_notifier_invalidate_range_start_map)
    kvm_mmu_notifier_invalidate_range_start(kvm, start, end)
    lock_map_release(__mmu_notifier_invalidate_range_start_map)


@requires("none", takes="write", yields=True, kernel="mmu_notifier.c")
def mmu_notifier_invalidate_range_end(kvm: Kvm, start: int, end: int) -> None:
    """The mm core: the notifiers' invalidate_range_end inside the same lockdep map.

    Requires: mmu_lock not held (KVM's notifier takes it for write); nothing held that
    a notifier may wait for (it may sleep).
    """
    might_sleep("mmu_notifier_invalidate_range_end()")
    lock_map_acquire(__mmu_notifier_invalidate_range_start_map)
    kvm_mmu_notifier_invalidate_range_end(kvm, start, end)
    lock_map_release(__mmu_notifier_invalidate_range_start_map)


def kvm_host_remap_gfn(kvm: Kvm, as_id: int, gfn: int, new_pfn: int) -> None:
    """The host moves the page backing ``gfn`` (page migration): a notifier-bracketed
    change of the host mapping.  Once invalidate_range_start returned, the old page is
    the host's again (the host-safety oracle watches it)."""
    slot = kvm.gfn_to_memslot(as_id, gfn)
    old_pfn = slot.gfn_to_pfn(gfn)
    mmu_notifier_invalidate_range_start(kvm, gfn, gfn + 1)
    kvm.freed_host_ranges.append((old_pfn, 1, f"page of gfn {gfn:#x} migrated"))
    slot.remapped[gfn] = new_pfn
    mmu_notifier_invalidate_range_end(kvm, gfn, gfn + 1)


def kvm_host_migrate_folio(kvm: Kvm, as_id: int, gfn: int, npages: int, new_pfn: int) -> None:
    """The host migrates a folio of ``npages`` pages backing [gfn, gfn + npages) (NUMA
    balancing, compaction): one notifier-bracketed change for the whole folio, the
    old pages given back once invalidate_range_start returned.  The folio may straddle
    two memslots that are adjacent in the host's address space (one RAM block mapped by
    two slots, as QEMU does around the PCI hole)."""
    parts = []                          # (slot, first gfn, pages, old pfn) per memslot
    g = gfn
    while g < gfn + npages:
        slot = kvm.gfn_to_memslot(as_id, g)
        n = min(gfn + npages, slot.base_gfn + slot.npages) - g
        parts.append((slot, g, n, slot.gfn_to_pfn(g)))
        g += n
    kvm_mmu_notifier_invalidate_range_start(kvm, gfn, gfn + npages)
    for slot, first, n, old_pfn in parts:
        kvm.freed_host_ranges.append((old_pfn, n, f"folio of gfns {gfn:#x}+{npages} migrated"))
    for slot, first, n, _ in parts:
        for i in range(n):
            slot.remapped[first + i] = new_pfn + (first - gfn) + i
    kvm_mmu_notifier_invalidate_range_end(kvm, gfn, gfn + npages)


# -- aging: MMU-notifier clear_young / test_young ----------------------------------------

@requires("none", taken=("rcu",))
def kvm_age_gfn(kvm: Kvm, as_id: int, start: int, end: int) -> bool:
    """mmu.c: age a gfn range of one memslot.  Requires: nothing (lockless TDP MMU aging;
    rmaps, which need the write lock, exist only with shadow paging, not modelled)."""
    from .tdp_mmu import kvm_tdp_mmu_age_gfn_range
    return kvm_tdp_mmu_age_gfn_range(kvm, as_id, start, end)


@requires("none", taken=("rcu",))
def kvm_test_age_gfn(kvm: Kvm, as_id: int, start: int, end: int) -> bool:
    """mmu.c: whether a gfn range of one memslot is young.  Requires: nothing."""
    from .tdp_mmu import kvm_tdp_mmu_test_age_gfn
    return kvm_tdp_mmu_test_age_gfn(kvm, as_id, start, end)


def _age_range(kvm: Kvm, start: int, end: int, clears: bool) -> bool:
    call = oracles.aging_begin(kvm, start, end, clears)
    young = False
    for as_id, lo, hi in _memslot_ranges(kvm, start, end):
        if clears:
            young |= kvm_age_gfn(kvm, as_id, lo, hi)
        elif kvm_test_age_gfn(kvm, as_id, lo, hi):
            young = True
            break
    oracles.aging_end(kvm, call, young)
    return young


@requires("none", kernel="kvm_main.c")
def kvm_mmu_notifier_clear_young(kvm: Kvm, start: int, end: int) -> bool:
    """The host's page reclaim asks whether guest frames [start, end) were accessed and
    makes them old (every memslot, every address space); no TLB flush.

    Requires: mmu_lock not held and not taken (CONFIG_KVM_MMU_LOCKLESS_AGING).
    Returns: whether any page was young.
    """
    return _age_range(kvm, start, end, True)


@requires("none", kernel="kvm_main.c")
def kvm_mmu_notifier_test_young(kvm: Kvm, start: int, end: int) -> bool:
    """Whether any guest frame of [start, end) is young, changing nothing.
    Requires: mmu_lock not held and not taken."""
    return _age_range(kvm, start, end, False)


# -- fast page fault (mmu.c) -------------------------------------------------------------

def page_fault_can_be_fast(kvm: Kvm, fault: KvmPageFault) -> bool:
    """Non-present faults only with access tracking (no A/D bits); present faults only
    for writes (write-protection)."""
    if not fault.present:
        return not kvm.masks.ad_enabled
    return fault.write


def is_access_allowed(fault: KvmPageFault, spte: int, m) -> bool:
    if fault.exec:
        return S.is_executable_pte(spte, m)
    if fault.write:
        return S.is_writable_pte(spte)
    return bool(spte & S.PT_PRESENT_MASK)     # EPT R / NPT P: clear when access-tracked


@requires("none", rcu="held")
def fast_pf_fix_direct_spte(vcpu: KvmVcpu, fault: KvmPageFault, sptep, old_spte: int,
                            new_spte: int) -> bool:
    """cmpxchg the SPTE from what the lockless walk read; mark the page dirty if it
    became writable.

    Requires: RCU only (no mmu_lock).
    Why: only W, A and access-tracking bits change on a present leaf, so no
    handle_changed_spte; the cmpxchg makes sure nothing else changed meanwhile (a
    zap, a freeze, a write-protection).
    Returns: whether the SPTE was fixed.
    """
    pt, idx = sptep
    if traps.defect("fast-pf-plain-write"):
        found = pt.write_once(idx, new_spte)            # test-only: no cmpxchg
        oracles.check_fast_fix(vcpu.kvm, pt, idx, old_spte, found, new_spte)
        return True
    if pt.cmpxchg(idx, old_spte, new_spte) != old_spte:
        traps.cover("cmpxchg-lost")
        return False
    oracles.check_fast_fix(vcpu.kvm, pt, idx, old_spte, old_spte, new_spte)
    if S.is_writable_pte(new_spte) and not S.is_writable_pte(old_spte):
        traps.cover("fast-pf-made-writable")
        slot = kvm_vcpu_gfn_to_memslot(vcpu, fault.gfn)
        if slot is not None and slot.dirty_logging() and not traps.defect(
                "fast-pf-forgets-mark-dirty"):
            mark_page_dirty_in_slot(vcpu.kvm, slot, fault.gfn)
    return True


@requires("none", taken=("rcu",))
def fast_page_fault(vcpu: KvmVcpu, fault: KvmPageFault) -> int:
    """Fix write-protection (MMU-writable but not writable) and access-tracking faults
    without mmu_lock, under RCU only.

    Requires: no mmu_lock (lockless); takes RCU.
    Returns: RET_PF_FIXED, RET_PF_SPURIOUS, or RET_PF_INVALID (take the slow path).
    """
    kvm = vcpu.kvm
    m = kvm.masks
    if not page_fault_can_be_fast(kvm, fault):
        return RET_PF_INVALID
    ret = RET_PF_INVALID
    retry = 0
    rcu_read_lock()
    while True:
        sptep, spte, level = kvm_tdp_mmu_fast_pf_get_last_sptep(vcpu, fault.gfn)
        if sptep is None:
            WARN(True, "WARN_ON_ONCE in fast_page_fault: no SPTE pointer")
            break
        if not S.is_shadow_present_pte(spte) or not S.is_last_spte(spte, level):
            break
        if is_access_allowed(fault, spte, m):
            ret = RET_PF_SPURIOUS
            break
        new = spte
        if not m.ad_enabled and S.is_access_track_spte(spte, m):
            new = S.restore_acc_track_spte(new, m) | m.accessed_mask
        if fault.write and S.is_mmu_writable_spte(spte, m):
            new |= S.PT_WRITABLE_MASK
            slot = kvm_vcpu_gfn_to_memslot(vcpu, fault.gfn)
            if level > S.PG_LEVEL_4K and slot is not None and slot.dirty_logging():
                break
        if new == spte or not is_access_allowed(fault, new, m):
            break
        if fast_pf_fix_direct_spte(vcpu, fault, sptep, spte, new):
            ret = RET_PF_FIXED
            break
        retry += 1
        if retry > 4:
            break
    rcu_read_unlock()
    if ret != RET_PF_INVALID:
        vcpu.stat.pf_fast += 1
    return ret


@requires("none", takes="read", yields=True)
def kvm_mmu_slot_remove_write_access(kvm: Kvm, slot, min_level: int = S.PG_LEVEL_4K) -> bool:
    """Dirty-log enable without PML: write-protect the slot's SPTEs (MMU-writable kept).
    The caller flushes (kvm_mmu_slot_apply_flags flushes the memslot unconditionally).

    Requires: mmu_lock not held; takes it for read.
    Returns: whether an SPTE changed (what the flush depended on before 2022).
    """
    read_lock(kvm.mmu_lock)
    changed = kvm_tdp_mmu_wrprot_slot(kvm, slot, min_level)
    read_unlock(kvm.mmu_lock)
    return changed


@requires("none", takes="read", yields=True)
def kvm_mmu_slot_try_split_huge_pages(kvm: Kvm, slot, target_level: int) -> None:
    """Eager page splitting when dirty logging is enabled: split the slot's huge pages
    down to ``target_level`` under the read lock.  No TLB flush: the split tables
    translate exactly as the huge entries did.

    Requires: mmu_lock not held; takes it for read (``shared`` = true).
    """
    read_lock(kvm.mmu_lock)
    kvm_tdp_mmu_try_split_huge_pages(kvm, slot, slot.base_gfn, slot.base_gfn + slot.npages,
                                     target_level, True)
    read_unlock(kvm.mmu_lock)


@requires("write", yields=True)
def kvm_mmu_try_split_huge_pages(kvm: Kvm, slot, start: int, end: int, target_level: int) -> None:
    """Eager splitting from the CLEAR_DIRTY_LOG path (manual protect + initially set).

    Requires: mmu_lock held for write (``shared`` = false): the caller is already in the
    write-locked part of the clear.
    """
    kvm_tdp_mmu_try_split_huge_pages(kvm, slot, start, end, target_level, False)


@requires("none", takes="read", yields=True)
def kvm_mmu_recover_huge_pages(kvm: Kvm, slot) -> None:
    """Dirty logging disabled: map the slot with huge pages again, in place.

    Requires: mmu_lock not held; takes it for read.
    """
    read_lock(kvm.mmu_lock)
    kvm_tdp_mmu_recover_huge_pages(kvm, slot)
    read_unlock(kvm.mmu_lock)


@requires("write")
def kvm_mmu_slot_gfn_write_protect(kvm: Kvm, slot, gfn: int, min_level: int) -> bool:
    """Remove W and MMU-writable from the leaves at or above ``min_level`` covering
    ``gfn``.

    Requires: mmu_lock held for write.
    Returns: whether an SPTE changed.
    """
    return kvm_tdp_mmu_write_protect_gfn(kvm, slot, gfn, min_level)


@requires("none", takes="write")
def kvm_slot_page_track_add_page(kvm: Kvm, slot, gfn: int) -> None:
    """Start write-tracking ``gfn`` (shadow paging of a guest page table, or an
    external tracker): write-protect it for good and flush.

    Requires: mmu_lock not held; takes it for write.
    """
    write_lock(kvm.mmu_lock)
    kvm.write_tracked.add(gfn)
    if kvm_tdp_mmu_write_protect_gfn(kvm, slot, gfn, S.PG_LEVEL_4K):
        kvm_flush_remote_tlbs(kvm)
    write_unlock(kvm.mmu_lock)
    kvm.write_track_enforced.add(gfn)       # the oracle's: no guest write may complete now


# -- dirty logging (kvm_main.c / x86.c; write protection, or D bits with PML) ---------

def mark_page_dirty_in_slot(kvm: Kvm, slot, gfn: int) -> None:
    """set_bit in the slot's dirty bitmap (an atomic set_bit: commutes, so no step)."""
    if slot.dirty_bitmap is not None:
        slot.dirty_bitmap.add(gfn)


def kvm_dirty_log_manual_protect_and_init_set(kvm: Kvm) -> bool:
    from .kvm import KVM_DIRTY_LOG_INITIALLY_SET
    return bool(kvm.manual_dirty_log_protect & KVM_DIRTY_LOG_INITIALLY_SET)


@requires("none", held=("slots_lock",), yields=True, kernel="x86.c")
def kvm_mmu_slot_apply_flags(kvm: Kvm, old_flags: int, new, change: str) -> None:
    """Commit of a memslot update (kvm_arch_commit_memory_region): act on a change of
    KVM_MEM_LOG_DIRTY_PAGES of an existing slot.

    Requires: slots_lock held; mmu_lock not held (the callees take it).
    Why: disabling logging recovers huge pages; enabling it (unless initially-all-set,
    where every page is already reported dirty) splits huge pages eagerly, write-protects
    the slot at 4K and flushes the memslot unconditionally.
    """
    from .kvm import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY
    new_flags = new.flags
    log_dirty_pages = bool(new_flags & KVM_MEM_LOG_DIRTY_PAGES)
    if change != "FLAGS_ONLY" or new_flags & KVM_MEM_READONLY:
        return
    if WARN(not (old_flags ^ new_flags) & KVM_MEM_LOG_DIRTY_PAGES,
            "WARN_ON_ONCE in kvm_mmu_slot_apply_flags: flags change without logging toggle"):
        return
    if not log_dirty_pages:
        if not traps.defect("disable-logging-no-recovery"):
            kvm_mmu_recover_huge_pages(kvm, new)
        return
    if kvm_dirty_log_manual_protect_and_init_set(kvm):
        return
    if kvm.eager_page_split:
        kvm_mmu_slot_try_split_huge_pages(kvm, new, S.PG_LEVEL_4K)
    if kvm.enable_pml:
        # PML logs writes that set D: clear D at 4K (L2 roots: W), and write-protect
        # huge pages so that a write splits them
        kvm_mmu_slot_leaf_clear_dirty(kvm, new)
        kvm_mmu_slot_remove_write_access(kvm, new, S.PG_LEVEL_2M)
    else:
        changed = kvm_mmu_slot_remove_write_access(kvm, new, S.PG_LEVEL_4K)
        if not changed and traps.defect("enable-logging-flush-if-changed"):
            # before "KVM: x86: mmu: Always flush TLBs when enabling dirty logging": no
            # SPTE lost W, so no flush -- but aging without A/D bits access-tracks SPTEs
            # (clearing W) without flushing, so a vCPU may still hold them writable
            return
    kvm_flush_remote_tlbs_memslot(kvm, new)


@requires("none", held=("slots_lock",), yields=True, kernel="kvm_main.c")
def kvm_set_memslot_dirty_logging(kvm: Kvm, slot, enable: bool) -> None:
    """KVM_SET_USER_MEMORY_REGION toggling KVM_MEM_LOG_DIRTY_PAGES (a FLAGS_ONLY change):
    kvm_prepare_memory_region allocates the bitmap (all ones with initially-set),
    kvm_swap_active_memslots publishes the new flags and waits for SRCU readers (so no
    fault still uses the old flags), kvm_arch_commit_memory_region applies them.

    Requires: slots_lock held.
    Deviation: the slot object is updated in place instead of published as a copy; the
    synchronize_srcu gives the same guarantee to vCPUs (faults hold kvm->srcu).
    """
    from .kvm import KVM_MEM_LOG_DIRTY_PAGES
    old_flags = slot.flags
    if enable == bool(old_flags & KVM_MEM_LOG_DIRTY_PAGES):
        return
    if enable:
        slot.dirty_bitmap = slot.alloc_dirty_bitmap(kvm_dirty_log_manual_protect_and_init_set(kvm))
        slot.flags = old_flags | KVM_MEM_LOG_DIRTY_PAGES
    else:
        slot.logging_active = False
        slot.flags = old_flags & ~KVM_MEM_LOG_DIRTY_PAGES
        slot.dirty_bitmap = None
        slot.dirty_writes = None         # writes while logging was on no longer need reporting
    traps.schedule_point((SYNC, slot, "publish(memslot flags)", None))
    kvm.memslots_generation += 1
    kvm.srcu.synchronize_srcu()
    kvm_mmu_slot_apply_flags(kvm, old_flags, slot, "FLAGS_ONLY")
    if enable:
        slot.logging_active = True       # the ioctl returned: writes from now on count


@requires("none", takes="write", held=("slots_lock",), kernel="kvm_main.c")
def kvm_get_dirty_log_protect(kvm: Kvm, slot) -> DirtyBitmap:
    """KVM_GET_DIRTY_LOG without manual protect: harvest and clear the bitmap, then
    write-protect the harvested pages again (kvm_arch_mmu_enable_log_dirty_pt_masked)
    and flush, all before returning.

    Requires: slots_lock held; mmu_lock not held (taken for write).
    Returns: the harvested gfns (the bitmap userspace gets).
    """
    traps.schedule_point((SYNC, slot, "xchg(dirty_bitmap)", None))
    start = traps.now()
    harvested, slot.dirty_bitmap = slot.dirty_bitmap, slot.alloc_dirty_bitmap()   # xchg
    _reprotect(kvm, slot, harvested, "get-dirty-log-skips-wrprot")
    oracles.note_harvest(kvm, slot, harvested, start)
    return harvested


@requires("write", kernel="mmu.c")
def kvm_arch_mmu_enable_log_dirty_pt_masked(kvm: Kvm, slot, gfn_offset: int, mask: int) -> None:
    """Re-protect the 4K pages of one 64-page word of the dirty bitmap.  With
    initially-set, huge pages were never protected: split them eagerly (if enabled) and
    write-protect at 2M first, so the next write faults and maps 4K.

    Requires: mmu_lock held for write.
    """
    if kvm_dirty_log_manual_protect_and_init_set(kvm):
        start = slot.base_gfn + gfn_offset + (mask & -mask).bit_length() - 1     # __ffs
        end = slot.base_gfn + gfn_offset + mask.bit_length() - 1                 # __fls
        if kvm.eager_page_split:
            kvm_mmu_try_split_huge_pages(kvm, slot, start, end + 1, S.PG_LEVEL_4K)
        kvm_mmu_slot_gfn_write_protect(kvm, slot, start, S.PG_LEVEL_2M)
        if S.gfn_round_for_level(start, S.PG_LEVEL_2M) != S.gfn_round_for_level(end, S.PG_LEVEL_2M):
            kvm_mmu_slot_gfn_write_protect(kvm, slot, end, S.PG_LEVEL_2M)
    # kvm_mmu_clear_dirty_pt_masked with PML (clear D; W in roots that need it),
    # else kvm_mmu_write_protect_pt_masked
    kvm_tdp_mmu_clear_dirty_pt_masked(kvm, slot, slot.base_gfn + gfn_offset, mask,
                                      not kvm.enable_pml)


def _bitmap_words(bitmap: DirtyBitmap) -> list[tuple[int, int]]:
    """The non-zero 64-page words of a dirty bitmap, as (page offset, mask), in order."""
    bits = np.packbits(bitmap.mask, bitorder="little")
    bits = np.concatenate([bits, np.zeros(-len(bits) % 8, dtype=np.uint8)])
    words = bits.view("<u8")
    nz = np.flatnonzero(words)
    return list(zip((nz * 64).tolist(), words[nz].tolist()))


def _reprotect(kvm: Kvm, slot, bitmap: DirtyBitmap, defect_name: str) -> None:
    """kvm_arch_mmu_enable_log_dirty_pt_masked for the set bits of ``bitmap``, one
    64-page word at a time, then flush if any bit was set, under the write lock.
    Free-running (no exploration) and without initially-set: one walk per root for the
    whole bitmap, each 4K table's share in one vectorised step, with the same effect
    (tests/test_mmu_bulk_dirty.py)."""
    bulk = (traps.free_run() and not traps.tracing()
            and not kvm_dirty_log_manual_protect_and_init_set(kvm))
    write_lock(kvm.mmu_lock)
    if not traps.defect(defect_name):
        if bulk:
            kvm_tdp_mmu_clear_dirty_bitmap_bulk(kvm, slot, bitmap.mask, not kvm.enable_pml)
        else:
            for off, mask in _bitmap_words(bitmap):
                kvm_arch_mmu_enable_log_dirty_pt_masked(kvm, slot, off, mask)
    if bitmap:
        kvm_flush_remote_tlbs(kvm)
    write_unlock(kvm.mmu_lock)


@requires("none", held=("slots_lock",), kernel="kvm_main.c")
def kvm_get_dirty_log_manual(kvm: Kvm, slot) -> DirtyBitmap:
    """KVM_GET_DIRTY_LOG with KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: a snapshot of the bitmap;
    nothing is cleared or protected until KVM_CLEAR_DIRTY_LOG.

    Requires: slots_lock held.
    """
    traps.schedule_point((SYNC, slot, "read(dirty_bitmap)", None))
    slot._manual_get_start = traps.now()
    return slot.dirty_bitmap.copy()


@requires("none", takes="write", held=("slots_lock",), kernel="kvm_main.c")
def kvm_clear_dirty_log(kvm: Kvm, slot, gfns) -> None:
    """KVM_CLEAR_DIRTY_LOG: clear these bits (a DirtyBitmap, or gfns of the slot); those
    that were set (atomic_long_fetch_andnot) are write-protected again, and the TLBs
    flushed if there were any.

    Requires: slots_lock held; mmu_lock not held (taken for write).
    """
    traps.schedule_point((SYNC, slot, "clear(dirty_bitmap)", None))
    clear = DirtyBitmap.from_gfns(slot.base_gfn, slot.npages, gfns)
    bits = slot.dirty_bitmap.mask
    was_set = DirtyBitmap(slot.base_gfn, slot.npages)
    np.logical_and(clear.mask, bits, out=was_set.mask)
    bits &= ~clear.mask
    _reprotect(kvm, slot, was_set, "clear-dirty-log-skips-wrprot")
    oracles.note_harvest(kvm, slot, clear, slot._manual_get_start, slot.dirty_bitmap)


# -- KVM_PRE_FAULT_MEMORY (kvm_main.c / mmu.c, v6.10+) ------------------------------------

class KvmPreFaultMemory:
    """struct kvm_pre_fault_memory: the range still to map (updated as pages are mapped)."""

    def __init__(self, gpa: int, size: int, flags: int = 0):
        self.gpa = gpa
        self.size = size
        self.flags = flags


@requires("none")
def kvm_tdp_map_page(vcpu: KvmVcpu, gpa: int, error_code: int, level: list) -> int:
    """Map one page of guest memory as a prefetch fault, retrying RET_PF_RETRY.

    Requires: no mmu_lock (the fault takes it); kvm->srcu held (the caller's read
    section spans every retry).
    Why: RET_PF_RETRY is normally resolved by re-entering the guest; here nothing leaves
    the SRCU section between tries, so a retry must be one that ends by itself (a memslot
    being deleted answers -EAGAIN instead: see kvm_mmu_faultin_pfn).
    Returns: 0, -ENOENT (no memslot: MMIO), -EAGAIN, or another -errno.
    """
    while True:
        cond_resched()
        r = kvm_mmu_do_page_fault(vcpu, gpa, error_code, True, level)
        if r != RET_PF_RETRY:
            break
        traps.cover("prefault-retry")
    if r < 0:
        return r
    if r in (RET_PF_FIXED, RET_PF_SPURIOUS, RET_PF_WRITE_PROTECTED):
        return 0
    if r == RET_PF_EMULATE:
        return -ENOENT
    WARN(True, "WARN_ONCE in kvm_tdp_map_page: could not fix page fault during prefault")
    return -EIO


@requires("none")
def kvm_arch_vcpu_pre_fault_memory(vcpu: KvmVcpu, rng: KvmPreFaultMemory) -> int:
    """Map the page at ``rng.gpa`` (TDP only: the MMU is indexed by guest physical address).

    Requires: no mmu_lock; kvm->srcu held (by kvm_vcpu_pre_fault_memory).

    Returns: the bytes covered (up to the end of the mapping, which may be huge), or -errno.
    """
    kvm_mmu_reload(vcpu)
    level = [S.PG_LEVEL_4K]
    r = kvm_tdp_map_page(vcpu, rng.gpa, 0, level)
    if r < 0:
        return r
    size = S.KVM_PAGES_PER_HPAGE(level[0]) << S.PAGE_SHIFT
    end = (rng.gpa & ~(size - 1)) + size
    return min(rng.size, end - rng.gpa)


@requires("none", taken=("kvm->srcu",), kernel="kvm_main.c")
def kvm_vcpu_pre_fault_memory(vcpu: KvmVcpu, rng: KvmPreFaultMemory) -> int:
    """The KVM_PRE_FAULT_MEMORY vCPU ioctl: map [gpa, gpa + size) ahead of the guest,
    page by page, inside one kvm->srcu read section.

    Requires: no mmu_lock; takes kvm->srcu (vcpu_load: the vCPU is not running).

    Returns: 0 if at least one page was mapped, else the error (-EAGAIN: a memslot
    in the range is being deleted or moved, try again; -ENOENT: no memslot).
    """
    if rng.flags or rng.gpa & 0xFFF or rng.size & 0xFFF or rng.size <= 0:
        return -EINVAL
    idx = srcu_read_lock(vcpu.kvm.srcu)
    full_size = rng.size
    r = 0
    while rng.size:
        r = kvm_arch_vcpu_pre_fault_memory(vcpu, rng)
        if WARN(r in (0, -EIO), "WARN_ON_ONCE in kvm_vcpu_pre_fault_memory"):
            break
        if r < 0:
            break
        rng.size -= r
        rng.gpa += r
        cond_resched()
    srcu_read_unlock(vcpu.kvm.srcu, idx)
    return r if full_size == rng.size else 0
