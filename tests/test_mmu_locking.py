"""The lock table: declared once per function, asserted on entry, read back by `tdpmmu locks`."""

from __future__ import annotations

import inspect
import json
import re

import pytest

from tdpmmu import cli
from tdpmmu.explore import Runner
from tdpmmu.mmu import kvm_create_vcpu, kvm_create_vm
from tdpmmu.mmu.locking import REGISTRY, lock_table, lock_table_markdown
from tdpmmu.runtime import Execution, RandomWalk, traps
from tdpmmu.runtime.errors import LockdepViolation
from tdpmmu.scenarios import all_scenarios
from tdpmmu.sync import (rcu_read_lock, rcu_read_unlock, read_lock, read_unlock, spin_lock,
                         spin_unlock, write_lock, write_unlock)

MODES = {"read", "write", "either", "none"}


def test_at_least_30_functions_are_declared_with_known_modes():
    rows = lock_table()
    assert len(rows) >= 30
    for r in rows:
        assert r["mmu_lock"] in MODES
        assert r["function"] in REGISTRY


def test_the_seed_functions_are_declared_as_the_kernel_asserts():
    want = {
        "tdp_mmu_set_spte_atomic": "read",
        "tdp_mmu_set_spte": "write",
        "kvm_tdp_mmu_zap_leafs": "write",
        "tdp_mmu_next_root": "either",
        "kvm_tdp_mmu_put_root": "none",
        "kvm_tdp_mmu_map": "read",
        "__for_each_tdp_mmu_root_yield_safe": "either",
        "kvm_tdp_mmu_invalidate_roots": "write",
        "tdp_mmu_zap_root": "either",
        "tdp_mmu_iter_cond_resched": "either",
    }
    got = {r["function"]: r for r in lock_table()}
    for fn, mode in want.items():
        assert got[fn]["mmu_lock"] == mode, fn
    # `shared` is kept only where the code branches on it, and the table says so
    assert got["tdp_mmu_zap_root"]["mode_from"] == "shared"
    assert got["tdp_mmu_next_root"]["mode_from"] is None
    assert "shared" not in inspect.signature(REGISTRY["tdp_mmu_next_root"][1]).parameters
    assert "shared" not in inspect.signature(REGISTRY["kvm_tdp_mmu_put_root"][1]).parameters


def test_callers_come_from_the_source():
    got = {r["function"]: r for r in lock_table()}
    assert "kvm_tdp_mmu_map" in got["tdp_mmu_set_spte_atomic"]["callers"] or \
        "tdp_mmu_map_handle_target_level" in got["tdp_mmu_set_spte_atomic"]["callers"]
    assert "tdp_mmu_next_root" in got["kvm_tdp_mmu_put_root"]["callers"]


# -- the assertion is really there: drive every declared function wrongly -------------

def _wrong_contexts(req):
    """(description, context) pairs that must each make the wrapper report."""
    out = []
    mode = req.mmu_lock
    if mode == "read":
        out += [("no lock", None), ("write lock", "write")]
    elif mode == "write":
        out += [("no lock", None), ("read lock", "read")]
    elif mode == "either":
        out += [("no lock", None)]
    elif mode == "shared":
        out += [("shared=True under write", ("write", True)),
                ("shared=False under read", ("read", False))]
    if req.takes:
        out += [("already held", "read")]
    if req.rcu == "held":
        right = {"read": "read", "write": "write", "either": "read",
                 "shared": ("read", True)}.get(mode)
        out += [("no RCU", ("norcu", right))]
    for h in req.held:
        right = {"read": "read", "write": "write", "either": "read"}.get(mode)
        out += [(f"without {h}", ("nolock", right))]
    return out


def _call_in(ctx, name, fn, req):
    """Run ``fn`` with dummy arguments inside an execution in context ``ctx``; return the
    violation or exception it raised."""
    out = {}

    def setup():
        kvm = kvm_create_vm()
        vcpu = kvm_create_vcpu(kvm)

        def task():
            c = ctx
            rcu = req.rcu == "held"
            shared = None
            if isinstance(c, tuple) and c[0] == "norcu":
                rcu, c = False, c[1]
            if isinstance(c, tuple) and c[0] == "nolock":
                c = c[1]
                hold_pages = False
            else:
                hold_pages = bool(req.held)
            if isinstance(c, tuple):
                c, shared = c
            if c == "read":
                read_lock(kvm.mmu_lock)
            elif c == "write":
                write_lock(kvm.mmu_lock)
            if rcu:
                rcu_read_lock()
            if hold_pages:
                spin_lock(kvm.arch.tdp_mmu_pages_lock)
            args = []
            for p in inspect.signature(fn).parameters:
                args.append({"kvm": kvm, "vcpu": vcpu, "shared": shared}.get(p))
            try:
                gen = fn(*args)
                if inspect.isgenerator(gen):
                    next(gen, None)
            except Exception as e:      # noqa: BLE001 - we classify it below
                out["exc"] = e
            traps.current_execution().aborting = True
        traps.spawn("t0", task)

    s = RandomWalk(0)
    s.new_execution()
    Execution(s).run(setup)
    return out.get("exc")


CHECKED = [(name, req) for name, (req, _) in sorted(REGISTRY.items()) if _wrong_contexts(req)]


@pytest.mark.parametrize("name,req", CHECKED, ids=[n for n, _ in CHECKED])
def test_wrong_lock_mode_is_reported_by_lockdep(name, req):
    fn = getattr(__import__(req.module, fromlist=[name]), name)
    assert getattr(fn, "lock_requirement", None) is req, "the module exports the wrapper"
    for desc, ctx in _wrong_contexts(req):
        exc = _call_in(ctx, name, fn, req)
        assert isinstance(exc, LockdepViolation), f"{name} with {desc}: {exc!r}"
        assert f"in {name}" in str(exc), f"{name} with {desc}: {exc}"


def test_enough_functions_are_driven_wrongly():
    assert len(CHECKED) >= 30


# -- coverage: nothing touches protected state without a declaration -----------------

PROTECTED = re.compile(r"^(spt#|sp#|tdp_mmu_roots|.*\.link$|.*tdp_mmu_root_count$|mmu_invalidate_seq)")


def test_every_access_to_protected_state_happens_in_a_declared_function():
    undeclared = {}
    for sc in all_scenarios():
        if "mmu" not in sc.tags:
            continue
        runner = Runner(sc.name)
        for seed in range(3):
            s = RandomWalk(seed)
            s.new_execution()
            r = runner.run(s, tracing=True)
            assert r.failure is None, r.failure
            for st in r.trace:
                obj = st.op[1]
                name = getattr(obj, "name", None)
                if not name or not PROTECTED.match(name) or st.site is None:
                    continue
                if "/tdpmmu/mmu/" not in st.site[0]:
                    continue
                if st.site[2] not in REGISTRY:
                    undeclared.setdefault(st.site[2], st.op[2])
    assert not undeclared, f"undeclared functions touching protected state: {undeclared}"


# -- the command -------------------------------------------------------------------

def test_tdpmmu_locks_outputs(capsys):
    assert cli.main(["locks", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["function"] for r in rows} == set(REGISTRY)
    assert all({"function", "mmu_lock"} <= set(r) for r in rows)
    assert cli.main(["locks", "--markdown"]) == 0
    md = capsys.readouterr().out
    assert md.splitlines()[0].startswith("| function | mmu_lock |")
    assert len(md.strip().splitlines()) == len(REGISTRY) + 2
    assert md.strip() == lock_table_markdown().strip()
    assert cli.main(["locks"]) == 0
    assert "tdp_mmu_set_spte_atomic" in capsys.readouterr().out.replace("\n", "")
    assert cli.main(["locks", "--json", "--markdown"]) == 2


_ = (read_unlock, write_unlock, rcu_read_unlock, spin_unlock)
