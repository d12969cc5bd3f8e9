"""KVM's own selftests, ported with their exact assertions (shared/reference/selftests.md
section 1), run on the model.  A broken variant of each flow makes the port fail."""

from __future__ import annotations

import pytest

from tdpmmu.mmu import EXEC_ACCESS, READ_ACCESS, guest_access
from tdpmmu.mmu import spte as S
from tdpmmu.mmu.mmu import kvm_recover_nx_huge_pages

from mmu_helpers import add_slot, run_single, vcpu

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
