"""The free-run vectorised dirty-logging paths (whole-table write protection, bulk
clearing of D/W bits over a whole harvested bitmap, eager splitting) leave
exactly the state of the per-SPTE scheduled paths: the same SPTEs, the same dirty
bitmap and the same TLB flush obligations.  A differential test over random memslot
sizes, mapping levels, dirty-log modes and dirty patterns (compare test_mmu_bulk.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tdpmmu.mmu import READ_ACCESS, WRITE_ACCESS, guest_access
from tdpmmu.mmu import spte as S
from tdpmmu.mmu.kvm import KVM_DIRTY_LOG_INITIALLY_SET, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
from tdpmmu.mmu.mmu import (kvm_clear_dirty_log, kvm_get_dirty_log_manual,
                            kvm_get_dirty_log_protect, kvm_set_memslot_dirty_logging)
from tdpmmu.sync import mutex_lock, mutex_unlock

from mmu_helpers import add_slot, count_tables, leaf_sptes, run_single, spying, vcpu

MANUAL = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
MODES = [0, MANUAL, MANUAL | KVM_DIRTY_LOG_INITIALLY_SET]


def snapshot(kvm, v, slot):
    """Everything the two paths must agree on at this point."""
    obligations = sorted((p.as_id, p.gfn, p.npages, p.old) for p in kvm.pending_flushes)
    bitmap = None if slot.dirty_bitmap is None else sorted(slot.dirty_bitmap)
    tables = (leaf_sptes(kvm, v.root), count_tables(kvm, v.root)) if v.root else None
    return (tables, bitmap, obligations,
            kvm.stat.to_dict(), kvm.arch.tdp_mmu_pages)


def workload(npages, backing, mode, eager, before, rounds, base=0, keep=()):
    """``keep``: gfns (mod npages) userspace leaves set when it clears (manual mode)."""
    def body(kvm):
        kvm.manual_dirty_log_protect = mode
        kvm.eager_page_split = eager
        slot = add_slot(kvm, base_gfn=base, npages=npages, backing=backing)
        v = vcpu(kvm)
        snaps = []
        for g, write in before:                              # mappings at every level
            guest_access(v, (base + g % npages) << 12, WRITE_ACCESS if write else READ_ACCESS)
        snaps.append(snapshot(kvm, v, slot))
        mutex_lock(kvm.slots_lock)
        kvm_set_memslot_dirty_logging(kvm, slot, True)       # wrprot / eager split
        mutex_unlock(kvm.slots_lock)
        snaps.append(snapshot(kvm, v, slot))
        for writes in rounds:
            for g in writes:
                guest_access(v, (base + g % npages) << 12, WRITE_ACCESS)
            snaps.append(snapshot(kvm, v, slot))
            mutex_lock(kvm.slots_lock)
            if mode & MANUAL:
                got = kvm_get_dirty_log_manual(kvm, slot)
                snaps.append(sorted(got))
                left = {base + g % npages for g in keep}
                kvm_clear_dirty_log(kvm, slot, set(got) - left)   # bulk clear / reprotect
            else:
                snaps.append(sorted(kvm_get_dirty_log_protect(kvm, slot)))
            mutex_unlock(kvm.slots_lock)
            snaps.append(snapshot(kvm, v, slot))
        mutex_lock(kvm.slots_lock)
        kvm_set_memslot_dirty_logging(kvm, slot, False)      # huge pages recovered
        mutex_unlock(kvm.slots_lock)
        snaps.append(snapshot(kvm, v, slot))
        return snaps
    return body


gfn = st.integers(0, 4 * 512 - 1)


@settings(max_examples=40, deadline=None)
@given(npages=st.integers(1, 4 * 512),
       backing=st.sampled_from([S.PG_LEVEL_4K, S.PG_LEVEL_2M]),
       mode=st.sampled_from(MODES),
       eager=st.booleans(),
       before=st.lists(st.tuples(gfn, st.booleans()), max_size=12),
       rounds=st.lists(st.lists(gfn, max_size=30), min_size=1, max_size=3),
       base=st.sampled_from([0, 0x1f0, 0x40000]),
       keep=st.lists(gfn, max_size=6))
def test_bulk_and_per_spte_dirty_logging_agree(npages, backing, mode, eager, before, rounds,
                                               base, keep):
    args = (npages, backing, mode, eager, before, rounds, base, keep)
    bulk, _ = run_single(workload(*args))
    fine, _ = run_single(workload(*args), tracing=True)
    assert bulk == fine


def test_whole_tables_take_fewer_steps_when_free_running():
    """The bulk paths are actually taken: a fully mapped 4K table is write-protected and
    re-protected in far fewer steps."""
    args = (512, S.PG_LEVEL_4K, 0, False, [(g, True) for g in range(512)],
            [list(range(512))])
    _, rb = run_single(workload(*args))
    _, rf = run_single(workload(*args), tracing=True)
    assert rb.steps < rf.steps - 500


def _partial_clear(lose_bit: bool, twice: bool = False):
    """Userspace clears half of what it got; with ``twice`` it leaves page 3 set once
    more (the write to it stays owed, across two harvests); ``lose_bit`` drops page 3's
    bit behind KVM's back (a lost write the oracle must name)."""
    def body(kvm):
        kvm.manual_dirty_log_protect = MANUAL
        slot = add_slot(kvm, npages=8)
        v = vcpu(kvm)
        mutex_lock(kvm.slots_lock)
        kvm_set_memslot_dirty_logging(kvm, slot, True)
        mutex_unlock(kvm.slots_lock)
        for g in range(4):
            guest_access(v, g << 12, WRITE_ACCESS)
        mutex_lock(kvm.slots_lock)
        got = kvm_get_dirty_log_manual(kvm, slot)
        kvm_clear_dirty_log(kvm, slot, {0, 1})          # userspace clears only half
        if lose_bit:
            slot.dirty_bitmap.discard(3)                # (the harness loses a bit)
        again = kvm_get_dirty_log_manual(kvm, slot)
        if twice:
            kvm_clear_dirty_log(kvm, slot, set(again) - {3})
            again = kvm_get_dirty_log_manual(kvm, slot)
        kvm_clear_dirty_log(kvm, slot, set(again))
        mutex_unlock(kvm.slots_lock)
        return sorted(got), sorted(again)
    return body


def test_a_partial_clear_leaves_the_rest_for_the_next_harvest():
    got, again = run_single(_partial_clear(False))[0]
    assert got == [0, 1, 2, 3] and again == [2, 3]


def test_a_page_left_uncleared_and_then_lost_is_reported():
    import pytest

    from tdpmmu.mmu.oracles import DirtyLogIncomplete
    with pytest.raises(DirtyLogIncomplete, match="gfn 0x3"):
        run_single(_partial_clear(True))


def test_a_page_left_set_twice_stays_owed_and_is_no_false_alarm():
    got, again = run_single(_partial_clear(False, twice=True))[0]
    assert got == [0, 1, 2, 3] and again == [3]


def test_a_page_left_set_twice_and_then_lost_is_reported():
    import pytest

    from tdpmmu.mmu.oracles import DirtyLogIncomplete
    with pytest.raises(DirtyLogIncomplete, match="gfn 0x3"):
        run_single(_partial_clear(True, twice=True))


def _split_1g(touch_2m: bool, nx: bool):
    """A 1G-backed slot (plus a 2M-backed one beside it): one 1G leaf, and 2M leaves when
    ``touch_2m``; eager splitting down to 4K (1G -> 2M per entry, then each new table of
    2M leaves), with the NX workaround on or off; then the tables and stats."""
    from tdpmmu.mmu.mmu import kvm_mmu_slot_try_split_huge_pages

    def body(kvm):
        kvm.eager_page_split = True
        big = add_slot(kvm, npages=1 << 18, backing=S.PG_LEVEL_1G)
        small = add_slot(kvm, base_gfn=1 << 18, npages=3 * 512 + 7, backing=S.PG_LEVEL_2M)
        v = vcpu(kvm)
        guest_access(v, 0x1234 << 12, WRITE_ACCESS)
        if touch_2m:
            for g in (0, 600, 1100, 3 * 512 + 3):
                guest_access(v, ((1 << 18) + g) << 12, READ_ACCESS)
        before = (kvm.stat.pages_1g, kvm.stat.pages_2m)
        for slot in (big, small):
            kvm_mmu_slot_try_split_huge_pages(kvm, slot, S.PG_LEVEL_4K)
        return before, snapshot(kvm, v, big)
    return body


def test_bulk_split_of_1g_and_2m_pages_matches_the_per_entry_path():
    for touch_2m, nx in ((True, False), (False, True)):
        bulk, rb = run_single(_split_1g(touch_2m, nx), nx_huge_pages=nx)
        fine, rf = run_single(_split_1g(touch_2m, nx), nx_huge_pages=nx, tracing=True)
        assert bulk == fine
        (pages_1g, pages_2m), (_, _, _, stats, _) = bulk
        assert pages_1g == 1 and stats["pages_1g"] == stats["pages_2m"] == 0
        assert rb.steps < rf.steps


def _wrprot_regions(calls):
    """Two slots beside each other: 4 x 2M of 4K mappings written in full (and one
    page read only), then 3 x 2M + 5 pages of 2M-backed memory with 2M leaves, a table
    and a hole; write protection (no eager split) over both.  ``calls`` records the
    whole-region steps."""
    from tdpmmu.mmu import tdp_mmu as T

    def body(kvm):
        with spying(T, "_bulk_clear_leaf_bits_2m", calls, lambda kvm, it, bits, end: it.gfn):
            kvm.eager_page_split = False
            small = add_slot(kvm, npages=4 * 512)
            huge = add_slot(kvm, base_gfn=4 * 512, npages=3 * 512 + 5, backing=S.PG_LEVEL_2M)
            v = vcpu(kvm)
            for g in range(4 * 512):
                guest_access(v, g << 12, READ_ACCESS if g == 700 else WRITE_ACCESS)
            for g in (4 * 512, 4 * 512 + 1030, 7 * 512 + 2):      # 2M, 2M, beyond: 4K
                guest_access(v, g << 12, WRITE_ACCESS)
            snaps = [snapshot(kvm, v, small)]
            mutex_lock(kvm.slots_lock)
            for slot in (small, huge):
                kvm_set_memslot_dirty_logging(kvm, slot, True)
            mutex_unlock(kvm.slots_lock)
            snaps.append(snapshot(kvm, v, small))
            for g in (5, 700, 4 * 512 + 3):                        # fast faults
                guest_access(v, g << 12, WRITE_ACCESS)
            snaps.append((snapshot(kvm, v, small), sorted(huge.dirty_bitmap)))
            return snaps
    return body


def test_whole_1g_regions_are_write_protected_in_one_step_as_per_entry():
    calls = []
    bulk, rb = run_single(_wrprot_regions(calls))
    assert calls, "the whole-region write protection was not taken"
    fine_calls = []
    fine, rf = run_single(_wrprot_regions(fine_calls), tracing=True)
    assert not fine_calls and bulk == fine
    assert rb.steps < rf.steps - 4 * 512
    leaves = dict(bulk[1][0][0])
    assert not any(spte & S.PT_WRITABLE_MASK for spte in leaves.values())


def test_a_defect_keeps_the_per_table_steps():
    calls = []
    run_single(_wrprot_regions(calls), defects=("split-alloc-under-mmu-lock",))
    assert not calls
