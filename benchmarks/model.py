"""Model speed on real workloads, as ratios to a baseline measured in the same run.

Single-threaded, under the free-run strategy (a sequential run that never preempts):

* populate: first-touch write faults over the whole range, 4K pages (each one a guest
  access: TLB miss, hardware walk, EPT violation, kvm_mmu_page_fault, retry -- done in
  one step by the free-run fault path, mmu/fastpath.py; the same faults through the
  faithful per-step path are measured too, on up to 16,384 pages);
* zap range: kvm_zap_gfn_range over the whole range (leaf SPTEs, then a TLB flush);
* teardown: repopulate, then kvm_mmu_zap_all (every root zapped, every page table
  freed through RCU).

Baseline: one elementary model step measured in the same run (a READ_ONCE of a shared
word: one scheduling point plus its checks), so a fault is also reported as a number
of elementary steps.  Real KVM figures from shared/reference/selftests.md section 2:
an uncontended first-touch 4K fault ~3.3 us (items 4, 6) and teardown of 4K mappings
~14 ms per GiB (item 24).  Targets of issue 3: a fault <= 10 us, a 1 GiB range zap
faster than 14 ms.

Dirty-logging rows (selftests.md section 2, dirty_log_perf_test's phases), each per GiB:

* enable logging, 4K mappings: write-protect every SPTE (real: ~17-25 ms/GiB, item 14);
* dirty pass: one guest write per page, each fixed by the lockless fast page fault
  (real: ~1.2 us per fault per vCPU, item 8);
* get dirty log (GET clears + re-protect) over everything written (real: 2.8-19 ms/GiB,
  item 18);
* clear dirty log (manual protect: GET copies, CLEAR re-protects; real ~12-20 ms/GiB,
  item 16);
* disable logging, 4K backing (nothing to recover: the walk; real ~10 ms/GiB, item 23);
* enable logging on 2M-backed memory (eager split 2M -> 4K; real ~16-20 ms/GiB, items
  11-12);
* disable logging after the split (in-place huge-page recovery; real ~20 ms/GiB, item 19).

    python benchmarks/model.py [--gib 1] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import time

from tdpmmu.mmu import (WRITE_ACCESS, guest_access, kvm_create_vcpu, kvm_create_vm,
                        kvm_mmu_zap_all, kvm_set_memory_region, kvm_zap_gfn_range)
from tdpmmu.mmu import spte as S
from tdpmmu.mmu.kvm import KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
from tdpmmu.mmu.mmu import (kvm_clear_dirty_log, kvm_get_dirty_log_manual,
                            kvm_get_dirty_log_protect, kvm_set_memslot_dirty_logging)
from tdpmmu.runtime import Execution
from tdpmmu.runtime.strategies import FreeRun
from tdpmmu.sync import Words, mutex_lock, mutex_unlock, spawn

KVM_FAULT_US = 3.3
KVM_TEARDOWN_MS_PER_GIB = 14.0
#: real KVM per-GiB (or per-fault) figures, selftests.md section 2
KVM_FIGURES = {
    "enable_wrprot_ms_per_gib": (17.0, "17-25 ms/GiB (item 14)"),
    "dirty_fast_fault_us": (1.2, "~1.2 us/fault (item 8)"),
    "get_dirty_log_ms_per_gib": (19.0, "2.8-19 ms/GiB (item 18)"),
    "clear_dirty_log_ms_per_gib": (12.0, "12-20 ms/GiB (item 16)"),
    "disable_4k_ms_per_gib": (10.0, "~10 ms/GiB (item 23)"),
    "enable_split_ms_per_gib": (16.0, "16-20 ms/GiB (items 11-12)"),
    "disable_recover_ms_per_gib": (20.0, "~20 ms/GiB (item 19)"),
}
PAGES_PER_GIB = 1 << 18


def _run(body, params=None):
    out = {}

    def setup():
        def task():
            out.update(body())
        spawn("bench", task)
    s = FreeRun()
    s.new_execution()
    r = Execution(s, max_steps=10**10, params=params or {}).run(setup)
    if r.failure is not None:
        raise r.failure
    return out


def _timed(fn) -> float:
    gc.collect()
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e9


def baseline_step_us(n: int = 200_000) -> float:
    def body():
        w = Words("w")
        read = w.read_once

        def loop():
            for _ in range(n):
                read(0)
        return {"t": _timed(loop)}
    return _run(body)["t"] / n * 1e6


def model_figures(npages: int) -> dict:
    def body():
        kvm = kvm_create_vm()
        kvm_set_memory_region(kvm, 0, 0, 0, npages, S.PG_LEVEL_4K)
        v = kvm_create_vcpu(kvm)

        def populate():
            for g in range(npages):
                guest_access(v, g << S.PAGE_SHIFT, WRITE_ACCESS)
        t_pop = _timed(populate)
        assert kvm.stat.pages_4k == npages
        t_zap = _timed(lambda: kvm_zap_gfn_range(kvm, 0, npages))
        assert kvm.stat.pages_4k == 0
        populate()
        t_down = _timed(lambda: kvm_mmu_zap_all(kvm))
        assert kvm.stat.pages_4k == 0 and kvm.arch.tdp_mmu_pages == 0
        return {"populate_s": t_pop, "zap_range_s": t_zap, "teardown_s": t_down}
    return _run(body)


def faithful_fault_us(npages: int) -> float:
    """The same first-touch faults through the faithful per-step path (the free-run
    fault path turned off): what every fault costs under exploration, minus the
    strategy's decisions."""
    def body():
        kvm = kvm_create_vm()
        kvm_set_memory_region(kvm, 0, 0, 0, npages, S.PG_LEVEL_4K)
        v = kvm_create_vcpu(kvm)

        def populate():
            for g in range(npages):
                guest_access(v, g << S.PAGE_SHIFT, WRITE_ACCESS)
        return {"t": _timed(populate)}
    return _run(body, {"_fused_faults": 0})["t"] / npages * 1e6


def _locked(kvm, fn):
    mutex_lock(kvm.slots_lock)
    fn()
    mutex_unlock(kvm.slots_lock)


def dirty_log_figures(npages: int) -> dict:
    """dirty_log_perf_test's phases on one slot of ``npages`` 4K pages (GET-clears and
    manual), then enable/disable on 2M-backed memory (eager split, recovery)."""
    def body():
        out = {}
        kvm = kvm_create_vm()
        slot = kvm_set_memory_region(kvm, 0, 0, 0, npages, S.PG_LEVEL_4K)
        v = kvm_create_vcpu(kvm)

        def write_all():
            for g in range(npages):
                guest_access(v, g << S.PAGE_SHIFT, WRITE_ACCESS)
        write_all()
        out["enable_wrprot"] = _timed(lambda: _locked(
            kvm, lambda: kvm_set_memslot_dirty_logging(kvm, slot, True)))
        out["dirty_pass"] = _timed(write_all)
        assert len(slot.dirty_bitmap) == npages
        got = []
        out["get_dirty_log"] = _timed(lambda: _locked(
            kvm, lambda: got.append(kvm_get_dirty_log_protect(kvm, slot))))
        assert len(got[0]) == npages
        write_all()
        kvm.manual_dirty_log_protect = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
        snaps = []
        _locked(kvm, lambda: snaps.append(kvm_get_dirty_log_manual(kvm, slot)))
        snap = snaps[0]
        out["clear_dirty_log"] = _timed(lambda: _locked(
            kvm, lambda: kvm_clear_dirty_log(kvm, slot, snap)))
        out["disable_4k"] = _timed(lambda: _locked(
            kvm, lambda: kvm_set_memslot_dirty_logging(kvm, slot, False)))

        kvm2 = kvm_create_vm()
        slot2 = kvm_set_memory_region(kvm2, 0, 0, 0, npages, S.PG_LEVEL_2M)
        v2 = kvm_create_vcpu(kvm2)
        for g in range(0, npages, 512):
            guest_access(v2, g << S.PAGE_SHIFT, WRITE_ACCESS)
        huge = kvm2.stat.pages_2m
        out["enable_split"] = _timed(lambda: _locked(
            kvm2, lambda: kvm_set_memslot_dirty_logging(kvm2, slot2, True)))
        assert kvm2.stat.pages_2m == 0 and kvm2.stat.pages_4k == npages
        out["disable_recover"] = _timed(lambda: _locked(
            kvm2, lambda: kvm_set_memslot_dirty_logging(kvm2, slot2, False)))
        assert kvm2.stat.pages_2m == huge and kvm2.stat.pages_4k == 0
        return out
    return _run(body)


def measure(gib: float) -> dict:
    npages = max(512, int(PAGES_PER_GIB * gib))
    base = baseline_step_us()
    m = model_figures(npages)
    scale = PAGES_PER_GIB / npages
    fault_us = m["populate_s"] / npages * 1e6
    slow_fault_us = faithful_fault_us(min(npages, 1 << 14))
    zap_ms_gib = m["zap_range_s"] * 1e3 * scale
    down_ms_gib = m["teardown_s"] * 1e3 * scale
    d = dirty_log_figures(npages)
    dl = {
        "enable_wrprot_ms_per_gib": d["enable_wrprot"] * 1e3 * scale,
        "dirty_fast_fault_us": d["dirty_pass"] / npages * 1e6,
        "get_dirty_log_ms_per_gib": d["get_dirty_log"] * 1e3 * scale,
        "clear_dirty_log_ms_per_gib": d["clear_dirty_log"] * 1e3 * scale,
        "disable_4k_ms_per_gib": d["disable_4k"] * 1e3 * scale,
        "enable_split_ms_per_gib": d["enable_split"] * 1e3 * scale,
        "disable_recover_ms_per_gib": d["disable_recover"] * 1e3 * scale,
    }
    rows = {k: round(val, 2) for k, val in dl.items()}
    rows.update({k.replace("_per_gib", "").replace("_us", "") + "_vs_kvm":
                 round(val / KVM_FIGURES[k][0], 2) for k, val in dl.items()})
    return {
        **rows,
        "gib": npages / PAGES_PER_GIB,
        "baseline_step_us": round(base, 3),
        "fault_us": round(fault_us, 2),
        "fault_in_steps": round(fault_us / base, 1),
        "fault_vs_kvm": round(fault_us / KVM_FAULT_US, 1),
        "faithful_fault_us": round(slow_fault_us, 2),
        "faithful_fault_in_steps": round(slow_fault_us / base, 1),
        "populate_s_per_gib": round(m["populate_s"] * scale, 2),
        "zap_range_ms_per_gib": round(zap_ms_gib, 2),
        "zap_range_vs_kvm_teardown": round(zap_ms_gib / KVM_TEARDOWN_MS_PER_GIB, 2),
        "teardown_ms_per_gib": round(down_ms_gib, 2),
        "teardown_vs_kvm": round(down_ms_gib / KVM_TEARDOWN_MS_PER_GIB, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=1.0, help="guest memory to populate")
    ap.add_argument("--quick", action="store_true", help="1/64 GiB (a smoke test)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = measure(1 / 64 if args.quick else args.gib)
    if args.json:
        print(json.dumps(r))
        return
    print(f"guest memory                      {r['gib']:.4f} GiB of 4K pages, free-run, one vCPU")
    print(f"baseline: one model step          {r['baseline_step_us']:8.3f} us (READ_ONCE + scheduling point)")
    print(f"first-touch 4K fault              {r['fault_us']:8.2f} us = {r['fault_in_steps']} steps"
          f" = {r['fault_vs_kvm']}x real KVM (~{KVM_FAULT_US} us); target <= 10 us")
    print(f"  the same, faithful per-step path {r['faithful_fault_us']:8.2f} us = "
          f"{r['faithful_fault_in_steps']} steps (--param _fused_faults=0)")
    print(f"populate                          {r['populate_s_per_gib']:8.2f} s per GiB")
    print(f"kvm_zap_gfn_range                 {r['zap_range_ms_per_gib']:8.2f} ms per GiB"
          f" = {r['zap_range_vs_kvm_teardown']}x real KVM teardown (~{KVM_TEARDOWN_MS_PER_GIB} ms/GiB)")
    print(f"teardown (kvm_mmu_zap_all)        {r['teardown_ms_per_gib']:8.2f} ms per GiB"
          f" = {r['teardown_vs_kvm']}x real KVM")
    labels = {
        "enable_wrprot_ms_per_gib": "enable logging (write-protect 4K)",
        "dirty_fast_fault_us": "dirty pass: fast page fault (us)",
        "get_dirty_log_ms_per_gib": "get dirty log (GET clears)",
        "clear_dirty_log_ms_per_gib": "clear dirty log (manual)",
        "disable_4k_ms_per_gib": "disable logging, 4K backing",
        "enable_split_ms_per_gib": "enable logging, eager split 2M",
        "disable_recover_ms_per_gib": "disable logging, recover 2M",
    }
    for key, label in labels.items():
        unit = "us" if key.endswith("_us") else "ms per GiB"
        ratio = r[key.replace("_per_gib", "").replace("_us", "") + "_vs_kvm"]
        print(f"{label:34s}{r[key]:8.2f} {unit} = {ratio}x real KVM ({KVM_FIGURES[key][1]})")


if __name__ == "__main__":
    main()
