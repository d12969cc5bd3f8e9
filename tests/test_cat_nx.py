"""Group nx of the bug catalogue: NX huge page recovery (the dirty-logging memslot
lookup per address space, the flush of the TDP MMU zap, the read-lock zap of one page
table) and the defects that re-introduce its historical bugs."""

from __future__ import annotations

import pytest

import tdpmmu
from tdpmmu.mmu import EXEC_ACCESS, guest_access, kvm_smm_transition
from tdpmmu.mmu import spte as S
from tdpmmu.mmu.kvm import KVM_MEM_LOG_DIRTY_PAGES
from tdpmmu.mmu.mmu import kvm_mmu_sp_dirty_logging_enabled, kvm_recover_nx_huge_pages
from tdpmmu.runtime.errors import KernelWarning
from tdpmmu.sync import read_lock, read_unlock, srcu_read_lock, srcu_read_unlock

from mmu_helpers import add_slot, run_single, vcpu


def smm_vm(kvm, *, log_normal: bool = False, log_smm: bool = False, vram: bool = False):
    """Normal RAM [0, 0x200), SMM RAM + TSEG [0, 0x400) (TSEG only in SMM), optionally a
    dirty-logged framebuffer slot; one vCPU that ran a TSEG handler in SMM."""
    ram = add_slot(kvm, 0, 0, 0x200, S.PG_LEVEL_2M, KVM_MEM_LOG_DIRTY_PAGES if log_normal else 0)
    if vram:
        add_slot(kvm, 0, 0xfd000, 16, S.PG_LEVEL_4K, KVM_MEM_LOG_DIRTY_PAGES)
    smm = add_slot(kvm, 1, 0, 0x400, S.PG_LEVEL_2M, KVM_MEM_LOG_DIRTY_PAGES if log_smm else 0)
    for slot in kvm.memslots[0] + kvm.memslots[1]:
        if slot.dirty_logging():
            slot.dirty_bitmap, slot.logging_active = slot.alloc_dirty_bitmap(), True
    v = vcpu(kvm)
    kvm_smm_transition(v, True)
    guest_access(v, 0x210 << 12, EXEC_ACCESS)       # a possible NX huge page at gfn 0x200
    kvm_smm_transition(v, False)
    return ram, smm, v


def sp_logging(kvm, sp) -> bool:
    idx = srcu_read_lock(kvm.srcu)
    read_lock(kvm.mmu_lock)
    try:
        return kvm_mmu_sp_dirty_logging_enabled(kvm, sp)
    finally:
        read_unlock(kvm.mmu_lock)
        srcu_read_unlock(kvm.srcu, idx)


def test_nr_memslots_dirty_logging_counts_every_address_space():
    def body(kvm):
        smm_vm(kvm, log_normal=True, log_smm=True)
        return kvm.nr_memslots_dirty_logging
    n, _ = run_single(body, nx_huge_pages=True)
    assert n == 2


@pytest.mark.parametrize("log_normal,log_smm,want", [
    (False, False, False), (True, False, False), (False, True, True), (True, True, True)])
def test_the_smm_page_is_looked_up_in_its_own_address_space(log_normal, log_smm, want):
    def body(kvm):
        ram, smm, _ = smm_vm(kvm)
        (sp,) = kvm.arch.possible_nx_huge_pages
        assert sp.as_id == 1 and sp.gfn == 0x200
        for slot, on in ((ram, log_normal), (smm, log_smm)):   # logging began afterwards
            if on:
                slot.flags |= KVM_MEM_LOG_DIRTY_PAGES
        return sp_logging(kvm, sp)
    got, _ = run_single(body, nx_huge_pages=True)
    assert got is want


def test_recovery_zaps_an_smm_page_while_a_normal_slot_logs():
    def body(kvm):
        smm_vm(kvm, vram=True)
        kvm_recover_nx_huge_pages(kvm, ratio=1)
        return list(kvm.arch.possible_nx_huge_pages), kvm.stat.nx_lpage_splits
    (left, splits), _ = run_single(body, nx_huge_pages=True)
    assert left == [] and splits == 0


def test_wrong_address_space_warns_on_the_missing_slot():
    def body(kvm):
        smm_vm(kvm, vram=True)
        kvm_recover_nx_huge_pages(kvm, ratio=1)
    with pytest.raises(KernelWarning, match="no memslot for gfn 0x200"):
        run_single(body, nx_huge_pages=True, defects=["nx-recovery-wrong-address-space"])


def test_wrong_address_space_is_silent_without_dirty_logging():
    """nr_memslots_dirty_logging == 0: no lookup at all (the kernel's shortcut)."""
    def body(kvm):
        smm_vm(kvm)
        kvm_recover_nx_huge_pages(kvm, ratio=1)
        return kvm.stat.nx_lpage_splits
    splits, _ = run_single(body, nx_huge_pages=True, defects=["nx-recovery-wrong-address-space"])
    assert splits == 0


def test_recovery_flushes_after_zapping_a_tdp_mmu_page():
    def body(kvm):
        smm_vm(kvm)
        before = kvm.stat.remote_tlb_flush
        kvm_recover_nx_huge_pages(kvm, ratio=1)
        return kvm.stat.remote_tlb_flush - before
    flushes, _ = run_single(body, nx_huge_pages=True)
    assert flushes == 1
    flushes, _ = run_single(body, nx_huge_pages=True, defects=["nx-recovery-drops-tdp-flush"])
    assert flushes == 0


def test_the_parent_variant_warns_when_the_parent_is_gone():
    """The early read-lock check: a zapped parent (here by an earlier zap of the same
    root, as a concurrent root zap would) trips WARN_ON_ONCE(!present); the merged
    check ("the parent still points at this page") just skips it."""
    from tdpmmu.mmu.tdp_mmu import kvm_tdp_mmu_zap_possible_nx_huge_page
    from tdpmmu.sync import rcu_read_lock, rcu_read_unlock

    def body(kvm):
        smm_vm(kvm)
        (sp,) = kvm.arch.possible_nx_huge_pages
        pt, idx = sp.ptep
        read_lock(kvm.mmu_lock)
        rcu_read_lock()
        first = kvm_tdp_mmu_zap_possible_nx_huge_page(kvm, sp)
        again = kvm_tdp_mmu_zap_possible_nx_huge_page(kvm, sp)   # parent now non-present
        rcu_read_unlock()
        read_unlock(kvm.mmu_lock)
        return first, again
    (first, again), _ = run_single(body, nx_huge_pages=True)
    assert (first, again) == (True, False)
    with pytest.raises(KernelWarning, match="parent SPTE not present"):
        run_single(body, nx_huge_pages=True,
                   defects=["nx-recovery-readlock-stale-parent/parent"])


@pytest.mark.parametrize("defect,cls", [
    ("nx-recovery-drops-tdp-flush", "UseAfterFree"),
    ("nx-recovery-readlock-stale-parent/resched", "LockNotHeld"),
    ("nx-recovery-wrong-address-space", "KernelWarning"),
])
def test_each_defect_is_found_in_its_first_scenario(defect, cls):
    from tdpmmu.scenarios import get_defect
    d = get_defect(defect)
    res = tdpmmu.explore(d.scenarios[0], strategy="pct", schedules=300, defects=[defect],
                         stop_on_first=True)
    assert res.failures and res.failures[0].category == cls


def test_the_smm_scenario_is_clean_on_the_correct_model():
    res = tdpmmu.explore("mmu-nx-recovery-smm", strategy="random", schedules=40)
    assert not res.failures
