"""Catalogue defects (shared/reference/bugs.md), group yield: see catalogue.py.

A2 (the iterator and yielding), A3 (a flush lost across roots) and Part B's
flush-after-rcu-unlock (found through the hardware model's paging-structure caches on
mmu-migration-end-vs-access).  The A2 entries are found by the watchdogs
(sync/watchdog.py) on the long walks of mmu-large-guest-migration (mmu_yield.py).
"""

from __future__ import annotations

from .registry import register_catalogue_defect, register_defect

# -- A2. the iterator and yielding ---------------------------------------------------

register_defect("last-put-zaps-root",
                "design R (v5.13-v6.3): roots hold no TDP MMU reference; the last put zaps",
                "none", ["mmu-large-guest-migration", "mmu-faults-vs-zap-all-fast",
                         "mmu-smm-teardown"],
                "A new root starts with the vCPU's reference only (refcount 1); "
                "invalidation takes the reference it hands to the zapper; the last put of "
                "a still-valid root marks it invalid, keeps it listed with one reference, "
                "zaps it with yielding and puts it (8351779ce65f).  A correct design: "
                "explore it to compare with N.", source="design variant")

register_catalogue_defect(
    "yield-only-after-spte-change",
    "write-protection checks for a resched only after changing an SPTE",
    "SoftLockup", ["mmu-large-guest-migration"],
    fix='1af4a96025b3 "KVM: x86/mmu: Yield in TDU MMU iter even if no SPTES changed" '
        '(Ben Gardon, Feb 2021, v5.12)',
    description="wrprot_gfn_range calls tdp_mmu_iter_cond_resched only after it cleared W "
                "on an SPTE (v5.11): enabling dirty logging on a large, mostly read-only "
                "guest walks page table after page table without a scheduling point while "
                "the host's mmu_notifier invalidation (and the vCPU behind it) spins on "
                "mmu_lock.")

register_catalogue_defect(
    "zap-root-single-pass-rcu-stall",
    "a root is zapped in one pass over its top-level entries",
    "RcuStall", ["mmu-large-guest-migration"],
    fix='1b6043e8e584 "KVM: x86/mmu: Zap roots in two passes to avoid inducing RCU stalls" '
        '(Sean Christopherson, Mar 2022, v5.18)',
    description="tdp_mmu_zap_root runs __tdp_mmu_zap_root at the root's level only: zapping "
                "one top-level entry tears down its whole subtree in handle_removed_pt, "
                "inside one RCU read-side section with no chance to yield, while the "
                "grace period for the tables already freed waits (the VM teardown of "
                "a large guest).")

register_catalogue_defect(
    "put-root-zap-cannot-yield",
    "the last put of a valid root unlinks it and zaps it without yielding",
    "SoftLockup", ["mmu-large-guest-migration"],
    fix='8351779ce65f "KVM: x86/mmu: Allow yielding when zapping GFNs for defunct TDP MMU '
        'root" (Paolo Bonzini, Sean Christopherson, Mar 2022, v5.18)',
    description="The v5.13-v5.17 root lifetime (variant root-lifetime-v5.17: roots hold "
                "only the vCPUs' references, design R before this fix): "
                "kvm_tdp_mmu_put_root unlinks the root and then zaps all of it with "
                "can_yield = false: KVM_SET_SREGS on the only vCPU of a large guest zaps "
                "its whole root in one go while the host's mmu_notifier spins on mmu_lock.")


# -- A3. TLB flushing ----------------------------------------------------------------

register_catalogue_defect(
    "flush-lost-across-roots-on-yield",
    "a range zap's yield in a later root forgets the flush owed for earlier roots",
    "TlbIncoherence", ["mmu-both-as-vs-zap-range"],
    fix='a835429cda91 "KVM: x86/mmu: Ensure TLBs are flushed when yielding during GFN range '
        'zap" (Sean Christopherson, Mar 2021, v5.12)',
    description="kvm_tdp_mmu_zap_leafs passes flush = false into each root's "
                "tdp_mmu_zap_leafs and ORs the results: after zapping a page in the SMM "
                "root, the walk of the normal root yields before zapping anything of its "
                "own, drops mmu_lock without flushing, and a vCPU keeps using the zapped "
                "translation from its TLB.  (cond-resched-skips-flush is the model's "
                "negative control of the same flush-before-yield rule within one root.)")


# -- B8. the flush before leaving RCU --------------------------------------------------

register_catalogue_defect(
    "flush-after-rcu-unlock",
    "a yielding walk leaves the RCU read-side section before its pending TLB flush",
    "UseAfterFree", ["mmu-migration-end-vs-access"],
    fix='bd29677952fa "KVM: x86/mmu: Do remote TLB flush before dropping RCU in TDP MMU '
        'resched" (Sean Christopherson, Nov 2021)',
    description="tdp_mmu_iter_cond_resched calls rcu_read_unlock and only then "
                "kvm_flush_remote_tlbs.  Huge-page recovery (logging turned off at the end "
                "of a migration) has replaced a page table by a huge SPTE, the table's "
                "free deferred to RCU and the flush to the yield; while the flush waits "
                "for the vCPUs to leave guest mode the grace period ends and the table is "
                "freed, and a vCPU's next walk starts from its paging-structure cache, "
                "which still points into it.")
