"""Catalogue defects (shared/reference/bugs.md), group fault_b: see catalogue.py."""

from __future__ import annotations

from .registry import register_catalogue_defect  # noqa: F401


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
