"""The free-run fault path (mmu/fastpath.py: a first-touch fault or a write-protection
fast fault done in one step) leaves exactly the state of the faithful per-step path:
a differential test over random access patterns, memslot layouts (holes for MMIO,
read-only slots, 4K/2M/1G backing), SPTE flavours (EPT with and without A/D bits, NPT),
4- and 5-level roots, SMM, NX huge pages, dirty logging, zaps and TLB flushes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdpmmu.mmu import (EXEC_ACCESS, READ_ACCESS, WRITE_ACCESS, fastpath, guest_access,
                        kvm_destroy_vm, kvm_zap_gfn_range)
from tdpmmu.mmu import spte as S
from tdpmmu.mmu.hw import kvm_smm_transition
from tdpmmu.mmu.kvm import KVM_MEM_READONLY
from tdpmmu.mmu.oracles import _NO_WRITE, DirtyLogIncomplete
from tdpmmu.mmu.mmu import (kvm_flush_remote_tlbs, kvm_get_dirty_log_protect,
                            kvm_set_memslot_dirty_logging)
from tdpmmu.sync import leak_check, mutex_lock, mutex_unlock, rcu_pending_callbacks

from mmu_helpers import add_slot, run_single, vcpu

#: slot 0: gfns [0, 1024), slot 1: [1536, 2048) (a hole between: MMIO), slot 2: read-only
SPAN = 2560
FLAVOURS = {"ept": S.EPT, "ept-no-ad": S.EPT_NO_AD, "npt": S.NPT}

op = st.one_of(
    st.tuples(st.just("access"), st.integers(0, SPAN - 1),
              st.sampled_from([READ_ACCESS, WRITE_ACCESS, WRITE_ACCESS, EXEC_ACCESS]),
              st.integers(0, 1)),
    st.tuples(st.just("zap"), st.integers(0, SPAN - 1), st.integers(1, 1024)),
    st.tuples(st.just("log"), st.booleans()),
    st.tuples(st.just("get-log")),
    st.tuples(st.just("flush")),
    st.tuples(st.just("smm"), st.integers(0, 1), st.booleans()),
)


def _tables(kvm, root):
    """Every SPTE of every table under ``root`` by (table, index), tables by pfn."""
    out = {}

    def walk(pt, level):
        out[pt.pfn] = (level, tuple(pt.vals))
        for v in pt.vals:
            if S.is_shadow_present_pte(v) and not S.is_last_spte(v, level):
                walk(kvm.pt_by_pfn[S.spte_to_pfn(v)].spt, level - 1)
    walk(root.spt, root.role.level)
    return out


def snapshot(kvm, vcpus, slots):
    roots = {}
    for v in vcpus:
        if v.root is not None:
            roots[v.root.spt.pfn] = _tables(kvm, v.root)
    tlbs = [(sorted((k, (e.pfn, e.writable, e.executable, e.as_id, e.dirty,
                         e.pt.pfn, e.idx)) for k, e in v.tlb.entries.items()),
             sorted(((k[0].pfn, k[1], k[2]), pt.pfn) for k, pt in v.tlb.psc.items()),
             v.stat.__dict__.copy(), v.guest_exits, len(v.mmu_page_cache),
             v.mode.vals[0], v.pml_buffer[:])
            for v in vcpus]
    logs = []
    for s in slots:
        bitmap = None if s.dirty_bitmap is None else sorted(s.dirty_bitmap)
        # the oracle's record: which pages were written (the steps differ by design)
        written = (None if s.dirty_writes is None
                   else [x != _NO_WRITE for x in s.dirty_writes.first])
        logs.append((bitmap, written))
    young = sorted((k, (r.pt.pfn, r.idx, r.pfn, r.root.spt.pfn)) for k, r in kvm.young_walks.items())
    return (roots, tlbs, logs, young, kvm.stat.to_dict(), kvm.arch.tdp_mmu_pages,
            sorted(kvm.pt_by_pfn))


def workload(ops, backing, nx):
    def body(kvm):
        if nx:
            kvm.nx_huge_pages = True
        slots = [add_slot(kvm, base_gfn=0, npages=1024, backing=backing),
                 add_slot(kvm, base_gfn=1536, npages=512, backing=backing),
                 add_slot(kvm, base_gfn=2048, npages=512, backing=backing,
                          flags=KVM_MEM_READONLY)]
        add_slot(kvm, as_id=1, base_gfn=0, npages=1024, backing=backing)
        vcpus = [vcpu(kvm), vcpu(kvm)]
        out = []
        for o in ops:
            if o[0] == "access":
                _, gfn, access, i = o
                out.append(guest_access(vcpus[i], gfn << S.PAGE_SHIFT, access))
            elif o[0] == "zap":
                kvm_zap_gfn_range(kvm, o[1], o[1] + o[2])
            elif o[0] == "log":
                mutex_lock(kvm.slots_lock)
                kvm_set_memslot_dirty_logging(kvm, slots[0], o[1])
                mutex_unlock(kvm.slots_lock)
            elif o[0] == "get-log" and slots[0].dirty_bitmap is not None:
                mutex_lock(kvm.slots_lock)
                out.append(sorted(kvm_get_dirty_log_protect(kvm, slots[0])))
                mutex_unlock(kvm.slots_lock)
            elif o[0] == "flush":
                kvm_flush_remote_tlbs(kvm)
            elif o[0] == "smm":
                kvm_smm_transition(vcpus[o[1]], o[2])
            out.append(snapshot(kvm, vcpus, slots))
        kvm_destroy_vm(kvm)
        out.append((kvm.stat.to_dict(), kvm.arch.tdp_mmu_pages, rcu_pending_callbacks(),
                    [p.name for p in leak_check()]))
        return out
    return body


def both(ops, backing, nx, flavour, root_level):
    kw = dict(masks=FLAVOURS[flavour], root_level=root_level)
    fused, rf = run_single(workload(ops, backing, nx), **kw)
    faithful, rs = run_single(workload(ops, backing, nx), params={"_fused_faults": False},
                              **kw)
    return fused, faithful, rf, rs


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(op, min_size=1, max_size=30),
       backing=st.sampled_from([S.PG_LEVEL_4K, S.PG_LEVEL_2M, S.PG_LEVEL_1G]),
       nx=st.booleans(), flavour=st.sampled_from(sorted(FLAVOURS)),
       root_level=st.sampled_from([4, 5]))
def test_the_free_run_fault_path_equals_the_faithful_path(ops, backing, nx, flavour,
                                                          root_level):
    fused, faithful, _, _ = both(ops, backing, nx, flavour, root_level)
    assert fused == faithful


def _populate_then_dirty(n):
    ops = [("access", g, WRITE_ACCESS, 0) for g in range(n)]
    ops += [("log", True)] + [("access", g, WRITE_ACCESS, 0) for g in range(n)]
    ops += [("get-log",)] + [("access", g, WRITE_ACCESS, 0) for g in range(n)]
    return ops


def test_the_path_is_taken_for_first_touch_and_write_protection_faults():
    """Not vacuous: the fused run does the faults in far fewer steps, and both kinds."""
    ops = _populate_then_dirty(600)
    fused, faithful, rf, rs = both(ops, S.PG_LEVEL_4K, False, "ept", 4)
    assert fused == faithful
    assert rf.steps * 4 < rs.steps
    assert rf.coverage.get("fast-pf-made-writable") == rs.coverage.get("fast-pf-made-writable") > 0


def test_a_fused_fault_that_forgets_the_dirty_bitmap_is_caught_by_the_oracle(monkeypatch):
    """Negative control: the dirty-log oracle fires at the next harvest."""
    monkeypatch.setattr(fastpath, "mark_page_dirty_in_slot", lambda kvm, slot, gfn: None)
    with pytest.raises(DirtyLogIncomplete):
        run_single(workload(_populate_then_dirty(40), S.PG_LEVEL_4K, False))


def test_a_fused_fault_with_another_memtype_is_caught_by_the_comparison(monkeypatch):
    """Negative control of the differential test itself: a leaf that no checker
    objects to (write-back memtype dropped) but that the faithful path never makes."""
    real = fastpath.leaf_spte_template
    monkeypatch.setattr(fastpath, "leaf_spte_template",
                        lambda kvm, level, ad, nx: real(kvm, level, ad, nx) & ~(7 << 3))
    fused, faithful, _, _ = both(_populate_then_dirty(40), S.PG_LEVEL_4K, False, "ept", 4)
    assert fused != faithful


@pytest.mark.parametrize("defects,tracing", [(("nx-split-not-tracked",), False), ((), True)])
def test_the_faithful_path_runs_under_defects_and_tracing(defects, tracing):
    ops = [("access", g, WRITE_ACCESS, 0) for g in range(20)]
    _, r = run_single(workload(ops, S.PG_LEVEL_4K, False), defects=defects, tracing=tracing)
    _, rs = run_single(workload(ops, S.PG_LEVEL_4K, False), params={"_fused_faults": False})
    _, rf = run_single(workload(ops, S.PG_LEVEL_4K, False))
    assert r.steps >= rs.steps > rf.steps + 20 * 20     # (tracing also stops bulk paths)
