"""Aging (MMU-notifier clear_young / test_young): single-threaded semantics in both A/D
modes, and the lockless requirement."""

from __future__ import annotations

import pytest

from tdpmmu.mmu import READ_ACCESS, WRITE_ACCESS, guest_access, kvm_destroy_vm, kvm_smm_transition
from tdpmmu.mmu import spte as S
from tdpmmu.mmu.locking import REGISTRY
from tdpmmu.mmu.mmu import kvm_flush_remote_tlbs, kvm_mmu_notifier_clear_young, kvm_mmu_notifier_test_young

from mmu_helpers import add_slot, check_variant_and_its_defect, leaf_sptes, run_single, vcpu


def _young_leaves(kvm, root):
    return sorted(g for (g, _), v in leaf_sptes(kvm, root).items()
                  if S.is_accessed_spte(v, kvm.masks))


@pytest.mark.parametrize("masks", [S.EPT, S.EPT_NO_AD], ids=["ad", "access-track"])
def test_clear_young_makes_pages_old_and_a_new_walk_makes_them_young_again(masks):
    def body(kvm):
        add_slot(kvm, npages=64)
        v = vcpu(kvm)
        for g in (1, 2, 3):
            guest_access(v, g << 12, WRITE_ACCESS)
        out = [_young_leaves(kvm, v.root)]
        out.append(kvm_mmu_notifier_test_young(kvm, 2, 3))
        out.append(_young_leaves(kvm, v.root))               # test_young changes nothing
        out.append(kvm_mmu_notifier_clear_young(kvm, 2, 4))
        out.append(_young_leaves(kvm, v.root))
        out.append(kvm_mmu_notifier_test_young(kvm, 2, 4))
        out.append(kvm_mmu_notifier_clear_young(kvm, 2, 4))  # nothing accessed since
        kvm_flush_remote_tlbs(kvm)                           # the next access walks again
        guest_access(v, 3 << 12, READ_ACCESS)
        out.append(kvm_mmu_notifier_test_young(kvm, 3, 4))
        out.append(_young_leaves(kvm, v.root))
        kvm_destroy_vm(kvm)
        return out

    out, _ = run_single(body, masks=masks)
    assert out == [[1, 2, 3], True, [1, 2, 3], True, [1], False, False, True, [1, 3]]


def test_access_tracked_spte_loses_rx_and_the_fast_path_restores_it():
    def body(kvm):
        add_slot(kvm, npages=64)
        v = vcpu(kvm)
        guest_access(v, 5 << 12, WRITE_ACCESS)
        kvm_mmu_notifier_clear_young(kvm, 5, 6)
        tracked = leaf_sptes(kvm, v.root)[(5, 1)]
        kvm_flush_remote_tlbs(kvm)
        guest_access(v, 5 << 12, READ_ACCESS)
        restored = leaf_sptes(kvm, v.root)[(5, 1)]
        kvm_destroy_vm(kvm)
        return tracked, restored

    (tracked, restored), _ = run_single(body, masks=S.EPT_NO_AD)
    assert S.is_access_track_spte(tracked, S.EPT_NO_AD)
    assert not S.is_access_track_spte(restored, S.EPT_NO_AD)
    assert S.is_accessed_spte(restored, S.EPT_NO_AD)


def test_aging_covers_huge_leaves_and_the_smm_address_space():
    def body(kvm):
        add_slot(kvm, npages=1024, backing=S.PG_LEVEL_2M)
        add_slot(kvm, as_id=1, base_gfn=1024, npages=1024)
        v0, v1 = vcpu(kvm), vcpu(kvm)
        guest_access(v0, 0x10 << 12, READ_ACCESS)
        kvm_smm_transition(v1, True)
        guest_access(v1, 0x420 << 12, READ_ACCESS)
        r = [kvm_mmu_notifier_clear_young(kvm, 0, 512),
             kvm_mmu_notifier_clear_young(kvm, 0x420, 0x421),
             kvm_mmu_notifier_clear_young(kvm, 0, 2048)]
        kvm_destroy_vm(kvm)
        return r

    assert run_single(body)[0] == [True, True, False]


def test_aging_is_declared_lockless():
    for name in ("kvm_tdp_mmu_age_gfn_range", "kvm_tdp_mmu_test_age_gfn",
                 "__kvm_tdp_mmu_age_gfn_range", "kvm_tdp_mmu_age_spte",
                 "for_each_tdp_mmu_root_rcu"):
        assert REGISTRY[name][0].mmu_lock == "none", name


def test_aging_explored_without_ad_bits():
    """EPT without A/D bits: aging marks SPTEs access-tracked (R/X saved and cleared),
    the guest's next access faults and the fast path restores them.  Explored clean,
    and every aging negative control is still found in this mode."""
    import tdpmmu
    for strategy in ("pct", "random"):
        res = tdpmmu.explore("mmu-aging-vs-access", strategy=strategy, schedules=500, seed=3,
                             params={"ad_bits": False})
        assert res.failures == [], tdpmmu.render_failure(res.failures[0])
    for defect in ("age-wrong-as-id", "age-skips-huge", "test-age-clears"):
        res = tdpmmu.explore("mmu-aging-vs-access", strategy="pct", schedules=1000,
                             params={"ad_bits": False}, defects=[defect], stop_on_first=True)
        assert res.failures and res.failures[0].category == "AgingMissedAccess", defect


def test_the_zap_meets_lockless_aging_of_a_written_page_without_ad_bits():
    """Without A/D bits an aged SPTE is rewritten (access-tracked) by a lockless cmpxchg,
    so a write-locked zap of the same written page must store it atomically: the SPTE
    atomicity oracle catches a zap that stores it plainly (the negative control)."""
    import tdpmmu
    res = tdpmmu.explore("mmu-aging-vs-access", strategy="pct", schedules=2000,
                         params={"ad_bits": False}, defects=["write-spte-ignores-volatile"],
                         stop_on_first=True)
    assert res.failures and res.failures[0].category == "SpteLostUpdate"
    assert "by zapper" in res.failures[0].message


def test_enabling_dirty_logging_after_aging_without_ad_bits():
    """Migration starts while reclaim ages the written pages (EPT without A/D bits): the
    flow is clean, and the 2022 bug -- flushing after write-protection only if an SPTE
    changed -- loses the writes made through still-writable TLB entries."""
    check_variant_and_its_defect("mmu-dirty-log-vs-writes", {"ad_bits": False, "reclaim": True},
                                 "enable-logging-flush-if-changed", "DirtyLogIncomplete",
                                 seed=1, clean_schedules=300, find_schedules=300)
