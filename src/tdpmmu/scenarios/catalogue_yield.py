"""Catalogue defects (shared/reference/bugs.md), group yield: see catalogue.py.

A2 (the iterator and yielding) and A3 (a flush lost across roots), and Part B's
flush-after-rcu-unlock.  The A2 entries are found by the watchdogs (sync/watchdog.py)
on the long walks of mmu-large-guest-migration (mmu_yield.py).
"""

from __future__ import annotations

from .registry import register_catalogue_defect

#: catalogue id -> why the model does not re-introduce it
OUT_OF_SCOPE: dict[str, str] = {}


# -- A2. the iterator and yielding ---------------------------------------------------

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
