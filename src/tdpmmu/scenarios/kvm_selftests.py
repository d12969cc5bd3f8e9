"""KVM selftests ported to the model: the VM layouts and guest/host sequences of
tools/testing/selftests/kvm (shared/reference/selftests.md section 1), with their exact
assertions.  Each port is a function of a VM built in a running execution (a test
task, or a benchmark), so tests, benchmarks and scenarios share one copy.

The memstress harness (lib/memstress.c) is modelled by :class:`Memstress`: slot 0
holds the guest's code and shared arguments (4K only: the harness marks it
MADV_NOHUGEPAGE), the test region is split evenly into ``slots`` memslots numbered
from 1, and one "iteration" is each vCPU reading its arguments and then touching the
first bytes of every 4K page of its range (overlapped: the whole region).  vCPUs run
one after the other in an iteration (the harness waits for all of them between
iterations, so their order does not matter to what the tests assert).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..mmu import READ_ACCESS, WRITE_ACCESS, guest_access, kvm_create_vcpu, kvm_set_memory_region
from ..mmu import spte as S
from ..mmu.kvm import KVM_DIRTY_LOG_INITIALLY_SET, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
from ..mmu.mmu import (kvm_clear_dirty_log, kvm_get_dirty_log_manual, kvm_get_dirty_log_protect,
                       kvm_set_memslot_dirty_logging)
from ..runtime.errors import InvariantViolation
from ..sync import cpu_relax, mutex_lock, mutex_unlock

GIB = 1 << 30
#: memstress places the test region at the top of the guest physical address space; the
#: model puts it at 4 GiB (above the APIC-access page), which changes no assertion
TEST_REGION_GPA = 4 * GIB


class SelftestFailure(InvariantViolation):
    """A ported selftest's TEST_ASSERT failed (the message is the selftest's)."""


def TEST_ASSERT(cond: bool, msg: str) -> None:
    if not cond:
        raise SelftestFailure(msg)


def TEST_ASSERT_EQ(a, b, what: str) -> None:
    if a != b:
        raise SelftestFailure(f"ASSERT_EQ({what}) failed: {a} != {b}")


@dataclass
class PageStats:
    """struct kvm_page_stats of the selftest (vm_get_stat of the binary stats fd)."""

    pages_4k: int
    pages_2m: int
    pages_1g: int
    label: str = ""

    @property
    def hugepages(self) -> int:
        return self.pages_2m + self.pages_1g

    @classmethod
    def of(cls, kvm, label: str) -> "PageStats":
        return cls(kvm.stat.pages_4k, kvm.stat.pages_2m, kvm.stat.pages_1g, label)


@dataclass
class Memstress:
    """memstress_create_vm: ``vcpus`` vCPUs, ``vcpu_pages`` 4K pages each, ``slots``
    data memslots with host backing ``backing`` (PG_LEVEL_2M = anonymous_hugetlb)."""

    kvm: object
    vcpus: int
    vcpu_pages: int
    slots: int = 1
    backing: int = S.PG_LEVEL_4K
    overlapped: bool = True
    args_pages: int = 1
    vcpu_list: list = field(default_factory=list)
    data_slots: list = field(default_factory=list)

    def __post_init__(self):
        kvm = self.kvm
        self.code_slot = kvm_set_memory_region(kvm, 0, 0, 0, 512, S.PG_LEVEL_4K)
        total = self.vcpus * self.vcpu_pages
        if total % self.slots:
            raise SelftestFailure(f"{total} pages do not split into {self.slots} slots")
        per_slot = total // self.slots
        base = TEST_REGION_GPA >> S.PAGE_SHIFT
        for i in range(self.slots):
            self.data_slots.append(kvm_set_memory_region(kvm, 0, 1 + i, base + i * per_slot,
                                                         per_slot, self.backing))
        self.base_gfn = base
        self.host_num_pages = total
        self.pages_per_slot = per_slot
        self.vcpu_list = [kvm_create_vcpu(kvm) for _ in range(self.vcpus)]

    def vcpu_range(self, i: int) -> range:
        if self.overlapped:
            return range(self.base_gfn, self.base_gfn + self.host_num_pages)
        first = self.base_gfn + i * self.vcpu_pages
        return range(first, first + self.vcpu_pages)

    def run_vcpu_iteration(self, write: bool = True) -> None:
        """Every vCPU reads its arguments (slot 0) and touches each page of its range."""
        access = WRITE_ACCESS if write else READ_ACCESS
        for i, v in enumerate(self.vcpu_list):
            for g in range(self.args_pages):
                guest_access(v, (16 + g) << S.PAGE_SHIFT, READ_ACCESS)
            for gfn in self.vcpu_range(i):
                guest_access(v, gfn << S.PAGE_SHIFT, access)

    def _slots_locked(self, fn) -> None:
        mutex_lock(self.kvm.slots_lock)
        for slot in self.data_slots:
            fn(slot)
        mutex_unlock(self.kvm.slots_lock)

    def enable_dirty_logging(self) -> None:
        self._slots_locked(lambda s: kvm_set_memslot_dirty_logging(self.kvm, s, True))

    def disable_dirty_logging(self) -> None:
        self._slots_locked(lambda s: kvm_set_memslot_dirty_logging(self.kvm, s, False))

    def get_dirty_log(self) -> list[set]:
        """memstress_get_dirty_log: one bitmap per slot (GET clears and re-protects
        unless manual protect is enabled)."""
        out = []
        manual = self.kvm.manual_dirty_log_protect & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
        get = kvm_get_dirty_log_manual if manual else kvm_get_dirty_log_protect
        self._slots_locked(lambda s: out.append(get(self.kvm, s)))
        return out

    def clear_dirty_log(self, bitmaps: list[set]) -> None:
        """memstress_clear_dirty_log over each whole slot, with the bitmaps from GET."""
        it = iter(bitmaps)
        self._slots_locked(lambda s: kvm_clear_dirty_log(self.kvm, s, next(it)))


DIRTY_LOG_PAGE_SPLITTING_ITERATIONS = 2


def dirty_log_page_splitting_test(kvm, *, manual: bool, vcpu_pages: int = GIB >> 12,
                                  backing: int = S.PG_LEVEL_2M) -> dict:
    """x86/dirty_log_page_splitting_test.c run_test(): 2 vCPUs, 2 data slots, overlapped
    writes; populate, enable logging, two dirty passes (GET, and CLEAR in manual mode),
    disable logging, repopulate.  Checks the test's assertions and returns the stats
    snapshots by label (and ``host_num_pages``)."""
    if manual:
        kvm.manual_dirty_log_protect = (KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
                                        | KVM_DIRTY_LOG_INITIALLY_SET)
    ms = Memstress(kvm, vcpus=2, vcpu_pages=vcpu_pages, slots=2, backing=backing)
    host_num_pages = ms.host_num_pages
    TEST_ASSERT_EQ(host_num_pages, ms.pages_per_slot * 2, "host_num_pages, pages_per_slot * SLOTS")
    TEST_ASSERT(host_num_pages % 512 == 0,
                f"Number of pages, '{host_num_pages}' not a multiple of 2MiB")
    snap: dict = {"host_num_pages": host_num_pages}
    ms.run_vcpu_iteration()
    snap["populated"] = PageStats.of(kvm, "populating memory")
    ms.enable_dirty_logging()
    snap["enabled"] = PageStats.of(kvm, "enabling dirty logging")
    for it in range(DIRTY_LOG_PAGE_SPLITTING_ITERATIONS):
        ms.run_vcpu_iteration()
        snap[f"dirty_pass{it}"] = PageStats.of(kvm, "dirtying memory")
        bitmaps = ms.get_dirty_log()
        if manual:
            ms.clear_dirty_log(bitmaps)
            snap[f"clear_pass{it}"] = PageStats.of(kvm, "clearing dirty log")
    ms.disable_dirty_logging()
    snap["disabled"] = PageStats.of(kvm, "disabling dirty logging")
    ms.run_vcpu_iteration()
    snap["repopulated"] = PageStats.of(kvm, "repopulating memory")

    populated, enabled, repop = snap["populated"], snap["enabled"], snap["repopulated"]
    TEST_ASSERT_EQ(populated.pages_2m * 512 + populated.pages_1g * 512 * 512, host_num_pages,
                   "stats_populated.pages_2m * 512 + stats_populated.pages_1g * 512 * 512, "
                   "host_num_pages")
    if manual:
        clear0 = snap["clear_pass0"]
        TEST_ASSERT_EQ(clear0.hugepages, 0, "stats_clear_pass[0].hugepages, 0")
        TEST_ASSERT(clear0.pages_4k >= host_num_pages,
                    f"Expected at least '{host_num_pages}' 4KiB pages, found only "
                    f"'{clear0.pages_4k}'")
        TEST_ASSERT_EQ(enabled.hugepages, populated.hugepages,
                       "stats_dirty_logging_enabled.hugepages, stats_populated.hugepages")
    else:
        TEST_ASSERT_EQ(enabled.hugepages, 0, "stats_dirty_logging_enabled.hugepages, 0")
        TEST_ASSERT(enabled.pages_4k >= host_num_pages,
                    f"Expected at least '{host_num_pages}' 4KiB pages, found only "
                    f"'{enabled.pages_4k}'")
    TEST_ASSERT_EQ(populated.pages_2m, repop.pages_2m,
                   "stats_populated.pages_2m, stats_repopulated.pages_2m")
    TEST_ASSERT_EQ(populated.pages_1g, repop.pages_1g,
                   "stats_populated.pages_1g, stats_repopulated.pages_1g")
    return snap


# -- set_memory_region_test ------------------------------------------------------------

#: what the selftest's host answers for an MMIO read (the vCPU exits with KVM_EXIT_MMIO)
MMIO_VAL = 0xBEEF
MEM_REGION_GPA = 0xC0000000
MEM_REGION_SLOT = 10
MEM_REGION_PAGES = 512            # 2 MiB, THP-backed: exactly one huge page


class GuestMemory:
    """The bytes the selftests look at: the first u64 of some host pages (host pfn ->
    value; everything else reads 0)."""

    def __init__(self):
        self.values: dict[int, int] = {}

    def read(self, v, gpa: int) -> int:
        """A guest u64 read at ``gpa``: through the model's MMU and hardware, then the
        value of the host page it reached (MMIO_VAL when KVM emulated MMIO)."""
        pfn = guest_access(v, gpa, READ_ACCESS)
        return MMIO_VAL if pfn is None else self.values.get(pfn, 0)

    def spin_on_val(self, v, gpa: int, spin_val: int) -> int:
        """guest_spin_on_val: read until the value differs from ``spin_val``."""
        while True:
            val = self.read(v, gpa)
            if val != spin_val:
                return val
            cpu_relax()


def GUEST_ASSERT(cond: bool, msg: str) -> None:
    if not cond:
        raise SelftestFailure(f"guest assertion failed: {msg}")


# -- mmu_stress_test ---------------------------------------------------------------------

def mmu_stress_test(kvm, *, vcpus: int = 2, slot_pages: int = 256, nr_slots: int = 2) -> dict:
    """mmu_stress_test.c at a scaled size: ``nr_slots`` memslots from GPA 4 GiB, each
    aliasing the same ``slot_pages`` of host memory (a memfd, MADV_NOHUGEPAGE: 4K
    mappings); each vCPU owns a disjoint share of the range.  Stages: write everything;
    (host) CR0.WP toggle resets every vCPU's MMU context; re-write; read; (host) mprotect
    read-only -- an MMU-notifier invalidation of the whole range -- after which every
    guest write must fail KVM_RUN with EFAULT (the host skips the store and re-enters);
    (host) writable again; a full write pass must succeed.  Teardown: delete the
    even-numbered slots, munmap the first half of the backing, exit without closing the
    VM (mmu_notifier release at destruction).  Returns per-stage counters."""
    from ..mmu.mmu import (EFAULT, kvm_delete_memslot, kvm_destroy_vm, kvm_mmu_notifier_invalidate_range_end,
                           kvm_mmu_notifier_invalidate_range_start, kvm_mmu_unload)
    base = TEST_REGION_GPA >> S.PAGE_SHIFT
    kvm_set_memory_region(kvm, 0, 0, 0, 512, S.PG_LEVEL_4K)
    first = kvm_set_memory_region(kvm, 0, 1, base, slot_pages, S.PG_LEVEL_4K)
    slots = [first] + [kvm_set_memory_region(kvm, 0, 1 + i, base + i * slot_pages, slot_pages,
                                             S.PG_LEVEL_4K, host_pfn=first.host_pfn)
                       for i in range(1, nr_slots)]
    vcpu_list = [kvm_create_vcpu(kvm) for _ in range(vcpus)]
    total = nr_slots * slot_pages
    share = total // vcpus
    end = base + total
    out = {"efault": 0, "written": 0, "read": 0}

    def shares():
        for i, v in enumerate(vcpu_list):
            yield v, range(base + i * share, base + (i + 1) * share)

    def write_pass(expect_efault: bool) -> None:
        for v, gfns in shares():
            for gfn in gfns:
                while True:
                    r = guest_access(v, gfn << S.PAGE_SHIFT, WRITE_ACCESS)
                    if r == -EFAULT:
                        out["efault"] += 1
                        if expect_efault:
                            break               # the host skips the faulting store
                        continue                # stage 4: retry until it succeeds
                    TEST_ASSERT(not expect_efault,
                                f"Expected EFAULT on write to GPA {gfn << S.PAGE_SHIFT:#x} "
                                f"while the memory is read-only, got success")
                    TEST_ASSERT(r is not None and r >= 0, f"write to gfn {gfn:#x}: {r!r}")
                    out["written"] += 1
                    break

    write_pass(False)                                   # stage 0
    for v in vcpu_list:                                 # CR0.WP toggle: context reset
        kvm_mmu_unload(v)
    write_pass(False)                                   # stage 1
    for v, gfns in shares():                            # stage 2
        for gfn in gfns:
            TEST_ASSERT(guest_access(v, gfn << S.PAGE_SHIFT, READ_ACCESS) is not None,
                        f"read of gfn {gfn:#x} failed")
            out["read"] += 1
    # mprotect(PROT_READ): the host mapping loses write permission (notifier first)
    kvm_mmu_notifier_invalidate_range_start(kvm, base, end)
    kvm.host_readonly_ranges.append((first.host_pfn, slot_pages))
    kvm_mmu_notifier_invalidate_range_end(kvm, base, end)
    before = out["efault"]
    write_pass(True)                                    # stage 3
    TEST_ASSERT_EQ(out["efault"] - before, total, "EFAULTs in the read-only stage, pages")
    kvm.host_readonly_ranges.remove((first.host_pfn, slot_pages))   # mprotect(RW): no notifier
    write_pass(False)                                   # stage 4
    mutex_lock(kvm.slots_lock)
    for slot in slots[::2]:
        kvm_delete_memslot(kvm, slot)
    mutex_unlock(kvm.slots_lock)
    half = slot_pages // 2                              # munmap the first half
    kvm_mmu_notifier_invalidate_range_start(kvm, base, end)
    kvm.freed_host_ranges.append((first.host_pfn, half, "munmap of the backing's first half"))
    kvm_mmu_notifier_invalidate_range_end(kvm, base, end)
    kvm_destroy_vm(kvm)                                 # the process exits: notifier release
    return out
