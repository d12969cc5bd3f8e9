"""Default TDP MMU scenarios (realistic KVM flows), group fault_b: prefaulting memory
while the VMM deletes a memslot, and L1 faults on the TDP MMU while nested (shadow)
pages of an L2 guest exist."""

from __future__ import annotations

from ..mmu import READ_ACCESS, WRITE_ACCESS, guest_access, kvm_set_memory_region
from ..mmu import spte as S
from ..sync import cond_resched
from .mmu_core import MMU, build_vm, memslot_deleter, run_flows
from .registry import scenario


@scenario("mmu-prefault-vs-memslot-delete", tags=MMU, dfs_bound=1, max_steps=8_000,
          key_branches=("prefault-invalid-slot",))
def mmu_prefault_vs_memslot_delete(pages: int = 3):
    """pre_fault_memory_test's delete-while-prefaulting: a vCPU thread maps a memslot
    ahead of the guest with KVM_PRE_FAULT_MEMORY (retrying on -EAGAIN, as the test
    does) and then runs the guest on it, while the VMM deletes that memslot.  The VM
    has KVM_X86_QUIRK_SLOT_ZAP_ALL disabled, as a TDX VM (prefaulting's main user)
    does: the deletion zaps only the slot's range.  Once the slot is gone the prefault
    answers -ENOENT and the guest's accesses there are MMIO."""
    from ..mmu.mmu import EAGAIN, KvmPreFaultMemory, kvm_vcpu_pre_fault_memory
    kvm = build_vm(1, npages=512)
    kvm.slot_zap_all_quirk = False
    victim = kvm_set_memory_region(kvm, 0, 1, 512, 512, S.PG_LEVEL_4K)

    def vcpu_body(v):
        def run():
            rng = KvmPreFaultMemory(512 << 12, pages << 12)
            while kvm_vcpu_pre_fault_memory(v, rng) == -EAGAIN:
                cond_resched()                  # userspace tries the ioctl again
            guest_access(v, 512 << 12, WRITE_ACCESS)
            guest_access(v, 1 << 12, READ_ACCESS)
        return run

    return run_flows(kvm, vcpu_body, vmm_delete=memslot_deleter(kvm, victim))


#: L1's EPT12 tables for its L2 guest (L1 gfns): the root, one table per upper level,
#: and one last-level table per 2M of L2 memory (L2 gfn 0, 512, 1024, ...)
EPT12_ROOT, EPT12_PDPT, EPT12_PD, EPT12_PT0 = 0x100, 0x101, 0x102, 0x103


def ept12_walk(l2_gfn: int) -> list[int]:
    """The gfns of L1's EPT12 tables below the root that map ``l2_gfn``."""
    return [EPT12_PDPT, EPT12_PD, EPT12_PT0 + (l2_gfn >> 9)]


@scenario("mmu-nested-shadow-vs-tdp-faults", tags=MMU, dfs_bound=1, max_steps=20_000,
          key_branches=("shadow-page-unsync", "shadow-page-synced", "shadow-pages-recycled"))
def mmu_nested_shadow_vs_tdp_faults(nr_mmu_pages: int = 10):
    """Nested virtualization with shadow EPT beside the TDP MMU: vCPU2 has run an L2
    guest, so L1's EPT12 tables are shadowed (upper levels write-tracked, the two
    last-level tables write-protected).  vCPU0 and vCPU1 (in L1) edit those two
    last-level tables -- TDP MMU faults under the read lock that unsync the shadow pages
    below one shared parent -- while vCPU2 re-enters L2 (syncing unsync pages), takes an
    EPT violation, syncs again (INVEPT), takes another that finds the VMM's
    KVM_SET_NR_MMU_PAGES limit reached (the oldest shadow pages are zapped), and leaves
    L2."""
    from ..mmu.shadow_mmu import (kvm_mmu_change_mmu_pages, kvm_mmu_free_nested_root,
                                  kvm_mmu_load_nested_root, kvm_mmu_nested_ept_page_fault,
                                  kvm_mmu_sync_roots)
    kvm = build_vm(3, npages=1024)
    kvm_mmu_change_mmu_pages(kvm, nr_mmu_pages)
    l2 = kvm.vcpus[2]
    kvm_mmu_load_nested_root(l2, EPT12_ROOT)           # L2 ran before: shadow pages exist
    for l2_gfn in (0, 512):
        kvm_mmu_nested_ept_page_fault(l2, l2_gfn, ept12_walk(l2_gfn))

    def vcpu_body(v):
        def run():
            if v is l2:
                kvm_mmu_sync_roots(v)                   # nested VM-entry
                for l2_gfn in (1024, 1536):             # the second one hits the limit
                    kvm_mmu_nested_ept_page_fault(v, l2_gfn, ept12_walk(l2_gfn))
                    kvm_mmu_sync_roots(v)               # INVEPT after L1's edits
                kvm_mmu_free_nested_root(v)             # nested VM-exit
                guest_access(v, 0x10 << 12, READ_ACCESS)
                return
            table = EPT12_PT0 + v.vcpu_id               # L1 edits an EPT12 page table
            guest_access(v, table << 12, READ_ACCESS)
            guest_access(v, table << 12, WRITE_ACCESS)
        return run

    return run_flows(kvm, vcpu_body)
