"""Catalogue defects (shared/reference/bugs.md), group roots_b: see catalogue.py.

* ``root-freed-on-last-vcpu-put`` (A1): a root counts only its vCPUs' references.
* ``async-defunct-root-double-put`` (B2): built on design V (``vcpu-held-roots``, the
  v5.18-v6.3 root lifetime, registered here as a design variant), whose defunct roots
  it gets wrong.
* ``free-pt-without-rcu`` (B9): formerly the negative control
  ``removed-pt-freed-without-rcu``.
"""

from __future__ import annotations

from .registry import register_catalogue_defect, register_defect

# -- design variant V: the root lifetime of v5.18-v6.3 ----------------------------------

register_defect("vcpu-held-roots", "design V (v5.18-v6.3): roots live while vCPUs hold them",
                "none", ["mmu-faults-vs-zap-all-fast", "mmu-smm-teardown"],
                "A new root starts with one reference (the vCPU's); the last put of a valid "
                "root makes it defunct (marked invalid, one reference given back, zapped by "
                "design A's workqueue); kvm_tdp_mmu_invalidate_all_roots takes a reference "
                "for each root it queues; vCPUs put roots under the write lock.  A correct "
                "design (its cost is performance: tdp_mmu.py, design variant V).",
                source="design variant")

# -- A1. root lifetime ---------------------------------------------------------------------

register_catalogue_defect(
    "root-freed-on-last-vcpu-put", "a root lives only while a vCPU references it",
    "KernelWarning", ["mmu-smm-teardown"],
    fix="edbdb43fc96b KVM: x86: Preserve TDP MMU roots until they are explicitly invalidated",
    description="kvm_tdp_mmu_alloc_root starts a new root at refcount 1 (the vCPU's only, "
                "as before v6.4): the TDP MMU holds no reference of its own, so when the "
                "last vCPU unloads the root (an SMM entry or exit, or teardown) the still "
                "valid root is freed and its tree must be rebuilt by faults.  N's "
                "KVM_BUG_ON in kvm_tdp_mmu_put_root (the last reference must never go for a "
                "valid root) fires.  (In other schedules a memslot update's zapper puts, as "
                "the TDP MMU's handed-over reference, the vCPU's only one: the vCPU's own "
                "put then underflows.)  Design V (vcpu-held-roots) is the same lifetime with "
                "the pre-v6.4 defunct-root machinery that made it safe, only slow.")

# -- Part B. review-time bugs and documented hazards ------------------------------------------

register_catalogue_defect(
    "async-defunct-root-double-put",
    "a defunct root's resurrected reference is put by two owners",
    "UseAfterFree", ["mmu-faults-vs-zap-all-fast"],
    fix="review of v3 of 'KVM: x86/mmu: Overhaul TDP MMU zapping and flushing' "
        "<20220303193842.370645-1-pbonzini@redhat.com> (fixed in v4 before merging)",
    description="On design V: a vCPU puts the last reference of a valid root, which "
                "becomes defunct (invalid, one reference given back to its zap worker); a "
                "memslot update's kvm_tdp_mmu_invalidate_all_roots then also queues a zap "
                "of that already-invalid root, as if the reference were its own.  Both "
                "workers put it: the second one zaps or puts a root already freed.",
    params={"vcpus": 1, "smm": True})

register_catalogue_defect(
    "free-pt-without-rcu", "removed page table freed without call_rcu",
    "UseAfterFree", ["mmu-nx-recovery-vs-fault"],
    fix="design rule of 'KVM: x86/mmu: Protect TDP MMU page table memory with RCU' "
        "(Ben Gardon, 2021); see tdp_mmu_free_sp_rcu_callback",
    description="handle_removed_pt frees the unlinked table at once instead of through "
                "call_rcu: a vCPU walking into it under the read lock (or fast page fault, "
                "lockless) is still inside its RCU read-side section and reads freed "
                "memory.")
