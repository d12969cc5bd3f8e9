"""Concurrent scenarios over the TDP MMU core (faults, roots, zaps, teardown).

Each scenario builds a VM (``kvm_create_vm``), its memslots and vCPUs, spawns tasks that
run real KVM flows, and ends with VM teardown plus the checks the kernel makes there
(no root, no page table, no pending RCU callback, no leaked allocation).
"""

from __future__ import annotations

from ..mmu import (EXEC_ACCESS, READ_ACCESS, WRITE_ACCESS, guest_access, kvm_create_vcpu, kvm_create_vm,
                   kvm_destroy_vm, kvm_mmu_zap_all_fast, kvm_set_memory_region,
                   kvm_smm_transition, kvm_zap_gfn_range)
from ..mmu import spte as S
from ..mmu.kvm import KVM_DIRTY_LOG_INITIALLY_SET, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
from ..mmu.mmu import kvm_set_memslot_dirty_logging
from ..mmu.oracles import check_mmu_structure
from ..runtime.errors import InvariantViolation, UsageError
from ..sync import (Completion, assert_no_leaks, join, mutex_lock, mutex_unlock, rcu_pending_callbacks,
                    spawn)
from .registry import register_defect, scenario

MMU = ("mmu",)


def build_vm(vcpus: int, npages: int = 1024, backing_level: int = S.PG_LEVEL_4K,
             smm: bool = False, **kw):
    """A VM with one memslot per address space (the SMM one only with ``smm``)."""
    if vcpus < 0:
        raise UsageError(f"vcpus={vcpus}: a VM has zero or more vCPUs")
    kvm = kvm_create_vm(**kw)
    kvm_set_memory_region(kvm, 0, 0, 0, npages, backing_level)
    if smm:
        kvm_set_memory_region(kvm, 1, 0, 0, npages, backing_level)
    for _ in range(vcpus):
        kvm_create_vcpu(kvm)
    return kvm


def spawn_teardown(kvm, tasks):
    """A ``vm_teardown`` task: waits for ``tasks`` (the VMM closing the VM once its
    threads are gone), then kvm_destroy_vm.  Returns the final check."""
    def teardown():
        for t in tasks:
            join(t)
        check_mmu_structure(kvm, "when the VM's threads are gone")
        kvm_destroy_vm(kvm)
        # kvm_arch_destroy_vm is done and struct kvm is about to be freed: checked in the
        # same step (at the end of the execution the grace-period thread has run them)
        check_rcu_drained("still pending when kvm_destroy_vm returned: page tables of the "
                          "VM would be freed after the VM")
    spawn("vm_teardown", teardown)
    return lambda: teardown_check(kvm)


def memslot_deleter(kvm, slot):
    """The VMM's flow deleting ``slot`` (KVM_SET_USER_MEMORY_REGION with size 0)."""
    from ..mmu.mmu import kvm_delete_memslot

    def delete():
        mutex_lock(kvm.slots_lock)
        kvm_delete_memslot(kvm, slot)
        mutex_unlock(kvm.slots_lock)
    return delete


def run_flows(kvm, vcpu_body, **others):
    """Spawn one task per vCPU running ``vcpu_body(vcpu)`` and one per keyword (name ->
    function), then the VM teardown after all of them.  Returns the final check."""
    tasks = [spawn(v.name, vcpu_body(v)) for v in kvm.vcpus]
    tasks += [spawn(name, fn) for name, fn in others.items()]
    return spawn_teardown(kvm, tasks)


def check_rcu_drained(when: str) -> None:
    """No RCU callback may be pending (``when``: what the count is reported as)."""
    if rcu_pending_callbacks():
        raise InvariantViolation(f"{rcu_pending_callbacks()} RCU callback(s) {when}")


def teardown_check(kvm) -> None:
    """The kernel's end-of-life expectations, after kvm_destroy_vm."""
    if kvm.arch.tdp_mmu_roots.peek_all():
        raise InvariantViolation("roots left after VM teardown: "
                                 + ", ".join(r.name for r in kvm.arch.tdp_mmu_roots.peek_all()))
    check_rcu_drained("pending after VM teardown")
    for level, n in ((1, kvm.stat.pages_4k), (2, kvm.stat.pages_2m), (3, kvm.stat.pages_1g)):
        if n:
            raise InvariantViolation(f"pages_{S.level_name(level).lower()} = {n} after teardown")
    assert_no_leaks("after VM teardown")


def write_pages(v, first_gfn: int, count: int) -> None:
    """The guest writes ``count`` consecutive pages from ``first_gfn``."""
    for g in range(first_gfn, first_gfn + count):
        guest_access(v, g << 12, WRITE_ACCESS)


def zap_all_fast(kvm) -> None:
    """A memslot update's fast zap (the caller holds slots_lock)."""
    mutex_lock(kvm.slots_lock)
    kvm_mmu_zap_all_fast(kvm)
    mutex_unlock(kvm.slots_lock)


def enable_dirty_logging(kvm, slot, enable: bool = True) -> None:
    """KVM_SET_USER_MEMORY_REGION toggling KVM_MEM_LOG_DIRTY_PAGES (under slots_lock)."""
    mutex_lock(kvm.slots_lock)
    kvm_set_memslot_dirty_logging(kvm, slot, enable)
    mutex_unlock(kvm.slots_lock)


@scenario("mmu-faults-vs-zap-all-fast", tags=MMU, dfs_bound=1, max_steps=60_000,
          key_branches=("fault-retry", "last-root-put"))
def mmu_faults_vs_zap_all_fast(vcpus: int = 2, accesses: int = 2, smm: bool = False,
                               updates: int = 1):
    """vCPUs fault in the same and different GFNs while a memslot update runs
    kvm_mmu_zap_all_fast (invalidate all roots, zap them under the read lock); then
    the VM is torn down.  ``updates``: memslot updates in a row (a vCPU may still hold
    a root the previous one invalidated)."""
    kvm = build_vm(vcpus, smm=smm)

    def vcpu_body(v):
        def run():
            for k in range(accesses):
                gfn = k if v.vcpu_id % 2 == 0 else (k * 3) % 8    # overlap on gfn 0
                guest_access(v, gfn << 12, WRITE_ACCESS if k % 2 else READ_ACCESS)
            if smm and v.vcpu_id == 0:
                kvm_smm_transition(v, True)
                guest_access(v, 0x1000, READ_ACCESS)
        return run

    def memslot_update():
        for _ in range(updates):
            zap_all_fast(kvm)

    return run_flows(kvm, vcpu_body, memslot_update=memslot_update)


@scenario("mmu-smm-teardown", tags=MMU, dfs_bound=1, max_steps=60_000,
          key_branches=("last-root-put",))
def mmu_smm_teardown(vcpus: int = 2):
    """vCPUs run in normal mode and in SMM (roots in both address spaces); a fast zap
    invalidates them all; teardown must leave no root in either address space."""
    kvm = build_vm(vcpus, smm=True)

    def vcpu_body(v):
        def run():
            guest_access(v, 0, READ_ACCESS)
            kvm_smm_transition(v, True)
            guest_access(v, 0x2000, WRITE_ACCESS)
            if v.vcpu_id == 0:
                kvm_smm_transition(v, False)
                guest_access(v, 0x3000, READ_ACCESS)
        return run

    return run_flows(kvm, vcpu_body, memslot_update=lambda: zap_all_fast(kvm))


@scenario("mmu-fault-vs-zap-range", tags=MMU, dfs_bound=2, max_steps=60_000,
          key_branches=("fault-retry",), variants=({"backing": 2},))
def mmu_fault_vs_zap_range(vcpus: int = 1, backing: int = 1, host_maxphyaddr: int = 52,
                           mmio_gpa: int = -1):
    """A vCPU faults and accesses a page while kvm_zap_gfn_range zaps (and flushes) the
    range under the write lock; backing=2 maps with 2M pages.  ``host_maxphyaddr``: the
    host's MAXPHYADDR; ``mmio_gpa`` >= 0: the guest then probes that (unbacked) address,
    as a nested guest misled about MAXPHYADDR may."""
    kvm = build_vm(vcpus, backing_level=backing, host_maxphyaddr=host_maxphyaddr)

    def vcpu_body(v):
        def run():
            guest_access(v, 0x3000, WRITE_ACCESS)
            guest_access(v, 0x3000, READ_ACCESS)
            if mmio_gpa >= 0:
                guest_access(v, mmio_gpa, READ_ACCESS)
        return run

    return run_flows(kvm, vcpu_body, zapper=lambda: kvm_zap_gfn_range(kvm, 0, 512))


@scenario("mmu-nx-recovery-vs-fault", tags=MMU, dfs_bound=2, max_steps=60_000,
          key_branches=("rcu-gp-waited-for-reader",))
def mmu_nx_recovery_vs_fault(vcpus: int = 2):
    """With the NX huge page mitigation on and 2M backing, an instruction fetch makes
    KVM map 4K pages under a page table it tracks as a possible NX huge page; the
    recovery worker zaps that table (read lock, cmpxchg of its parent) while another
    vCPU faults and walks into it."""
    from ..mmu.mmu import kvm_recover_nx_huge_pages
    kvm = build_vm(vcpus, backing_level=S.PG_LEVEL_2M, nx_huge_pages=True)
    split_done = Completion("nx_split_done")

    def first_vcpu():
        v = kvm.vcpus[0]
        guest_access(v, 0x0000, EXEC_ACCESS)
        split_done.complete_all()
        guest_access(v, 0x1000, READ_ACCESS)

    def other_vcpu(v):
        def run():
            split_done.wait_for_completion()
            guest_access(v, 0x2000, WRITE_ACCESS)
            guest_access(v, 0x3000, READ_ACCESS)
        return run

    def recovery():
        split_done.wait_for_completion()
        kvm_recover_nx_huge_pages(kvm, ratio=1)

    tasks = [spawn(kvm.vcpus[0].name, first_vcpu)]
    tasks += [spawn(v.name, other_vcpu(v)) for v in kvm.vcpus[1:]]
    tasks.append(spawn("nx_recovery", recovery))
    return spawn_teardown(kvm, tasks)


@scenario("mmu-root-alloc-race", tags=MMU, dfs_bound=2, max_steps=60_000,
          key_branches=())
def mmu_root_alloc_race(vcpus: int = 3):
    """Several vCPUs load their first root at once (kvm_tdp_mmu_alloc_root: the yield-safe
    lookup under the read lock, then the re-check under tdp_mmu_pages_lock); one of them
    in SMM.  They must end up sharing one root per address space."""
    kvm = build_vm(vcpus, smm=True)

    def vcpu_body(v):
        def run():
            if v.vcpu_id == vcpus - 1:
                kvm_smm_transition(v, True)
            guest_access(v, (v.vcpu_id + 1) << 12, READ_ACCESS)
        return run

    tasks = [spawn(v.name, vcpu_body(v)) for v in kvm.vcpus]

    vcpu_tasks = list(tasks)

    def shared_roots():
        for t in vcpu_tasks:
            join(t)
        by_as = {}
        for v in kvm.vcpus:
            by_as.setdefault(v.as_id, set()).add(v.root)
        for as_id, roots in by_as.items():
            if len(roots) != 1:
                raise InvariantViolation(f"{len(roots)} roots for address space {as_id}: "
                                         f"vCPUs did not share their root")
    tasks.append(spawn("check_roots", shared_roots))
    return spawn_teardown(kvm, tasks)


@scenario("mmu-link-race", tags=MMU, dfs_bound=2, max_steps=60_000,
          key_branches=("cmpxchg-lost",))
def mmu_link_race(vcpus: int = 2, gfn: int = 5):
    """Two vCPUs fault the same GFN at once: both walk to the same missing page tables
    and race to link them (and the leaf) with cmpxchg; the loser frees its unused page
    and retries."""
    kvm = build_vm(vcpus)
    pfns = {}

    def vcpu_body(v):
        def run():
            pfns[v.name] = guest_access(v, gfn << 12, WRITE_ACCESS)
        return run

    tasks = [spawn(v.name, vcpu_body(v)) for v in kvm.vcpus]

    vcpu_tasks = list(tasks)

    def same():
        for t in vcpu_tasks:
            join(t)
        if len(set(pfns.values())) != 1:
            raise InvariantViolation(f"vCPUs reached different pfns for gfn {gfn:#x}: {pfns}")
    tasks.append(spawn("check_pfn", same))
    return spawn_teardown(kvm, tasks)


@scenario("mmu-huge-vs-4k", tags=MMU, dfs_bound=2, max_steps=60_000,
          key_branches=("cmpxchg-lost",))
def mmu_huge_vs_4k(vcpus: int = 2):
    """With 2M backing and the NX huge page mitigation on, one vCPU reads (a 2M mapping)
    while another fetches an instruction in the same 2M region (only 4K may be
    executable, so KVM links a 4K table or splits the huge page)."""
    kvm = build_vm(vcpus, backing_level=S.PG_LEVEL_2M, nx_huge_pages=True)

    def reader():
        v = kvm.vcpus[0]
        guest_access(v, 0x3000, READ_ACCESS)
        guest_access(v, 0x4000, WRITE_ACCESS)

    def fetcher(v):
        def run():
            guest_access(v, 0x7000, EXEC_ACCESS)
        return run

    tasks = [spawn(kvm.vcpus[0].name, reader)]
    tasks += [spawn(v.name, fetcher(v)) for v in kvm.vcpus[1:]]
    return spawn_teardown(kvm, tasks)


@scenario("mmu-zap-range-yield", tags=MMU, dfs_bound=2, max_steps=60_000,
          key_branches=("yield-mid-walk",))
def mmu_zap_range_yield(pages: int = 3):
    """A vCPU maps a few pages and keeps using them from its TLB while kvm_zap_gfn_range
    zaps them under the write lock, yielding in the middle of the walk (a pending TLB
    flush must happen before the lock is dropped)."""
    kvm = build_vm(1)
    v = kvm.vcpus[0]
    mapped = Completion("mapped")

    def vcpu():
        for g in range(pages):
            guest_access(v, g << 12, WRITE_ACCESS)
        mapped.complete_all()
        for g in range(pages):
            guest_access(v, g << 12, READ_ACCESS)

    def zapper():
        mapped.wait_for_completion()
        kvm_zap_gfn_range(kvm, 0, 512)

    tasks = [spawn(v.name, vcpu), spawn("zapper", zapper)]
    return spawn_teardown(kvm, tasks)


@scenario("mmu-zap-leafs-vs-invalidate", tags=MMU, dfs_bound=1, max_steps=60_000,
          key_branches=("yield-mid-walk",))
def mmu_zap_leafs_vs_invalidate(pages: int = 2):
    """A range zap walks the roots with the yield-safe iterator and yields mid-walk while
    a memslot update invalidates every root (kvm_mmu_zap_all_fast); a vCPU keeps
    faulting meanwhile."""
    kvm = build_vm(1)
    v = kvm.vcpus[0]
    mapped = Completion("mapped")

    def vcpu():
        for g in range(pages):
            guest_access(v, g << 12, WRITE_ACCESS)
        mapped.complete_all()
        guest_access(v, 0x10000, READ_ACCESS)

    def zapper():
        mapped.wait_for_completion()
        kvm_zap_gfn_range(kvm, 0, 1024)

    def memslot_update():
        mapped.wait_for_completion()
        zap_all_fast(kvm)

    tasks = [spawn(v.name, vcpu), spawn("zapper", zapper), spawn("memslot_update", memslot_update)]
    return spawn_teardown(kvm, tasks)


@scenario("mmu-unload-vs-root-walk", tags=MMU, dfs_bound=1, max_steps=60_000,
          key_branches=("last-root-put",))
def mmu_unload_vs_root_walk():
    """After a fast zap, the vCPU's put of its invalidated root is the last reference
    (list_del_rcu + call_rcu) while another task walks the root list (a range zap's
    yield-safe walk)."""
    kvm = build_vm(1, smm=True)
    v = kvm.vcpus[0]
    mapped = Completion("mapped")

    def vcpu():
        guest_access(v, 0x1000, WRITE_ACCESS)
        mapped.complete_all()
        kvm_smm_transition(v, True)         # kvm_mmu_unload: puts the root
        guest_access(v, 0x2000, READ_ACCESS)

    def memslot_update():
        mapped.wait_for_completion()
        zap_all_fast(kvm)

    def walker():
        mapped.wait_for_completion()
        kvm_zap_gfn_range(kvm, 0x100, 0x200)

    tasks = [spawn(v.name, vcpu), spawn("memslot_update", memslot_update),
             spawn("walker", walker)]
    return spawn_teardown(kvm, tasks)


@scenario("mmu-both-as-vs-zap-range", tags=MMU, dfs_bound=1, max_steps=60_000,
          key_branches=("fault-retry",))
def mmu_both_as_vs_zap_range(vcpus: int = 2):
    """vCPUs fault in both address spaces (normal and SMM) while kvm_zap_gfn_range (an
    MTRR / APICv-inhibit style zap, with vCPUs running; again once vcpu0 is in SMM) zaps
    the range in every root of every address space, then flushes.  (kvm_mmu_zap_all is
    not raced with vCPUs here:
    it runs only once no vCPU can run again, and skips the flush for that reason.)"""
    kvm = build_vm(vcpus, smm=True)
    in_smm = Completion("smm_mapped")

    def vcpu_body(v):
        def run():
            guest_access(v, 0x1000 * (v.vcpu_id + 1), WRITE_ACCESS)
            kvm_smm_transition(v, True)
            guest_access(v, 0x1000 * (v.vcpu_id + 3), WRITE_ACCESS)
            if v.vcpu_id == 0:
                in_smm.complete_all()
            guest_access(v, 0x1000 * (v.vcpu_id + 3), READ_ACCESS)    # from its TLB
            guest_access(v, 0x1000 * (v.vcpu_id + 1), READ_ACCESS)
        return run

    def zapper():
        kvm_zap_gfn_range(kvm, 0, 1024)
        in_smm.wait_for_completion()            # another MTRR update, once vcpu0 is in SMM
        kvm_zap_gfn_range(kvm, 0, 1024)

    return run_flows(kvm, vcpu_body, zapper=zapper)


@scenario("mmu-two-zappers", tags=MMU, dfs_bound=1, max_steps=60_000,
          key_branches=("yield-mid-walk",))
def mmu_two_zappers():
    """Two range zaps over overlapping ranges (each yielding on the same roots) while a
    vCPU re-faults the pages."""
    kvm = build_vm(1)
    v = kvm.vcpus[0]
    mapped = Completion("mapped")

    def vcpu():
        for g in (1, 2, 600):
            guest_access(v, g << 12, WRITE_ACCESS)
        mapped.complete_all()
        guest_access(v, 2 << 12, READ_ACCESS)

    def zapper(start, end):
        def run():
            mapped.wait_for_completion()
            kvm_zap_gfn_range(kvm, start, end)
        return run

    tasks = [spawn(v.name, vcpu), spawn("zapper0", zapper(0, 700)),
             spawn("zapper1", zapper(2, 1024))]
    return spawn_teardown(kvm, tasks)

@scenario("mmu-dirty-clear-vs-zap", tags=MMU, dfs_bound=2, max_steps=60_000,
          key_branches=())
def mmu_dirty_clear_vs_zap():
    """A dirty-log pass clears the Dirty bits of a memslot (cmpxchg under the read lock,
    then a flush) while the vCPU keeps writing (the CPU sets D again with a locked RMW)
    and kvm_zap_gfn_range zaps the page under the write lock: a writable, clean SPTE is
    volatile, so the zap must use xchg."""
    from ..mmu.mmu import kvm_mmu_slot_leaf_clear_dirty
    kvm = build_vm(1)
    v = kvm.vcpus[0]
    slot = kvm.memslots[0][0]
    mapped = Completion("mapped")
    cleared = Completion("dirty_log_cleared")

    def vcpu():
        guest_access(v, 0x2000, WRITE_ACCESS)
        mapped.complete_all()
        cleared.wait_for_completion()
        for _ in range(6):
            guest_access(v, 0x2000, WRITE_ACCESS)

    def dirty_log():
        mapped.wait_for_completion()
        kvm_mmu_slot_leaf_clear_dirty(kvm, slot)
        cleared.complete_all()
        kvm_mmu_slot_leaf_clear_dirty(kvm, slot)    # more collection passes
        kvm_mmu_slot_leaf_clear_dirty(kvm, slot)

    def zapper():
        cleared.wait_for_completion()
        kvm_zap_gfn_range(kvm, 0, 16)

    tasks = [spawn(v.name, vcpu), spawn("dirty_log", dirty_log), spawn("zapper", zapper)]
    return spawn_teardown(kvm, tasks)

@scenario("mmu-notifier-remap-vs-fault", tags=MMU, dfs_bound=2, max_steps=60_000,
          key_branches=("fault-retry",),
          variants=({"memslot_update": True}, {"two_slots": True}))
def mmu_notifier_remap_vs_fault(vcpus: int = 2, seq_start: int = 0,
                                memslot_update: bool = False, two_slots: bool = False):
    """The host migrates the page backing a GFN (mmu_notifier invalidate_range_start:
    zap + flush; remap; invalidate_range_end: bump mmu_invalidate_seq) while vCPUs
    write-fault that GFN: a fault that resolved the old pfn must retry.  ``seq_start``:
    the invalidations the VM has already seen (mmu_invalidate_seq at creation).
    ``memslot_update``: meanwhile the VMM adds a memslot (its installation waits for
    the invalidation in flight).  ``two_slots``: the guest's RAM is one host block
    mapped by two adjacent memslots (QEMU's split around the PCI hole) and the host
    migrates a two-page folio across their boundary; the GFN is the first slot's last
    page (one invalidation, one range per memslot)."""
    from ..mmu.mmu import kvm_host_migrate_folio, kvm_host_remap_gfn
    from ..mmu.kvm import HOST_PFN_BASE
    if two_slots:
        kvm = build_vm(vcpus, npages=512, mmu_invalidate_seq=seq_start)
        kvm_set_memory_region(kvm, 0, 1, 512, 512, S.PG_LEVEL_4K)
        gfn = 511
    else:
        kvm = build_vm(vcpus, mmu_invalidate_seq=seq_start)
        gfn = 9
    new_pfn = HOST_PFN_BASE // 2 + gfn           # a fresh host page
    pfns = {}

    def vcpu_body(v):
        def run():
            pfns[v.name] = guest_access(v, gfn << 12, WRITE_ACCESS)
        return run

    if two_slots:
        others = {"host_migrate": lambda: kvm_host_migrate_folio(kvm, 0, gfn, 2, new_pfn)}
    else:
        others = {"host_migrate": lambda: kvm_host_remap_gfn(kvm, 0, gfn, new_pfn)}
    if memslot_update:
        def vmm():
            from ..mmu.mmu import kvm_create_memslot
            mutex_lock(kvm.slots_lock)
            kvm_create_memslot(kvm, 0, 2 if two_slots else 1, 2048, 16)
            mutex_unlock(kvm.slots_lock)
        others["vmm"] = vmm
    return run_flows(kvm, vcpu_body, **others)

@scenario("mmu-fast-pf-vs-zap", tags=MMU, dfs_bound=2, max_steps=60_000,
          key_branches=("fast-pf-made-writable",))
def mmu_fast_pf_vs_zap(pages: int = 2):
    """Dirty logging is enabled (the slot is write-protected, MMU-writable kept); the
    vCPU's next writes are fixed by the lockless fast page fault (cmpxchg under RCU only)
    while kvm_zap_gfn_range zaps the same pages under the write lock."""
    kvm = build_vm(1)
    v = kvm.vcpus[0]
    slot = kvm.memslots[0][0]
    mapped = Completion("mapped")
    protected = Completion("write_protected")

    def vcpu():
        write_pages(v, 4, pages)
        mapped.complete_all()
        protected.wait_for_completion()
        write_pages(v, 4, pages)

    def dirty_log_enable():
        mapped.wait_for_completion()
        enable_dirty_logging(kvm, slot)
        protected.complete_all()

    def zapper():
        protected.wait_for_completion()
        kvm_zap_gfn_range(kvm, 4, 4 + pages)

    return run_flows(kvm, lambda _v: vcpu, dirty_log=dirty_log_enable, zapper=zapper)


@scenario("mmu-fast-pf-vs-write-track", tags=MMU, dfs_bound=2, max_steps=60_000,
          key_branches=())
def mmu_fast_pf_vs_write_track():
    """A page is write-tracked (W and MMU-writable cleared under the write lock, then a
    flush) while the slot is also write-protected for dirty logging; the vCPU's writes to
    it must be emulated, never fixed by the fast path."""
    from ..mmu.mmu import kvm_slot_page_track_add_page
    kvm = build_vm(1)
    v = kvm.vcpus[0]
    slot = kvm.memslots[0][0]
    mapped = Completion("mapped")

    def vcpu():
        guest_access(v, 6 << 12, WRITE_ACCESS)
        mapped.complete_all()
        guest_access(v, 6 << 12, WRITE_ACCESS)
        guest_access(v, 6 << 12, WRITE_ACCESS)

    def tracker():
        mapped.wait_for_completion()
        kvm_slot_page_track_add_page(kvm, slot, 6)

    def dirty_log_enable():
        mapped.wait_for_completion()
        enable_dirty_logging(kvm, slot)

    return run_flows(kvm, lambda _v: vcpu, write_tracker=tracker, dirty_log=dirty_log_enable)

@scenario("mmu-dirty-log-vs-writes", tags=MMU, dfs_bound=1, max_steps=80_000,
          key_branches=("fast-pf-made-writable",),
          variants=({"mode": "clear-log"}, {"pml": True, "nested": True},
                    {"backing": 2, "fresh": True}, {"ad_bits": False, "reclaim": True},
                    {"pml": True, "nested": True, "l2_running": True},
                    {"backing": 2, "eager_split": False}))
def mmu_dirty_log_vs_writes(pages: int = 3, rounds: int = 2, mode: str = "dirty-log",
                            pml: bool = False, nested: bool = False, backing: int = 1,
                            fresh: bool = False, ad_bits: bool = True,
                            reclaim: bool = False, l2_running: bool = False,
                            eager_split: bool = True):
    """dirty_log_test's invariant: a vCPU keeps writing pages while the VMM enables dirty
    logging (write-protect) and collects the log repeatedly -- ``mode`` "dirty-log"
    (GET_DIRTY_LOG takes the bitmap, re-protects and flushes) or "clear-log" (manual
    protect: GET is a snapshot, CLEAR_DIRTY_LOG clears and re-protects).  Every write must
    show up in a collection.  ``pml``: the CPU logs writes that set D bits (KVM clears D
    instead of W); ``nested``: once logging is on, L1 (without EPT) enters L2, which
    keeps writing the same pages through its own TDP root (PML is off for L2);
    ``l2_running`` (with ``nested``): L1 has already entered L2, which has written the
    pages, when migration starts -- logging is enabled with L2's root loaded and mapped;
    ``backing``: the host page size (2: the slot is backed by 2M pages, e.g. THP);
    ``eager_split``: the eager_page_split module parameter (False: kernels before v5.19,
    or hosts that turn it off -- enabling logging write-protects the huge pages, and
    writes split them);
    ``fresh``: each round also writes pages never touched before, in the slot's second
    half (dirty_log_test's guest writes random pages: most are first touched while the
    log is on); ``ad_bits``: EPT with A/D bits (False: aging access-tracks SPTEs);
    ``reclaim``: host page reclaim ages the pages the guest wrote (MMU-notifier
    clear_young, lockless and without a TLB flush) while migration starts -- an SPTE it
    access-tracked is already not writable when dirty logging write-protects it, but the
    vCPU's TLB may still hold it writable."""
    from ..mmu.hw import kvm_nested_transition
    from ..mmu.mmu import (kvm_clear_dirty_log, kvm_get_dirty_log_manual,
                           kvm_get_dirty_log_protect, kvm_mmu_notifier_clear_young)
    if mode not in ("dirty-log", "clear-log"):
        raise UsageError(f"parameter mode={mode!r}: expected dirty-log or clear-log")
    if l2_running and not nested:
        raise UsageError("parameter l2_running=true needs nested=true")
    kvm = build_vm(1, backing_level=backing, masks=S.EPT if ad_bits else S.EPT_NO_AD)
    kvm.enable_pml = pml
    kvm.eager_page_split = eager_split
    if mode == "clear-log":
        kvm.manual_dirty_log_protect = (KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
                                        | KVM_DIRTY_LOG_INITIALLY_SET)
    v = kvm.vcpus[0]
    slot = kvm.memslots[0][0]
    started = Completion("logging_enabled")
    finished = Completion("vcpu_stopped")
    populated = Completion("guest_populated")

    def vcpu():
        write_pages(v, 1, pages)
        if l2_running:
            kvm_nested_transition(v, True)      # VMLAUNCH of L2, before migration
            write_pages(v, 1, pages)
        if reclaim or l2_running:
            populated.complete_all()
        started.wait_for_completion()
        if nested:
            kvm_nested_transition(v, True)      # VMLAUNCH of L2 (no-op if it runs)
        for r in range(rounds):
            write_pages(v, 1, pages)
            if fresh:
                write_pages(v, 512 + r * pages, pages)
        if nested:
            kvm_nested_transition(v, False)
        finished.complete_all()

    def harvest():
        mutex_lock(kvm.slots_lock)
        if mode == "dirty-log":
            kvm_get_dirty_log_protect(kvm, slot)
        else:
            kvm_clear_dirty_log(kvm, slot, kvm_get_dirty_log_manual(kvm, slot))
        mutex_unlock(kvm.slots_lock)

    def vmm():
        if reclaim or l2_running:
            populated.wait_for_completion()     # migration starts once the guest has run
        enable_dirty_logging(kvm, slot)
        started.complete_all()
        for _ in range(rounds):
            harvest()
        finished.wait_for_completion()     # the test stops the vCPU, then collects once more
        harvest()

    def reclaimer():
        populated.wait_for_completion()
        for g in range(1, 1 + pages):      # folio by folio, as folio_referenced() does
            kvm_mmu_notifier_clear_young(kvm, g, g + 1)

    flows = {"reclaim": reclaimer} if reclaim else {}
    return run_flows(kvm, lambda _v: vcpu, vmm=vmm, **flows)

@scenario("mmu-memslot-delete-vs-faults", tags=MMU, dfs_bound=1, max_steps=80_000,
          key_branches=("fault-retry",))
def mmu_memslot_delete_vs_faults(vcpus: int = 2):
    """set_memory_region_test's delete-while-running: vCPUs keep touching a memslot while
    the VMM deletes it (INVALID + synchronize_srcu, kvm_mmu_zap_all_fast, remove +
    synchronize_srcu).  Once the delete returned the host reuses the memory: no access may
    reach it (afterwards the gfns are MMIO: accesses are emulated)."""
    kvm = build_vm(vcpus, npages=512)
    victim = kvm_set_memory_region(kvm, 0, 1, 512, 512, S.PG_LEVEL_4K)

    def vcpu_body(v):
        def run():
            for k in range(3):
                guest_access(v, (512 + v.vcpu_id + 2 * k) << 12, WRITE_ACCESS)
                guest_access(v, (v.vcpu_id + 1) << 12, READ_ACCESS)
        return run

    return run_flows(kvm, vcpu_body, vmm_delete=memslot_deleter(kvm, victim))

@scenario("mmu-aging-vs-access", tags=MMU, dfs_bound=2, max_steps=60_000,
          variants=({"ad_bits": False},))
def mmu_aging_vs_access(vcpus: int = 2, ad_bits: bool = True):
    """Host page reclaim ages guest memory (MMU-notifier clear_young / test_young, lockless
    under RCU since v6.15) while vCPUs access it -- one through a 2M leaf in the normal
    address space, one through 4K leaves in SMM -- and, once the SMM vCPU has written
    its first page, a range zap removes the SMM pages it uses.  Reclaim ages folio by
    folio, as folio_referenced() does.  Every page a hardware walk marked accessed since
    the last age must be reported young (the Accessed-bit oracle).  ``ad_bits=False``:
    EPT without A/D bits, where aging marks SPTEs access-tracked and the guest's next
    access takes a fast page fault."""
    from ..mmu.mmu import kvm_mmu_notifier_clear_young, kvm_mmu_notifier_test_young
    kvm = kvm_create_vm(masks=S.EPT if ad_bits else S.EPT_NO_AD)
    kvm_set_memory_region(kvm, 0, 0, 0, 1024, S.PG_LEVEL_2M)
    kvm_set_memory_region(kvm, 1, 0, 1024, 1024, S.PG_LEVEL_4K)
    for _ in range(vcpus):
        kvm_create_vcpu(kvm)

    touched = [Completion(f"touched{v.vcpu_id}") for v in kvm.vcpus]

    def vcpu_body(v):
        def run():
            if v.vcpu_id % 2:
                kvm_smm_transition(v, True)
                guest_access(v, 0x420 << 12, WRITE_ACCESS)
                touched[v.vcpu_id].complete_all()
                guest_access(v, 0x430 << 12, READ_ACCESS)
                guest_access(v, 0x421 << 12, READ_ACCESS)
            else:
                guest_access(v, 0x10 << 12, READ_ACCESS)
                touched[v.vcpu_id].complete_all()
                guest_access(v, 0x11 << 12, WRITE_ACCESS)
                guest_access(v, 0x200 << 12, READ_ACCESS)
        return run

    # the host folios reclaim looks at: the two 2M folios of the normal slot, then the
    # 4K folios the SMM vCPU touches (the SMM slot is at host frames 1024..2047)
    folios = [(0, 512), (512, 1024), (0x420, 0x421), (0x421, 0x422), (0x430, 0x431)]

    def zapper():
        # the host unmaps pages the SMM vCPU uses (e.g. migrating their folios) while
        # reclaim ages them: the write-locked zap of 0x420-0x42f and 0x430 meets
        # lockless aging on the same SPTEs, and the vCPU's read of 0x430 / 0x421
        for c in touched[1::2]:                     # the SMM (odd-numbered) vCPUs
            c.wait_for_completion()
        kvm_zap_gfn_range(kvm, 0x420, 0x431)

    def reclaim():
        for c in touched:
            c.wait_for_completion()
        for age in (kvm_mmu_notifier_test_young, kvm_mmu_notifier_clear_young,
                    kvm_mmu_notifier_test_young, kvm_mmu_notifier_clear_young):
            for start, end in folios:
                age(kvm, start, end)

    return run_flows(kvm, vcpu_body, reclaim=reclaim, zapper=zapper)


@scenario("mmu-eager-split-vs-fault-vs-zap", tags=MMU, dfs_bound=1, max_steps=120_000,
          key_branches=("split-dropped-lock-to-allocate", "huge-page-recovered"))
def mmu_eager_split_vs_fault_vs_zap(vcpus: int = 2):
    """Live migration on 2M-backed memory: the VMM enables dirty logging (eager split of
    the huge pages under the read lock, dropping it to allocate each table; then
    write-protection at 4K and a memslot flush), collects the log once, and disables
    logging again (huge pages recovered in place) -- while vCPUs keep writing through the
    huge mappings (the CPU sets Dirty bits), fault and fast-fault at 4K, and a range zap
    (an MMU-notifier-like invalidation) hits the huge page or one of its 4K pages."""
    from ..mmu.mmu import kvm_get_dirty_log_protect
    kvm = kvm_create_vm()
    slot = kvm_set_memory_region(kvm, 0, 0, 0, 512, S.PG_LEVEL_2M)
    for _ in range(vcpus):
        kvm_create_vcpu(kvm)
    mapped = [Completion(f"mapped{v.vcpu_id}") for v in kvm.vcpus]
    logging = Completion("logging_enabled")
    harvested = Completion("log_harvested")
    disabled = Completion("logging_disabled")

    def vcpu_body(v):
        def run():
            base = 8 * v.vcpu_id                                # one 2M page, 4K apart
            guest_access(v, (base + 0x10) << 12, READ_ACCESS)   # a writable 2M leaf
            mapped[v.vcpu_id].complete_all()
            guest_access(v, (base + 0x11) << 12, WRITE_ACCESS)  # through the huge mapping,
            logging.wait_for_completion()                       # maybe while it is split
            guest_access(v, (base + 0x12) << 12, WRITE_ACCESS)  # 4K: fault or fast fault
            harvested.wait_for_completion()
            guest_access(v, (base + 0x12) << 12, WRITE_ACCESS)  # again, re-protected meanwhile
            disabled.wait_for_completion()
            guest_access(v, (base + 0x12) << 12, WRITE_ACCESS)  # huge again (or racing a zap)
        return run

    def vmm():
        for c in mapped:
            c.wait_for_completion()
        enable_dirty_logging(kvm, slot)
        logging.complete_all()
        mutex_lock(kvm.slots_lock)
        kvm_get_dirty_log_protect(kvm, slot)
        mutex_unlock(kvm.slots_lock)
        harvested.complete_all()
        enable_dirty_logging(kvm, slot, False)
        disabled.complete_all()

    def zapper():
        mapped[-1].wait_for_completion()
        kvm_zap_gfn_range(kvm, 0x1f0, 0x1f1)

    return run_flows(kvm, vcpu_body, vmm=vmm, zapper=zapper)

@scenario("mmu-memslot-move-vs-access", tags=MMU, dfs_bound=2, max_steps=60_000,
          key_branches=("fault-retry",))
def mmu_memslot_move_vs_access(zap_all_quirk: bool = True):
    """set_memory_region_test's MOVE of an in-use region: a 2 MiB THP-backed slot at GPA
    0xC0000000 (one huge page) is moved 4 KiB down while the guest spins reading that
    GPA, the host writes 2 and then 1 into the first host page, and moves the slot back.
    The guest may see 0, 1 or MMIO (never MMIO once the misaligning move completed) and
    must never see 2 -- that would be a stale mapping to the old host page.  Run with
    the slot-zap-all quirk (default) or without it (only the slot's range is zapped)."""
    from ..mmu.mmu import kvm_move_memslot
    from .kvm_selftests import (GUEST_ASSERT, MEM_REGION_GPA, MEM_REGION_PAGES,
                                MEM_REGION_SLOT, MMIO_VAL, GuestMemory)
    kvm = kvm_create_vm()
    kvm.slot_zap_all_quirk = zap_all_quirk
    gfn = MEM_REGION_GPA >> S.PAGE_SHIFT
    kvm_set_memory_region(kvm, 0, 0, 0, 512, S.PG_LEVEL_4K)        # code and stack
    slot = kvm_set_memory_region(kvm, 0, MEM_REGION_SLOT, gfn, MEM_REGION_PAGES,
                                 S.PG_LEVEL_2M)
    v = kvm_create_vcpu(kvm)
    mem = GuestMemory()
    synced = Completion("guest_sync")

    def guest():
        mem.read(v, MEM_REGION_GPA)                                 # running: GUEST_SYNC(0)
        synced.complete_all()
        val = mem.spin_on_val(v, MEM_REGION_GPA, 0)
        GUEST_ASSERT(val in (1, MMIO_VAL), f"Expected '1' or MMIO, got {val:#x}")
        val = mem.spin_on_val(v, MEM_REGION_GPA, MMIO_VAL)
        GUEST_ASSERT(val in (1, 0), f"Expected '0' or '1' (no MMIO), got {val:#x}")
        val = mem.spin_on_val(v, MEM_REGION_GPA, 0)
        GUEST_ASSERT(val in (1, MMIO_VAL), f"Expected '1' or MMIO, got {val:#x}")
        val = mem.spin_on_val(v, MEM_REGION_GPA, MMIO_VAL)
        GUEST_ASSERT(val == 1, f"Expected '1', got {val:#x}")

    def host():
        synced.wait_for_completion()
        mutex_lock(kvm.slots_lock)
        moved = kvm_move_memslot(kvm, slot, gfn - 1)              # misaligned by 4 KiB
        mutex_unlock(kvm.slots_lock)
        mem.values[slot.host_pfn] = 2                              # WRITE_ONCE(*hva, 2)
        mem.values[slot.host_pfn] = 1                              # WRITE_ONCE(*hva, 1)
        mutex_lock(kvm.slots_lock)
        kvm_move_memslot(kvm, moved, gfn)                          # realigned
        mutex_unlock(kvm.slots_lock)

    tasks = [spawn(v.name, guest), spawn("host", host)]
    return spawn_teardown(kvm, tasks)


@scenario("mmu-memslot-delete-recreate-vs-access", tags=MMU, dfs_bound=2, max_steps=60_000,
          key_branches=("stale-mmio-spte",))
def mmu_memslot_delete_recreate_vs_access():
    """set_memory_region_test's DELETE of an in-use region: the guest spins reading GPA
    0xC0000000; the host deletes the slot (the guest must then see MMIO: KVM installs an
    MMIO SPTE tagged with the memslot generation), re-creates it with fresh memory (the
    guest must see 0: the MMIO SPTE is stale and the slow path maps the new page), and
    deletes it again (MMIO again)."""
    from ..mmu.mmu import kvm_create_memslot, kvm_delete_memslot
    from .kvm_selftests import (GUEST_ASSERT, MEM_REGION_GPA, MEM_REGION_PAGES,
                                MEM_REGION_SLOT, MMIO_VAL, GuestMemory)
    kvm = kvm_create_vm()
    gfn = MEM_REGION_GPA >> S.PAGE_SHIFT
    kvm_set_memory_region(kvm, 0, 0, 0, 512, S.PG_LEVEL_4K)
    slot = kvm_set_memory_region(kvm, 0, MEM_REGION_SLOT, gfn, MEM_REGION_PAGES,
                                 S.PG_LEVEL_2M)
    v = kvm_create_vcpu(kvm)
    mem = GuestMemory()
    stage = [Completion(f"guest_sync{i}") for i in range(3)]

    def guest():
        mem.read(v, MEM_REGION_GPA)
        stage[0].complete_all()
        val = mem.spin_on_val(v, MEM_REGION_GPA, 0)
        GUEST_ASSERT(val == MMIO_VAL, f"Expected MMIO after delete, got {val:#x}")
        stage[1].complete_all()
        val = mem.spin_on_val(v, MEM_REGION_GPA, MMIO_VAL)
        GUEST_ASSERT(val == 0, f"Expected 0 from the re-created slot, got {val:#x}")
        stage[2].complete_all()
        val = mem.spin_on_val(v, MEM_REGION_GPA, 0)
        GUEST_ASSERT(val == MMIO_VAL, f"Expected MMIO after the second delete, got {val:#x}")

    def host():
        stage[0].wait_for_completion()
        mutex_lock(kvm.slots_lock)
        kvm_delete_memslot(kvm, slot)
        mutex_unlock(kvm.slots_lock)
        stage[1].wait_for_completion()                       # wait_for_vcpu()
        mutex_lock(kvm.slots_lock)
        again = kvm_create_memslot(kvm, 0, MEM_REGION_SLOT, gfn, MEM_REGION_PAGES,
                                   S.PG_LEVEL_2M)
        mutex_unlock(kvm.slots_lock)
        stage[2].wait_for_completion()
        mutex_lock(kvm.slots_lock)
        kvm_delete_memslot(kvm, again)
        mutex_unlock(kvm.slots_lock)

    tasks = [spawn(v.name, guest), spawn("host", host)]
    return spawn_teardown(kvm, tasks)

@scenario("mmu-nx-toggle-vs-exec-faults", tags=MMU, dfs_bound=1, max_steps=80_000,
          key_branches=("nx-recovery-skipped-dirty-logging",))
def mmu_nx_toggle_vs_exec_faults(vcpus: int = 2, toggle_at_start: bool = False):
    """The admin turns the NX huge page mitigation on at run time (the nx_huge_pages
    module parameter: every VM zaps all its SPTEs and wakes its recovery thread) while
    vCPUs execute from and write to 2M-backed memory mapped huge; then dirty logging
    starts on the slot while the recovery thread wakes up, period after period, and must
    leave the NX splits of a dirty-logged slot in place (it only unaccounts them).  From
    the moment enabling returned, no instruction fetch may use an executable huge page.
    Each vCPU thread's first KVM_RUN starts the VM's on-demand recovery thread;
    ``toggle_at_start``: the admin writes the parameter while the VM is still starting,
    racing those first KVM_RUNs (else after every vCPU ran)."""
    from ..mmu.mmu import (calc_nx_huge_pages_recovery_period, kvm_arch_vcpu_ioctl_run,
                           kvm_nx_huge_page_recovery_worker, set_nx_huge_pages)
    kvm = kvm_create_vm(nx_huge_pages=False)
    slot = kvm_set_memory_region(kvm, 0, 0, 0, 1024, S.PG_LEVEL_2M)
    for _ in range(vcpus):
        kvm_create_vcpu(kvm)
    ran = [Completion(f"ran{v.vcpu_id}") for v in kvm.vcpus]
    enforced = Completion("nx_enforced")
    logging = Completion("logging_enabled")

    def vcpu_body(v):
        def run():
            code = 0x200 * (v.vcpu_id % 2)
            kvm_arch_vcpu_ioctl_run(v)
            guest_access(v, (code + 0x10) << 12, EXEC_ACCESS)     # huge and executable
            ran[v.vcpu_id].complete_all()
            guest_access(v, (code + 0x11) << 12, EXEC_ACCESS)     # maybe racing the toggle
            enforced.wait_for_completion()
            guest_access(v, (code + 0x12) << 12, EXEC_ACCESS)     # NX split to 4K
            guest_access(v, (code + 0x40) << 12, WRITE_ACCESS)
            guest_access(v, (code + 0x13) << 12, EXEC_ACCESS)
        return run

    def admin():
        if not toggle_at_start:
            for c in ran:
                c.wait_for_completion()
        set_nx_huge_pages(kvm, True)
        enforced.complete_all()
        enable_dirty_logging(kvm, slot)
        logging.complete_all()

    def recovery_thread():
        enforced.wait_for_completion()
        kvm.nx_huge_pages_recovery_ratio = 2                   # half of the splits per run
        period = calc_nx_huge_pages_recovery_period(kvm)
        kvm_nx_huge_page_recovery_worker(kvm, period)          # one period later
        logging.wait_for_completion()                          # (a live migration began)
        kvm_nx_huge_page_recovery_worker(kvm, 2 * period)

    return run_flows(kvm, vcpu_body, admin=admin, nx_recovery=recovery_thread)


#: the first gfn above 512 GiB: where a 4-level root's second top-level entry starts
GFN_512G = 1 << 27


@scenario("mmu-large-vm-zap-all-fast", tags=MMU, dfs_bound=1, max_steps=60_000,
          key_branches=("yield-mid-walk",))
def mmu_large_vm_zap_all_fast(vcpus: int = 2):
    """A VM with more than 512 GiB of memory: its RAM runs across the 512 GiB boundary,
    so every root links two top-level (PML4) entries.  vCPUs fault memory on both sides
    of the boundary while a memslot update invalidates every root and zaps them under the
    read lock -- the zap's second pass walks the top-level entries themselves and may
    yield between them -- and the VM is torn down.  (The model backs only the 2 MiB
    around the boundary, plus low memory: a memslot costs nothing per page.)"""
    kvm = kvm_create_vm()
    kvm_set_memory_region(kvm, 0, 0, 0, 512)
    kvm_set_memory_region(kvm, 0, 1, GFN_512G - 256, 512)
    for _ in range(vcpus):
        kvm_create_vcpu(kvm)

    def vcpu_body(v):
        def run():
            below, above = GFN_512G - 1 - v.vcpu_id, GFN_512G + v.vcpu_id
            guest_access(v, above << 12, WRITE_ACCESS)
            guest_access(v, v.vcpu_id << 12, READ_ACCESS)
            guest_access(v, below << 12, WRITE_ACCESS)
            guest_access(v, above << 12, READ_ACCESS)
        return run

    return run_flows(kvm, vcpu_body, memslot_update=lambda: zap_all_fast(kvm))


NEG = "model negative control"
register_defect("fault-without-mmu-lock", "page fault maps without taking mmu_lock",
                "LockNotHeld", ["mmu-faults-vs-zap-all-fast", "mmu-fault-vs-zap-range"],
                "kvm_tdp_mmu_page_fault skips read_lock(mmu_lock): the declared requirement "
                "of kvm_tdp_mmu_map fires.", source=NEG)
register_defect("enable-logging-flush-if-changed",
                "enabling dirty logging flushes only if an SPTE lost W",
                "DirtyLogIncomplete", ["mmu-dirty-log-vs-writes"],
                "kvm_mmu_slot_apply_flags flushes after write-protecting the slot only if "
                "an SPTE changed.  Aging without A/D bits access-tracks SPTEs (W cleared, no "
                "flush), so write-protection leaves them as they are while the vCPU's TLB "
                "still maps them writable: its next writes are never logged.  Explored "
                "with ad_bits=false reclaim=true.",
                source="historical, outside the catalogue (KVM: x86: mmu: Always flush "
                       "TLBs when enabling dirty logging, 2022; first a held-out mutation)",
                params={"ad_bits": False, "reclaim": True})
register_defect("clear-dirty-non-leaf",
                "clearing dirty state does not skip non-leaf SPTEs",
                "Livelock", ["mmu-dirty-log-vs-writes"],
                "clear_dirty_gfn_range clears the dirty bit of every present SPTE, leaf or "
                "not.  EPT ignores D in a non-leaf entry, but an L2 root write-protects "
                "instead (PML does not log L2's writes): enabling logging with L2 running "
                "clears W in L2's non-leaf entries, and every L2 write then faults on an "
                "SPTE KVM sees as writable -- a spurious fault, retried for ever.  Explored "
                "with pml=true nested=true l2_running=true.",
                source="plausible, stronger than the v6.8 fix 'KVM: x86/mmu: Check for leaf "
                       "SPTE when clearing dirty bit in the TDP MMU' (which re-checks the "
                       "leaf after a failed cmpxchg); first a held-out mutation",
                params={"pml": True, "nested": True, "l2_running": True})
register_defect("wrprot-skips-huge-leaves",
                "dirty logging leaves huge pages writable",
                "DirtyLogIncomplete", ["mmu-dirty-log-vs-writes"],
                "wrprot_gfn_range write-protects only 4K leaves.  With eager page "
                "splitting on, enabling logging has already split the huge pages; with it "
                "off (kernels before v5.19, or eager_page_split=N) a huge leaf stays "
                "writable and the guest's writes through it are never logged.  Explored "
                "with backing=2 eager_split=false.",
                source="plausible; first a held-out mutation (round 3)",
                params={"backing": 2, "eager_split": False})
register_defect("uninit-no-rcu-barrier",
                "VM teardown does not wait for RCU callbacks",
                "InvariantViolation", ["mmu-faults-vs-zap-all-fast", "mmu-smm-teardown"],
                "kvm_mmu_uninit_tdp_mmu returns without rcu_barrier(): the callbacks that "
                "free the page tables zapped at teardown (and those queued by the last "
                "puts of zapped roots) may still be pending when struct kvm is freed.",
                source="historical, outside the catalogue (the rcu_barrier() of "
                       "kvm_mmu_uninit_tdp_mmu, with RCU-protected page tables, "
                       "7cca2d0b7e7d); first a held-out mutation (round 4)")
register_defect("recover-ignores-host-level",
                "huge page recovery ignores the host mapping level",
                "HostSafetyViolation", ["mmu-migration-end-vs-access"],
                "recover_huge_pages_range (dirty logging turned off) replaces a page table "
                "by a huge SPTE without kvm_mmu_max_mapping_level: where the host no longer "
                "backs the region with one huge page (a page discarded during the "
                "migration) the huge SPTE maps the other gfns to pfns counted from the "
                "first leaf's -- the discarded page among them.  Explored with discarded=1.",
                source="plausible; first a held-out mutation (round 4)",
                params={"discarded": 1})
register_defect("range-add-overwrites",
                "one invalidation keeps only its last memslot's range",
                "HostSafetyViolation", ["mmu-notifier-remap-vs-fault"],
                "kvm_mmu_invalidate_range_add replaces the in-progress range while one "
                "invalidation is in progress instead of widening it, so an invalidation "
                "spanning two memslots keeps only the second slot's part: a fault in the "
                "first slot's part that resolved the old pfn does not retry and maps the "
                "page the host is taking back.  Explored with two_slots=true.",
                source="historical (review, 2023: the first version of 'KVM: Use gfn "
                       "instead of hva for mmu_notifier_retry'); first a held-out "
                       "mutation (round 5)",
                params={"two_slots": True})
register_defect("zap-invalidated-roots-one-as",
                "invalidated roots zapped in one address space only",
                "KernelWarning", ["mmu-smm-teardown"],
                "The seed's hazard (tdp-mmu.md 9.2): kvm_tdp_mmu_zap_invalidated_roots walks "
                "as_id 0 only, so an invalidated SMM root never gets its handed-over "
                "reference put and is left on tdp_mmu_roots at teardown.",
                source="design variant (pre-v6.6 as_id filter)")


DESIGN = "design variant"
register_defect("async-zap-worker", "design A (v5.18-v6.5): invalidated roots zapped by a workqueue",
                "none", ["mmu-faults-vs-zap-all-fast", "mmu-smm-teardown"],
                "kvm_tdp_mmu_invalidate_roots queues one kworker per invalidated root (read "
                "lock: zap, then put the handed-over reference); "
                "kvm_tdp_mmu_zap_invalidated_roots flushes the workqueue.  A correct design: "
                "explore it to compare with N.", source=DESIGN)
register_defect("fault-under-write-lock", "design O (v5.10-v5.12): page faults under the write lock",
                "none", ["mmu-faults-vs-zap-all-fast", "mmu-fault-vs-zap-range"],
                "kvm_tdp_mmu_page_fault takes mmu_lock for write and kvm_tdp_mmu_map_write_locked "
                "changes SPTEs with tdp_mmu_set_spte.  A correct design.", source=DESIGN)
register_defect("zap-gfn-range-no-flush", "kvm_zap_gfn_range drops its TLB flush",
                "TlbIncoherence", ["mmu-zap-range-yield", "mmu-fault-vs-zap-range"],
                "Zapped leaves stay cached in vCPU TLBs after mmu_lock is released: a vCPU "
                "keeps using the old translation.", source=NEG)
register_defect("cond-resched-skips-flush", "tdp_mmu_iter_cond_resched yields without the "
                "pending flush", "TlbIncoherence", ["mmu-zap-range-yield"],
                "Flush-before-yield broken: while the zapper has dropped mmu_lock, a vCPU uses "
                "a translation the zapper already removed.", source=NEG)
register_defect("link-sp-skips-accounting", "tdp_mmu_link_sp forgets tdp_account_mmu_page",
                "StructureViolation", ["mmu-link-race", "mmu-faults-vs-zap-all-fast"],
                "kvm->arch.tdp_mmu_pages no longer matches the page tables linked.", source=NEG)
register_defect("write-spte-ignores-volatile", "kvm_tdp_mmu_write_spte stores volatile SPTEs "
                "with WRITE_ONCE", "SpteLostUpdate", ["mmu-dirty-clear-vs-zap"],
                "Under the write lock the CPU can still set the Dirty bit of a writable, clean "
                "SPTE: a plain store of the zapped value loses it.", source=NEG)
register_defect("fault-ignores-mmu-seq", "the fault path skips the mmu_invalidate_seq checks",
                "HostSafetyViolation", ["mmu-notifier-remap-vs-fault"],
                "A fault that resolved the pfn before an mmu_notifier invalidation installs "
                "it anyway: the vCPU uses the migrated page (in other schedules the kernel's "
                "own WARN about a present leaf meeting another pfn fires first).",
                source=NEG)
register_defect("wrprot-gfn-checks-w-only", "write-tracking skips SPTEs that are only "
                "write-protected for dirty logging", "WriteTrackBypassed",
                ["mmu-fast-pf-vs-write-track"],
                "7c8a4742c4ab (KVM: x86/mmu: Fix write-protection of PTs mapped by the TDP "
                "MMU): write_protect_gfn treated an SPTE without W as done, so one "
                "write-protected for dirty logging kept MMU-writable and the fast page "
                "fault made it writable again -- the guest then writes a tracked page.",
                source=NEG)
register_defect("fast-pf-plain-write", "fast page fault fixes the SPTE with a plain store",
                "FastFaultUnsafe", ["mmu-fast-pf-vs-zap"],
                "Without the cmpxchg, a lockless fix made after a concurrent zap resurrects "
                "the zapped SPTE.", source=NEG)
register_defect("get-dirty-log-skips-wrprot", "GET_DIRTY_LOG forgets to write-protect the "
                "harvested pages", "DirtyLogIncomplete", ["mmu-dirty-log-vs-writes"],
                "Pages stay writable after a harvest, so later writes are never logged.",
                source=NEG)
register_defect("fast-pf-forgets-mark-dirty", "the fast path restores W without logging the page",
                "DirtyLogIncomplete", ["mmu-dirty-log-vs-writes"], source=NEG)
register_defect("flush-shadow-memslot-skipped", "deleting a memslot does not zap its SPTEs",
                "HostSafetyViolation", ["mmu-memslot-delete-vs-faults"],
                "kvm_arch_flush_shadow_memslot skipped: vCPUs keep reaching host memory the "
                "host already reused.", source=NEG)
register_defect("notifier-skips-unmap", "mmu_notifier invalidate_range_start does not zap",
                "HostSafetyViolation", ["mmu-notifier-remap-vs-fault"],
                "The SPTE of a migrated page survives: the vCPU keeps using the old host page.",
                source=NEG)
register_defect("nx-split-not-tracked", "an NX split page table is not tracked as a possible "
                "NX huge page", "none", [],
                "A broken variant for the nx_huge_pages_test port: nx_lpage_splits stays 0 "
                "and recovery never restores the huge page (tests/test_selftest_ports.py).",
                source="selftest-port variant")
register_defect("clear-dirty-log-skips-wrprot", "KVM_CLEAR_DIRTY_LOG forgets to write-protect "
                "the cleared pages", "DirtyLogIncomplete", ["mmu-dirty-log-vs-writes"],
                "Explore with --param mode=clear-log.", source=NEG,
                params={"mode": "clear-log"})
register_defect("age-wrong-as-id", "lockless aging walks the normal address space's roots "
                "only", "AgingMissedAccess", ["mmu-aging-vs-access"],
                "The seed's hazard for aging: __kvm_tdp_mmu_age_gfn_range ignores the slot's "
                "as_id, so pages the guest touched in SMM are reported old and reclaimed as "
                "cold.", source=NEG)
register_defect("age-skips-huge", "aging looks at 4K leaves only", "AgingMissedAccess",
                ["mmu-aging-vs-access"],
                "Leaves above 4K are skipped: a page accessed through a 2M mapping is "
                "reported old.", source=NEG)
register_defect("test-age-clears", "test_young clears the Accessed bit", "AgingMissedAccess",
                ["mmu-aging-vs-access"],
                "test_young ages the SPTE it found young: the next clear_young reports the "
                "page old although the guest accessed it since the last age.", source=NEG)
register_defect("split-alloc-under-mmu-lock", "eager splitting allocates page tables with "
                "mmu_lock held", "SleepInAtomic", ["mmu-eager-split-vs-fault-vs-zap"],
                "tdp_mmu_split_huge_pages_root calls the sleeping GFP_KERNEL allocation "
                "without dropping mmu_lock and RCU first.", source=NEG)
register_defect("recover-skips-flush", "huge-page recovery does not flush", "UseAfterFree",
                ["mmu-eager-split-vs-fault-vs-zap"],
                "recover_huge_pages_range replaces page tables by huge SPTEs and frees the "
                "tables without kvm_flush_remote_tlbs_memslot: a vCPU's paging-structure "
                "cache still points into a freed table and its next walk reads it (or it "
                "keeps writing through a cached 4K translation the new huge SPTE does not "
                "grant: TlbIncoherence).", source=NEG)
register_defect("disable-logging-no-recovery", "disabling dirty logging leaves the slot "
                "mapped at 4K", "none", [],
                "A broken variant for the dirty_log_page_splitting_test port: "
                "kvm_mmu_slot_apply_flags skips kvm_mmu_recover_huge_pages, so huge pages "
                "never come back (tests/test_selftest_ports.py).",
                source="selftest-port variant")
register_defect("mmio-ignores-generation", "MMIO SPTEs are trusted whatever their memslot "
                "generation", "HostSafetyViolation", ["mmu-memslot-delete-recreate-vs-access"],
                "handle_mmio_page_fault skips check_mmio_spte: after a memslot is created "
                "over a gfn that had an MMIO SPTE, the guest keeps exiting to userspace as "
                "MMIO instead of reaching its new memory.", source=NEG)
register_defect("nx-toggle-skips-zap", "turning the NX huge page mitigation on keeps the "
                "existing mappings", "NxHugePageViolation", ["mmu-nx-toggle-vs-exec-faults"],
                "set_nx_huge_pages skips kvm_mmu_zap_all_fast: executable huge pages mapped "
                "before the change survive, and the guest keeps fetching through them.",
                source=NEG)
