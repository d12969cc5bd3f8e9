"""The hardware model's paging-structure caches (mmu/hw.py): a walk starts from the
deepest cached table, so a table KVM unlinked is still used until the vCPU flushes; the
flush-before-leaving-RCU rule they enforce (catalogue flush-after-rcu-unlock), and the
scenario that exercises it on the correct model."""

from __future__ import annotations

import pytest

import tdpmmu
from tdpmmu.mmu import READ_ACCESS, WRITE_ACCESS, guest_access
from tdpmmu.mmu.hw import PFERR_PRESENT_MASK, TlbEntry, hardware_walk
from tdpmmu.mmu.oracles import peek_translation
from tdpmmu.mmu import spte as S
from tdpmmu.mmu.tdp_iter import spte_to_child_pt

from mmu_helpers import add_slot, run_single, vcpu

SCENARIO = "mmu-migration-end-vs-access"


def _unlink_the_4k_table_behind_kvms_back():
    """One 4K page mapped; then the PD entry linking its table is cleared directly (no
    flush, the table not freed): what a vCPU translates through next, before and after
    its flush."""
    def body(kvm):
        add_slot(kvm, npages=1024)
        v = vcpu(kvm)
        first = guest_access(v, 0x10 << 12, WRITE_ACCESS)
        cached = {key[1:] for key in v.tlb.psc}
        root = v.root.spt
        pdpt = spte_to_child_pt(kvm, root.vals[0], 4)
        pd = spte_to_child_pt(kvm, pdpt.vals[0], 3)
        pd.vals[0] = S.SHADOW_NONPRESENT_VALUE          # the 4K table is unlinked
        v.tlb.entries.clear()                           # no TLB hit for the next access
        faults = v.stat.pf_taken
        again = guest_access(v, 0x10 << 12, READ_ACCESS)   # walks the cached table
        via_cache = v.stat.pf_taken == faults
        v.tlb.flush()
        guest_access(v, 0x10 << 12, READ_ACCESS)           # a full walk: faults
        return first, again, cached, via_cache, v.stat.pf_taken > faults
    return body


def test_a_walk_uses_the_cached_table_until_the_vcpu_flushes():
    first, again, cached, via_cache, faulted_after_flush = run_single(
        _unlink_the_4k_table_behind_kvms_back())[0]
    assert (1, 0x10 >> 9) in cached and (2, 0) in cached and (3, 0) in cached
    assert via_cache and again == first
    assert faulted_after_flush


def test_the_migration_end_scenario_is_clean_and_reaches_its_branches():
    for strategy in ("pct", "random"):
        r = tdpmmu.explore(SCENARIO, strategy=strategy, schedules=100, seed=1)
        assert r.failures == [], tdpmmu.render_failure(r.failures[0])
        assert r.coverage.get("huge-page-recovered") and r.coverage.get("yield-mid-walk")


@pytest.mark.parametrize("strategy", ["pct", "random"])
def test_leaving_rcu_before_the_pending_flush_is_a_use_after_free(strategy):
    """Negative control: with the pre-bd29677952fa order the table recovery unlinked is
    freed by the grace period while a vCPU's paging-structure cache still points into
    it; the walk that uses it is the use-after-free."""
    r = tdpmmu.explore(SCENARIO, strategy=strategy, schedules=1000, seed=0,
                       defects=["flush-after-rcu-unlock"], stop_on_first=True,
                       shrink=False)       # (shrinking is the catalogue test's)
    assert r.failures and r.failures[0].category == "UseAfterFree"
    assert "hardware_walk" in tdpmmu.render_failure(r.failures[0])


def _clear_rights_of_the_pd_entry(mask_of):
    """A 4K page mapped writable and executable; then ``mask_of(kvm)`` is cleared in the
    PDPT entry above its tables (behind KVM's back, the leaf untouched): which accesses
    the CPU still completes through the cached tables and, after a flush, a full walk."""
    def body(kvm):
        add_slot(kvm, npages=1024)
        v = vcpu(kvm)
        gpa = 0x10 << 12
        guest_access(v, gpa, WRITE_ACCESS)
        root = v.root.spt
        pdpt = spte_to_child_pt(kvm, root.vals[0], 4)
        leaf, _ = peek_translation(kvm, v.root, 0x10)
        leaf_before = S.is_writable_pte(leaf), S.is_executable_pte(leaf, kvm.masks)
        pdpt.vals[0] &= ~mask_of(kvm)
        v.tlb.flush()
        w = hardware_walk(v, 0x10, WRITE_ACCESS)
        r = hardware_walk(v, 0x10, READ_ACCESS)
        cached = [c for key, c in v.tlb.psc.items() if key[1] < 3]
        return leaf_before, w, r, cached
    return body


def test_a_write_needs_w_in_every_entry_of_the_walk():
    """EPT (and NPT) rights are the AND over the walk: W cleared in a non-leaf entry
    makes the writable leaf below it read-only to the CPU, also through the
    paging-structure caches filled by the next walk."""
    leaf_w, w, r, cached = run_single(_clear_rights_of_the_pd_entry(
        lambda kvm: S.PT_WRITABLE_MASK))[0]
    assert leaf_w == (True, True)
    assert w == PFERR_PRESENT_MASK                       # an EPT violation
    assert isinstance(r, TlbEntry) and not r.writable    # reads still work
    assert cached and all(c.__class__ is tuple and c[1] is False for c in cached)


def test_a_fetch_needs_x_in_every_entry_of_the_walk():
    leaf_w, w, r, cached = run_single(_clear_rights_of_the_pd_entry(
        lambda kvm: kvm.masks.x_mask))[0]
    assert leaf_w == (True, True)
    assert isinstance(w, TlbEntry) and w.writable and not w.executable
