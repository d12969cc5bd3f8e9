"""KVM's own selftests, ported with their exact assertions (shared/reference/selftests.md
section 1), run on the model.  A broken variant of each flow makes the port fail."""

from __future__ import annotations

import pytest

from tdpmmu.mmu import EXEC_ACCESS, READ_ACCESS, WRITE_ACCESS, guest_access
from tdpmmu.mmu import spte as S
from tdpmmu.mmu.mmu import kvm_recover_nx_huge_pages

from mmu_helpers import add_slot, check_variant_and_its_defect, run_single, vcpu

GIB = 1 << 30
HPAGE = 2 << 20


def nx_huge_pages_test(kvm):
    """x86/nx_huge_pages_test.c: memslot at 4 GiB, 3 x 2 MiB hugetlb; reads, executes,
    recovery (ratio 1), re-read.  Returns the (pages_2m, nx_lpage_splits) after each step."""
    add_slot(kvm, base_gfn=(4 * GIB) >> 12, npages=3 * 512, backing=S.PG_LEVEL_2M)
    v = vcpu(kvm)
    hpage_1, hpage_2, hpage_3 = 4 * GIB, 4 * GIB + HPAGE, 4 * GIB + 2 * HPAGE
    seen = []

    def step():
        seen.append((kvm.stat.pages_2m, kvm.stat.nx_lpage_splits))
    step()                                   # before running
    guest_access(v, hpage_1, READ_ACCESS)
    step()
    guest_access(v, hpage_2, READ_ACCESS)
    step()
    guest_access(v, hpage_1, EXEC_ACCESS)
    step()
    guest_access(v, hpage_3, EXEC_ACCESS)
    step()
    guest_access(v, hpage_1, READ_ACCESS)
    step()
    for _ in range(5):                       # host sleeps 5 recovery periods (ratio 1)
        kvm_recover_nx_huge_pages(kvm, ratio=1)
    step()
    guest_access(v, hpage_3, READ_ACCESS)
    step()
    return seen


EXPECTED = {
    True: [(0, 0), (1, 0), (2, 0), (1, 1), (1, 2), (1, 2), (1, 0), (2, 0)],
    False: [(0, 0), (1, 0), (2, 0), (2, 0), (3, 0), (3, 0), (3, 0), (3, 0)],
}


@pytest.mark.parametrize("nx", [True, False], ids=["nx-enabled", "nx-disabled"])
def test_nx_huge_pages_test(nx):
    seen, _ = run_single(nx_huge_pages_test, nx_huge_pages=nx)
    for i, (got, want) in enumerate(zip(seen, EXPECTED[nx])):
        assert got == want, f"step {i}: (pages_2m, nx_lpage_splits) = {got}, expected {want}"


def test_nx_huge_pages_test_fails_on_a_broken_variant():
    seen, _ = run_single(nx_huge_pages_test, nx_huge_pages=True,
                         defects=("nx-split-not-tracked",))
    assert seen != EXPECTED[True]
    assert seen[3] == (1, 0)                 # step 3's split is no longer counted


@pytest.mark.parametrize("mode", ["dirty-log", "clear-log"])
def test_dirty_log_test_invariant_explored(mode):
    """dirty_log_test's invariant (every page written after logging started is reported by
    a collection, modulo writes racing a collection) with a writing vCPU racing the
    collecting host task, explored with PCT and the random walk."""
    import tdpmmu
    for strategy in ("pct", "random"):
        res = tdpmmu.explore("mmu-dirty-log-vs-writes", strategy=strategy, schedules=600,
                             seed=17, params={"mode": mode})
        assert res.failures == [], tdpmmu.render_failure(res.failures[0])
        assert res.coverage.get("fast-pf-made-writable")


@pytest.mark.parametrize("mode,defect", [("dirty-log", "get-dirty-log-skips-wrprot"),
                                         ("clear-log", "clear-dirty-log-skips-wrprot"),
                                         ("dirty-log", "fast-pf-forgets-mark-dirty")])
def test_dirty_log_test_fails_on_broken_variants(mode, defect):
    import tdpmmu
    found = None
    for strategy in ("pct", "random"):
        res = tdpmmu.explore("mmu-dirty-log-vs-writes", strategy=strategy, schedules=2000,
                             params={"mode": mode}, defects=[defect], stop_on_first=True)
        if res.failures:
            found = res.failures[0]
            break
    assert found is not None and found.category == "DirtyLogIncomplete"


# -- x86/dirty_log_page_splitting_test ------------------------------------------------

from tdpmmu.scenarios.kvm_selftests import SelftestFailure, dirty_log_page_splitting_test  # noqa: E402

#: the fast tier's size: 2 vCPUs x 8 MiB (the real test: 2 x 1 GiB, in the slow tier)
SCALED_VCPU_PAGES = 2048


@pytest.mark.parametrize("manual", [False, True], ids=["get-clears", "manual-initially-set"])
def test_dirty_log_page_splitting_test(manual):
    snap, _ = run_single(lambda kvm: dirty_log_page_splitting_test(
        kvm, manual=manual, vcpu_pages=SCALED_VCPU_PAGES))
    n = snap["host_num_pages"]
    assert n == 2 * SCALED_VCPU_PAGES
    # beyond the selftest's own assertions: the exact counts the kernel produces
    assert snap["populated"].pages_2m == n // 512 and snap["populated"].pages_4k == 1
    if manual:
        assert snap["enabled"].pages_2m == n // 512           # nothing split yet
        assert snap["clear_pass0"].pages_4k == n + 1          # + the arguments page
    else:
        assert snap["enabled"].pages_4k == n + 1
    assert snap["disabled"].pages_2m == n // 512              # recovered in place


def test_eager_split_and_recovery_of_a_1g_page():
    """selftests.md 1.2's model note, with 1G backing: enabling logging splits the 1G
    SPTE (-1 pages_1g, +512 pages_2m) and then each 2M one (-1 pages_2m, +512
    pages_4k); disabling it recovers the 1G mapping in place."""
    from tdpmmu.scenarios.kvm_selftests import Memstress

    def body(kvm):
        ms = Memstress(kvm, vcpus=1, vcpu_pages=1 << 18, slots=1, backing=S.PG_LEVEL_1G)
        v = ms.vcpu_list[0]
        guest_access(v, ms.base_gfn << 12, READ_ACCESS)
        seen = [(kvm.stat.pages_4k, kvm.stat.pages_2m, kvm.stat.pages_1g)]
        ms.enable_dirty_logging()
        seen.append((kvm.stat.pages_4k, kvm.stat.pages_2m, kvm.stat.pages_1g))
        ms.disable_dirty_logging()
        seen.append((kvm.stat.pages_4k, kvm.stat.pages_2m, kvm.stat.pages_1g))
        guest_access(v, (ms.base_gfn + 12345) << 12, WRITE_ACCESS)
        seen.append((kvm.stat.pages_4k, kvm.stat.pages_2m, kvm.stat.pages_1g))
        return seen
    seen, _ = run_single(body)
    assert seen == [(0, 0, 1), (1 << 18, 0, 0), (0, 0, 1), (0, 0, 1)]


@pytest.mark.parametrize("manual", [False, True], ids=["get-clears", "manual-initially-set"])
def test_dirty_log_page_splitting_test_fails_without_recovery(manual):
    with pytest.raises(SelftestFailure, match="stats_populated.pages_2m, stats_repopulated"):
        run_single(lambda kvm: dirty_log_page_splitting_test(
            kvm, manual=manual, vcpu_pages=SCALED_VCPU_PAGES),
            defects=("disable-logging-no-recovery",))


def test_dirty_log_page_splitting_test_needs_eager_split():
    """The selftest requires eager_page_split=Y: without it nothing is split when logging
    is enabled and its assertion fails (the model's module parameter, not a defect)."""
    def body(kvm):
        kvm.eager_page_split = False
        return dirty_log_page_splitting_test(kvm, manual=False, vcpu_pages=SCALED_VCPU_PAGES)
    with pytest.raises(SelftestFailure, match="stats_dirty_logging_enabled.hugepages, 0"):
        run_single(body)


@pytest.mark.slow
def test_dirty_log_page_splitting_test_real_size():
    """The selftest's own size: 2 vCPUs x 1 GiB, 524,288 host pages in 2M hugetlb.

    One mode at this size (CLEAR_DIRTY_LOG with KVM_DIRTY_LOG_INITIALLY_SET: it splits at
    clear time, after the populate pass, so it runs the most code); each run is four
    million guest accesses (~100 s), and both modes run at the scaled size above with the
    kernel's exact counts."""
    snap, _ = run_single(lambda kvm: dirty_log_page_splitting_test(kvm, manual=True))
    assert snap["host_num_pages"] == 524_288
    assert snap["populated"].pages_2m == 1024 and snap["repopulated"].pages_2m == 1024


# -- mmu_stress_test -------------------------------------------------------------------

from tdpmmu.scenarios.kvm_selftests import mmu_stress_test  # noqa: E402


def test_mmu_stress_test():
    out, _ = run_single(lambda kvm: mmu_stress_test(kvm, vcpus=2, slot_pages=256, nr_slots=2))
    # stage 0, 1 and 4 write all 512 pages; stage 3 faults on each of them once
    assert out == {"efault": 512, "written": 3 * 512, "read": 512}


def test_mmu_stress_test_fails_when_the_notifier_does_not_unmap():
    """The mprotect stage's notifier leaves the writable SPTEs: the notifier-contract
    check reports it when invalidate_range_start returns, before the selftest's own
    assertion (the guest write that should fail with EFAULT) gets to run."""
    from tdpmmu.mmu.oracles import HostSafetyViolation
    with pytest.raises(HostSafetyViolation, match="invalidate_range_start of gfns .* still maps"):
        run_single(lambda kvm: mmu_stress_test(kvm), defects=("notifier-skips-unmap",))


# -- set_memory_region_test ------------------------------------------------------------

@pytest.mark.parametrize("quirk", [True, False], ids=["slot-zap-all", "zap-slot-only"])
def test_set_memory_region_test_move_in_use_explored(quirk):
    import tdpmmu
    for strategy in ("pct", "random"):
        res = tdpmmu.explore("mmu-memslot-move-vs-access", strategy=strategy, schedules=300,
                             seed=5, params={"zap_all_quirk": quirk})
        assert res.failures == [], tdpmmu.render_failure(res.failures[0])
        assert res.coverage.get("fault-retry")      # a fault met the INVALID slot


def test_set_memory_region_test_move_fails_when_the_slot_is_not_zapped():
    import tdpmmu
    res = tdpmmu.explore("mmu-memslot-move-vs-access", strategy="random", schedules=300,
                         defects=["flush-shadow-memslot-skipped"], stop_on_first=True)
    assert res.failures and res.failures[0].category == "HostSafetyViolation"
    assert "stale translation" in res.failures[0].message


def test_set_memory_region_test_delete_explored():
    import tdpmmu
    for strategy in ("pct", "random"):
        res = tdpmmu.explore("mmu-memslot-delete-recreate-vs-access", strategy=strategy,
                             schedules=300, seed=5)
        assert res.failures == [], tdpmmu.render_failure(res.failures[0])
        assert res.coverage.get("stale-mmio-spte")


def test_read_only_memslot():
    """A KVM_MEM_READONLY slot: reads map the page without write access, writes exit to
    userspace (emulated), and the flag cannot be toggled on an existing slot."""
    from tdpmmu.mmu.kvm import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY
    from tdpmmu.mmu.mmu import EINVAL, kvm_change_memslot_flags
    from tdpmmu.sync import mutex_lock, mutex_unlock
    from mmu_helpers import leaf_sptes

    def body(kvm):
        ro = add_slot(kvm, npages=16, flags=KVM_MEM_READONLY)
        rw = add_slot(kvm, base_gfn=16, npages=16)
        v = vcpu(kvm)
        r_read = guest_access(v, 3 << 12, READ_ACCESS)
        r_write = guest_access(v, 3 << 12, WRITE_ACCESS)
        spte = leaf_sptes(kvm, v.root)[(3, 1)]
        mutex_lock(kvm.slots_lock)
        codes = (kvm_change_memslot_flags(kvm, rw, KVM_MEM_READONLY),
                 kvm_change_memslot_flags(kvm, ro, 0),
                 kvm_change_memslot_flags(kvm, rw, 1 << 5),
                 kvm_change_memslot_flags(kvm, rw, KVM_MEM_LOG_DIRTY_PAGES))
        mutex_unlock(kvm.slots_lock)
        return r_read, r_write, spte, codes, v.stat.pf_emulate, rw.dirty_logging()
    (r_read, r_write, spte, codes, emulated, logging), _ = run_single(body)
    assert r_read is not None and r_write is None and emulated == 1
    assert not S.is_writable_pte(spte) and not S.is_mmu_writable_spte(spte)
    assert codes == (-EINVAL, -EINVAL, -EINVAL, 0) and logging


def test_migration_starting_with_l2_running():
    """Migration of a VM whose L1 already runs L2 (PML on, L2's root loaded and mapped
    when logging is enabled) is clean; clearing dirty state in non-leaf SPTEs then
    write-protects L2's tables (an L2 root clears W, PML does not log L2) and the guest
    hangs on a spurious fault -- not seen when L2 is entered after logging started."""
    check_variant_and_its_defect("mmu-dirty-log-vs-writes",
                                 {"pml": True, "nested": True, "l2_running": True},
                                 "clear-dirty-non-leaf", "Livelock", seed=5,
                                 find_schedules=20, without={"l2_running": False})


def test_l2_running_needs_nested():
    import tdpmmu
    with pytest.raises(tdpmmu.UsageError, match="l2_running=true needs nested=true"):
        tdpmmu.explore("mmu-dirty-log-vs-writes", schedules=1, params={"l2_running": True})


def test_migration_without_eager_splitting():
    """eager_page_split=N (and kernels before v5.19): enabling logging write-protects the
    guest's 2M leaves and its writes split them.  Clean on the model; a write protection
    that skips huge leaves loses the writes made through them (not with eager
    splitting, which leaves no huge leaf to protect)."""
    check_variant_and_its_defect("mmu-dirty-log-vs-writes", {"backing": 2, "eager_split": False},
                                 "wrprot-skips-huge-leaves", "DirtyLogIncomplete", seed=9,
                                 without={"eager_split": True})
