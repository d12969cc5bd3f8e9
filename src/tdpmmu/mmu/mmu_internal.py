"""struct kvm_mmu_page, its role, struct kvm_page_fault and the RET_PF_* codes.

Mirrors: arch/x86/kvm/mmu/mmu_internal.h (and kvm_host.h for the role layout).

A TDP MMU page is a header plus its page table ``spt`` (512 SPTEs).  The header's
*mutable, shared* fields live in a small allocation (``hdr``) so that touching them
after the page was freed is a use-after-free and so that the race detector sees them:

=======================  ==============================================================
``hdr[HDR_INVALID]``     ``role.invalid``: written only under mmu_lock held for write
``hdr[HDR_TO_ZAP]``      ``tdp_mmu_scheduled_root_to_zap`` (roots)
``hdr[HDR_NX]``          ``nx_huge_page_disallowed``: written under tdp_mmu_pages_lock,
                         read by faults without it (READ_ONCE/WRITE_ONCE: the kernel's
                         plain bool accesses are aligned, i.e. atomic for KCSAN)
``tdp_mmu_root_count``   refcount_t inside ``hdr`` (roots only)
``link``                 the root-list ``next`` pointer inside ``hdr`` (roots only)
=======================  ==============================================================

The immutable part of the role (level, smm, ad_disabled, guest_mode, direct, access)
and ``gfn``/``ptep`` are plain attributes, set once before the page is published.

Deviates: ``invalid`` is kept beside the immutable role instead of inside one 32-bit
``role.word``; :meth:`KvmMmuPage.role_word` recombines them for root matching, so an
invalid root still never matches a vCPU's wanted role.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..sync import RefCount
from ..sync.list import ListHead
from ..sync.rculist import RcuListNode
from .spte import ACC_ALL, PG_LEVEL_4K

HDR_INVALID = 0
HDR_TO_ZAP = 1
HDR_NX = 2
HDR_WORDS = 4

# RET_PF_* (mmu_internal.h), in the kernel's order
RET_PF_CONTINUE = 0
RET_PF_RETRY = 1
RET_PF_EMULATE = 2
RET_PF_WRITE_PROTECTED = 3
RET_PF_INVALID = 4
RET_PF_FIXED = 5
RET_PF_SPURIOUS = 6
RET_PF_NAMES = {RET_PF_CONTINUE: "RET_PF_CONTINUE", RET_PF_RETRY: "RET_PF_RETRY",
                RET_PF_EMULATE: "RET_PF_EMULATE", RET_PF_WRITE_PROTECTED: "RET_PF_WRITE_PROTECTED",
                RET_PF_INVALID: "RET_PF_INVALID", RET_PF_FIXED: "RET_PF_FIXED",
                RET_PF_SPURIOUS: "RET_PF_SPURIOUS"}

# enum kvm_tdp_mmu_root_types
KVM_INVALID_ROOTS = 1 << 0
KVM_DIRECT_ROOTS = 1 << 1
KVM_MIRROR_ROOTS = 1 << 2
KVM_VALID_ROOTS = KVM_DIRECT_ROOTS | KVM_MIRROR_ROOTS
KVM_ALL_ROOTS = KVM_VALID_ROOTS | KVM_INVALID_ROOTS

# page-fault error code bits (PFERR_*)
PFERR_PRESENT_MASK = 1 << 0
PFERR_WRITE_MASK = 1 << 1
PFERR_USER_MASK = 1 << 2
PFERR_RSVD_MASK = 1 << 3
PFERR_FETCH_MASK = 1 << 4


@dataclass(frozen=True)
class KvmMmuPageRole:
    """union kvm_mmu_page_role, the fields a TDP root uses (``invalid`` kept apart)."""

    level: int
    smm: int = 0
    ad_disabled: bool = False
    guest_mode: bool = False
    direct: bool = True
    access: int = ACC_ALL
    cr0_wp: bool = True
    efer_nx: bool = True

    def child(self) -> "KvmMmuPageRole":
        """tdp_mmu_init_child_sp: the parent's role with level - 1."""
        return KvmMmuPageRole(self.level - 1, self.smm, self.ad_disabled, self.guest_mode,
                              self.direct, self.access, self.cr0_wp, self.efer_nx)

    @property
    def as_id(self) -> int:
        """kvm_mmu_role_as_id: 1 for SMM, else 0."""
        return 1 if self.smm else 0


class KvmMmuPage(RcuListNode):
    """struct kvm_mmu_page (TDP MMU fields)."""

    def __init__(self, hdr, spt, role: KvmMmuPageRole):
        self.hdr = hdr
        #: the 512-entry page table (Words with u64 storage)
        self.spt = spt
        self.role = role
        self.gfn = 0
        #: parent SPTE that links this page: (parent spt, index); None for roots
        self.ptep = None
        self.tdp_mmu_page = True
        self.tdp_mmu_root_count: RefCount | None = None
        #: on kvm->arch.possible_nx_huge_pages (list membership, under tdp_mmu_pages_lock)
        self.possible_nx_huge_page_link = False
        #: design L only (v5.10 - d25ceb926436): sp->link on kvm->arch.tdp_mmu_pages, in
        #: the zeroed header (NULL pointers until list_add)
        self.page_link = ListHead(f"{spt.name}.link", self, init=False, mem=hdr)

    @property
    def level(self) -> int:
        return self.role.level

    @property
    def as_id(self) -> int:
        return self.role.as_id

    @property
    def pfn(self) -> int:
        return self.spt.pfn

    @property
    def name(self) -> str:
        return self.spt.name

    def role_word(self, invalid: int) -> tuple:
        return (self.role, bool(invalid))

    def __repr__(self) -> str:
        return f"<sp {self.spt.name} L{self.role.level} as{self.as_id} gfn={self.gfn:#x}>"


def kvm_mmu_page_ad_need_write_protect(kvm, sp) -> bool:
    """With PML the GPAs the CPU logs while running L2 would be L2's, so KVM disables
    PML for L2 and must track L2 mappings' dirty state by write protection (their
    SPTEs are SPTE_TDP_AD_WRPROT_ONLY).  Mirrors: mmu_internal.h (cpu_dirty_log_size
    is ``kvm.enable_pml``)."""
    return kvm.enable_pml and sp.role.guest_mode


@dataclass
class KvmPageFault:
    """struct kvm_page_fault (the fields the TDP MMU uses)."""

    addr: int
    error_code: int
    prefetch: bool = False
    # derived from the error code
    exec: bool = False
    write: bool = False
    present: bool = False
    user: bool = False
    is_tdp: bool = True
    nx_huge_page_workaround_enabled: bool = False
    max_level: int = 3
    req_level: int = PG_LEVEL_4K
    goal_level: int = PG_LEVEL_4K
    huge_page_disallowed: bool = False
    gfn: int = 0
    slot: object = None
    mmu_seq: int = 0
    #: generation of the memslots the fault looked the gfn up in (an MMIO SPTE made
    #: from them carries it: kvm_vcpu_memslots(vcpu)->generation)
    mmio_gen: int = 0
    pfn: int = 0
    map_writable: bool = False
    extra: dict = field(default_factory=dict)
