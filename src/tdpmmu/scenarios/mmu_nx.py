"""Default TDP MMU scenarios (realistic KVM flows), group nx."""

from __future__ import annotations

from ..mmu import EXEC_ACCESS, READ_ACCESS, WRITE_ACCESS, guest_access, kvm_create_vcpu, kvm_create_vm
from ..mmu import kvm_set_memory_region, kvm_smm_transition
from ..mmu import spte as S
from ..sync import Completion
from .mmu_core import MMU, enable_dirty_logging, run_flows, zap_all_fast
from .registry import scenario


@scenario("mmu-nx-recovery-smm", tags=MMU, dfs_bound=1, max_steps=80_000,
          key_branches=("nx-recovery-skipped-dirty-logging",))
def mmu_nx_recovery_smm(tseg: int = 0x200):
    """A VM with SMM (OVMF-style firmware, TSEG at the top of low RAM: only the SMM
    address space maps it) and the NX huge page mitigation on.  The vCPU takes an SMI
    and runs the handler from TSEG (a possible NX huge page of the SMM root), resumes
    and runs normal code (one of the normal root); then, while the NX recovery thread
    zaps those page tables under the read lock, a live migration starts dirty logging
    on the normal RAM slot and the guest reprograms the legacy VGA/SMRAM window (a
    memslot update: kvm_mmu_zap_all_fast zaps every root under the read lock)."""
    from ..mmu.mmu import kvm_recover_nx_huge_pages
    kvm = kvm_create_vm(nx_huge_pages=True)
    ram = kvm_set_memory_region(kvm, 0, 0, 0, tseg, S.PG_LEVEL_2M)     # normal: RAM only
    kvm_set_memory_region(kvm, 1, 0, 0, tseg + 0x200, S.PG_LEVEL_2M)   # SMM: RAM + TSEG
    kvm_create_vcpu(kvm)
    split_done = Completion("nx_split_done")

    def vcpu_body(v):
        def run():
            kvm_smm_transition(v, True)                         # SMI
            guest_access(v, (tseg + 0x10) << 12, EXEC_ACCESS)   # the SMI handler in TSEG
            kvm_smm_transition(v, False)                        # RSM
            guest_access(v, 0x10 << 12, EXEC_ACCESS)
            split_done.complete_all()
            guest_access(v, 0x40 << 12, WRITE_ACCESS)
            guest_access(v, 0x11 << 12, READ_ACCESS)
        return run

    def migration():
        split_done.wait_for_completion()
        enable_dirty_logging(kvm, ram)

    def vga_window():
        split_done.wait_for_completion()
        zap_all_fast(kvm)

    def recovery():
        split_done.wait_for_completion()
        kvm_recover_nx_huge_pages(kvm, ratio=1)

    return run_flows(kvm, vcpu_body, migration=migration, vga_window=vga_window,
                     nx_recovery=recovery)
