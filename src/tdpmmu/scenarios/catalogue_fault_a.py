"""Catalogue defects (shared/reference/bugs.md), group fault_a: see catalogue.py.

Entries: fault-into-invalidated-root, sp-visible-before-linked,
mmu-seq-sign-extension-livelock (A1) and frozen-spte-at-goal-level (A5).
"""

from __future__ import annotations

from .registry import register_catalogue_defect, register_defect

# -- A1. root lifetime, root iteration, invalidation ---------------------------------

register_catalogue_defect(
    "fault-into-invalidated-root", "a page fault maps into a root invalidated meanwhile",
    "StructureViolation", ["mmu-smm-teardown", "mmu-faults-vs-zap-all-fast"],
    fix="a955cad84cda KVM: x86/mmu: Retry page fault if root is invalidated by memslot update",
    description="is_page_fault_stale checks only the mmu_notifier sequence, not whether the "
                "vCPU's root was invalidated: a fault that resolved its pfn before "
                "kvm_mmu_zap_all_fast takes the read lock after the zapper passed its gfn and "
                "links page tables and a leaf into the dead root behind it; the root's last "
                "put then frees only the root table, and the tables and leaves stay "
                "accounted (the structure oracle at teardown, or the kernel's own WARN).")


register_catalogue_defect(
    "mmu-seq-sign-extension-livelock",
    "the fault's mmu_invalidate_seq snapshot is truncated to int and sign-extended",
    "Livelock", ["mmu-notifier-remap-vs-fault"],
    fix="KVM: x86/mmu: Fix an sign-extension bug with mmu_seq that hangs vCPUs "
        "(6.1-stable only, <20230824010104.2714198-1-seanjc@google.com>; upstream fixed by "
        "ba6e3fe25543 KVM: x86/mmu: Grab mmu_invalidate_seq in kvm_faultin_pfn())",
    description="is_page_fault_stale takes the snapshot as an int parameter and compares it, "
                "sign-extended, with the unsigned long counter: once mmu_invalidate_seq passes "
                "2^31 every fault looks stale and the vCPU re-faults forever.  The VM starts "
                "one invalidation short of 2^31 (seq_start); the host migration crosses it.",
    params={"seq_start": 2**31 - 1})


register_defect(
    "tdp-mmu-pages-list",
    "design L (v5.10 - d25ceb926436): every TDP MMU page on kvm->arch.tdp_mmu_pages",
    "none", ["mmu-faults-vs-zap-all-fast", "mmu-link-race"],
    "kvm->arch.tdp_mmu_pages is a list_head (sp->link) instead of a count: "
    "tdp_account_mmu_page list_adds and tdp_unaccount_mmu_page list_dels under "
    "tdp_mmu_pages_lock, with CONFIG_DEBUG_LIST checks (sync/list.py).  Correct as "
    "modelled: a page goes on the list before the SPTE publishing it (v5.10's order).",
    source="design variant")

register_defect(
    "last-put-zaps-root-v5.15", "design P (v5.15): the last root put zaps the root",
    "none", ["mmu-faults-vs-zap-all-fast", "mmu-smm-teardown"],
    "kvm_tdp_mmu_put_root zaps the whole root (no yield, mmu_lock in the caller's mode) "
    "when the last reference goes, before freeing it after a grace period.  A correct "
    "design.", source="design variant")

register_catalogue_defect(
    "sp-visible-before-linked",
    "v5.15: a new page table is reachable before it is on the TDP MMU page list",
    "ListCorruption", ["mmu-faults-vs-zap-all-fast"],
    fix="none in 5.15 (kernel bugzilla 217562); gone upstream with d25ceb926436 KVM: x86/mmu: "
        "Track the number of TDP MMU pages, but not the actual pages",
    description="Design L as in v5.12-v5.15: tdp_mmu_link_page list_adds the new page "
                "after the cmpxchg that made it reachable; v5.15 also lacked a955cad84cda "
                "(a fault may map into a root invalidated meanwhile) and its last root put "
                "zapped the root (design P).  The zapper of the invalidated root, under the "
                "read lock, unlinks the page table before the vCPU put it on the list: "
                "list_del meets the zeroed node (CONFIG_DEBUG_LIST: next is NULL -- the "
                "5.15 NULL dereference).")


# -- A5. the fault path --------------------------------------------------------------

register_catalogue_defect(
    "frozen-spte-at-goal-level", "the fault maps a leaf over a frozen goal-level SPTE",
    "KernelWarning", ["mmu-nx-recovery-vs-fault"],
    fix="f5d16bb9be68 KVM: x86/mmu: Don't attempt to map leaf if target TDP MMU SPTE is frozen",
    description="kvm_tdp_mmu_map tests 'reached the goal level' before 'SPTE frozen': a vCPU "
                "walking inside a page table that another task under the read lock has "
                "unlinked (handle_removed_pt freezing every entry) reaches its goal-level "
                "entry, finds it FROZEN_SPTE and tries to install its leaf over it; the "
                "kernel's WARN in __tdp_mmu_set_spte_atomic fires.  The freezer here is NX "
                "huge page recovery zapping a split page table under the read lock (v6.18's "
                "design, which the model follows; in v6.2 it was tdp_mmu_zap_spte_atomic or "
                "another zap of a table under the read lock).")
