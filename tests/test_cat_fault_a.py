"""Catalogue group fault_a: the CONFIG_DEBUG_LIST checker (sync/list.py) with its
negative controls, design variants L (the tdp_mmu_pages list) and P (the last root put
zaps the root) on their own, and the 32-bit snapshot arithmetic of
mmu-seq-sign-extension-livelock.

The defects themselves are exercised by tests/test_catalogue.py (``-k NAME``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import tdpmmu
from tdpmmu.mmu import READ_ACCESS, WRITE_ACCESS, guest_access, kvm_create_vm
from tdpmmu.mmu.mmu import _c_int_to_unsigned_long
from tdpmmu.mmu.oracles import check_mmu_structure
from tdpmmu.runtime.errors import ListCorruption, LockNotHeld, UseAfterFree
from tdpmmu.scenarios.mmu_core import build_vm, run_flows, zap_all_fast
from tdpmmu.sync import SpinLock, spawn, spin_lock, spin_unlock
from tdpmmu.sync.list import (LIST_POISON1, ListHead, list_add, list_add_tail,
                              list_count_nodes, list_del, list_del_init, list_empty,
                              list_for_each_entry)

from mmu_helpers import run_single


# -- the DEBUG_LIST checker: correct use ---------------------------------------------

def test_list_add_del_keep_order_and_poison():
    head = ListHead("head")
    a, b, c = (ListHead(n, owner=n, init=False) for n in "abc")
    assert list_empty(head)
    list_add(a, head)                # a
    list_add(b, head)                # b a
    list_add_tail(c, head)           # b a c
    assert list_for_each_entry(head) == ["b", "a", "c"]
    list_del(a)
    assert a.next is LIST_POISON1
    assert list_for_each_entry(head) == ["b", "c"]
    list_del_init(b)
    assert list_empty(b)
    list_add(b, head)                # re-adding an initialised node is fine
    assert list_count_nodes(head) == 2
    list_del(b)
    list_del(c)
    assert list_empty(head)


# -- the DEBUG_LIST checker: negative controls -----------------------------------------

def test_list_del_of_a_never_added_zeroed_node_reported():
    head = ListHead("head")
    node = ListHead("node", init=False)          # kzalloc'ed: NULL pointers
    with pytest.raises(ListCorruption, match="node->next is NULL"):
        list_del(node)
    assert list_empty(head)


def test_list_del_twice_reported():
    head = ListHead("head")
    node = ListHead("node", init=False)
    list_add(node, head)
    list_del(node)
    with pytest.raises(ListCorruption, match="LIST_POISON1"):
        list_del(node)


def test_list_double_add_reported():
    head = ListHead("head")
    node = ListHead("node", init=False)
    list_add(node, head)
    with pytest.raises(ListCorruption, match="double add"):
        list_add(node, head)


def test_list_add_next_to_a_corrupted_neighbour_reported():
    head = ListHead("head")
    a, b = ListHead("a", init=False), ListHead("b", init=False)
    list_add(a, head)
    a.prev = b                                   # a stray write
    with pytest.raises(ListCorruption, match="next->prev should be prev"):
        list_add(b, head)


def test_list_del_with_a_neighbour_not_pointing_back_reported():
    head = ListHead("head")
    a, b = ListHead("a", init=False), ListHead("b", init=False)
    list_add(a, head)
    list_add(b, head)                            # b a
    head.next = a                                # b is skipped by its prev
    with pytest.raises(ListCorruption, match="prev->next should be b"):
        list_del(b)


def test_list_node_in_freed_memory_reported():
    mem = SimpleNamespace(name="hdr", freed=False)     # an allocation (Words) stand-in
    head = ListHead("head")
    node = ListHead("node", init=False, mem=mem)
    list_add(node, head)
    mem.freed = True
    with pytest.raises(UseAfterFree, match="inside hdr"):
        list_del(node)


def sc_list_lock(locked: bool = True):
    """Two tasks add to a list protected by a spinlock (or forget it)."""
    lock = SpinLock("lock")
    head = ListHead("head", lock=lock)
    nodes = [ListHead(f"n{i}", owner=i, init=False) for i in range(2)]

    def adder(node):
        def run():
            if locked:
                spin_lock(lock)
            list_add(node, head)
            if locked:
                spin_unlock(lock)
        return run
    for n in nodes:
        spawn(n.name, adder(n))

    def check():
        assert sorted(list_for_each_entry_unlocked(head)) == [0, 1]
    return check


def list_for_each_entry_unlocked(head):
    out, pos = [], head.next
    while pos is not head:
        out.append(pos.owner)
        pos = pos.next
    return out


def test_list_head_with_a_lock_asserts_it_and_is_clean_with_it():
    res = tdpmmu.explore(sc_list_lock, strategy="random", schedules=50, params={"locked": False},
                         stop_on_first=True)
    assert res.failures and res.failures[0].category == LockNotHeld.__name__
    for strategy in ("random", "pct"):
        res = tdpmmu.explore(sc_list_lock, strategy=strategy, schedules=100)
        assert not res.failures, tdpmmu.render_failure(res.failures[0])


# -- design variants L and P on their own ---------------------------------------------

def sc_variant_l_faults_vs_zap(vcpus: int = 2):
    """mmu-faults-vs-zap-all-fast's shape, with a check that design L's list holds
    exactly the linked tables when the threads are gone."""
    kvm = build_vm(vcpus)

    def vcpu_body(v):
        def run():
            guest_access(v, 0, READ_ACCESS)
            guest_access(v, (3 + v.vcpu_id) << 12, WRITE_ACCESS)
        return run

    check = run_flows(kvm, vcpu_body, memslot_update=lambda: zap_all_fast(kvm))

    def final():
        check()
        assert list_count_nodes(kvm.arch.tdp_mmu_pages_list) == kvm.arch.tdp_mmu_pages == 0
    return final


@pytest.mark.parametrize("defects", [("tdp-mmu-pages-list",), ("last-put-zaps-root-v5.15",),
                                     ("tdp-mmu-pages-list", "last-put-zaps-root-v5.15")])
def test_design_variants_are_correct_by_themselves(defects):
    for strategy in ("random", "pct"):
        res = tdpmmu.explore(sc_variant_l_faults_vs_zap, strategy=strategy, schedules=150,
                             defects=list(defects), stop_on_first=True)
        assert not res.failures, tdpmmu.render_failure(res.failures[0])


def test_variant_l_lists_every_linked_table():
    def body(kvm):
        from tdpmmu.mmu import kvm_create_vcpu, kvm_set_memory_region
        kvm_set_memory_region(kvm, 0, 0, 0, 1024, 1)
        v = kvm_create_vcpu(kvm)
        for g in (0, 1, 600):
            guest_access(v, g << 12, WRITE_ACCESS)
        check_mmu_structure(kvm, "after the faults")
        listed = list_count_nodes(kvm.arch.tdp_mmu_pages_list)
        return listed, kvm.arch.tdp_mmu_pages
    (listed, counted), _ = run_single(body, defects=("tdp-mmu-pages-list",))
    assert listed == counted == 4        # levels 3 and 2, and two 4K tables


def test_correct_model_ignores_the_list():
    def body(kvm):
        from tdpmmu.mmu import kvm_create_vcpu, kvm_set_memory_region
        kvm_set_memory_region(kvm, 0, 0, 0, 1024, 1)
        v = kvm_create_vcpu(kvm)
        guest_access(v, 0, WRITE_ACCESS)
        return list_count_nodes(kvm.arch.tdp_mmu_pages_list), kvm.arch.tdp_mmu_pages
    (listed, counted), _ = run_single(body)
    assert listed == 0 and counted == 3


# -- mmu-seq-sign-extension-livelock ---------------------------------------------------

@pytest.mark.parametrize("value, widened", [
    (0, 0), (2**31 - 1, 2**31 - 1), (2**31, 2**64 - 2**31), (2**32 - 1, 2**64 - 1),
    (2**32, 0), (2**32 + 5, 5)])
def test_int_snapshot_is_truncated_and_sign_extended(value, widened):
    assert _c_int_to_unsigned_long(value) == widened


def test_kvm_create_vm_starts_the_invalidation_sequence():
    def body(kvm):
        return kvm.mmu_invalidate_seq.peek(0)
    value, _ = run_single(body, mmu_invalidate_seq=2**31 - 1)
    assert value == 2**31 - 1
    assert kvm_create_vm.__kwdefaults__["mmu_invalidate_seq"] == 0


def test_correct_model_keeps_faulting_past_2_to_the_31():
    for strategy in ("random", "pct"):
        res = tdpmmu.explore("mmu-notifier-remap-vs-fault", strategy=strategy, schedules=100,
                             params={"seq_start": 2**31 - 1}, stop_on_first=True)
        assert not res.failures, tdpmmu.render_failure(res.failures[0])
