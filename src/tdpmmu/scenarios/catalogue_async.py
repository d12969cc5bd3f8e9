"""Catalogue defects (shared/reference/bugs.md), group async: see catalogue.py.

Entries: async-zap-worker (A1, the v5.18-v6.5 asynchronous zap worker: variants /a and
/c; /b is listed in ``OUT_OF_SCOPE_VARIANTS``), notifier-vs-memslot-rwsem-deadlock (A7),
zap-all-range-misses-top-level (A8, variants /a and /b).
"""

from __future__ import annotations

from .registry import register_catalogue_defect, register_defect

#: catalogue id -> why the model does not re-introduce it (whole entries: none here)
OUT_OF_SCOPE: dict[str, str] = {}

#: variants of in-scope entries the model does not re-introduce, with the reason
OUT_OF_SCOPE_VARIANTS: dict[str, str] = {
    "async-zap-worker/b": (
        "the unbound kworker ignoring the initiator's CPU affinity and priority (ChromeOS "
        "audio glitches: all host CPUs busy ~8 ms on memslot deletion) is a scheduling-"
        "latency bug: the model has no CPUs, affinity masks or task priorities, and its "
        "tasks have no cost in time, so no checker could tell the worker's work from the "
        "initiator's; the correctness half of the same design (the initiator must wait "
        "for the worker) is /a"),
}


# -- A1. the asynchronous zap worker (v5.18-v6.5) -------------------------------------
# Each variant implies the design variant "async-zap-worker" (tdp_mmu.py,
# tdp_mmu_async_zap): the defect names are distinct from the design's name.

register_catalogue_defect(
    "async-zap-worker/a", "design A without its zap worker: the workqueue allocation "
    "failure is ignored", "KernelWarning",
    ["mmu-faults-vs-zap-all-fast", "mmu-smm-teardown"],
    fix="VM creation fails when alloc_workqueue fails (Paolo Bonzini, Mar 2022, in the "
        "thread of <20220325163815.3514-1-paskripkin@gmail.com>; syzbot \"general "
        "protection fault in kvm_mmu_uninit_tdp_mmu\" "
        "<000000000000a5cb1305db0aaf48@google.com>; design from 22b94c4b63eb)",
    description="kvm_mmu_init_tdp_mmu ignores a failed alloc_workqueue and the zap "
                "paths skip the missing queue (the guard proposed in "
                "<20220325163815.3514-1-paskripkin@gmail.com>, which Paolo rejected: the "
                "work must complete before kvm_mmu_zap_all_fast returns).  Invalidated "
                "roots are never zapped and the TDP MMU's reference handed over with "
                "them is never put: VM teardown finds the roots and their page tables "
                "(kvm_mmu_uninit_tdp_mmu's WARNs).")

register_catalogue_defect(
    "async-zap-worker/c", "design A loses zap-once: an already-invalid root is handed "
    "to a worker again", "UseAfterFree", ["mmu-faults-vs-zap-all-fast"],
    fix="KVM: x86/mmu: Stop zapping invalidated TDP MMU roots asynchronously "
        "(0df9dab891ff; the synchronous replacement keeps zap-once with "
        "tdp_mmu_scheduled_root_to_zap)",
    description="kvm_tdp_mmu_invalidate_all_roots queues a zap for every root, "
                "including roots a previous memslot update invalidated that a vCPU still "
                "holds.  The second worker puts a reference the TDP MMU no longer owns "
                "(the first worker put it), so the vCPU's own reference is consumed: the "
                "root is freed while the vCPU still uses it.  Explored with two memslot "
                "updates in a row.", params={"updates": 2})


# -- A8. teardown leaks through the "zap all" range ----------------------------------

register_defect(
    "zap-root-as-gfn-range", "design v5.10-v5.17: a root is zapped as one gfn range",
    "none", ["mmu-fault-vs-zap-range", "mmu-faults-vs-zap-all-fast"],
    "tdp_mmu_zap_root is zap_gfn_range(root, 0, all ones): one pre-order walk zapping "
    "leaves and the non-leaf entries inside the range, with the zap-all rule for the "
    "top level (524a1e4e381f).  A correct design: explore it with --param "
    "host_maxphyaddr=36.", source="design variant")

register_catalogue_defect(
    "zap-all-range-misses-top-level/a", "zap all is the range [0, host.MAXPHYADDR) and "
    "skips top-level entries reaching past it", "KernelWarning", ["mmu-fault-vs-zap-range"],
    fix="KVM: x86/mmu: Don't leak non-leaf SPTEs when zapping all SPTEs (524a1e4e381f)",
    description="On the v5.10-v5.17 root zap (zap-root-as-gfn-range): with no zap-all "
                "case, zap_gfn_range's rule \"descend into a non-leaf SPTE that reaches "
                "outside the range\" applies to the top level, and a 36-bit host's "
                "range (64 GiB) is smaller than a top-level entry's 512 GiB: the entry "
                "and the table under it survive every zap.  kvm_mmu_uninit_tdp_mmu "
                "finds the TDP MMU page left.", params={"host_maxphyaddr": 36})

register_catalogue_defect(
    "zap-all-range-misses-top-level/b", "an MMIO SPTE above host.MAXPHYADDR, beyond "
    "every zap", "KernelWarning", ["mmu-fault-vs-zap-range"],
    fix="KVM: x86/mmu: Do not create SPTEs for GFNs that exceed host.MAXPHYADDR "
        "(86931ff7207b)",
    description="kvm_handle_noslot_fault installs an MMIO SPTE for any gfn: a guest "
                "that believes in more physical address bits than the host reports (KVM "
                "itself running nested) probes 512 GiB on a 36-bit host, and the table "
                "chain under top-level entry 1 is above the bound every zap stops at: "
                "VM teardown finds the TDP MMU pages left.",
    params={"host_maxphyaddr": 36, "mmio_gpa": 1 << 39})


# -- A7. memslots, notifiers and prefaulting ------------------------------------------

register_catalogue_defect(
    "notifier-vs-memslot-rwsem-deadlock", "memslot installation excluded from notifier "
    "invalidations by a fair rwsem held from range_start to range_end", "LockOrderInversion",
    ["mmu-notifier-remap-vs-fault"],
    fix="KVM: Block memslot updates across range_start() and range_end() (52ac8b358b0c, "
        "with 071064f14d87; the rwsem of the review version replaced by "
        "mn_active_invalidate_count + rcuwait after Paolo Bonzini's analysis, "
        "<YH4rm4W57R85tMKE@google.com>)",
    description="kvm_mmu_notifier_invalidate_range_start takes mmu_notifier_slots_lock "
                "for read and range_end releases it; kvm_swap_active_memslots takes it "
                "for write.  The MMU-notifier core runs both callbacks inside its "
                "lockdep map: start orders map -> rwsem, end (rwsem still held) orders "
                "rwsem -> map.  The deadlock: N1 holds the rwsem between start and end, "
                "a memslot update M waits for write (a fair rwsem now blocks readers), "
                "N2's range_start blocks on down_read inside the map, and N1's "
                "range_end, which needs the map, never comes.",
    params={"memslot_update": True})
