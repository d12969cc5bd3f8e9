"""Catalogue defects (shared/reference/bugs.md), group l2: see catalogue.py."""

from __future__ import annotations

from .registry import register_catalogue_defect

# -- A4. SPTE atomicity, A/D bits, dirty logging --------------------------------------

register_catalogue_defect(
    "l2-dirty-log-needs-wrprot",
    "clearing dirty status clears D on an L2 root's SPTEs although PML is off for L2",
    "DirtyLogIncomplete", ["mmu-dirty-log-vs-writes"],
    fix="2673dfb591a3 KVM: x86/mmu: Write-protect L2 SPTEs in TDP MMU when clearing dirty "
        "status (CVE-2024-26990; Fixes: 5982a5392663)",
    description="With PML, KVM tracks dirty pages by clearing D bits and letting the CPU "
                "log the writes that set them again -- but PML is disabled while L2 runs, "
                "so the TDP roots of an L2 (L1 without EPT: role.guest_mode) need W "
                "cleared instead (their SPTEs are WRPROT_ONLY).  clear_dirty_pt_masked / "
                "clear_dirty_gfn_range choose the bit from kvm_ad_enabled() alone: a "
                "GET_DIRTY_LOG re-protects an L2 page by clearing D, L2's next write sets "
                "D with nobody logging it, and the next harvest misses the page.",
    params={"pml": True, "nested": True})


# -- A6. NX huge page recovery -------------------------------------------------------

register_catalogue_defect(
    "nx-worker-published-before-start",
    "the nx_huge_pages setter wakes a VM's recovery thread before the first KVM_RUN "
    "created it",
    "NullPointerDereference", ["mmu-nx-toggle-vs-exec-faults"],
    fix="43fb96ae7855 KVM: x86/mmu: Ensure NX huge page recovery thread is alive before "
        "waking (Fixes: 931656b9e2ff)",
    description="Since the NX recovery vhost task became on-demand (created through "
                "call_once by the first KVM_RUN), a VM is visible to the module-param "
                "setters before it has a thread.  set_nx_huge_pages (and the recovery "
                "ratio/period setter) call vhost_task_wake(kvm->arch.nx_huge_page_"
                "recovery_thread) without a NULL check, and the creation path stores "
                "the pointer before starting the task: an admin writing the parameter "
                "while the VM starts dereferences NULL.",
    params={"toggle_at_start": True})
