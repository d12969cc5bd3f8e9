"""Helpers for single-threaded functional tests of the TDP MMU model."""

from __future__ import annotations

import contextlib

from tdpmmu.mmu import kvm_create_vcpu, kvm_create_vm, kvm_set_memory_region
from tdpmmu.mmu import spte as S
from tdpmmu.runtime import Execution
from tdpmmu.runtime.strategies import FreeRun
from tdpmmu.sync import spawn


def run_single(body, *, strategy=None, tracing=False, defects=(), params=None, **vm_kw):
    """Build a VM (kvm_create_vm(**vm_kw)) in an execution, run ``body(kvm)`` as one task,
    and return (result of body, ExecutionResult).  Raises the violation if any."""
    out = {}

    def setup():
        kvm = kvm_create_vm(**vm_kw)

        def task():
            out["value"] = body(kvm)
        spawn("t0", task)

    strat = strategy or FreeRun()
    strat.new_execution()
    r = Execution(strat, tracing=tracing, defects=defects, params=params or {},
                  max_steps=10**9).run(setup)
    if r.failure is not None:
        raise r.failure
    if r.error is not None:
        raise r.error
    return out.get("value"), r


def add_slot(kvm, as_id=0, base_gfn=0, npages=1024, backing=S.PG_LEVEL_4K, flags=0):
    return kvm_set_memory_region(kvm, as_id, len(kvm.memslots[as_id]), base_gfn, npages,
                                 backing, flags)


def vcpu(kvm):
    return kvm_create_vcpu(kvm)


def leaf_sptes(kvm, root):
    """{(gfn, level): spte} of every present leaf under ``root`` (no scheduling points)."""
    out = {}

    def walk(pt, level, base):
        for i, v in enumerate(pt.vals):
            if not S.is_shadow_present_pte(v):
                continue
            gfn = base + i * S.KVM_PAGES_PER_HPAGE(level)
            if S.is_last_spte(v, level):
                out[(gfn, level)] = v
            else:
                walk(kvm.pt_by_pfn[S.spte_to_pfn(v)].spt, level - 1, gfn)
    walk(root.spt, root.role.level, 0)
    return out


def count_tables(kvm, root) -> int:
    """Non-root page tables linked under ``root``."""
    n = 0

    def walk(pt, level):
        nonlocal n
        for v in pt.vals:
            if S.is_shadow_present_pte(v) and not S.is_last_spte(v, level):
                n += 1
                walk(kvm.pt_by_pfn[S.spte_to_pfn(v)].spt, level - 1)
    walk(root.spt, root.role.level)
    return n


def iter_at_leaf(kvm, root, gfn: int):
    """A TdpIter started on ``root`` and stepped down to the 4K entry of ``gfn``
    (the caller holds mmu_lock and RCU)."""
    from tdpmmu.mmu.tdp_iter import TdpIter, tdp_iter_next, tdp_iter_start
    it = TdpIter(kvm)
    tdp_iter_start(it, root, S.PG_LEVEL_4K, gfn)
    while it.level > 1:
        tdp_iter_next(it)
    return it


@contextlib.contextmanager
def spying(module, name: str, calls: list, record):
    """Replace ``module.name`` by a wrapper appending ``record(*args)`` to ``calls``."""
    inner = getattr(module, name)

    def spy(*args):
        calls.append(record(*args))
        return inner(*args)
    setattr(module, name, spy)
    try:
        yield
    finally:
        setattr(module, name, inner)


def check_variant_and_its_defect(scenario: str, params: dict, defect: str, expected: str, *,
                                 seed: int = 0, clean_schedules: int = 200,
                                 find_schedules: int = 50, without: dict | None = None):
    """A scenario configuration and the defect it exists to catch: ``params`` is clean
    under PCT and the random walk, the defect is found there with the ``expected`` class,
    and (``without``: parameters overriding ``params``) not in the neighbouring
    configuration."""
    import tdpmmu
    for strategy in ("pct", "random"):
        res = tdpmmu.explore(scenario, strategy=strategy, schedules=clean_schedules,
                             seed=seed, params=params)
        assert res.failures == [], tdpmmu.render_failure(res.failures[0])
    res = tdpmmu.explore(scenario, strategy="pct", schedules=find_schedules, params=params,
                         defects=[defect], stop_on_first=True)
    assert res.failures and res.failures[0].category == expected, defect
    if without is not None:
        other = {**params, **without}
        res = tdpmmu.explore(scenario, strategy="pct", schedules=clean_schedules,
                             params=other, defects=[defect])
        assert all(res.params[k] == v for k, v in other.items()) and res.failures == []
