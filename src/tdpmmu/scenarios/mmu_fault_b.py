"""Default TDP MMU scenarios (realistic KVM flows), group fault_b: prefaulting memory
while the VMM deletes a memslot, and L1 faults on the TDP MMU while nested (shadow)
pages of an L2 guest exist."""

from __future__ import annotations

from ..mmu import READ_ACCESS, WRITE_ACCESS, guest_access, kvm_set_memory_region
from ..mmu import spte as S
from ..sync import cond_resched, mutex_lock, mutex_unlock
from .mmu_core import MMU, build_vm, run_flows
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
    from ..mmu.mmu import KvmPreFaultMemory, kvm_delete_memslot, kvm_vcpu_pre_fault_memory
    from ..mmu.mmu import EAGAIN
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

    def delete():
        mutex_lock(kvm.slots_lock)
        kvm_delete_memslot(kvm, victim)
        mutex_unlock(kvm.slots_lock)

    return run_flows(kvm, vcpu_body, vmm_delete=delete)
