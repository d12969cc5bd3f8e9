"""struct kvm, struct kvm_vcpu, memslots and the VM statistics.

Mirrors: include/linux/kvm_host.h and arch/x86/include/asm/kvm_host.h, the fields the
TDP MMU uses.  Part 1 of the model has a minimal memslot layer: slots are created per
address space with a backing page size (4K/2M/1G) that caps the mapping level; part 2
adds delete/move/flags.

Guest memory is backed by *host pfns* in a region of its own (from ``HOST_PFN_BASE``),
aligned so that each slot can be mapped with huge pages up to its backing size.  Page
tables get their pfns from the page allocator (small numbers), so a leaf SPTE and a
non-leaf SPTE never point into the same range.

Statistics are the kernel's names (``pages_4k``, ``pages_2m``, ``pages_1g``,
``remote_tlb_flush``, ``remote_tlb_flush_requests``, ``nx_lpage_splits``; per vCPU
``pf_taken``, ``pf_fixed``, ``pf_spurious``, ``pf_emulate``, ``pf_fast``,
``pf_mmio_spte_created``).  Deviates: the kernel updates them with atomic64 adds, which
commute; the model updates plain ints without a scheduling point.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..sync import Mutex, RcuWait, RwLock, RwSemaphore, SpinLock, SrcuStruct, Words
from ..sync.list import ListHead
from ..sync.rculist import RcuList
from ..sync.vhost_task import Once
from . import spte as S

KVM_ADDRESS_SPACE_NUM = 2
#: include/linux/kvm_types.h: (gpa_t)~0ULL, also the "no range yet" of an invalidation
INVALID_GPA = (1 << 64) - 1
HOST_PFN_BASE = 1 << 24          # 64 GiB: above every page-table pfn the allocator hands out
HOST_PFN_ALIGN = 1 << 18         # 1 GiB in 4K pages

# vCPU requests (kvm_host.h / x86 kvm_host.h), as bits of vcpu.requests
KVM_REQ_TLB_FLUSH = 1 << 0
KVM_REQ_MMU_FREE_OBSOLETE_ROOTS = 1 << 1
KVM_REQ_NAMES = {KVM_REQ_TLB_FLUSH: "KVM_REQ_TLB_FLUSH",
                 KVM_REQ_MMU_FREE_OBSOLETE_ROOTS: "KVM_REQ_MMU_FREE_OBSOLETE_ROOTS"}

KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
#: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 flags (kvm->manual_dirty_log_protect)
KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE = 1 << 0
KVM_DIRTY_LOG_INITIALLY_SET = 1 << 1
#: internal flag: the slot is being deleted or moved (faults on it retry)
KVM_MEMSLOT_INVALID = 1 << 16


@dataclass
class KvmVmStat:
    pages_4k: int = 0
    pages_2m: int = 0
    pages_1g: int = 0
    remote_tlb_flush: int = 0
    remote_tlb_flush_requests: int = 0
    nx_lpage_splits: int = 0
    mmu_shadow_zapped: int = 0
    #: shadow MMU (shadow_mmu.py)
    mmu_unsync: int = 0
    mmu_recycled: int = 0

    def pages(self, level: int) -> int:
        return (self.pages_4k, self.pages_2m, self.pages_1g)[level - 1]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class KvmVcpuStat:
    pf_taken: int = 0
    pf_fixed: int = 0
    pf_spurious: int = 0
    pf_emulate: int = 0
    pf_fast: int = 0
    pf_retry: int = 0
    pf_mmio_spte_created: int = 0


class DirtyBitmap:
    """A memslot's dirty bitmap (``memslot->dirty_bitmap``): one bit per page of the
    slot, indexed by the page's offset in the slot, kept as one byte per page so that a
    harvest is a vectorised operation (``mask``) and ``set_bit`` a plain store.

    Behaves as the set of dirty gfns for everything else: ``add``/``discard``, ``in``,
    ``len``, iteration in gfn order, ``==`` against a set.  A
    MOVE keeps the bits, rebased (``rebased``), as kvm_prepare_memory_region keeps
    ``old->dirty_bitmap``."""

    __slots__ = ("base_gfn", "npages", "bits")
    __hash__ = None

    def __init__(self, base_gfn: int, npages: int, all_set: bool = False):
        self.base_gfn = base_gfn
        self.npages = npages
        self.bits = bytearray(b"\x01" * npages if all_set else npages)

    @classmethod
    def from_gfns(cls, base_gfn: int, npages: int, gfns) -> DirtyBitmap:
        """The bitmap with exactly ``gfns`` set (a DirtyBitmap, or an iterable of gfns of
        the slot)."""
        bm = cls(base_gfn, npages)
        if isinstance(gfns, DirtyBitmap):
            bm.mask[:] = gfns.mask_for(base_gfn, npages)
        else:
            offs = np.fromiter(gfns, dtype=np.int64) - base_gfn
            offs = offs[(offs >= 0) & (offs < npages)]
            bm.mask[offs] = True
        return bm

    @property
    def mask(self) -> np.ndarray:
        """A writable bool view of the bits (no copy)."""
        return np.frombuffer(self.bits, dtype=np.bool_)

    def mask_for(self, base_gfn: int, npages: int) -> np.ndarray:
        """These bits as a bool array over the pages [base_gfn, base_gfn + npages)."""
        if base_gfn == self.base_gfn and npages == self.npages:
            return self.mask
        out = np.zeros(npages, dtype=np.bool_)
        lo, hi = max(base_gfn, self.base_gfn), min(base_gfn + npages, self.base_gfn + self.npages)
        if lo < hi:
            out[lo - base_gfn:hi - base_gfn] = self.mask[lo - self.base_gfn:hi - self.base_gfn]
        return out

    def copy(self) -> DirtyBitmap:
        bm = DirtyBitmap.__new__(DirtyBitmap)
        bm.base_gfn, bm.npages, bm.bits = self.base_gfn, self.npages, bytearray(self.bits)
        return bm

    def rebased(self, base_gfn: int) -> DirtyBitmap:
        bm = self.copy()
        bm.base_gfn = base_gfn
        return bm

    def add(self, gfn: int) -> None:
        """set_bit (atomic: it commutes with every other set_bit)."""
        self.bits[gfn - self.base_gfn] = 1

    def discard(self, gfn: int) -> None:
        if self.base_gfn <= gfn < self.base_gfn + self.npages:
            self.bits[gfn - self.base_gfn] = 0

    def gfns(self) -> np.ndarray:
        """The set gfns, ascending (int64)."""
        return np.flatnonzero(self.mask) + self.base_gfn

    def __contains__(self, gfn) -> bool:
        i = gfn - self.base_gfn
        return 0 <= i < self.npages and self.bits[i] != 0

    def __len__(self) -> int:
        return int(np.count_nonzero(self.mask))

    def __bool__(self) -> bool:
        return self.bits.find(1) >= 0

    def __iter__(self):
        return iter(self.gfns().tolist())

    def __eq__(self, other) -> bool:
        if isinstance(other, DirtyBitmap):
            return (self.base_gfn, self.npages) == (other.base_gfn, other.npages) and self.bits == other.bits
        if isinstance(other, (set, frozenset)):
            return len(other) == len(self) and all(g in self for g in other)
        return NotImplemented

    def __repr__(self) -> str:
        g = self.gfns().tolist()
        return f"DirtyBitmap({g[:16]}{'...' if len(g) > 16 else ''})"


@dataclass
class KvmMemorySlot:
    """struct kvm_memory_slot (what the TDP MMU needs).  ``name`` is for traces."""

    as_id: int
    id: int
    base_gfn: int
    npages: int
    #: first host pfn backing base_gfn
    host_pfn: int
    #: largest page size of the host backing (PG_LEVEL_4K/2M/1G): caps the mapping level
    backing_level: int = S.PG_LEVEL_4K
    flags: int = 0
    #: host pages the host moved (migration, KSM...): gfn -> new host pfn
    remapped: dict = field(default_factory=dict)
    #: the dirty bitmap while logging, else None
    dirty_bitmap: DirtyBitmap | None = None
    #: dirty-log completeness oracle (oracles.DirtyWriteLog): completed guest writes not
    #: yet covered by a harvest; created on the first logged write
    dirty_writes: object = None
    #: set once enabling dirty logging has returned (writes before it need not be logged)
    logging_active: bool = False

    @property
    def name(self) -> str:
        return f"memslot{self.as_id}.{self.id}"

    def contains(self, gfn: int) -> bool:
        return self.base_gfn <= gfn < self.base_gfn + self.npages

    def gfn_to_pfn(self, gfn: int) -> int:
        """The host pfn backing ``gfn`` now (the host may remap pages: see
        kvm_host_remap_gfn)."""
        pfn = self.remapped.get(gfn) if self.remapped else None
        return pfn if pfn is not None else self.host_pfn + (gfn - self.base_gfn)

    def alloc_dirty_bitmap(self, all_set: bool = False) -> DirtyBitmap:
        """kvm_alloc_dirty_bitmap (all ones with KVM_DIRTY_LOG_INITIALLY_SET)."""
        return DirtyBitmap(self.base_gfn, self.npages, all_set)

    def dirty_logging(self) -> bool:
        return bool(self.flags & KVM_MEM_LOG_DIRTY_PAGES)

    def readonly(self) -> bool:
        return bool(self.flags & KVM_MEM_READONLY)

    def max_mapping_level(self, gfn: int) -> int:
        """Largest level whose aligned range around ``gfn`` lies in the slot and is
        backed by one host page of that size (the lpage_info disallow counts and
        host_pfn_mapping_level, combined).  A host page of the range moved on its own
        (the host split its huge page to migrate or discard it) leaves the range mapped
        by smaller host pages; a whole folio migrated to an aligned one keeps it huge."""
        level = self.backing_level
        while level > S.PG_LEVEL_4K:
            n = S.KVM_PAGES_PER_HPAGE(level)
            start = S.gfn_round_for_level(gfn, level)
            if (start >= self.base_gfn and start + n <= self.base_gfn + self.npages
                    and (self.gfn_to_pfn(start) % n) == 0 and self.moved_alone(start, n) is None):
                return level
            level -= 1
        return S.PG_LEVEL_4K

    def moved_alone(self, start: int, n: int) -> int | None:
        """The first gfn of [start, start + n) (in remap order) whose host page is not
        the one after ``start``'s at that offset -- the host moved it on its own -- or
        None if the range maps consecutive host pfns."""
        if not self.remapped:
            return None
        first = self.gfn_to_pfn(start)
        for g, p in self.remapped.items():
            if start <= g < start + n and p != first + (g - start):
                return g
        return None


@dataclass
class KvmArch:
    tdp_mmu_roots: RcuList = None
    tdp_mmu_pages_lock: SpinLock = None
    #: linked non-root TDP page tables (kvm->arch.tdp_mmu_pages, atomic64)
    tdp_mmu_pages: int = 0
    possible_nx_huge_pages: list = field(default_factory=list)
    #: design L only (v5.10 - d25ceb926436): every linked non-root TDP MMU page
    #: (kvm->arch.tdp_mmu_pages was this list_head then), under tdp_mmu_pages_lock
    tdp_mmu_pages_list: ListHead = None
    mmu_valid_gen: int = 0
    disable_nx_huge_pages: bool = False
    # -- the shadow MMU (shadow_mmu.py: nested shadow pages beside the TDP MMU) --
    #: shadow pages, newest first.  Written only under: mmu_lock held for write.
    active_mmu_pages: list = field(default_factory=list)
    #: gfn -> shadow pages of that gfn.  Written only under: mmu_lock held for write.
    mmu_page_hash: dict = field(default_factory=dict)
    n_used_mmu_pages: int = 0
    #: KVM_SET_NR_MMU_PAGES (default: KVM_MIN_ALLOC_MMU_PAGES, the floor for small VMs)
    n_max_mmu_pages: int = 64
    indirect_shadow_pages: int = 0
    #: gfn -> upper-level shadow pages write-tracking it
    shadow_write_track: dict = field(default_factory=dict)
    #: taken by TDP MMU faults (read lock) to mark shadow pages unsync
    mmu_unsync_pages_lock: SpinLock = None
    #: the NX recovery vhost task, created by the first KVM_RUN (call_once on nx_once);
    #: None until then although the VM is already visible to the module-param setters
    nx_huge_page_recovery_thread: object = None
    nx_once: object = None


class Kvm:
    """struct kvm for one VM.  Build with :func:`tdpmmu.mmu.kvm_create_vm`."""

    def __init__(self, *, masks: S.SpteMasks = S.EPT, root_level: int = 4,
                 nx_huge_pages: bool = False, name: str = "kvm"):
        self.name = name
        self.masks = masks
        #: TDP root level: 4, or 5 with 5-level paging (MAXPHYADDR > 48)
        self.root_level = root_level
        #: host MAXPHYADDR (shadow_phys_bits; one VM per model, so the host's value
        #: lives here): no SPTE is made for a gfn above it, and zaps stop there
        self.shadow_phys_bits = 52
        #: the nx_huge_pages module parameter (writable at run time: set_nx_huge_pages);
        #: one VM per model, so the parameter lives here
        self.nx_huge_pages = nx_huge_pages
        #: nx_huge_pages_recovery_ratio / _period_ms module parameters
        self.nx_huge_pages_recovery_ratio = 60
        self.nx_huge_pages_recovery_period_ms = 0
        #: arch.nx_huge_page_last: when the recovery worker last ran (model ms)
        self.nx_huge_page_last = 0
        #: oracle: set once enabling the mitigation has returned (or at creation with it
        #: on): from then on no guest instruction fetch may use an executable huge page
        self.nx_enforced = nx_huge_pages
        #: KVM_X86_QUIRK_SLOT_ZAP_ALL (default on): deleting or moving a memslot zaps
        #: everything (kvm_mmu_zap_all_fast) instead of just the slot's range
        self.slot_zap_all_quirk = True
        #: memslot DELETE/MOVE updates between invalidation and the final publication
        #: (oracles: the translation of a gfn may legitimately change meanwhile)
        self.memslot_updates_in_progress = 0
        #: the eager_page_split module parameter (default Y)
        self.eager_page_split = True
        #: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 as enabled by userspace (0: GET clears)
        self.manual_dirty_log_protect = 0
        self.mmu_lock = RwLock("mmu_lock")
        self.slots_lock = Mutex("slots_lock")
        self.srcu = SrcuStruct("kvm->srcu")
        self.arch = KvmArch()
        self.arch.tdp_mmu_pages_lock = SpinLock("tdp_mmu_pages_lock")
        self.arch.tdp_mmu_pages_list = ListHead("tdp_mmu_pages",
                                                lock=self.arch.tdp_mmu_pages_lock)
        self.arch.mmu_unsync_pages_lock = SpinLock("mmu_unsync_pages_lock")
        self.arch.nx_once = Once("kvm->arch.nx_once")        # kvm_arch_post_init_vm
        self.arch.tdp_mmu_roots = RcuList("tdp_mmu_roots", self.arch.tdp_mmu_pages_lock,
                                          reader_lock=self.mmu_lock)
        #: the memslots, per address space, as last published (for setup and oracles);
        #: vCPUs read the published copies under SRCU (kvm_vcpu_gfn_to_memslot)
        self.memslots: list[list[KvmMemorySlot]] = [[] for _ in range(KVM_ADDRESS_SPACE_NUM)]
        self.memslots_cell = Words("kvm->memslots", KVM_ADDRESS_SPACE_NUM, ())
        #: host pages the host has taken back (deleted memslots, migrated pages):
        #: (first pfn, npages, why) -- the host-safety oracle's input
        self.freed_host_ranges: list = []
        #: aging oracle: (as_id, gfn) -> the leaf a hardware walk used (pt, idx, pfn, root)
        self.young_walks: dict = {}
        #: aging oracle: the clear_young / test_young calls in progress
        self.age_calls: list = []
        self.memslots_generation = 0
        #: host memory regions handed out so far (each memslot gets a fresh one)
        self.host_regions = 0
        #: host pages whose userspace mapping is read-only (mprotect): (first pfn, npages)
        self.host_readonly_ranges: list = []
        self.vcpus: list = []
        self.stat = KvmVmStat()
        #: page_private: pfn of a page table -> its kvm_mmu_page
        self.pt_by_pfn: dict[int, object] = {}
        self.mmu_invalidate_seq = Words("mmu_invalidate_seq")
        self.mmu_invalidate_in_progress = 0
        self.users_count = 1
        #: set once kvm_destroy_vm has started (lock assertions that the kernel waives
        #: during destruction check it)
        self.dying = False
        self.created_vcpus = 0
        #: hook for the hardware model: called with (kvm) by kvm_flush_remote_tlbs
        self.flush_hooks: list = []
        #: every SPTE of a range walk is its own step (else runs of non-present entries
        #: are scanned in one step: see tdp_mmu.py's deviations)
        self.fine_grained = False
        #: (mmu_invalidate_range_start, mmu_invalidate_range_end), zeroed as by kzalloc
        self.mmu_invalidate_range = (0, 0)
        #: TLB-coherence oracle: flush obligations not met yet (see oracles.py)
        self.pending_flushes: list = []
        #: write-tracked gfns (kvm_slot_page_track_add_page): writes are emulated
        self.write_tracked: set = set()
        #: oracle state: gfns whose tracking has been fully set up (write-protected and
        #: flushed): a guest write to one of them that completes is a bug
        self.write_track_enforced: set = set()
        #: design A only: kworker tasks zapping invalidated roots (tdp_mmu_zap_wq)
        self.tdp_mmu_zap_wq: list = []
        #: PML (kvm_x86_ops.cpu_dirty_log_size != 0, VMX enable_pml): the CPU logs the
        #: GPA of every write that sets a D bit; KVM then tracks dirty pages by clearing
        #: D instead of W -- except in roots whose role needs write protection (L2)
        self.enable_pml = False
        #: the free-run fault path's make_spte results (mmu/fastpath.py)
        self.leaf_spte_templates: dict = {}
        #: kvm_main.c: memslot updates wait for MMU-notifier invalidations in flight
        #: (range_start..range_end): the count, its lock and the updater's rcuwait
        self.mn_invalidate_lock = SpinLock("mn_invalidate_lock")
        self.mn_active_invalidate_count = 0
        self.mn_memslots_update_rcuwait = RcuWait("mn_memslots_update_rcuwait")
        #: notifier-vs-memslot-rwsem-deadlock only: the first version's fair rwsem,
        #: read-held from range_start to range_end, write-held to install memslots
        self.mmu_notifier_slots_lock = RwSemaphore("mmu_notifier_slots_lock")

    def __repr__(self) -> str:
        return f"<Kvm {self.name}>"

    # -- memslots (part 1: creation only) ------------------------------------------

    @property
    def nx_huge_page_workaround_enabled(self) -> bool:
        """is_nx_huge_page_enabled(): the module parameter, unless this VM disabled the
        mitigation (KVM_CAP_VM_DISABLE_NX_HUGE_PAGES)."""
        return self.nx_huge_pages and not self.arch.disable_nx_huge_pages

    def host_page_readonly(self, pfn: int) -> bool:
        return any(first <= pfn < first + n for first, n in self.host_readonly_ranges)

    @property
    def nr_memslots_dirty_logging(self) -> int:
        """kvm->nr_memslots_dirty_logging (an atomic_t the kernel updates when a memslot
        update commits; readers accept a stale value): here counted from the published
        memslots of every address space."""
        return sum(slot.dirty_logging() for slots in self.memslots for slot in slots)

    def gfn_to_memslot(self, as_id: int, gfn: int):
        for slot in self.memslots[as_id]:
            if slot.base_gfn <= gfn < slot.base_gfn + slot.npages:     # slot.contains
                return slot
        return None


class KvmVcpu:
    """struct kvm_vcpu with its MMU state (arch.mmu) and its hardware TLB."""

    def __init__(self, kvm: Kvm, vcpu_id: int):
        self.kvm = kvm
        self.vcpu_id = vcpu_id
        self.name = f"vcpu{vcpu_id}"
        #: in System Management Mode: the MMU uses the as_id 1 root
        self.smm = False
        #: arch.mmu->root: the loaded root (kvm_mmu_page) or None (INVALID_PAGE)
        self.root = None
        #: requests (kvm_make_request / kvm_check_request), set by other tasks
        self.requests = Words(f"{self.name}.requests")
        self.stat = KvmVcpuStat()
        #: the hardware model (hw.py) attaches the TLB here
        self.tlb = None
        #: vcpu->mode: IN_GUEST_MODE between VM entry and exit (read by requesters)
        self.mode = Words(f"{self.name}.mode")
        self.guest_exit_waiters: list = []
        #: VM exits so far (a kicked requester waits for this to change)
        self.guest_exits = 0
        #: memory caches topped up before mmu_lock (mmu_topup_memory_caches)
        self.mmu_page_cache: list = []
        #: arch.guest_mmu->root while running a nested (L2) guest: a shadow page
        self.nested_root = None
        #: is_guest_mode(): running L2 (L1 without EPT: the TDP MMU maps L2 in roots
        #: with role.guest_mode); PML is off in vmcs02
        self.guest_mode = False
        #: the PML buffer: GPAs (as gfns) the CPU logged, flushed into the dirty bitmap
        #: at VM exit (vmx_flush_pml_buffer)
        self.pml_buffer: list = []

    def __repr__(self) -> str:
        return f"<vcpu {self.vcpu_id}>"

    @property
    def as_id(self) -> int:
        return 1 if self.smm else 0

    def root_role(self):
        from .mmu_internal import KvmMmuPageRole
        return KvmMmuPageRole(level=self.kvm.root_level, smm=1 if self.smm else 0,
                              ad_disabled=not self.kvm.masks.ad_enabled,
                              guest_mode=self.guest_mode)
