"""Catalogue group roots_b: design V (``vcpu-held-roots``, the v5.18-v6.3 root
lifetime) and the defects root-freed-on-last-vcpu-put, async-defunct-root-double-put
and free-pt-without-rcu."""

from __future__ import annotations

import pytest

import tdpmmu
from tdpmmu.mmu import READ_ACCESS, WRITE_ACCESS, guest_access, kvm_destroy_vm, kvm_smm_transition
from tdpmmu.runtime.errors import UsageError
from tdpmmu.scenarios import get_defect
from tdpmmu.scenarios.mmu_core import build_vm, teardown_check
from tdpmmu.sync import spawn


def _smi_rsm(record):
    """One vCPU: fault, enter SMM (root unloaded), fault there, leave SMM, fault again;
    ``record`` gets the as_id 0 root before and after, and whether the first one was
    invalidated by the unload."""
    def scenario():
        kvm = build_vm(1, smm=True)
        v = kvm.vcpus[0]

        def run():
            guest_access(v, 0x1000, WRITE_ACCESS)
            first = v.root
            kvm_smm_transition(v, True)
            guest_access(v, 0x2000, READ_ACCESS)
            kvm_smm_transition(v, False)
            guest_access(v, 0x1000, READ_ACCESS)
            record["same_root"] = v.root is first
            record["first_invalid"] = bool(first.hdr.peek(0))
            kvm_destroy_vm(kvm)
        spawn(v.name, run)
        return lambda: teardown_check(kvm)
    return scenario


@pytest.mark.parametrize("defects,same", [((), True), (("vcpu-held-roots",), False)])
def test_a_root_survives_smi_rsm_only_when_the_tdp_mmu_holds_it(defects, same):
    """N keeps the root across SMI/RSM (the TDP MMU holds a reference until the root is
    invalidated); design V frees it with the last vCPU reference (defunct: marked
    invalid, zapped by the worker) and builds a new one: the A1 flaw, safely."""
    record = {}
    res = tdpmmu.explore(_smi_rsm(record), strategy="random", schedules=20, seed=1,
                         defects=list(defects))
    assert res.failures == [], tdpmmu.render_failure(res.failures[0])
    assert record["same_root"] is same
    assert record["first_invalid"] is (not same)


@pytest.mark.parametrize("scenario,params", [
    ("mmu-faults-vs-zap-all-fast", {}),
    ("mmu-faults-vs-zap-all-fast", {"vcpus": 1, "smm": True}),
    ("mmu-smm-teardown", {}),
])
def test_design_v_is_correct_and_reaches_defunct_roots(scenario, params):
    for strategy in ("pct", "random"):
        res = tdpmmu.explore(scenario, strategy=strategy, schedules=150, seed=4,
                             params=params, defects=["vcpu-held-roots"])
        assert res.failures == [], tdpmmu.render_failure(res.failures[0])
        assert res.coverage.get("defunct-root"), "no root became defunct"


@pytest.mark.parametrize("defect,expected,params", [
    ("root-freed-on-last-vcpu-put", "KernelWarning", {}),
    ("async-defunct-root-double-put", "UseAfterFree", {"vcpus": 1, "smm": True}),
    ("free-pt-without-rcu", "UseAfterFree", {}),
])
def test_each_defect_is_found_on_its_first_scenario(defect, expected, params):
    """With the campaign's first strategy (PCT).  (Random finds root-freed-on-last-
    vcpu-put as a refcount underflow first: a memslot update's zapper put the vCPU's
    only reference, taking it for the TDP MMU's.)"""
    d = get_defect(defect)
    res = tdpmmu.explore(d.scenarios[0], strategy="pct", schedules=300, seed=0,
                         params=params, defects=[defect], stop_on_first=True)
    assert res.failures, f"random missed {defect}"
    assert res.failures[0].category == expected, res.failures[0].message


def test_the_negative_control_became_the_catalogue_defect():
    assert get_defect("free-pt-without-rcu").catalogue == "free-pt-without-rcu"
    with pytest.raises(UsageError):
        get_defect("removed-pt-freed-without-rcu")
