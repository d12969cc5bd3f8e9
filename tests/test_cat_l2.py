"""Group l2 of the catalogue: PML and L2 (nested) TDP roots for dirty logging, the
on-demand NX recovery vhost task, and the NULL-dereference oops class."""

from __future__ import annotations

import pytest

from tdpmmu.mmu import WRITE_ACCESS, guest_access
from tdpmmu.mmu import spte as S
from tdpmmu.mmu.hw import kvm_nested_transition
from tdpmmu.mmu.mmu import (kvm_arch_vcpu_ioctl_run, kvm_destroy_vm, kvm_get_dirty_log_protect,
                            kvm_set_memslot_dirty_logging, kvm_wake_nx_recovery_thread,
                            set_nx_huge_pages, set_nx_huge_pages_recovery_param)
from tdpmmu.mmu.oracles import DirtyLogIncomplete
from tdpmmu.runtime import Execution
from tdpmmu.runtime.errors import KernelWarning, NullPointerDereference, Oops
from tdpmmu.runtime.strategies import FreeRun, RandomWalk
from tdpmmu.runtime.task import DONE
from tdpmmu.sync import mutex_lock, mutex_unlock, spawn
from tdpmmu.sync.vhost_task import (Once, call_once, vhost_task_create, vhost_task_start,
                                    vhost_task_stop, vhost_task_wake)

from mmu_helpers import add_slot, leaf_sptes, run_single, vcpu


def _run(setup, strategy=None, defects=()):
    strat = strategy or FreeRun()
    strat.new_execution()
    return Execution(strat, defects=defects, max_steps=10**6).run(setup)


# -- NullPointerDereference (a general checker: runtime/execution.py's oops mapping) -

def _null():
    return None


@pytest.mark.parametrize("body", [lambda: _null().task, lambda: _null()[0], lambda: _null()()])
def test_dereferencing_none_is_a_null_pointer_dereference(body):
    r = _run(lambda: spawn("t", body))
    assert type(r.failure) is NullPointerDereference
    assert isinstance(r.failure, Oops) and r.failure.family == "Oops"


@pytest.mark.parametrize("body", [lambda: object().task, lambda: len(1), lambda: {}["k"]])
def test_other_crashes_stay_plain_oopses(body):
    """Negative control: an AttributeError/TypeError/KeyError not about None."""
    r = _run(lambda: spawn("t", body))
    assert type(r.failure) is Oops


# -- vhost_task and call_once ------------------------------------------------------

def test_vhost_task_runs_on_wake_and_stops():
    runs = []

    def fn(data):
        runs.append(data)
        return False                     # nothing more to do: sleep until woken

    def setup():
        def owner():
            vtsk = vhost_task_create(fn, "d", "worker")
            vhost_task_wake(vtsk)        # not started (TASK_NEW): nothing happens
            assert runs == []
            vhost_task_start(vtsk)
            vhost_task_wake(vtsk)
            vhost_task_stop(vtsk)            # returns once the thread left its loop
            assert vtsk.stop and not vtsk.sleeping
        spawn("owner", owner)
    seen = set()
    for seed in range(30):
        runs.clear()
        r = _run(setup, RandomWalk(seed))
        assert r.failure is None, r.failure
        seen.add(len(runs))
    # none (stopped before its first check), the start's run, one more for the wake
    assert seen <= {0, 1, 2} and seen & {1, 2}


def test_call_once_runs_the_callback_once_for_racing_callers():
    calls = []

    def setup():
        once = Once("once")

        def caller():
            assert call_once(once, lambda _o: calls.append(1) or 0) == 0
            assert calls == [1]          # a later caller returns only after it ran
        for i in range(3):
            spawn(f"c{i}", caller)
    for seed in range(20):
        calls.clear()
        r = _run(setup, RandomWalk(seed))
        assert r.failure is None, r.failure
        assert calls == [1]


# -- the on-demand NX recovery thread ---------------------------------------------

def test_recovery_thread_is_created_by_the_first_kvm_run_and_stopped_at_destroy():
    def body(kvm):
        add_slot(kvm)
        v0, v1 = vcpu(kvm), vcpu(kvm)
        kvm_wake_nx_recovery_thread(kvm)            # no thread yet: nothing to wake
        set_nx_huge_pages_recovery_param(kvm, period_ms=1000)
        assert kvm.arch.nx_huge_page_recovery_thread is None
        assert kvm_arch_vcpu_ioctl_run(v0) == 0
        t = kvm.arch.nx_huge_page_recovery_thread
        assert t is not None and t.started
        assert kvm_arch_vcpu_ioctl_run(v1) == 0
        assert kvm.arch.nx_huge_page_recovery_thread is t
        set_nx_huge_pages(kvm, False)
        kvm_destroy_vm(kvm)
        return t
    t, _ = run_single(body, nx_huge_pages=True)
    assert t.stop and t.task.state == DONE


def test_param_write_before_first_kvm_run_with_the_defect_is_a_null_dereference():
    def body(kvm):
        set_nx_huge_pages(kvm, True)
    assert run_single(body)[0] is None
    with pytest.raises(NullPointerDereference):
        run_single(body, defects=("nx-worker-published-before-start",))


# -- PML and L2 roots --------------------------------------------------------------

def _logging_vm(kvm, nested):
    kvm.enable_pml = True
    slot = add_slot(kvm, npages=512)
    v = vcpu(kvm)
    guest_access(v, 1 << 12, WRITE_ACCESS)              # L1 maps gfn 1
    mutex_lock(kvm.slots_lock)
    kvm_set_memslot_dirty_logging(kvm, slot, True)
    mutex_unlock(kvm.slots_lock)
    if nested:
        kvm_nested_transition(v, True)
        guest_access(v, 1 << 12, WRITE_ACCESS)          # L2 faults gfn 1 in (logged)
    return slot, v


def _spte(kvm, v, gfn):
    return leaf_sptes(kvm, v.root)[(gfn, S.PG_LEVEL_4K)]


def test_pml_clears_d_and_logs_l1_writes_without_faults():
    def body(kvm):
        slot, v = _logging_vm(kvm, nested=False)
        spte = _spte(kvm, v, 1)
        assert S.is_writable_pte(spte) and not spte & kvm.masks.dirty_mask
        assert not S.spte_ad_need_write_protect(spte)
        faults = v.stat.pf_taken
        guest_access(v, 1 << 12, WRITE_ACCESS)          # the CPU sets D and logs it
        assert v.stat.pf_taken == faults
        mutex_lock(kvm.slots_lock)
        got = kvm_get_dirty_log_protect(kvm, slot)
        mutex_unlock(kvm.slots_lock)
        return got
    got, _ = run_single(body)
    assert got == {1}


@pytest.mark.parametrize("defect", [False, True])
def test_l2_roots_are_write_protected_when_clearing_dirty_state(defect):
    seen = {}

    def body(kvm):
        slot, v = _logging_vm(kvm, nested=True)
        assert v.root.role.guest_mode
        spte = _spte(kvm, v, 1)
        assert spte & S.SPTE_TDP_AD_MASK == S.SPTE_TDP_AD_WRPROT_ONLY
        mutex_lock(kvm.slots_lock)
        assert kvm_get_dirty_log_protect(kvm, slot) == {1}
        seen["spte"] = _spte(kvm, v, 1)
        guest_access(v, 1 << 12, WRITE_ACCESS)          # L2 writes again (PML is off)
        second = kvm_get_dirty_log_protect(kvm, slot)
        mutex_unlock(kvm.slots_lock)
        return second
    if not defect:
        second, _ = run_single(body)
        assert not S.is_writable_pte(seen["spte"]) and second == {1}
        return
    with pytest.raises(DirtyLogIncomplete):
        run_single(body, defects=("l2-dirty-log-needs-wrprot",))
    assert S.is_writable_pte(seen["spte"]) and not seen["spte"] & S.PT_DIRTY_MASK


def test_make_spte_wrprot_only_is_an_ad_type_of_a_d_enabled_spte():
    _, spte = S.make_spte(level=S.PG_LEVEL_4K, gfn=1, pfn=1, ad_need_write_protect=True)
    assert spte & S.SPTE_TDP_AD_MASK == S.SPTE_TDP_AD_WRPROT_ONLY
    assert S.spte_ad_enabled(spte) and S.spte_ad_need_write_protect(spte)
    _, spte = S.make_spte(level=S.PG_LEVEL_4K, gfn=1, pfn=1, ad_need_write_protect=True,
                          ad_disabled=True)
    assert spte & S.SPTE_TDP_AD_MASK == S.SPTE_TDP_AD_DISABLED


def test_with_l2_sptes_present_at_enable_the_kernels_own_warn_fires():
    """syzbot's route (CONFIG_KVM_PROVE_MMU): enabling logging with PML clears dirty
    state slot-wide; with the defect, clear_dirty_gfn_range clears D on a WRPROT_ONLY
    SPTE and its KVM_MMU_WARN_ON fires."""
    def body(kvm):
        kvm.enable_pml = True
        slot = add_slot(kvm, npages=512)
        v = vcpu(kvm)
        kvm_nested_transition(v, True)
        guest_access(v, 1 << 12, WRITE_ACCESS)
        mutex_lock(kvm.slots_lock)
        kvm_set_memslot_dirty_logging(kvm, slot, True)
        mutex_unlock(kvm.slots_lock)
        return not S.is_writable_pte(_spte(kvm, v, 1))
    assert run_single(body)[0]
    with pytest.raises(KernelWarning, match="clear_dirty_gfn_range"):
        run_single(body, defects=("l2-dirty-log-needs-wrprot",))
