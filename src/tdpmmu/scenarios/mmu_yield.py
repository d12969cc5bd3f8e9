"""Default TDP MMU scenarios (realistic KVM flows), group yield: long walks.

The watchdogs (sync/watchdog.py) need walks long enough to matter: a guest whose
memory spans many page tables.  Mapping it fault by fault in every execution would
cost more than the race itself, so :func:`prefault_sparse` maps it during setup (the
pseudo-task ``main``: no scheduling point is a choice there), through the ordinary
fault path, one page per page table.
"""

from __future__ import annotations

from ..mmu import (READ_ACCESS, WRITE_ACCESS, guest_access, kvm_create_vcpu, kvm_create_vm,
                   kvm_set_memory_region)
from ..mmu import spte as S
from ..mmu.mmu import kvm_get_dirty_log_protect, kvm_host_remap_gfn, kvm_mmu_unload
from ..runtime.errors import UsageError
from ..sync import Completion, mutex_lock, mutex_unlock
from .mmu_core import MMU, enable_dirty_logging, run_flows, write_pages
from .registry import scenario

#: a page table's span at 4K: 512 gfns (2 MiB)
TABLE = S.SPTE_ENT_PER_PAGE


def prefault_sparse(vcpu, first_gfn: int, tables: int, offset: int = 7) -> None:
    """Setup only: the guest has read one page in each of ``tables`` 2 MiB regions from
    ``first_gfn`` (one 4K page table each).  Runs the real fault path from ``main``."""
    for t in range(tables):
        guest_access(vcpu, (first_gfn + t * TABLE + offset) << S.PAGE_SHIFT, READ_ACCESS)


@scenario("mmu-large-guest-migration", tags=MMU, dfs_bound=1, max_steps=80_000,
          key_branches=("yield-mid-walk",))
def mmu_large_guest_migration(tables: int = 16, hints: int = 2):
    """Live migration of a large, mostly idle guest: it has read a page in every 2 MiB of
    its memory (never written: the host backs those with its zero page, mapped
    read-only) and keeps writing a small working set; meanwhile its registers are
    restored (KVM_SET_SREGS: the MMU context is reset, its root put).  The VMM enables
    dirty logging (write-protection walks every page table, changing almost nothing)
    and collects the log, while the balloon discards the idle pages the guest hints as
    free (mmu_notifier invalidations under the write lock) and the vCPU keeps writing;
    then the VM is torn down (every root zapped: 4K, 2M, 1G, then top-level entries)."""
    kvm = kvm_create_vm()
    slot = kvm_set_memory_region(kvm, 0, 0, 0, tables * TABLE, S.PG_LEVEL_4K)
    v = kvm_create_vcpu(kvm)
    # the idle memory (every 2 MiB region but the first) is the host's zero page
    kvm.host_readonly_ranges.append((slot.host_pfn + TABLE, (tables - 1) * TABLE))
    prefault_sparse(v, TABLE, tables - 1)
    write_pages(v, 1, 2)                                    # the working set
    logging = Completion("logging_enabled")
    started = Completion("migration_started")

    def vcpu():
        write_pages(v, 1, 2)
        kvm_mmu_unload(v)           # KVM_SET_SREGS: kvm_mmu_reset_context puts the root
        write_pages(v, 2, 1)
        logging.wait_for_completion()
        write_pages(v, 2, 2)

    def vmm():
        started.complete_all()              # ask the guest for free page hints
        enable_dirty_logging(kvm, slot)
        logging.complete_all()
        mutex_lock(kvm.slots_lock)
        kvm_get_dirty_log_protect(kvm, slot)
        mutex_unlock(kvm.slots_lock)

    def balloon():
        # free page hinting (virtio-balloon, made for live migration): the guest reports
        # idle pages, the VMM discards them (MADV_DONTNEED: an mmu_notifier invalidation;
        # a later access would get a fresh page)
        started.wait_for_completion()
        for k in range(1, 1 + hints):
            gfn = k * TABLE + 7
            kvm_host_remap_gfn(kvm, 0, gfn, slot.gfn_to_pfn(gfn) + (1 << 20))

    return run_flows(kvm, lambda _v: vcpu, vmm=vmm, balloon=balloon)



@scenario("mmu-migration-end-vs-access", tags=MMU, dfs_bound=1, max_steps=80_000,
          key_branches=("huge-page-recovered", "yield-mid-walk"),
          variants=({"discarded": 1},))
def mmu_migration_end_vs_access(regions: int = 3, vcpus: int = 2, discarded: int = 0):
    """The end (or the cancellation) of a live migration on 2M-backed memory: dirty
    logging has the guest mapped at 4K, and the VMM turns it off, so KVM recovers the
    huge pages in place (kvm_mmu_recover_huge_pages under the read lock, one page table
    at a time, flushing before it yields and at the end) while the vCPUs keep running:
    in every 2 MiB region each reads a page it has not touched yet (a TLB miss: the walk
    starts from the paging-structure cache its earlier walks filled) and writes again
    one it had.  ``discarded``: in that many regions the host took a page away during
    the migration (free page hinting: the VMM discarded a page the guest reported free,
    splitting the host's huge page), so those regions are no longer backed by one 2M
    host page and must stay mapped at 4K."""
    from ..mmu.kvm import KVM_MEM_LOG_DIRTY_PAGES
    if not 0 <= discarded <= regions:
        raise UsageError(f"discarded={discarded}: must be between 0 and regions={regions}")
    kvm = kvm_create_vm()
    kvm_set_memory_region(kvm, 0, 0, 0, regions * TABLE, S.PG_LEVEL_2M,
                          flags=KVM_MEM_LOG_DIRTY_PAGES)
    slot = kvm.memslots[0][0]
    for _ in range(vcpus):
        kvm_create_vcpu(kvm)
    for v in kvm.vcpus:                     # migrated so far: written at 4K (logging on)
        for r in range(regions):
            guest_access(v, (r * TABLE + 16 * v.vcpu_id) << S.PAGE_SHIFT, WRITE_ACCESS)
    for r in range(discarded):              # the page vCPU 0 reads next, a fresh one now
        gfn = r * TABLE + 1
        kvm_host_remap_gfn(kvm, 0, gfn, slot.gfn_to_pfn(gfn) + (1 << 20))

    def vcpu_body(v):
        def run():
            for r in range(regions):
                gfn = r * TABLE + 16 * v.vcpu_id
                guest_access(v, (gfn + 1) << S.PAGE_SHIFT, READ_ACCESS)
                guest_access(v, gfn << S.PAGE_SHIFT, WRITE_ACCESS)
        return run

    def vmm():
        enable_dirty_logging(kvm, slot, False)   # huge pages recovered in place

    return run_flows(kvm, vcpu_body, vmm=vmm)
