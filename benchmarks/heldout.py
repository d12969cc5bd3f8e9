"""Held-out bugs: TDP MMU bugs that are NOT in the catalogue (bugs.md) nor in the model's
defects, applied as source patches to a copy of the installed model -- what a KVM
developer prototyping a change does -- then ``tdpmmu check --stop-on-first`` (the
default campaign, no --defect hint) is run on the copy.  Prints, per mutation, whether
the campaign found it, the first violation's class and scenario, and the wall time,
beside the wall time of the same campaign on the unpatched copy (the baseline, measured
in this run: the cost of a campaign that finds nothing).

The checkers were not tuned to these: each row is what the general checkers report.
Historical ones name the kernel fix; the others are plausible slips in the same code.

    python benchmarks/heldout.py [--only NAME ...] [--jobs N] [--timeout S]
                                 [--no-baseline] [--list] [--json] [--markdown]

Exit status 0; a mutation whose patch no longer applies is an error (exit 2): the
model's source changed and this file must follow it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

T = "mmu/tdp_mmu.py"
I = "mmu/tdp_iter.py"
M = "mmu/mmu.py"
SP = "mmu/spte.py"

#: name -> (origin, [(file under the package, old text, new text), ...])
MUTATIONS = {
    "iter-no-forward-progress": (
        "ed5e484b79e8 KVM: x86/mmu: Ensure forward progress when yielding in TDP MMU iter",
        [(T, "    if iter.next_last_level_gfn == iter.yielded_gfn:\n        return False\n"
             "    return kvm.mmu_lock", "    return kvm.mmu_lock")]),
    "iter-advance-after-restart": (
        "3a0f64de479c KVM: x86/mmu: Don't advance iterator after restart due to yielding",
        [(I, "    if iter.yielded:\n        tdp_iter_restart(iter)\n        return\n",
             "    if iter.yielded:\n        tdp_iter_restart(iter)\n")]),
    "clear-dirty-non-leaf": (
        "v6.8 KVM: x86/mmu: Check for leaf SPTE when clearing dirty bit in the TDP MMU "
        "(here: no leaf check at all)",
        # (since stop 15 also the registered defect of that name: the patch removes the
        # leaf check that the defect's branch bypasses)
        [(T, '            if not S.is_last_spte(iter.old_spte, iter.level) and not traps.defect(\n'
             '                    "clear-dirty-non-leaf"):\n                break\n', "")]),
    "alloc-reuses-invalid-root": (
        "plausible: the lookup under tdp_mmu_pages_lock reuses an invalidated root",
        [(T, "            if root.role == role and not root_is_invalid(root):\n"
             "                if valid_roots_may_be_dying():",
             "            if root.role == role:\n                if valid_roots_may_be_dying():")]),
    "removed-pt-freezes-present-only": (
        "plausible: handle_removed_pt under the read lock freezes only present entries",
        [(T, "            j = _freeze_nonpresent_run(pt, i, shared)",
             "            j = _freeze_nonpresent_run(pt, i, False)"),
         (T, "        if shared:\n            while True:\n"
             "                old_spte = kvm_tdp_mmu_write_spte_atomic(pt, i, S.FROZEN_SPTE)",
             "        if shared and not S.is_shadow_present_pte(pt.read_once(i)):\n"
             "            i += 1\n            continue\n        if shared:\n            while True:\n"
             "                old_spte = kvm_tdp_mmu_write_spte_atomic(pt, i, S.FROZEN_SPTE)")]),
    "hugepage-ignores-dirty-logging": (
        "plausible: kvm_mmu_hugepage_adjust maps huge pages in a dirty-logged slot",
        [(M, "fault.slot is None or fault.slot.dirty_logging():", "fault.slot is None:")]),
    "split-child-wrong-step": (
        "plausible: a split fills the child table with the parent level's page step",
        [(T, "    step = S.KVM_PAGES_PER_HPAGE(level - 1) << S.PAGE_SHIFT\n    np.frombuffer",
             "    step = S.KVM_PAGES_PER_HPAGE(level) << S.PAGE_SHIFT\n    np.frombuffer")]),
    "put-root-frees-without-rcu": (
        "plausible: the last root put frees the root at once, not after a grace period",
        [(T, "        tdp_mmu_zap_root_at_last_put(kvm, root)     # design P (v5.15)\n"
             "    call_rcu(tdp_mmu_free_sp_rcu_callback(root), \"tdp_mmu_free_sp_rcu_callback\")",
             "        tdp_mmu_zap_root_at_last_put(kvm, root)     # design P (v5.15)\n"
             "    tdp_mmu_free_sp(root)")]),
    "fast-pf-without-rcu": (
        "plausible: fast_page_fault walks without walk_shadow_page_lockless_begin (RCU)",
        [(M, "    retry = 0\n    rcu_read_lock()\n    while True:\n",
             "    retry = 0\n    while True:\n"),
         (M, "        if retry > 4:\n            break\n    rcu_read_unlock()\n",
             "        if retry > 4:\n            break\n")]),
    "retry-ignores-in-progress": (
        "plausible: mmu_invalidate_retry_gfn checks the sequence only, not an "
        "invalidation in progress",
        [(M, "    if kvm.mmu_invalidate_in_progress:\n        lo, hi = kvm.mmu_invalidate_range\n",
             "    if False:\n        lo, hi = kvm.mmu_invalidate_range\n")]),
    "seq-snapshot-after-pfn": (
        "plausible: mmu_invalidate_seq snapshot after the pfn lookup (the rule of "
        "e930bffe95e1 / ba6e3fe25543: snapshot, smp_rmb, then gfn_to_pfn)",
        [(M, "    fault.pfn = slot.gfn_to_pfn(fault.gfn)\n",
             "    fault.pfn = slot.gfn_to_pfn(fault.gfn)\n"
             "    fault.mmu_seq = kvm.mmu_invalidate_seq.load_acquire(0, \"late\")\n")]),
    "link-fail-leaks-sp": (
        "plausible: a lost cmpxchg linking a page table leaks the unused table",
        [(T, "        if r:\n            tdp_mmu_free_sp(sp)                     # never published\n"
             "            break", "        if r:\n            break")]),
    "invalidate-roots-skips-smm": (
        "plausible (the seed's subject): invalidation walks address space 0 only",
        [(T, "        if not tdp_mmu_root_match(root, root_types) or root_is_invalid(root):\n"
             "            continue\n        if valid_roots_may_be_dying()",
             "        if (not tdp_mmu_root_match(root, root_types) or root_is_invalid(root)\n"
             "                or root.as_id):\n"
             "            continue\n        if valid_roots_may_be_dying()")]),
    # -- second round (stop 13): chosen and written before any was run --------------
    "atomic-update-ignores-ad-disabled": (
        "v6.15 lockless aging: A/D-disabled SPTEs must be updated atomically (aging "
        "access-tracks them and fast page fault restores them without mmu_lock); "
        "here spte_needs_atomic_update forgets that clause",
        [(SP, "    if not spte_ad_enabled(spte):\n        return True\n"
              "    return is_writable_pte(spte) and not (spte & m.dirty_mask)",
              "    return is_writable_pte(spte) and not (spte & m.dirty_mask)")]),
    "enable-logging-flush-if-changed": (
        "KVM: x86: mmu: Always flush TLBs when enabling dirty logging (2022): the flush "
        "after write-protecting depended on an SPTE having changed, but access-tracked "
        "SPTEs (aging without A/D bits, no flush) can still be writable in the TLB",
        # (since stop 14 also the registered defect of that name: the patch enables it)
        [(M, '        if not changed and traps.defect("enable-logging-flush-if-changed"):\n',
             "        if not changed:\n")]),
    "get-root-inc-from-zero": (
        "plausible: kvm_tdp_mmu_get_root takes its reference with refcount_inc, not "
        "refcount_inc_not_zero (a dying root is resurrected)",
        [(T, "    return root.tdp_mmu_root_count.refcount_inc_not_zero()\n",
             "    root.tdp_mmu_root_count.refcount_inc()\n    return True\n")]),
    "cmpxchg-fail-keeps-old-spte": (
        "plausible: a lost cmpxchg does not refresh iter->old_spte (try_cmpxchg64 "
        "rewritten as cmpxchg64; cf. 'Update iter->old_spte if cmpxchg64 on SPTE fails')",
        [(T, "        traps.cover(\"cmpxchg-lost\")\n        iter.old_spte = cur\n        return False",
             "        traps.cover(\"cmpxchg-lost\")\n        return False")]),
    "split-leaks-spare-sp": (
        "plausible: eager splitting forgets to free the spare page table it allocated "
        "but did not use",
        [(T, "    if sp is not None:\n        traps.cover(\"split-spare-table-freed\")\n"
             "        tdp_mmu_free_sp(sp)\n",
             "    if sp is not None:\n        traps.cover(\"split-spare-table-freed\")\n")]),
    "range-end-no-wake": (
        "plausible: invalidate_range_end drops mn_active_invalidate_count without waking "
        "the memslot update waiting for it",
        [(M, "    if wake:\n        kvm.mn_memslots_update_rcuwait.rcuwait_wake_up()\n", "")]),
    "zap-all-fast-no-reload-request": (
        "plausible: kvm_mmu_zap_all_fast invalidates the roots without "
        "KVM_REQ_MMU_FREE_OBSOLETE_ROOTS (vCPUs keep their invalid root)",
        [(M, "    kvm_tdp_mmu_invalidate_roots(kvm, KVM_DIRECT_ROOTS)\n"
             "    kvm_make_all_cpus_request(kvm, KVM_REQ_MMU_FREE_OBSOLETE_ROOTS)\n",
             "    kvm_tdp_mmu_invalidate_roots(kvm, KVM_DIRECT_ROOTS)\n")]),
    "removed-pt-only-for-leaf": (
        "plausible: handle_changed_spte frees a removed page table only when a huge leaf "
        "replaces it, not when the entry is zapped",
        [(T, "            is_leaf or not is_present\n", "            is_leaf\n")]),
    # -- third round (stop 15): chosen and written before any was run ---------------
    "wrprot-skips-huge-leaves": (
        "plausible: write-protection for dirty logging skips huge leaves (only 4K SPTEs "
        "lose W)",
        # (since stop 15 also the registered defect of that name: the patch enables it)
        [(T, '                    or (iter.level > S.PG_LEVEL_4K and traps.defect("wrprot-skips-huge-leaves"))):\n',
             "                    or iter.level > S.PG_LEVEL_4K):\n")]),
    "put-root-list-del-unlocked": (
        "plausible: the last root put unlinks the root without tdp_mmu_pages_lock "
        "(vCPUs add roots under it, holding mmu_lock only for read)",
        [(T, "last reference to a valid root {root!r}\")\n"
             "    spin_lock(kvm.arch.tdp_mmu_pages_lock)\n    kvm.arch.tdp_mmu_roots.list_del_rcu(root)\n"
             "    spin_unlock(kvm.arch.tdp_mmu_pages_lock)\n",
             "last reference to a valid root {root!r}\")\n"
             "    kvm.arch.tdp_mmu_roots.list_del_rcu(root)\n")]),
    "spurious-fault-ignores-access": (
        "plausible: the slow path calls any present leaf at the goal level a spurious "
        "fault, whatever access faulted",
        [(T, "    if S.is_shadow_present_pte(old) and S.is_last_spte(old, iter.level) and (\n"
             "            fault.prefetch or _is_access_allowed(fault, old, m)):\n",
             "    if S.is_shadow_present_pte(old) and S.is_last_spte(old, iter.level):\n")]),
    "split-links-before-fill": (
        "plausible: eager splitting links the new page table before filling in its "
        "small SPTEs",
        [(T, "    np.frombuffer(sp.spt.vals, dtype=np.uint64)[:] = np.uint64(child0) | (\n"
             "        _SPLIT_INDEX * np.uint64(step))\n"
             "    ret = tdp_mmu_link_sp(kvm, iter, sp, shared)\n    if ret:\n        return ret\n",
             "    ret = tdp_mmu_link_sp(kvm, iter, sp, shared)\n    if ret:\n        return ret\n"
             "    np.frombuffer(sp.spt.vals, dtype=np.uint64)[:] = np.uint64(child0) | (\n"
             "        _SPLIT_INDEX * np.uint64(step))\n")]),
    "fast-pf-ignores-mmu-writable": (
        "plausible: fast_page_fault makes a write-faulting SPTE writable without checking "
        "that it is MMU-writable (write-tracked or read-only memory)",
        [(M, "        if fault.write and S.is_mmu_writable_spte(spte, m):\n",
             "        if fault.write:\n")]),
    "age-clears-dirty": (
        "plausible: aging with A/D bits clears Dirty together with Accessed",
        [(T, "        iter.old_spte = iter.pt.fetch_and(iter.idx, ~m.accessed_mask & S.U64_MASK)\n",
             "        iter.old_spte = iter.pt.fetch_and(\n"
             "            iter.idx, ~(m.accessed_mask | m.dirty_mask) & S.U64_MASK)\n")]),
    "alloc-root-no-recheck": (
        "plausible: root allocation under the read lock does not look again under "
        "tdp_mmu_pages_lock before creating a root (two vCPUs create two)",
        [(T, '        for root in kvm.arch.tdp_mmu_roots.list_for_each_entry(True, "tdp_mmu_pages_lock held"):\n',
             "        for root in ():\n")]),
    # -- fourth round (stop 16): chosen and written before any was run ---------------
    "uninit-no-rcu-barrier": (
        "historical: kvm_mmu_uninit_tdp_mmu without rcu_barrier() (the RCU callbacks "
        "freeing zapped page tables may run after the VM is gone; cf. 7cca2d0b7e7d)",
        # (since stop 16 also the registered defect of that name: the patch enables it)
        [(T, "    if not traps.defect(\"uninit-no-rcu-barrier\"):\n        rcu_barrier()\n", "")]),
    "recover-ignores-host-level": (
        "plausible: in-place huge page recovery (disable dirty logging) ignores the "
        "host mapping level (kvm_mmu_max_mapping_level)",
        # (since stop 16 also the registered defect of that name: the patch enables it)
        [(T, "            if (slot.max_mapping_level(iter.gfn) < iter.level\n"
             "                    and not traps.defect(\"recover-ignores-host-level\")):\n"
             "                break\n", ""),
         (T, "        if gfn < start or gfn >= end or (slot.max_mapping_level(gfn) < level and not\n"
             "                                         traps.defect(\"recover-ignores-host-level\")):\n",
             "        if gfn < start or gfn >= end:\n")]),
    "unlink-keeps-nx-tracking": (
        "plausible: tdp_mmu_unlink_sp forgets to untrack a possible NX huge page (the "
        "freed page table stays on possible_nx_huge_pages)",
        [(T, "    tdp_unaccount_mmu_page(kvm, sp)\n    if not sp.hdr.read_once(HDR_NX):\n        return\n"
             "    spin_lock(kvm.arch.tdp_mmu_pages_lock)\n    sp.hdr.write_once(HDR_NX, 0)\n"
             "    untrack_possible_nx_huge_page(kvm, sp)\n    spin_unlock(kvm.arch.tdp_mmu_pages_lock)\n",
             "    tdp_unaccount_mmu_page(kvm, sp)\n")]),
    "invalidate-begin-after-unmap": (
        "plausible: invalidate_range_start zaps first and raises "
        "mmu_invalidate_in_progress in a second mmu_lock section",
        # (since stop 16 range_add runs per memslot range, as kvm_mmu_unmap_gfn_range)
        [(M, "    kvm_mmu_invalidate_begin(kvm)                   # on_lock\n    flush = False\n"
             "    for as_id, lo, hi in ranges:                    # kvm_mmu_unmap_gfn_range per memslot\n"
             "        kvm_mmu_invalidate_range_add(kvm, lo, hi)\n"
             "        flush = kvm_unmap_gfn_range(kvm, as_id, lo, hi, flush)\n"
             "    if flush:\n        kvm_flush_remote_tlbs(kvm)\n"
             "    for as_id, lo, hi in ranges:        # what the host relies on once this returns\n"
             "        oracles.check_range_unmapped(kvm, as_id, lo, hi)\n"
             "    write_unlock(kvm.mmu_lock)\n",
             "    flush = False\n"
             "    for as_id, lo, hi in ranges:\n"
             "        flush = kvm_unmap_gfn_range(kvm, as_id, lo, hi, flush)\n"
             "    if flush:\n        kvm_flush_remote_tlbs(kvm)\n"
             "    for as_id, lo, hi in ranges:\n        oracles.check_range_unmapped(kvm, as_id, lo, hi)\n"
             "    write_unlock(kvm.mmu_lock)\n"
             "    write_lock(kvm.mmu_lock)\n    kvm_mmu_invalidate_begin(kvm)\n"
             "    for as_id, lo, hi in ranges:\n        kvm_mmu_invalidate_range_add(kvm, lo, hi)\n"
             "    write_unlock(kvm.mmu_lock)\n")]),
    "invalidate-range-add-skipped": (
        "plausible: invalidate_range_start raises mmu_invalidate_in_progress but never "
        "records the range (kvm_mmu_invalidate_range_add)",
        [(M, "        kvm_mmu_invalidate_range_add(kvm, lo, hi)\n"
             "        flush = kvm_unmap_gfn_range(kvm, as_id, lo, hi, flush)\n",
             "        flush = kvm_unmap_gfn_range(kvm, as_id, lo, hi, flush)\n")]),
    "yield-inside-rcu": (
        "plausible: tdp_mmu_iter_cond_resched drops mmu_lock to reschedule but stays "
        "inside the RCU read-side critical section",
        [(T, "            _mmu_c.kvm_flush_remote_tlbs(kvm)\n        rcu_read_unlock()\n    if shared:\n",
             "            _mmu_c.kvm_flush_remote_tlbs(kvm)\n    if shared:\n"),
         (T, "        yielded = kvm.mmu_lock.cond_resched_rwlock_write()\n    rcu_read_lock()\n",
             "        yielded = kvm.mmu_lock.cond_resched_rwlock_write()\n")]),
    "zap-leafs-skips-partial-huge": (
        "plausible: tdp_mmu_zap_leafs zaps a huge leaf only if it starts inside "
        "[start, end) (one overlapping the start of the range survives)",
        [(T, "        if not S.is_shadow_present_pte(iter.old_spte) or not S.is_last_spte(iter.old_spte,\n"
             "                                                                             iter.level):\n"
             "            continue\n        tdp_mmu_iter_set_spte(kvm, iter, S.SHADOW_NONPRESENT_VALUE)\n",
             "        if not S.is_shadow_present_pte(iter.old_spte) or not S.is_last_spte(iter.old_spte,\n"
             "                                                                             iter.level):\n"
             "            continue\n        if iter.gfn < start:\n            continue\n"
             "        tdp_mmu_iter_set_spte(kvm, iter, S.SHADOW_NONPRESENT_VALUE)\n")]),
    "removed-pt-skips-children": (
        "plausible: handle_removed_pt freezes the entries of a removed table without "
        "handle_changed_spte on each (child tables and leaf accounting are lost)",
        [(T, "    if level == S.PG_LEVEL_4K and traps.free_run() and not traps.tracing():\n"
             "        _bulk_remove_leaf_table(kvm, pt, shared)\n",
             "    if False:\n        _bulk_remove_leaf_table(kvm, pt, shared)\n"),
         (T, "        handle_changed_spte(kvm, as_id, gfn, old_spte, S.FROZEN_SPTE, level, shared)\n"
             "        i += 1\n", "        i += 1\n")]),
    "memslot-zap-before-srcu-sync": (
        "plausible: a memslot DELETE/MOVE zaps the slot's SPTEs before "
        "synchronize_srcu (a fault that looked the old slot up can map it afterwards)",
        [(M, "    kvm.srcu.synchronize_srcu()\n    if not traps.defect(\"flush-shadow-memslot-skipped\"):\n"
             "        kvm_arch_flush_shadow_memslot(kvm, slot)\n",
             "    if not traps.defect(\"flush-shadow-memslot-skipped\"):\n"
             "        kvm_arch_flush_shadow_memslot(kvm, slot)\n    kvm.srcu.synchronize_srcu()\n")]),
    "step-down-no-reread": (
        "historical: try_step_down follows the SPTE read when the entry was visited, "
        "without re-reading it (the re-read came with RCU-protected tables, 7cca2d0b7e7d)",
        [(I, "    iter.old_spte = spte = iter.pt.read_once(iter.idx)\n",
             "    spte = iter.old_spte\n")]),
    # -- fifth round (stop 16, after round 4's fixes): written before any was run -------
    "range-add-overwrites": (
        "historical (review, 2023): kvm_mmu_invalidate_range_add sets the range whenever "
        "one invalidation is in progress, so the last memslot's range replaces the "
        "earlier ones' (the first version of 'KVM: Use gfn instead of hva for "
        "mmu_notifier_retry')",
        # (since stop 16 also the registered defect of that name: the patch enables it)
        [(M, "        first = lo == INVALID_GPA\n",
             "        first = kvm.mmu_invalidate_in_progress == 1\n")]),
    "alloc-root-ignores-smm": (
        "plausible: the root lookup under tdp_mmu_pages_lock compares the level and "
        "guest mode only, not the address space (an SMM vCPU may reuse the normal root)",
        [(T, "            if root.role == role and not root_is_invalid(root):\n"
             "                if valid_roots_may_be_dying():\n",
             "            if (root.role.level == role.level and root.role.guest_mode == role.guest_mode\n"
             "                    and not root_is_invalid(root)):\n"
             "                if valid_roots_may_be_dying():\n")]),
    "unmap-skips-invalid-roots": (
        "plausible: the mmu_notifier unmap walks valid roots only (a vCPU that has not "
        "reloaded yet still runs on an invalid one)",
        [(T, "    types = KVM_DIRECT_ROOTS | KVM_INVALID_ROOTS\n", "    types = KVM_DIRECT_ROOTS\n")]),
    "memslot-not-marked-invalid": (
        "plausible: a memslot DELETE/MOVE publishes the old slot unchanged instead of a "
        "KVM_MEMSLOT_INVALID copy before zapping it",
        [(M, "    invalid = replace(slot, flags=slot.flags | KVM_MEMSLOT_INVALID)\n",
             "    invalid = replace(slot)\n")]),
    "zap-all-fast-skips-zap": (
        "plausible: kvm_mmu_zap_all_fast invalidates the roots and asks vCPUs to reload "
        "but never zaps the invalidated roots",
        [(M, "    kvm_make_all_cpus_request(kvm, KVM_REQ_MMU_FREE_OBSOLETE_ROOTS)\n"
             "    write_unlock(kvm.mmu_lock)\n    kvm_tdp_mmu_zap_invalidated_roots(kvm, True)\n",
             "    kvm_make_all_cpus_request(kvm, KVM_REQ_MMU_FREE_OBSOLETE_ROOTS)\n"
             "    write_unlock(kvm.mmu_lock)\n")]),
    "map-returns-inside-rcu": (
        "plausible: kvm_tdp_mmu_map returns RET_PF_RETRY on a frozen SPTE without "
        "rcu_read_unlock",
        [(T, "            traps.cover(\"frozen-spte-seen\")\n            break                                   # RET_PF_RETRY\n"
             "        if iter.level == fault.goal_level:\n",
             "            traps.cover(\"frozen-spte-seen\")\n            return RET_PF_RETRY\n"
             "        if iter.level == fault.goal_level:\n")]),
}


def package_dir() -> pathlib.Path:
    import tdpmmu
    return pathlib.Path(tdpmmu.__file__).resolve().parent


def make_copy(dest: pathlib.Path, name: str | None) -> pathlib.Path:
    """A copy of the installed package under ``dest``, with mutation ``name`` applied."""
    pkg = dest / "tdpmmu"
    shutil.copytree(package_dir(), pkg, ignore=shutil.ignore_patterns("__pycache__"))
    if name is not None:
        for rel, old, new in MUTATIONS[name][1]:
            path = pkg / rel
            text = path.read_text()
            if text.count(old) != 1:
                raise LookupError(f"mutation {name}: the patch of {rel} no longer applies")
            path.write_text(text.replace(old, new))
    return dest


def run_check(name: str | None, jobs: int, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="tdpmmu-heldout-") as tmp:
        root = make_copy(pathlib.Path(tmp), name)
        env = dict(os.environ, PYTHONPATH=str(root))
        t0 = time.perf_counter()
        try:
            out = subprocess.run([sys.executable, "-m", "tdpmmu", "check", "--stop-on-first",
                                  "--json", "--jobs", str(jobs)], env=env, cwd=tmp,
                                 capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"mutation": name, "found": False, "timeout": True,
                    "seconds": time.perf_counter() - t0}
        secs = time.perf_counter() - t0
    doc = json.loads(out.stdout)
    first = next((r for r in doc["runs"] if r["failures"]), None)
    row = {"mutation": name, "found": first is not None, "exit_code": doc["exit_code"],
           "seconds": secs, "timeout": False}
    if first is not None:
        f = first["failures"][0]
        from tdpmmu.scenarios import get_scenario
        defaults = get_scenario(first["scenario"]).params
        row.update(category=f["category"], scenario=first["scenario"],
                   params={k: v for k, v in first["params"].items() if defaults.get(k) != v},
                   strategy=first["strategy"], schedules=first["first_failure_at"])
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", default=None, metavar="NAME")
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--list", action="store_true", help="check that every patch applies")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args(argv)
    names = a.only or list(MUTATIONS)
    unknown = [n for n in names if n not in MUTATIONS]
    if unknown:
        print(f"heldout.py: error: unknown mutation(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    try:
        if a.list:
            for n in names:
                with tempfile.TemporaryDirectory() as tmp:
                    make_copy(pathlib.Path(tmp), n)
                print(f"{n}: applies ({MUTATIONS[n][0]})")
            return 0
        rows = [run_check(n, a.jobs, a.timeout) for n in names]
    except LookupError as e:
        print(f"heldout.py: error: {e}", file=sys.stderr)
        return 2
    base = None if a.no_baseline else run_check(None, a.jobs, a.timeout)
    for r in rows:
        r["origin"] = MUTATIONS[r["mutation"]][0]
        if base is not None:
            r["fraction_of_clean_campaign"] = r["seconds"] / base["seconds"]
    summary = {"found": sum(r["found"] for r in rows), "total": len(rows),
               "clean_campaign_seconds": base and base["seconds"],
               "clean_campaign_found": base and base["found"]}
    if a.json:
        print(json.dumps({"rows": rows, "summary": summary}, indent=2))
        return 0
    if a.markdown:
        print("| mutation | origin | found | class | scenario | s |")
        print("|---|---|---|---|---|---|")
    for r in rows:
        sc = r.get("scenario", "-")
        if r.get("params"):
            sc += " (" + ", ".join(f"{k}={v}" for k, v in sorted(r["params"].items())) + ")"
        cells = [r["mutation"], r["origin"], "yes" if r["found"] else "no",
                 r.get("category", "-"), sc, f"{r['seconds']:.1f}"]
        print("| " + " | ".join(cells) + " |" if a.markdown else "  ".join(cells))
    print(f"found {summary['found']}/{summary['total']}"
          + (f"; the clean campaign: {base['seconds']:.1f} s, "
             f"{'a false alarm!' if base['found'] else 'nothing found'}" if base else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
