"""Group roots_a of the catalogue: the v5.17 root-lifetime variant, the host-page-touch
oracle (KVM writing A/D state back to a page the host took back) and the
folio-migration-vs-SMM scenario, each with its negative control."""

from __future__ import annotations

import time

import pytest

import tdpmmu
from tdpmmu.mmu import WRITE_ACCESS, guest_access, kvm_create_vcpu, kvm_smm_transition
from tdpmmu.mmu.oracles import HostSafetyViolation, check_host_page_touch
from tdpmmu.mmu.tdp_mmu import ROOT_LIFETIME_V5_17
from tdpmmu.scenarios.catalogue_roots_a import MIGRATE

from mmu_helpers import add_slot, run_single


def test_host_page_touch_of_a_page_the_host_took_back_is_a_host_safety_violation():
    def body(kvm):
        kvm.freed_host_ranges.append((0x5000, 4, "test: folio migrated"))
        check_host_page_touch(kvm, 0x4fff, "kvm_set_pfn_dirty")     # not freed: fine
        check_host_page_touch(kvm, 0x5004, "kvm_set_pfn_dirty")
        with pytest.raises(HostSafetyViolation, match="kvm_set_pfn_accessed on host pfn 0x5003"):
            check_host_page_touch(kvm, 0x5003, "kvm_set_pfn_accessed")
        return True
    assert run_single(body)[0]


def _root_count_after_smi(defects):
    def body(kvm):
        add_slot(kvm, 0)
        add_slot(kvm, 1)
        v = kvm_create_vcpu(kvm)
        guest_access(v, 0x3000, WRITE_ACCESS)
        r0 = v.root
        count = r0.tdp_mmu_root_count.peek(0)
        kvm_smm_transition(v, True)                 # SMI: the vCPU puts its root
        return count, r0.on_list, kvm.stat.pages_4k
    return run_single(body, defects=defects)[0]


def test_v5_17_roots_are_held_by_vcpus_and_zapped_by_the_last_put():
    assert _root_count_after_smi(()) == (2, True, 1)        # N: the TDP MMU keeps it
    assert _root_count_after_smi([ROOT_LIFETIME_V5_17]) == (1, False, 0)


@pytest.mark.parametrize("defects", [(), (ROOT_LIFETIME_V5_17,)], ids=["N", "v5.17"])
@pytest.mark.parametrize("scenario", [MIGRATE, "mmu-faults-vs-zap-all-fast"])
def test_the_scenario_is_clean_on_the_model_and_on_the_v5_17_variant(scenario, defects):
    # v5.17's last put zaps the unlinked root without yielding: that is catalogue
    # put-root-zap-cannot-yield, which the soft-lockup and RCU-stall watchdogs report
    # even here (their thresholds are scaled to the model's small guests).  This test is
    # about the root lifetime, so the watchdogs are set out of reach for the variant.
    params = {"_softlockup_thresh": 10**6, "_rcu_stall_thresh": 10**6} if defects else None
    for strategy in ("pct", "random"):
        res = tdpmmu.explore(scenario, strategy=strategy, schedules=200, seed=3,
                             defects=list(defects), params=params)
        assert res.failures == [], tdpmmu.render_failure(res.failures[0])


def test_the_migration_scenario_is_cheap():
    t = time.perf_counter()
    res = tdpmmu.explore(MIGRATE, strategy="random", schedules=100, seed=0)
    per_exec = (time.perf_counter() - t) / res.executions
    assert res.failures == []
    assert per_exec < 0.05, f"{per_exec * 1000:.1f} ms per execution"


@pytest.mark.parametrize("defect,expected,strategy", [
    ("notifier-unmap-unsafe-root-iter", "UseAfterFree", "pct"),
    ("yield-with-unreachable-root", "HostSafetyViolation", "random"),
])
def test_the_migration_scenario_catches_the_unsafe_walks(defect, expected, strategy):
    res = tdpmmu.explore(MIGRATE, strategy=strategy, schedules=1000, seed=0, defects=[defect],
                         stop_on_first=True)
    assert res.failures, defect
    assert res.failures[0].category == expected, res.failures[0].message
