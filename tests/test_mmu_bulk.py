"""The free-run vectorised paths (whole-table leaf zaps and removals) leave exactly the
state the per-entry paths leave: a differential test over random workloads."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tdpmmu.mmu import guest_access, kvm_destroy_vm, kvm_mmu_zap_all, kvm_zap_gfn_range, WRITE_ACCESS
from tdpmmu.mmu import spte as S
from tdpmmu.sync import leak_check, rcu_pending_callbacks

from mmu_helpers import add_slot, count_tables, leaf_sptes, run_single, spying, vcpu

NPAGES = 4 * 512


def workload(gfns, zaps, backing, zap_all=False):
    def body(kvm):
        add_slot(kvm, npages=NPAGES, backing=backing)
        v = vcpu(kvm)
        for g in gfns:
            guest_access(v, g << 12, WRITE_ACCESS)
        snaps = []
        for start, length in zaps:
            kvm_zap_gfn_range(kvm, start, start + length)
            snaps.append((leaf_sptes(kvm, v.root), count_tables(kvm, v.root),
                          kvm.stat.to_dict(), kvm.arch.tdp_mmu_pages))
        if zap_all:                                 # the whole-root zap, VM still alive
            kvm_mmu_zap_all(kvm)
            snaps.append((kvm.stat.to_dict(), kvm.arch.tdp_mmu_pages, rcu_pending_callbacks()))
        kvm_destroy_vm(kvm)
        snaps.append((kvm.stat.to_dict(), kvm.arch.tdp_mmu_pages, rcu_pending_callbacks(),
                       [p.name for p in leak_check()]))
        return snaps
    return body


@settings(max_examples=25, deadline=None)
@given(gfns=st.lists(st.integers(0, NPAGES - 1), min_size=1, max_size=40),
       zaps=st.lists(st.tuples(st.integers(0, NPAGES - 1), st.integers(1, NPAGES)), max_size=3),
       backing=st.sampled_from([S.PG_LEVEL_4K, S.PG_LEVEL_2M]), zap_all=st.booleans())
def test_bulk_and_per_entry_paths_agree(gfns, zaps, backing, zap_all):
    bulk, rb = run_single(workload(gfns, zaps, backing, zap_all))                # bulk
    fine, rf = run_single(workload(gfns, zaps, backing, zap_all), tracing=True)  # per entry
    assert bulk == fine


def test_a_full_table_is_zapped_in_one_step_when_free_running():
    gfns = list(range(512))
    _, rb = run_single(workload(gfns, [(0, 512)], S.PG_LEVEL_4K))
    _, rf = run_single(workload(gfns, [(0, 512)], S.PG_LEVEL_4K), tracing=True)
    assert rb.steps < rf.steps - 500


def _regions(calls):
    """4 x 2M of 4K mappings written in full beside 2M-backed memory with 2M leaves and a
    hole; a range zap of the middle (whole 2M entries, and part of one), then the
    whole-root zap.  ``calls`` records the whole-region steps (gfn, huge)."""
    from tdpmmu.mmu import tdp_mmu as T

    def body(kvm):
        with spying(T, "_bulk_zap_leaf_region", calls, lambda kvm, it, end, huge: (it.gfn, huge)):
            add_slot(kvm, npages=4 * 512)
            add_slot(kvm, base_gfn=4 * 512, npages=4 * 512, backing=S.PG_LEVEL_2M)
            v = vcpu(kvm)
            for g in list(range(4 * 512)) + [4 * 512 + 7, 6 * 512 + 3, 7 * 512]:
                guest_access(v, g << 12, WRITE_ACCESS)
            snaps = []
            for start, end in ((512 + 100, 6 * 512 + 1), (0, 512), (7 * 512, 8 * 512)):
                kvm_zap_gfn_range(kvm, start, end)
                snaps.append((leaf_sptes(kvm, v.root), count_tables(kvm, v.root),
                              kvm.stat.to_dict()))
            for g in range(0, 8 * 512, 5):
                guest_access(v, g << 12, WRITE_ACCESS)
            kvm_mmu_zap_all(kvm)
            snaps.append((kvm.stat.to_dict(), kvm.arch.tdp_mmu_pages))
            kvm_destroy_vm(kvm)
            snaps.append((rcu_pending_callbacks(), [p.name for p in leak_check()]))
            return snaps
    return body


def test_whole_1g_regions_are_zapped_in_one_step_as_per_entry():
    calls = []
    bulk, rb = run_single(_regions(calls))
    assert {huge for _, huge in calls} == {True, False}, calls   # range zap and teardown
    fine_calls = []
    fine, rf = run_single(_regions(fine_calls), tracing=True)
    assert not fine_calls and bulk == fine
    assert rb.steps < rf.steps - 4 * 512
    assert bulk[0][2]["pages_2m"] == 1 and bulk[-2] == (
        {**bulk[-2][0], "pages_4k": 0, "pages_2m": 0}, 0)
