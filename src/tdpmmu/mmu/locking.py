"""Lock requirements: declared once per function, asserted on entry, read back as a table.

This is the document Sean asks for in the seed thread ("document which paths
*require* mmu_lock be held for read vs. write, and which paths work with either"),
produced by the code.  Every model function that touches mmu_lock-protected state
carries one decorator::

    @requires(mmu_lock="read", rcu="held")
    def tdp_mmu_set_spte_atomic(kvm, iter, new_spte): ...

and the decorator does two things with that one declaration:

(a) it asserts it before the first statement of the body runs, with the kernel's
    assertions: ``lockdep_assert_held_read`` / ``_write`` / ``lockdep_assert_held``,
    ``kvm_lockdep_assert_mmu_lock_held(kvm, shared)`` for ``mmu_lock="shared"``
    (read when the ``shared`` argument is true, write otherwise),
    ``lockdep_assert_not_held`` for functions that take mmu_lock themselves,
    ``lockdep_assert_in_rcu_read_lock`` for ``rcu="held"``, ``lockdep_assert_held``
    for each lock named in ``held``;
(b) it records it in :data:`REGISTRY`, from which ``tdpmmu locks`` prints the table
    (function, mmu_lock, other locks/RCU, yields, callers, kernel counterpart).
    Callers are found by parsing the model's own source, never written by hand.

``mmu_lock`` values: ``"read"``, ``"write"``, ``"either"`` (held, any mode),
``"shared"`` (the mode follows the ``shared`` argument: the kernel keeps ``bool shared``
only where the code really branches on it), ``"none"`` (lockless: RCU only, or nothing).
``takes="read"|"write"`` says the function takes mmu_lock itself (then it must not be
held on entry).  The JSON form reports ``"shared"`` as ``"either"`` with
``"mode_from": "shared"``.

Model functions are looked up by ``kvm`` (first parameter named ``kvm``) or ``vcpu``
(``vcpu.kvm``).  A function with nothing to assert is still declared (``"none"``) so the
table is complete and the coverage test can tell "lockless by design" from "forgotten".
"""

from __future__ import annotations

import ast
import functools
import inspect
import pathlib
from dataclasses import asdict, dataclass

from ..runtime import traps
from ..sync import (lockdep_assert_held, lockdep_assert_held_read, lockdep_assert_held_write,
                    lockdep_assert_in_rcu_read_lock, lockdep_assert_not_held)

MODES = ("read", "write", "either", "shared", "none")


@dataclass(frozen=True)
class LockRequirement:
    function: str
    mmu_lock: str
    takes: str | None
    rcu: str | None
    held: tuple
    taken: tuple
    yields: bool
    kernel: str
    why: str
    module: str
    lineno: int

    @property
    def json_mmu_lock(self) -> str:
        return "either" if self.mmu_lock == "shared" else self.mmu_lock

    def describe_mmu_lock(self) -> str:
        if self.mmu_lock == "shared":
            return "read if shared, else write"
        if self.takes:
            return f"takes {self.takes}"
        return self.mmu_lock

    def other(self) -> str:
        parts = []
        if self.rcu == "held":
            parts.append("RCU held")
        elif self.rcu == "takes":
            parts.append("takes RCU")
        for h in self.held:
            parts.append(f"{h} held")
        for t in self.taken:
            parts.append(f"takes {t}")
        return ", ".join(parts) or "-"

    def to_dict(self, callers=()) -> dict:
        d = asdict(self)
        d["mmu_lock"] = self.json_mmu_lock
        d["mode_from"] = "shared" if self.mmu_lock == "shared" else None
        d["held"] = list(self.held)
        d["taken"] = list(self.taken)
        d["callers"] = sorted(callers)
        return d


#: function name -> (requirement, undecorated function)
REGISTRY: dict[str, tuple[LockRequirement, object]] = {}


def _why(fn) -> str:
    for line in (inspect.getdoc(fn) or "").splitlines():
        s = line.strip()
        if s.startswith("Why:"):
            return s[4:].strip()
    return ""


_KERNEL_FILES = {"tdp_mmu": "tdp_mmu.c", "tdp_iter": "tdp_iter.c", "mmu": "mmu.c",
                 "shadow_mmu": "mmu.c",
                 "hw": "(hardware page walker)", "kvm": "kvm_main.c"}


def transparent(fn):
    """Mark a tiny accessor (READ_ONCE of an SPTE, role.invalid, ...) that inherits its
    caller's locking context: traces and reports name its caller as the site, and the
    declaration-coverage test checks the caller."""
    from ..runtime.execution import mark_transparent
    mark_transparent(fn.__code__)
    return fn


def _resolve(kvm, path: str):
    obj = kvm
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def requires(mmu_lock: str, *, takes: str | None = None, rcu: str | None = None,
             held=(), taken=(), yields: bool = False, kernel: str | None = None,
             dying_ok: bool = False):
    """Declare (and assert on entry) what a model function needs.

    ``dying_ok``: the write-lock assertion is waived while the VM is being destroyed
    (``kvm_tdp_mmu_invalidate_roots``: nobody else can exist then).
    """
    if mmu_lock not in MODES:
        raise ValueError(f"mmu_lock must be one of {MODES}")
    if takes not in (None, "read", "write"):
        raise ValueError("takes must be None, 'read' or 'write'")
    if rcu not in (None, "held", "takes"):
        raise ValueError("rcu must be None, 'held' or 'takes'")

    def deco(fn):
        params = list(inspect.signature(fn).parameters)
        kidx = next((i for i, p in enumerate(params) if p in ("kvm", "vcpu")), None)
        needs_kvm = mmu_lock != "none" or takes is not None or bool(held)
        if needs_kvm and kidx is None:
            raise TypeError(f"{fn.__name__}: a function that needs mmu_lock takes kvm or vcpu")
        sidx = params.index("shared") if mmu_lock == "shared" else None
        if mmu_lock == "shared" and sidx is None:
            raise TypeError(f"{fn.__name__}: mmu_lock='shared' needs a 'shared' parameter")
        kfile = kernel or _KERNEL_FILES.get(fn.__module__.rsplit(".", 1)[-1], "?")
        req = LockRequirement(fn.__name__, mmu_lock, takes, rcu, tuple(held), tuple(taken),
                              yields, kfile, _why(fn), fn.__module__,
                              fn.__code__.co_firstlineno)
        REGISTRY[fn.__name__] = (req, fn)
        wrapper = _make_wrapper(fn, req, kidx, sidx, params, dying_ok)
        functools.update_wrapper(wrapper, fn)
        wrapper.lock_requirement = req
        return wrapper
    return deco


def _rcu_check(where: str):
    ts = traps._EX.current.ext
    if ts is None or not ts.rcu_nesting:
        lockdep_assert_in_rcu_read_lock(where)


def _mode_ok(lock, modes) -> bool:
    ts = traps._EX.current.ext
    if ts is not None:
        for h in ts.held:
            if h.lock is lock:
                return h.mode in modes
    return False


_READ = ("read",)
_WRITE = ("write", "exclusive")
_ANY = ("read", "write", "exclusive")


def _make_wrapper(fn, req, kidx, sidx, params, dying_ok):
    """A wrapper specialised to the requirement (the common cases cost ~0.2 us)."""
    mode = req.mmu_lock
    where = req.function
    rcu_held = req.rcu == "held"
    held = req.held
    takes = req.takes

    if mode == "none" and not takes and not held:
        if not rcu_held:
            def wrapper(*args, **kwargs):
                return fn(*args, **kwargs)
        else:
            def wrapper(*args, **kwargs):
                ts = traps._EX.current.ext          # inlined _rcu_check (hot path)
                if ts is None or not ts.rcu_nesting:
                    lockdep_assert_in_rcu_read_lock(where)
                return fn(*args, **kwargs)
        return wrapper

    modes = {"read": _READ, "write": _WRITE, "either": _ANY}.get(mode)
    assert_fn = {"read": lockdep_assert_held_read, "write": lockdep_assert_held_write,
                 "either": lockdep_assert_held}.get(mode)
    kname = params[kidx]

    def wrapper(*args, **kwargs):
        obj = args[kidx] if kidx < len(args) else kwargs[kname]
        kvm = getattr(obj, "kvm", obj)
        lock = kvm.mmu_lock
        if modes is not None:
            if not _mode_ok(lock, modes) and not (dying_ok and kvm.dying):
                assert_fn(lock, where)
        elif sidx is not None:
            shared = args[sidx] if sidx < len(args) else kwargs["shared"]
            if not _mode_ok(lock, _READ if shared else _WRITE):
                (lockdep_assert_held_read if shared else lockdep_assert_held_write)(lock, where)
        elif takes is not None:
            lockdep_assert_not_held(lock, where)
        if rcu_held:
            _rcu_check(where)
        for name in held:
            lockdep_assert_held(_resolve(kvm, name), where)
        return fn(*args, **kwargs)
    return wrapper


# -- the table -------------------------------------------------------------------

def _load_model() -> None:
    from . import mmu, shadow_mmu, tdp_mmu  # noqa: F401  (declarations register on import)


def callers_map() -> dict[str, set[str]]:
    """Which declared functions call which, found by parsing the model's source."""
    _load_model()
    out: dict[str, set[str]] = {name: set() for name in REGISTRY}
    here = pathlib.Path(__file__).resolve().parent
    for path in sorted(here.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.Call):
                    f = sub.func
                    name = f.id if isinstance(f, ast.Name) else (
                        f.attr if isinstance(f, ast.Attribute) else None)
                    if name in out and name != node.name:
                        out[name].add(node.name)
    return out


def lock_table() -> list[dict]:
    """One dict per declared function, sorted by file then name."""
    _load_model()
    callers = callers_map()
    rows = [req.to_dict(callers.get(name, ())) for name, (req, _) in REGISTRY.items()]
    rows.sort(key=lambda r: (r["kernel"], r["function"]))
    return rows


def lock_table_markdown() -> str:
    rows = lock_table()
    lines = [
        "| function | mmu_lock | other locks / RCU | yields | callers | kernel |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        req = REGISTRY[r["function"]][0]
        lines.append(f"| `{r['function']}` | {req.describe_mmu_lock()} | {req.other()} | "
                     f"{'yes' if r['yields'] else 'no'} | "
                     f"{', '.join(f'`{c}`' for c in r['callers']) or '-'} | {r['kernel']} |")
    return "\n".join(lines)
