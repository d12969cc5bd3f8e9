"""Catalogue defects (shared/reference/bugs.md), group nx: see catalogue.py.

NX huge page recovery (A3 nx-recovery-drops-tdp-flush, A6 nx-recovery-wrong-address-space,
B4 nx-recovery-readlock-stale-parent).  Each is consulted in kvm_recover_nx_huge_pages,
kvm_mmu_sp_dirty_logging_enabled (mmu.py) or kvm_tdp_mmu_zap_possible_nx_huge_page
(tdp_mmu.py), the functions the historical code lived in.
"""

from __future__ import annotations

from .registry import register_catalogue_defect

register_catalogue_defect(
    "nx-recovery-drops-tdp-flush",
    "NX recovery ignores the TDP MMU zap's flush result",
    "UseAfterFree", ["mmu-nx-recovery-vs-fault"],
    fix="048f49809c52 KVM: x86/mmu: Ensure TLBs are flushed for TDP MMU during NX zapping",
    description="kvm_recover_nx_huge_pages discards the 'a flush is needed' of the TDP MMU "
                "zap (29cf0f5007a2 only flushed for legacy MMU pages): the unlinked page "
                "table is freed after the grace period while a vCPU's paging-structure "
                "cache still points at it, and the hardware walker reads the freed page.")

register_catalogue_defect(
    "nx-recovery-wrong-address-space",
    "NX recovery looks up an SMM page's memslot in address space 0",
    "KernelWarning", ["mmu-nx-recovery-smm"],
    fix="817fa998362d KVM: x86/mmu: Grab memslot for correct address space in NX recovery worker",
    description="kvm_mmu_sp_dirty_logging_enabled resolves the page's gfn with "
                "gfn_to_memslot (as_id 0) instead of the memslots of the page's role: while "
                "any slot is dirty-logged, a possible NX huge page of the SMM address space "
                "at a gfn the normal address space has no slot for (SMRAM/TSEG) hits "
                "WARN_ON_ONCE(!slot).")

register_catalogue_defect(
    "nx-recovery-readlock-stale-parent/parent",
    "read-lock NX recovery trusts a shadow-present parent SPTE",
    "KernelWarning", ["mmu-nx-recovery-smm"],
    fix="a57750909580 KVM: x86/mmu: Recover TDP MMU NX huge pages using MMU read lock "
        "(review of v2/v3, <ZyJCjJx2lxnEnDwa@google.com>)",
    description="kvm_tdp_mmu_zap_possible_nx_huge_page keeps the write-lock era check "
                "WARN_ON_ONCE(!is_shadow_present_pte(parent)) under the read lock instead "
                "of 'the parent still points at this page': another read-lock task may have "
                "zapped or frozen the parent meanwhile (the WARN fires) or replaced it with "
                "a huge leaf or another page table (which is then zapped instead).")

register_catalogue_defect(
    "nx-recovery-readlock-stale-parent/resched",
    "read-lock NX recovery yields with the write-lock resched helper",
    "LockNotHeld", ["mmu-nx-recovery-vs-fault"],
    fix="a57750909580 KVM: x86/mmu: Recover TDP MMU NX huge pages using MMU read lock "
        "(v2 -> v3, cover <20240906204515.3276696-1-vipinsh@google.com>)",
    description="kvm_recover_nx_huge_pages, converted to mmu_lock for read, still yields "
                "with cond_resched_rwlock_write(): its lockdep assertion that mmu_lock is "
                "held for write fails.")
