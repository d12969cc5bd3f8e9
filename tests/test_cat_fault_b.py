"""Group fault_b: KVM_PRE_FAULT_MEMORY and the shadow MMU beside the TDP MMU (nested
shadow pages), correct behaviour and the catalogue defects re-introduced on them."""

from __future__ import annotations

import pytest

from tdpmmu.explore.engine import explore
from tdpmmu.mmu import READ_ACCESS, WRITE_ACCESS, guest_access, kvm_destroy_vm
from tdpmmu.mmu import shadow_mmu as SM
from tdpmmu.mmu import spte as S
from tdpmmu.mmu.kvm import KVM_MEMSLOT_INVALID
from tdpmmu.mmu.mmu import (EAGAIN, ENOENT, KvmPreFaultMemory, _publish_memslots,
                            kvm_vcpu_pre_fault_memory)
from tdpmmu.runtime.errors import DataRace, LockNotHeld
from tdpmmu.sync import leak_check

from mmu_helpers import add_slot, leaf_sptes, run_single, vcpu


# -- KVM_PRE_FAULT_MEMORY -----------------------------------------------------------------

def test_prefault_maps_the_range_ahead_of_the_guest():
    def body(kvm):
        add_slot(kvm, npages=1024)
        v = vcpu(kvm)
        rng = KvmPreFaultMemory(0x10 << 12, 3 << 12)
        r = kvm_vcpu_pre_fault_memory(v, rng)
        leaves = leaf_sptes(kvm, v.root)
        return r, rng.size, rng.gpa, sorted(g for g, _ in leaves), v.stat.pf_taken
    (r, size, gpa, gfns, taken), _ = run_single(body)
    assert (r, size, gpa) == (0, 0, 0x13 << 12)
    assert gfns == [0x10, 0x11, 0x12]
    assert taken == 0                       # prefetch faults are not guest faults


def test_prefault_huge_backing_covers_the_whole_huge_page():
    def body(kvm):
        add_slot(kvm, npages=1024, backing=S.PG_LEVEL_2M)
        v = vcpu(kvm)
        rng = KvmPreFaultMemory(0x10 << 12, 0x300 << 12)
        return kvm_vcpu_pre_fault_memory(v, rng), sorted(leaf_sptes(kvm, v.root))
    (r, leaves), _ = run_single(body)
    assert r == 0 and leaves == [(0, S.PG_LEVEL_2M), (512, S.PG_LEVEL_2M)]


def test_prefault_without_memslot_is_enoent_and_bad_ranges_einval():
    def body(kvm):
        add_slot(kvm, npages=16)
        v = vcpu(kvm)
        return (kvm_vcpu_pre_fault_memory(v, KvmPreFaultMemory(0x100 << 12, 1 << 12)),
                kvm_vcpu_pre_fault_memory(v, KvmPreFaultMemory(0x123, 1 << 12)),
                kvm_vcpu_pre_fault_memory(v, KvmPreFaultMemory(0, 0)))
    (enoent, unaligned, empty), _ = run_single(body)
    assert enoent == -ENOENT and unaligned == empty == -22


def _invalid_slot_body(kvm):
    slot = add_slot(kvm, npages=16)
    v = vcpu(kvm)
    from dataclasses import replace
    _publish_memslots(kvm, 0, [replace(slot, flags=slot.flags | KVM_MEMSLOT_INVALID)])
    return kvm_vcpu_pre_fault_memory(v, KvmPreFaultMemory(0, 1 << 12))


def test_prefault_on_a_slot_being_deleted_punts_eagain_to_userspace():
    r, _ = run_single(_invalid_slot_body)
    assert r == -EAGAIN


def test_prefault_defect_retries_the_invalid_slot_forever():
    from tdpmmu.runtime import Execution
    from tdpmmu.runtime.errors import Livelock
    from tdpmmu.runtime.strategies import FreeRun
    from tdpmmu.mmu import kvm_create_vm
    from tdpmmu.sync import spawn

    def setup():
        kvm = kvm_create_vm()
        spawn("t0", lambda: _invalid_slot_body(kvm))
    strat = FreeRun()
    strat.new_execution()
    r = Execution(strat, defects=("prefault-vs-memslot-delete-deadlock",), params={},
                  max_steps=3000).run(setup)
    assert isinstance(r.failure, Livelock)


def test_prefault_scenario_with_defect_is_a_livelock():
    res = explore("mmu-prefault-vs-memslot-delete", strategy="random", schedules=200,
                  defects=["prefault-vs-memslot-delete-deadlock"], stop_on_first=True,
                  shrink=False)
    assert res.failures and res.failures[0].category == "Livelock"


# -- the shadow MMU -----------------------------------------------------------------------

def _nested_vm(kvm, nr_mmu_pages=64):
    add_slot(kvm, npages=1024)
    vs = [vcpu(kvm) for _ in range(2)]
    SM.kvm_mmu_change_mmu_pages(kvm, nr_mmu_pages)
    SM.kvm_mmu_load_nested_root(vs[1], 0x100)
    for l2_gfn in (0, 512):
        SM.kvm_mmu_nested_ept_page_fault(vs[1], l2_gfn, [0x101, 0x102, 0x103 + (l2_gfn >> 9)])
    return vs


def _sp(kvm, gfn):
    (sp,) = kvm.arch.mmu_page_hash[gfn]
    return sp


def test_nested_fault_shadows_each_guest_table_and_tracks_upper_levels():
    def body(kvm):
        _nested_vm(kvm)
        return (kvm.arch.n_used_mmu_pages, kvm.arch.indirect_shadow_pages,
                sorted(kvm.write_tracked), sorted(_sp(kvm, 0x102).children),
                [p.gfn for p, _ in _sp(kvm, 0x103).parent_ptes])
    (used, indirect, tracked, children, parents), _ = run_single(body)
    assert used == indirect == 5
    assert tracked == [0x100, 0x101, 0x102]
    assert children == [0, 1] and parents == [0x102]


def test_l1_write_to_a_shadowed_table_unsyncs_it_and_marks_the_parents():
    def body(kvm):
        v0, v1 = _nested_vm(kvm)
        guest_access(v0, 0x103 << 12, WRITE_ACCESS)          # unsync: mapped writable
        pd, pdpt, root = _sp(kvm, 0x102), _sp(kvm, 0x101), _sp(kvm, 0x100)
        marked = (_sp(kvm, 0x103).hdr.peek(SM.SP_UNSYNC), pd.hdr.peek(SM.SP_UNSYNC_CHILDREN),
                  pd.hdr.peek(SM.SP_BITMAP), pdpt.hdr.peek(SM.SP_UNSYNC_CHILDREN),
                  root.hdr.peek(SM.SP_UNSYNC_CHILDREN), kvm.stat.mmu_unsync)
        r_pd = guest_access(v0, 0x102 << 12, WRITE_ACCESS)    # write-tracked: emulated
        SM.kvm_mmu_sync_roots(v1)
        synced = (_sp(kvm, 0x103).hdr.peek(SM.SP_UNSYNC), pd.hdr.peek(SM.SP_UNSYNC_CHILDREN),
                  pd.hdr.peek(SM.SP_BITMAP), root.hdr.peek(SM.SP_UNSYNC_CHILDREN),
                  kvm.stat.mmu_unsync)
        wp = {g: S.is_writable_pte(s) for (g, _), s in leaf_sptes(kvm, v0.root).items()}
        return marked, r_pd, synced, wp
    (marked, r_pd, synced, wp), _ = run_single(body)
    assert marked == (1, 1, 0b1, 1, 1, 1)
    assert r_pd is None
    assert synced == (0, 0, 0, 0, 0)
    assert wp[0x103] is False                                 # write-protected again


def test_make_mmu_pages_available_zaps_the_oldest_at_the_limit_and_teardown_frees_all():
    def body(kvm):
        v0, v1 = _nested_vm(kvm, nr_mmu_pages=10)    # 5 used after the setup
        SM.kvm_mmu_nested_ept_page_fault(v1, 1024, [0x101, 0x102, 0x105])   # avail 5: ok
        before = kvm.stat.mmu_recycled
        SM.kvm_mmu_nested_ept_page_fault(v1, 1536, [0x101, 0x102, 0x106])   # avail 4: zap
        after = (kvm.arch.n_used_mmu_pages, kvm.stat.mmu_recycled - before,
                 sorted(kvm.arch.mmu_page_hash), sorted(kvm.write_tracked))
        kvm_destroy_vm(kvm)
        return after, kvm.arch.n_used_mmu_pages, len(leak_check())
    ((used, recycled, hashed, tracked), used_end, live), _ = run_single(body)
    # every page but the root in use went, then the fault shadowed its three tables again
    assert recycled == 5 and used == 4
    assert hashed == [0x100, 0x101, 0x102, 0x106] and tracked == [0x100, 0x101, 0x102]
    assert used_end == 0 and live == 0


def test_reclaim_requires_the_write_lock():
    from tdpmmu.sync import read_lock, read_unlock

    def body(kvm):
        v0, _ = _nested_vm(kvm)
        read_lock(kvm.mmu_lock)
        SM.make_mmu_pages_available(v0)
    with pytest.raises(LockNotHeld):
        run_single(body)


@pytest.mark.parametrize("defect, cls", [("write-lock-helper-under-read-lock", LockNotHeld),
                                         ("unsync-race-under-read-lock", DataRace)])
def test_nested_scenario_defects_are_found(defect, cls):
    res = explore("mmu-nested-shadow-vs-tdp-faults", strategy="pct", schedules=200,
                  defects=[defect], stop_on_first=True, shrink=False)
    assert res.failures and res.failures[0].category == cls.__name__


def test_nested_scenario_is_clean_on_the_correct_model():
    for strategy in ("pct", "random"):
        res = explore("mmu-nested-shadow-vs-tdp-faults", strategy=strategy, schedules=100)
        assert not res.failures, res.failures[0].message
