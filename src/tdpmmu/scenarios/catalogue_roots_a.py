"""Catalogue defects (shared/reference/bugs.md), group roots_a: see catalogue.py.

Root lifetime and root iteration (A1) plus two Part B hazards: the model consults
each defect in the function the kernel's historical code lived in (tdp_mmu_next_root,
for_each_tdp_mmu_root_yield_safe, kvm_tdp_mmu_unmap_gfn_range, kvm_tdp_mmu_put_root).
yield-with-unreachable-root needs the v5.17 root lifetime (the last put zaps the root),
a design variant of tdp_mmu.py (``ROOT_LIFETIME_V5_17``).
"""

from __future__ import annotations

from ..mmu.tdp_mmu import ROOT_LIFETIME_V5_17
from .registry import register_catalogue_defect, register_defect

#: catalogue id -> why the model does not re-introduce it (none in this group)
OUT_OF_SCOPE: dict[str, str] = {}

MIGRATE = "mmu-folio-migration-vs-smm"

# -- A1. root lifetime, root iteration, invalidation ---------------------------------

register_catalogue_defect(
    "root-put-never-frees", "a root walk's temporary reference is dropped without "
    "freeing the root on zero", "RefcountViolation",
    ["mmu-zap-leafs-vs-invalidate", MIGRATE, "mmu-unload-vs-root-walk"],
    fix="a889ea54b3da KVM: x86/mmu: Ensure TDP MMU roots are freed after yield",
    description="tdp_mmu_next_root drops the previous root's reference with a plain "
    "decrement (v5.10's kvm_mmu_put_root, whose 'reached zero' the root walkers "
    "ignored): a range zap yields on a root while a memslot update invalidates it and "
    "the vCPU drops its reference, so the walk's put is the last one and the root stays "
    "on tdp_mmu_roots with a zero count (refcount_t: 'decrement hit 0; leaking memory').")

register_catalogue_defect(
    "root-iter-next-after-free", "the root walk reads the previous root's link after "
    "putting (and maybe freeing) it", "UseAfterFree",
    ["mmu-zap-leafs-vs-invalidate", MIGRATE, "mmu-unload-vs-root-walk"],
    fix="a889ea54b3da KVM: x86/mmu: Ensure TDP MMU roots are freed after yield (v2; "
    "the crash is v1's, reported by Maciej S. Szmigiero)",
    description="tdp_mmu_next_root puts prev_root first and only then follows its "
    "link: when that put was the last reference (the root was invalidated and the vCPU "
    "dropped it while the walker was yielded), a grace period can end and free the "
    "root before the walker reads the freed link.")

register_catalogue_defect(
    "notifier-unmap-unsafe-root-iter", "the mmu_notifier unmap walks roots without "
    "references but lets the zap yield", "UseAfterFree", [MIGRATE],
    fix="7533377215b6 KVM: x86/mmu: Use yield-safe TDP MMU root iter in MMU notifier "
    "unmapping",
    description="kvm_tdp_mmu_unmap_gfn_range uses __for_each_tdp_mmu_root (no "
    "references: only valid if mmu_lock is held throughout) while tdp_mmu_zap_leafs "
    "yields (may_block): during the yield a memslot update invalidates and zaps the "
    "root, the vCPU puts its last reference on SMI, RCU frees the root, and the "
    "notifier resumes its walk in freed memory.")

# -- Part B. review-time bugs and documented hazards -----------------------------------

register_catalogue_defect(
    "seed-root-iter-as-id-filter", "the all-roots walker visits address space 0 only",
    "KernelWarning", ["mmu-smm-teardown", "mmu-faults-vs-zap-all-fast"],
    fix="441a5dfcd968 KVM: x86/mmu: Do not filter address spaces in "
    "for_each_tdp_mmu_root_yield_safe() (with 0df9dab891ff; the seed's series)",
    description="for_each_tdp_mmu_root_yield_safe keeps the as_id 0 filter of the "
    "pre-series walker: kvm_tdp_mmu_zap_invalidated_roots never zaps an invalidated SMM "
    "root nor puts the reference handed over with it, so the SMM root and its page "
    "tables survive VM teardown (kvm_mmu_uninit_tdp_mmu's WARNs).  The existing "
    "negative control zap-invalidated-roots-one-as filters in the caller instead.")

register_catalogue_defect(
    "yield-with-unreachable-root", "the last put of a root unlinks it, then zaps it "
    "with yielding", "HostSafetyViolation", [MIGRATE],
    fix="8351779ce65f KVM: x86/mmu: Allow yielding when zapping GFNs for defunct TDP "
    "MMU root (the invariant it documents in tdp_mmu_zap_root)",
    description="On the v5.17 root lifetime (a root lives as long as its vCPUs "
    "reference it; the last put unlinks and zaps it; zapped leaves write their "
    "Accessed/Dirty state back to the struct page), the zap of the unlinked root yields: "
    "a folio migration's mmu_notifier runs meanwhile, cannot see the root, returns, and "
    "the host frees the folio; the zap resumes and marks the freed page dirty.")

# -- design variant --------------------------------------------------------------------

register_defect(
    ROOT_LIFETIME_V5_17, "design v5.13-v5.17: roots live while vCPUs reference them; "
    "the last put zaps", "none", [MIGRATE, "mmu-faults-vs-zap-all-fast"],
    "kvm_tdp_mmu_alloc_root starts a root at one reference (the vCPU's); the "
    "invalidation takes a reference for the zapper; the last put unlinks the root, zaps "
    "it without yielding (mmu_lock held throughout, so notifiers either see the root or "
    "find it gone) and frees it after a grace period; handle_changed_spte writes A/D "
    "state back to the struct page (kvm_set_pfn_accessed/dirty, until v6.13).  A "
    "correct design: the base of yield-with-unreachable-root.",
    source="design variant")
