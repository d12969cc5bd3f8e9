"""Catalogue defects (shared/reference/bugs.md), group fault_a: see catalogue.py.

Entries: fault-into-invalidated-root, sp-visible-before-linked,
mmu-seq-sign-extension-livelock (A1) and frozen-spte-at-goal-level (A5).
"""

from __future__ import annotations

from .registry import register_catalogue_defect

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
