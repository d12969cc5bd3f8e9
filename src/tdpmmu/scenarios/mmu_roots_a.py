"""Default TDP MMU scenarios (realistic KVM flows), group roots_a."""

from __future__ import annotations

from ..mmu import READ_ACCESS, WRITE_ACCESS, guest_access, kvm_smm_transition
from ..mmu.kvm import HOST_PFN_BASE
from ..mmu.mmu import kvm_host_migrate_folio
from ..sync import Completion, spawn
from .mmu_core import MMU, build_vm, spawn_teardown, zap_all_fast
from .registry import scenario


@scenario("mmu-folio-migration-vs-smm", tags=MMU, dfs_bound=1, max_steps=60_000,
          key_branches=("last-root-put",))
def mmu_folio_migration_vs_smm(pages: int = 3):
    """The host migrates a multi-page folio of guest memory (one mmu_notifier
    invalidation, whose zap may yield, then the old pages are freed) while the vCPU
    takes an SMI and returns with RSM (each unloads its root and loads the other
    address space's) and a memslot update invalidates every root
    (kvm_mmu_zap_all_fast): roots lose their last references while walkers are
    yielded on them."""
    kvm = build_vm(1, smm=True)
    v = kvm.vcpus[0]
    gfn = 0x10
    new_pfn = HOST_PFN_BASE // 2 + gfn           # fresh host pages
    mapped = Completion("mapped")

    def vcpu():
        for g in range(gfn, gfn + pages):
            guest_access(v, g << 12, WRITE_ACCESS)
        mapped.complete_all()
        kvm_smm_transition(v, True)             # SMI: kvm_mmu_unload puts the root
        guest_access(v, (gfn + 1) << 12, WRITE_ACCESS)
        kvm_smm_transition(v, False)            # RSM
        guest_access(v, (gfn + 1) << 12, READ_ACCESS)

    def host_migrate():
        mapped.wait_for_completion()
        kvm_host_migrate_folio(kvm, 0, gfn, pages, new_pfn)

    def memslot_update():
        mapped.wait_for_completion()
        zap_all_fast(kvm)

    tasks = [spawn(v.name, vcpu), spawn("host_migrate", host_migrate),
             spawn("memslot_update", memslot_update)]
    return spawn_teardown(kvm, tasks)
