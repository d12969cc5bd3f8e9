"""Catalogue defects (shared/reference/bugs.md), group fault_b: see catalogue.py."""

from __future__ import annotations

from .registry import register_catalogue_defect  # noqa: F401


# -- A5. the fault path --------------------------------------------------------------

register_catalogue_defect(
    "write-lock-helper-under-read-lock",
    "the TDP MMU fault path reclaims shadow pages (make_mmu_pages_available) under the "
    "read lock",
    "LockNotHeld", ["mmu-nested-shadow-vs-tdp-faults"],
    fix="47b0c2e4c220 KVM: x86/mmu: Fix race condition in direct_page_fault (CVE-2022-45869)",
    description="direct_page_fault called make_mmu_pages_available for every fault, also "
                "when the TDP MMU handles it under mmu_lock held for read; with nested "
                "shadow pages at the limit two vCPUs zap and free the oldest shadow pages "
                "at once (rmap corruption, GPF in kvm_mmu_commit_zap_page).  The helper "
                "requires the write lock: its declared requirement fires.")

register_catalogue_defect(
    "unsync-race-under-read-lock",
    "TDP MMU faults mark nested shadow pages unsync without mmu_unsync_pages_lock",
    "DataRace", ["mmu-nested-shadow-vs-tdp-faults"],
    fix="ce25681d59ff KVM: x86/mmu: Protect marking SPs unsync when using TDP MMU with "
        "spinlock",
    description="mmu_try_to_unsync_pages (from make_spte) marks the shadow pages of a gfn "
                "unsync and their parents' unsync_child_bitmap / unsync_children with "
                "plain read-modify-writes; under the read lock two vCPUs writing two "
                "guest page tables below one parent race on them (a lost increment makes "
                "unsync_children reach zero early: KVM skips syncing, or it underflows in "
                "clear_unsync_child_bit).  Found by the race detector.")


# -- A7. memslots, notifiers and prefaulting ------------------------------------------

register_catalogue_defect(
    "prefault-vs-memslot-delete-deadlock",
    "a prefault retries on an INVALID memslot inside the SRCU section the deletion waits for",
    "Livelock", ["mmu-prefault-vs-memslot-delete"],
    fix="3ccbf6f47098 KVM: x86/mmu: Return -EAGAIN if userspace deletes/moves memslot "
        "during prefault",
    description="kvm_mmu_faultin_pfn answers RET_PF_RETRY for a memslot flagged INVALID "
                "even for a prefetch fault, and kvm_tdp_map_page retries it without "
                "leaving the kvm->srcu read section of KVM_PRE_FAULT_MEMORY; the memslot "
                "deletion waits for that section in synchronize_srcu and never marks the "
                "slot gone: the prefault spins forever (found as a step-bound livelock: "
                "the VMM task is blocked, the vCPU task runs without finishing).")
