"""Functional tests of the TDP MMU model, single-threaded, against the kernel's semantics."""

from __future__ import annotations

import pytest

import tdpmmu
from tdpmmu.mmu import (EXEC_ACCESS, READ_ACCESS, WRITE_ACCESS, guest_access, kvm_destroy_vm,
                        kvm_mmu_zap_all_fast, kvm_smm_transition, kvm_zap_gfn_range)
from tdpmmu.mmu import spte as S
from tdpmmu.mmu.mmu_internal import HDR_INVALID, HDR_TO_ZAP
from tdpmmu.mmu.tdp_iter import TdpIter, for_each_tdp_pte_min_level, tdp_iter_next, tdp_iter_start
from tdpmmu.mmu.tdp_mmu import (tdp_mmu_iter_cond_resched, tdp_mmu_set_spte,
                                tdp_mmu_set_spte_atomic)
from tdpmmu.runtime.errors import KernelWarning
from tdpmmu.sync import (leak_check, mutex_lock, mutex_unlock, rcu_pending_callbacks,
                         rcu_read_lock, rcu_read_unlock, read_lock, read_unlock, write_lock,
                         write_unlock)

from mmu_helpers import add_slot, count_tables, iter_at_leaf, leaf_sptes, run_single, vcpu


def roots_of(kvm):
    return kvm.arch.tdp_mmu_roots.peek_all()


def zap_all_fast(kvm):
    mutex_lock(kvm.slots_lock)
    kvm_mmu_zap_all_fast(kvm)
    mutex_unlock(kvm.slots_lock)


def test_first_touch_fault_maps_a_4k_page():
    def body(kvm):
        slot = add_slot(kvm)
        v = vcpu(kvm)
        pfn = guest_access(v, 5 << 12, WRITE_ACCESS)
        leaves = leaf_sptes(kvm, v.root)
        again = guest_access(v, 5 << 12, READ_ACCESS)
        return slot, v, pfn, leaves, again
    (slot, v, pfn, leaves, again), _ = run_single(body)
    kvm = v.kvm
    assert pfn == slot.gfn_to_pfn(5) == again
    assert list(leaves) == [(5, 1)]
    spte = leaves[(5, 1)]
    m = kvm.masks
    assert S.spte_to_pfn(spte) == pfn
    assert S.is_writable_pte(spte) and S.is_mmu_writable_spte(spte, m)
    assert S.is_accessed_spte(spte, m) and S.is_dirty_spte(spte, m)
    assert not S.is_large_pte(spte)
    assert kvm.stat.pages_4k == 1 and kvm.stat.pages_2m == 0
    assert kvm.arch.tdp_mmu_pages == 3          # PDPT, PD, PT under a 4-level root
    assert v.stat.pf_taken == 1 and v.stat.pf_fixed == 1   # the second access hit the TLB


@pytest.mark.parametrize("backing,level,stat", [(S.PG_LEVEL_2M, 2, "pages_2m"),
                                                 (S.PG_LEVEL_1G, 3, "pages_1g")])
def test_huge_mappings_follow_the_backing(backing, level, stat):
    def body(kvm):
        slot = add_slot(kvm, npages=1 << 18, backing=backing)
        v = vcpu(kvm)
        pfn = guest_access(v, (3 + (1 << 9)) << 12, READ_ACCESS)
        return slot, v, pfn, leaf_sptes(kvm, v.root)
    (slot, v, pfn, leaves), _ = run_single(body)
    ((gfn, lvl), spte), = leaves.items()
    assert lvl == level and gfn == S.gfn_round_for_level(3 + (1 << 9), level)
    assert S.is_large_pte(spte)
    assert S.spte_to_pfn(spte) == slot.gfn_to_pfn(gfn)
    assert S.spte_to_pfn(spte) % S.KVM_PAGES_PER_HPAGE(level) == 0
    assert pfn == slot.gfn_to_pfn(3 + (1 << 9))
    assert getattr(v.kvm.stat, stat) == 1


def test_slot_edge_disallows_a_huge_mapping():
    def body(kvm):
        add_slot(kvm, npages=512 + 256, backing=S.PG_LEVEL_2M)
        v = vcpu(kvm)
        guest_access(v, 10 << 12)            # inside the first, full 2M region
        guest_access(v, (512 + 10) << 12)    # the second region is cut by the slot end
        return leaf_sptes(kvm, v.root)
    leaves, _ = run_single(body)
    assert sorted(leaves) == [(0, 2), (522, 1)]


def test_access_without_a_memslot_creates_an_mmio_spte():
    def body(kvm):
        add_slot(kvm, npages=16)
        v = vcpu(kvm)
        r = guest_access(v, 0x100 << 12, READ_ACCESS)
        r2 = guest_access(v, 0x100 << 12, READ_ACCESS)   # hits the MMIO SPTE: no new fault
        pt = v.root
        return r, r2, v, pt
    (r, r2, v, root), _ = run_single(body)
    assert r is None and r2 is None
    assert v.stat.pf_emulate == 1 and v.stat.pf_mmio_spte_created == 1
    assert v.stat.pf_taken == 1


def test_vcpus_share_a_root_per_address_space_with_the_kernels_refcounts():
    def body(kvm):
        add_slot(kvm)
        a, b = vcpu(kvm), vcpu(kvm)
        guest_access(a, 0)
        guest_access(b, 0x1000)
        counts = [r.tdp_mmu_root_count.peek() for r in roots_of(kvm)]
        same = a.root is b.root
        kvm_smm_transition(a, True)
        add_slot(kvm, as_id=1)
        guest_access(a, 0x2000)
        roles = [(r.as_id, r.role.smm) for r in roots_of(kvm)]
        return counts, same, roles, a.root.tdp_mmu_root_count.peek()
    (counts, same, roles, smm_count), _ = run_single(body)
    assert same and counts == [3]          # MMU + vcpu0 + vcpu1
    assert roles == [(1, 1), (0, 0)]       # newest first (list_add_rcu at the head)
    assert smm_count == 2                  # MMU + vcpu0


def test_zap_all_fast_invalidates_zaps_and_vcpus_reload():
    def body(kvm):
        add_slot(kvm)
        v = vcpu(kvm)
        guest_access(v, 0, WRITE_ACCESS)
        old = v.root
        zap_all_fast(kvm)
        state = (old.hdr.peek(HDR_INVALID), old.hdr.peek(HDR_TO_ZAP),
                 leaf_sptes(kvm, old), kvm.stat.pages_4k, old.tdp_mmu_root_count.peek())
        guest_access(v, 0, READ_ACCESS)      # KVM_REQ_MMU_FREE_OBSOLETE_ROOTS, new root
        new = v.root
        return old, new, state, roots_of(kvm)
    (old, new, state, roots), _ = run_single(body)
    invalid, to_zap, leaves, pages_4k, count = state
    assert invalid == 1 and to_zap == 0 and leaves == {} and pages_4k == 0
    assert count == 1                        # only the vCPU's reference is left
    assert new is not old and roots == [new]  # the vCPU's put freed the old root


def test_zap_gfn_range_zaps_leaves_in_range_and_flushes():
    def body(kvm):
        add_slot(kvm)
        v = vcpu(kvm)
        for g in (1, 2, 600):
            guest_access(v, g << 12, WRITE_ACCESS)
        tables = count_tables(kvm, v.root)
        kvm_zap_gfn_range(kvm, 0, 512)
        return (leaf_sptes(kvm, v.root), tables, count_tables(kvm, v.root), kvm.stat,
                v.tlb.flushes)
    (leaves, t0, t1, stat, flushes), _ = run_single(body)
    assert list(leaves) == [(600, 1)]
    assert t0 == t1 == 4                     # leaf zaps free no page table
    assert stat.pages_4k == 1 and stat.remote_tlb_flush == 1


def test_vm_teardown_leaves_no_root_table_or_rcu_callback():
    def body(kvm):
        add_slot(kvm)
        add_slot(kvm, as_id=1)
        a, b = vcpu(kvm), vcpu(kvm)
        guest_access(a, 0, WRITE_ACCESS)
        kvm_smm_transition(b, True)
        guest_access(b, 0x5000, WRITE_ACCESS)
        zap_all_fast(kvm)
        guest_access(a, 0x1000)
        kvm_destroy_vm(kvm)
        return roots_of(kvm), rcu_pending_callbacks(), leak_check(), kvm.arch.tdp_mmu_pages
    (roots, pending, live, pages), _ = run_single(body)
    assert roots == [] and pending == 0 and pages == 0
    assert live == []


def test_five_level_root():
    def body(kvm):
        add_slot(kvm)
        v = vcpu(kvm)
        guest_access(v, 7 << 12)
        return v.root.role.level, kvm.arch.tdp_mmu_pages, list(leaf_sptes(kvm, v.root))
    (level, pages, leaves), _ = run_single(body, root_level=5)
    assert level == 5 and pages == 4 and leaves == [(7, 1)]


def test_npt_masks():
    def body(kvm):
        add_slot(kvm)
        v = vcpu(kvm)
        guest_access(v, 3 << 12, WRITE_ACCESS)
        return leaf_sptes(kvm, v.root)[(3, 1)]
    spte, _ = run_single(body, masks=S.NPT)
    assert spte & S.PT_PRESENT_MASK and S.is_writable_pte(spte)
    assert S.is_mmu_writable_spte(spte, S.NPT)


def test_nx_huge_page_split_on_exec():
    def body(kvm):
        add_slot(kvm, backing=S.PG_LEVEL_2M)
        v = vcpu(kvm)
        guest_access(v, 0, EXEC_ACCESS)
        guest_access(v, 0x1000, READ_ACCESS)
        return leaf_sptes(kvm, v.root), kvm.stat, len(kvm.arch.possible_nx_huge_pages)
    (leaves, stat, nx), _ = run_single(body, nx_huge_pages=True)
    assert sorted(leaves) == [(0, 1), (1, 1)]       # no 2M page may be executable
    assert stat.nx_lpage_splits == 1 and nx == 1 and stat.pages_2m == 0


# -- the iterator --------------------------------------------------------------------

def test_iterator_walks_pre_order_and_re_reads_on_step_down():
    def body(kvm):
        add_slot(kvm)
        v = vcpu(kvm)
        for g in (0, 1, 513):
            guest_access(v, g << 12)
        read_lock(kvm.mmu_lock)
        rcu_read_lock()
        seen = []
        for it in for_each_tdp_pte_min_level(kvm, v.root, S.PG_LEVEL_4K, 0, 1024):
            if S.is_shadow_present_pte(it.old_spte):
                seen.append((it.level, it.gfn))
        rcu_read_unlock()
        read_unlock(kvm.mmu_lock)
        return seen
    seen, _ = run_single(body, fine_grained=True)
    assert seen == [(4, 0), (3, 0), (2, 0), (1, 0), (1, 1), (2, 512), (1, 513)]


def test_coarse_and_fine_grained_walks_visit_the_same_present_entries():
    def walk(fine):
        def body(kvm):
            add_slot(kvm, npages=4096)
            v = vcpu(kvm)
            for g in (3, 4, 100, 511, 512, 2000, 4095):
                guest_access(v, g << 12)
            read_lock(kvm.mmu_lock)
            rcu_read_lock()
            seen = [(it.level, it.gfn, it.old_spte) for it in
                    for_each_tdp_pte_min_level(kvm, v.root, S.PG_LEVEL_4K, 2, 3000)
                    if S.is_shadow_present_pte(it.old_spte)]
            rcu_read_unlock()
            read_unlock(kvm.mmu_lock)
            return seen
        seen, r = run_single(body, fine_grained=fine)
        return seen, r.steps
    fine, fine_steps = walk(True)
    coarse, coarse_steps = walk(False)
    assert fine == coarse
    assert coarse_steps < fine_steps


def test_cond_resched_yields_restarts_and_guards_forward_progress():
    from tdpmmu.runtime.strategies import DFS

    def body(kvm):
        add_slot(kvm)
        v = vcpu(kvm)
        for g in (0, 1):
            guest_access(v, g << 12)
        write_lock(kvm.mmu_lock)
        rcu_read_lock()
        it = TdpIter(kvm)
        tdp_iter_start(it, v.root, S.PG_LEVEL_4K, 0)
        events = []
        while it.valid and it.gfn < 2:
            if tdp_mmu_iter_cond_resched(kvm, it, False, False):
                events.append(("yield", it.level, it.next_last_level_gfn))
            tdp_iter_next(it)
            events.append(("at", it.level, it.gfn))
        rcu_read_unlock()
        write_unlock(kvm.mmu_lock)
        return events
    # need_resched is always true when another task can run: spawn one so it is asked
    from tdpmmu.runtime import Execution, traps
    from tdpmmu.mmu import kvm_create_vm
    from tdpmmu.sync import Words, cpu_relax
    out = {}

    def setup():
        kvm = kvm_create_vm()
        done = Words("done")

        def t0():
            out["events"] = body(kvm)
            done.write_once(0, 1)

        def t1():                       # stays runnable, so need_resched() is asked
            while not done.read_once(0):
                cpu_relax()
        traps.spawn("t0", t0)
        traps.spawn("t1", t1)

    class Always(DFS):
        def next_value(self, n, label, preemptive):
            return 1
    s = Always(preemption_bound=None)
    s.new_execution()
    r = Execution(s).run(setup)
    assert r.failure is None, r.failure
    ev = out["events"]
    # the first possible yield is refused: no progress since the walk (re)started
    assert ev[0][0] == "at"
    ys = [e for e in ev if e[0] == "yield"]
    assert ys, ev
    # after a yield the next step restarts from the root at next_last_level_gfn
    i = ev.index(ys[0])
    assert ev[i + 1] == ("at", 4, ys[0][2] & ~((1 << 27) - 1))
    # and never two yields without a side step in between
    for a, b in zip(ev, ev[1:]):
        assert not (a[0] == "yield" and b[0] == "yield")


# -- SPTE updates --------------------------------------------------------------------

def test_set_spte_atomic_failure_has_no_side_effect():
    def body(kvm):
        add_slot(kvm)
        v = vcpu(kvm)
        guest_access(v, 0)
        read_lock(kvm.mmu_lock)
        rcu_read_lock()
        it = iter_at_leaf(kvm, v.root, 0)
        real = it.old_spte
        it.old_spte = real ^ S.PT_WRITABLE_MASK         # a stale snapshot
        before = kvm.stat.pages_4k
        ok = tdp_mmu_set_spte_atomic(kvm, it, S.SHADOW_NONPRESENT_VALUE)
        after = (it.old_spte, it.pt.peek(it.idx), kvm.stat.pages_4k)
        rcu_read_unlock()
        read_unlock(kvm.mmu_lock)
        return ok, real, before, after
    (ok, real, before, (old, mem, pages)), _ = run_single(body)
    assert ok is False and old == real and mem == real and pages == before


def test_replacing_a_present_leaf_with_another_pfn_is_the_kernels_bug():
    def body(kvm):
        add_slot(kvm)
        v = vcpu(kvm)
        guest_access(v, 0)
        write_lock(kvm.mmu_lock)
        rcu_read_lock()
        it = iter_at_leaf(kvm, v.root, 0)
        other = (it.old_spte & ~S.SPTE_BASE_ADDR_MASK) | ((S.spte_to_pfn(it.old_spte) + 1) << 12)
        tdp_mmu_set_spte(kvm, it.as_id, it.sptep, it.old_spte, other, it.gfn, it.level)
    with pytest.raises(KernelWarning, match="different pfn"):
        run_single(body)


# -- SMM and the seed's address-space hazard -----------------------------------------

def smm_lifecycle(kvm):
    add_slot(kvm)
    add_slot(kvm, as_id=1)
    a, b = vcpu(kvm), vcpu(kvm)
    guest_access(a, 0)
    kvm_smm_transition(b, True)
    guest_access(b, 0x1000, WRITE_ACCESS)
    both = sorted(r.as_id for r in roots_of(kvm))
    zap_all_fast(kvm)
    after_fast = sorted((r.as_id, r.hdr.peek(HDR_INVALID)) for r in roots_of(kvm))
    kvm_destroy_vm(kvm)
    return both, after_fast, roots_of(kvm)


def test_smm_roots_in_both_address_spaces_are_all_zapped_and_freed():
    (both, after_fast, left), _ = run_single(smm_lifecycle)
    assert both == [0, 1]
    assert after_fast == [(0, 1), (1, 1)]     # invalid, kept alive only by the vCPUs
    assert left == []


def test_invalidated_root_walk_filtered_by_one_address_space_leaks_the_smm_root():
    with pytest.raises(KernelWarning, match="tdp_mmu_roots not empty"):
        run_single(smm_lifecycle, defects=("zap-invalidated-roots-one-as",))


def test_smm_scenario_and_its_variant_under_exploration():
    ok = tdpmmu.explore("mmu-smm-teardown", strategy="pct", schedules=100)
    assert ok.failures == []
    bad = tdpmmu.explore("mmu-smm-teardown", strategy="pct", schedules=100,
                         defects=["zap-invalidated-roots-one-as"], stop_on_first=True)
    f = bad.failures[0]
    assert f.category == "KernelWarning" and "tdp_mmu_roots not empty" in f.message


# -- the invalidation range (kvm_main.c): INVALID_GPA until a range is added ----------

def _invalidation(kvm, steps):
    from tdpmmu.mmu.mmu import (kvm_mmu_invalidate_begin, kvm_mmu_invalidate_end,
                                kvm_mmu_invalidate_range_add, mmu_invalidate_retry_gfn)
    ops = {"begin": kvm_mmu_invalidate_begin, "end": kvm_mmu_invalidate_end,
           "retry": lambda k, gfn: mmu_invalidate_retry_gfn(k, k.mmu_invalidate_seq.peek(0), gfn),
           "add": kvm_mmu_invalidate_range_add}
    out = []
    write_lock(kvm.mmu_lock)
    for name, *args in steps:
        out.append(ops[name](kvm, *args))
    write_unlock(kvm.mmu_lock)
    return out


def test_invalidation_ranges_widen_until_every_invalidation_ends():
    def body(kvm):
        return _invalidation(kvm, [("begin",), ("add", 10, 20), ("retry", 9), ("retry", 10),
                                   ("begin",), ("add", 40, 50), ("retry", 30), ("end",),
                                   ("retry", 30), ("end",), ("retry", 30)])
    out, _ = run_single(body)
    # [10, 20), then [10, 50) while either is open; once both ended no range applies
    # ("retry" reads the current mmu_invalidate_seq, so only the range can say retry)
    assert out[2:4] == [False, True] and out[6] is True and out[8] is True
    assert out[10] is False


@pytest.mark.parametrize("steps, message", [
    ([("begin",), ("retry", 5)], "without a range"),
    ([("begin",), ("end",)], "no range was added"),
    ([("add", 1, 2)], "no invalidation in progress"),
])
def test_invalidation_without_a_range_is_a_kvm_bug(steps, message):
    with pytest.raises(KernelWarning, match=message):
        run_single(lambda kvm: _invalidation(kvm, steps))


def test_notifier_invalidation_adds_each_memslot_range():
    from tdpmmu.mmu.mmu import (kvm_mmu_notifier_invalidate_range_end,
                                kvm_mmu_notifier_invalidate_range_start)

    def body(kvm):
        add_slot(kvm, base_gfn=0, npages=16)
        add_slot(kvm, base_gfn=64, npages=16)
        kvm_mmu_notifier_invalidate_range_start(kvm, 8, 72)
        seen = kvm.mmu_invalidate_range
        kvm_mmu_notifier_invalidate_range_end(kvm, 8, 72)
        return seen
    seen, _ = run_single(body)
    assert seen == (8, 72)          # [8, 16) and [64, 72): the smallest covering range


def test_teardown_waits_for_the_rcu_callbacks_it_queued():
    """kvm_destroy_vm returns with no RCU callback pending (kvm_mmu_uninit_tdp_mmu's
    rcu_barrier): checked when it returns, not at the end of the execution, when the
    grace-period thread has long run them."""
    from mmu_helpers import check_variant_and_its_defect
    check_variant_and_its_defect("mmu-faults-vs-zap-all-fast", {}, "uninit-no-rcu-barrier",
                                 "InvariantViolation", find_schedules=100)


def test_a_host_page_moved_on_its_own_splits_the_host_huge_page():
    """max_mapping_level (host_pfn_mapping_level): a 2M region is huge-mappable only if
    its host pages are consecutive -- one page moved alone (migrated, discarded) leaves
    it 4K; the whole folio moved to an aligned one keeps it 2M."""
    from tdpmmu.mmu.mmu import kvm_host_migrate_folio, kvm_host_remap_gfn

    def body(kvm):
        slot = add_slot(kvm, npages=3 * 512, backing=S.PG_LEVEL_2M)
        before = [slot.max_mapping_level(g) for g in (5, 517, 1029)]
        kvm_host_remap_gfn(kvm, 0, 7, slot.gfn_to_pfn(7) + (1 << 20))
        kvm_host_migrate_folio(kvm, 0, 512, 512, slot.gfn_to_pfn(512) + (1 << 20))
        return before, [slot.max_mapping_level(g) for g in (5, 517, 1029)]
    (before, after), _ = run_single(body)
    assert before == [S.PG_LEVEL_2M] * 3
    assert after == [S.PG_LEVEL_4K, S.PG_LEVEL_2M, S.PG_LEVEL_2M]


def test_migration_end_with_a_discarded_page():
    """Turning dirty logging off recovers huge pages only where the host still backs the
    region with one huge page: clean with a page discarded meanwhile; recovery that
    ignores the host level maps the discarded page's old pfn."""
    from mmu_helpers import check_variant_and_its_defect
    check_variant_and_its_defect("mmu-migration-end-vs-access", {"discarded": 1},
                                 "recover-ignores-host-level", "HostSafetyViolation")


def test_stale_leaves_are_found_when_the_threads_are_gone():
    """The quiescent structure check compares every leaf with the memslots: a huge SPTE
    reaching beyond its memslot is reported even if no guest access goes through it."""
    import tdpmmu
    res = tdpmmu.explore("mmu-migration-end-vs-access", strategy="pct", schedules=5,
                         params={"discarded": 0}, defects=["recover-ignores-host-level"],
                         stop_on_first=True)
    assert res.params["discarded"] == 0
    f, = res.failures
    assert f.category == "HostSafetyViolation" and "beyond memslot" in f.message


def test_one_invalidation_over_two_memslots():
    """A folio migrated across the boundary of two adjacent memslots: one invalidation,
    one range per slot, the in-progress range covering both.  Clean; keeping only the
    last slot's range lets a fault in the first slot map the page being taken back."""
    from mmu_helpers import check_variant_and_its_defect
    check_variant_and_its_defect("mmu-notifier-remap-vs-fault", {"two_slots": True},
                                 "range-add-overwrites", "HostSafetyViolation",
                                 find_schedules=200, without={"two_slots": False})


def test_invalidate_range_start_leaves_no_spte_on_the_range():
    """The notifier's contract is checked when invalidate_range_start returns (before
    any guest access could go through a stale SPTE): a notifier that skips the unmap is
    reported there, naming the root that still maps the page."""
    import tdpmmu
    res = tdpmmu.explore("mmu-notifier-remap-vs-fault", strategy="pct", schedules=50,
                         defects=["notifier-skips-unmap"], stop_on_first=True)
    f, = res.failures
    assert f.category == "HostSafetyViolation"
    assert "invalidate_range_start of gfns [0x9, 0xa)" in f.message and "still maps" in f.message
