"""NX huge pages at run time: the module parameter toggled while the VM runs, the
per-VM disable capability, the recovery period, and recovery's dirty-logging exception."""

from __future__ import annotations

import pytest

from tdpmmu.mmu import EXEC_ACCESS, READ_ACCESS, guest_access
from tdpmmu.mmu import spte as S
from tdpmmu.mmu.mmu import (EINVAL, calc_nx_huge_pages_recovery_period,
                            kvm_nx_huge_page_recovery_worker, kvm_set_memslot_dirty_logging,
                            kvm_vm_enable_cap_disable_nx_huge_pages, set_nx_huge_pages)
from tdpmmu.sync import mutex_lock, mutex_unlock

from mmu_helpers import add_slot, leaf_sptes, run_single, vcpu


@pytest.mark.parametrize("enabled,ratio,period_ms,want", [
    (True, 60, 0, 60_000), (True, 1, 0, 3_600_000), (True, 10_000, 0, 1_000),
    (True, 60, 250, 250), (False, 60, 0, 0), (True, 0, 0, 0)])
def test_recovery_period(enabled, ratio, period_ms, want):
    def body(kvm):
        kvm.nx_huge_pages_recovery_ratio = ratio
        kvm.nx_huge_pages_recovery_period_ms = period_ms
        return calc_nx_huge_pages_recovery_period(kvm)
    got, _ = run_single(body, nx_huge_pages=enabled)
    assert got == want


def test_recovery_worker_runs_once_per_period():
    def body(kvm):
        runs = [kvm_nx_huge_page_recovery_worker(kvm, t) for t in (0, 59_999, 60_000, 60_001,
                                                                    119_999, 120_000)]
        return runs
    runs, _ = run_single(body, nx_huge_pages=True)
    assert runs == [False, False, True, False, False, True]


def test_turning_the_mitigation_on_zaps_and_exec_faults_split():
    def body(kvm):
        add_slot(kvm, npages=1024, backing=S.PG_LEVEL_2M)
        v = vcpu(kvm)
        guest_access(v, 0x10 << 12, EXEC_ACCESS)
        before = dict(leaf_sptes(kvm, v.root))
        set_nx_huge_pages(kvm, True)
        guest_access(v, 0x10 << 12, EXEC_ACCESS)
        guest_access(v, 0x20 << 12, READ_ACCESS)
        after = leaf_sptes(kvm, v.root)
        return before, after, kvm.stat.nx_lpage_splits
    (before, after, splits), _ = run_single(body, nx_huge_pages=False)
    assert list(before) == [(0, 2)] and S.is_executable_pte(before[(0, 2)])
    assert (0x10, 1) in after and (0x20, 1) in after and (0, 2) not in after
    assert splits == 1


def test_disable_cap_only_before_vcpus():
    def body(kvm):
        r1 = kvm_vm_enable_cap_disable_nx_huge_pages(kvm)
        add_slot(kvm, npages=1024, backing=S.PG_LEVEL_2M)
        v = vcpu(kvm)
        r2 = kvm_vm_enable_cap_disable_nx_huge_pages(kvm)
        guest_access(v, 0x10 << 12, EXEC_ACCESS)
        return r1, r2, list(leaf_sptes(kvm, v.root)), kvm.nx_huge_page_workaround_enabled
    (r1, r2, leaves, enabled), _ = run_single(body, nx_huge_pages=True)
    assert (r1, r2) == (0, -EINVAL) and not enabled
    assert leaves == [(0, 2)]                   # this VM maps executable huge pages


def test_recovery_leaves_dirty_logged_splits_in_place():
    """kvm_recover_nx_huge_pages only unaccounts a split page of a dirty-logged slot:
    zapping it would just bring it back as 4K pages."""
    def body(kvm):
        slot = add_slot(kvm, npages=1024, backing=S.PG_LEVEL_2M)
        v = vcpu(kvm)
        guest_access(v, 0x10 << 12, EXEC_ACCESS)
        assert kvm.stat.nx_lpage_splits == 1
        mutex_lock(kvm.slots_lock)
        kvm_set_memslot_dirty_logging(kvm, slot, True)
        mutex_unlock(kvm.slots_lock)
        kvm.nx_huge_pages_recovery_ratio = 1
        kvm_nx_huge_page_recovery_worker(kvm, 3_600_000)
        return kvm.stat.nx_lpage_splits, sorted(leaf_sptes(kvm, v.root))[:1]
    (splits, first_leaf), _ = run_single(body, nx_huge_pages=True)
    assert splits == 0 and first_leaf == [(0x10, 1)]   # unaccounted, still mapped at 4K
