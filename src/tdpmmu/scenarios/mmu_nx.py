"""Default TDP MMU scenarios (realistic KVM flows), group nx."""

from __future__ import annotations

from ..mmu import EXEC_ACCESS, WRITE_ACCESS, guest_access, kvm_create_vcpu, kvm_create_vm
from ..mmu import kvm_set_memory_region, kvm_smm_transition
from ..mmu import spte as S
from ..mmu.kvm import KVM_MEM_LOG_DIRTY_PAGES
from ..sync import Completion
from .mmu_core import MMU, run_flows, zap_all_fast
from .registry import scenario

#: gfn of the emulated VGA's framebuffer memslot (QEMU logs it for display updates)
VRAM_GFN = 0xfd000


@scenario("mmu-nx-recovery-smm", tags=MMU, dfs_bound=1, max_steps=60_000,
          key_branches=("nx-zap-parent-changed",))
def mmu_nx_recovery_smm(ram_2m: int = 2, handlers: int = 3):
    """A VM with SMM (OVMF-style firmware: TSEG right above low RAM, mapped only by the
    SMM address space), an emulated VGA (its framebuffer slot is dirty-logged for
    display updates) and the NX huge page mitigation on.  The vCPU takes an SMI and runs
    handler code from ``handlers`` 2M regions of TSEG, resumes and runs code from
    ``ram_2m`` 2M regions of RAM: possible NX huge pages in both roots.  The NX recovery
    thread zaps them under the read lock while the guest reprograms the legacy
    VGA/SMRAM window (a memslot update: kvm_mmu_zap_all_fast zaps every root under the
    read lock) and writes RAM."""
    from ..mmu.mmu import kvm_recover_nx_huge_pages
    kvm = kvm_create_vm(nx_huge_pages=True)
    tseg = 0x200 * ram_2m
    kvm_set_memory_region(kvm, 0, 0, 0, tseg, S.PG_LEVEL_2M)                # normal: RAM
    vram = kvm_set_memory_region(kvm, 0, 1, VRAM_GFN, 16, flags=KVM_MEM_LOG_DIRTY_PAGES)
    vram.dirty_bitmap, vram.logging_active = vram.alloc_dirty_bitmap(), True
    kvm_set_memory_region(kvm, 1, 0, 0, tseg + 0x200 * handlers, S.PG_LEVEL_2M)  # RAM+TSEG
    kvm_create_vcpu(kvm)
    split_done = Completion("nx_split_done")

    def vcpu_body(v):
        def run():
            kvm_smm_transition(v, True)                         # SMI
            for h in range(handlers):                           # the SMI handler in TSEG
                guest_access(v, (tseg + 0x200 * h + 0x10) << 12, EXEC_ACCESS)
            kvm_smm_transition(v, False)                        # RSM
            for r in range(ram_2m):
                guest_access(v, (0x200 * r + 0x10) << 12, EXEC_ACCESS)
            split_done.complete_all()
            guest_access(v, 0x40 << 12, WRITE_ACCESS)
        return run

    def vga_window():
        split_done.wait_for_completion()
        zap_all_fast(kvm)

    def recovery():
        split_done.wait_for_completion()
        kvm_recover_nx_huge_pages(kvm, ratio=1)

    return run_flows(kvm, vcpu_body, vga_window=vga_window, nx_recovery=recovery)
