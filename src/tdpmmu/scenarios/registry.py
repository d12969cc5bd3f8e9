"""Registries: scenarios (named concurrent programs) and defects (re-introduced bugs).

A *scenario* is a plain Python function registered by name.  It runs at the start of
an execution (as the pseudo-task ``main``), builds shared state, spawns named tasks
with :func:`tdpmmu.sync.spawn`, and may return a final check that runs after every
task has finished.  Keyword parameters with defaults are the scenario's parameters
(``tdpmmu explore NAME --param vcpus=3``)::

    @scenario("counter", description="tasks increment a shared counter")
    def counter(tasks: int = 2, incs: int = 2):
        ...
        for i in range(tasks):
            spawn(f"t{i}", body)
        return check

A *defect* is a named switch that model code consults (``if defect("name"):``) to
re-introduce a bug in its own code path.  Its registration says which scenarios
exercise it and which violation class finding it must produce.

Parameters whose names start with ``_`` are runtime knobs, not scenario arguments:
``_lockdep`` and ``_race_detection`` (booleans, default true) switch checkers off to
show what another checker sees; ``_softlockup_thresh`` and ``_rcu_stall_thresh``
(work units) set the watchdogs' thresholds (sync/watchdog.py).
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field, replace

from ..runtime.errors import UsageError

RUNTIME_KNOBS = {"_lockdep": True, "_race_detection": True,
                 "_softlockup_thresh": 2048, "_rcu_stall_thresh": 4096}


@dataclass(frozen=True)
class Scenario:
    name: str
    fn: object
    description: str
    params: dict
    tags: frozenset
    #: step bound per execution (livelock detection)
    max_steps: int
    #: preemption bound for bounded DFS in ``tdpmmu check`` (None: DFS not used)
    dfs_bound: int | None
    default: bool = True
    #: racy branches this scenario exists to reach (racy-branch coverage): a campaign
    #: that never reached one of them leaves the scenario flagged as under-explored
    key_branches: tuple = ()
    #: further parameter sets the default campaign also explores (each a dict of
    #: overrides): configurations as common as the defaults (PML, manual dirty-log
    #: protection, EPT without A/D bits...) whose code paths the defaults do not reach
    variants: tuple = ()

    def resolve(self, overrides: dict | None) -> dict:
        """Defaults updated with ``overrides`` (validated and converted)."""
        out = dict(self.params)
        for key, raw in (overrides or {}).items():
            if key in RUNTIME_KNOBS:
                out[key] = _convert(key, raw, RUNTIME_KNOBS[key])
                continue
            if key not in self.params:
                known = ", ".join(sorted(self.params)) or "none"
                raise UsageError(f"scenario {self.name} has no parameter {key!r} (known: {known})")
            out[key] = _convert(key, raw, self.params[key])
        return out

    def setup(self, params: dict):
        kwargs = {k: v for k, v in params.items() if not k.startswith("_")}
        fn = self.fn
        return lambda: fn(**kwargs)

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "params": self.params,
                "tags": sorted(self.tags), "default": self.default,
                "key_branches": list(self.key_branches),
                "variants": [dict(v) for v in self.variants],
                "defects": [d.name for d in DEFECTS.values() if self.name in d.scenarios]}


def _convert(key: str, raw, default):
    if not isinstance(raw, str):
        if default is not None and type(raw) is not type(default) and not (
                isinstance(default, int) and isinstance(raw, int)):
            raise UsageError(f"parameter {key}={raw!r}: expected {type(default).__name__}")
        return raw
    if isinstance(default, bool):
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"parameter {key}={raw!r}: expected a boolean")
    if isinstance(default, int):
        try:
            return int(raw, 0)
        except ValueError:
            raise UsageError(f"parameter {key}={raw!r}: expected an integer") from None
    return raw


@dataclass(frozen=True)
class Defect:
    name: str
    title: str
    #: violation class a finding must have (its class name)
    expected: str
    scenarios: tuple
    description: str = ""
    #: where it comes from: "runtime self-check" or a catalogue id
    source: str = "runtime self-check"
    #: extra parameters the scenarios need for it (e.g. a checker switched off)
    params: dict = field(default_factory=dict)
    #: the catalogue entry it re-introduces (shared/reference/bugs.md), or None
    catalogue: str | None = None
    #: the kernel fix (commit and subject) or review thread, for catalogue entries
    fix: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "expected": self.expected,
                "scenarios": list(self.scenarios), "description": self.description,
                "source": self.source, "params": self.params, "catalogue": self.catalogue,
                "fix": self.fix}


SCENARIOS: dict[str, Scenario] = {}
DEFECTS: dict[str, Defect] = {}


def _same_function(a, b) -> bool:
    """The same function, or the same definition made again (a closure factory called
    twice, a module reloaded): registering it again replaces the old one."""
    return a is b or (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == (
        getattr(b, "__module__", None), getattr(b, "__qualname__", None))


def scenario(name: str, *, description: str | None = None, tags=(), max_steps: int = 20_000,
             dfs_bound: int | None = 2, default: bool = True, key_branches=(), variants=()):
    """Register a scenario function under ``name`` (decorator).  ``variants``: parameter
    overrides the default campaign explores besides the defaults (see Scenario)."""
    def deco(fn):
        old = SCENARIOS.get(name)
        if old is not None and not _same_function(old.fn, fn):
            raise UsageError(f"scenario {name!r} is registered twice")
        # (the same function re-imported, e.g. a test module collected again, replaces it)
        params = {}
        for p in inspect.signature(fn).parameters.values():
            if p.default is inspect.Parameter.empty:
                raise UsageError(f"scenario {name}: parameter {p.name} needs a default")
            params[p.name] = p.default
        doc = description or (inspect.getdoc(fn) or "").split("\n\n")[0].replace("\n", " ")
        sc = Scenario(name, fn, doc, params, frozenset(tags), max_steps, dfs_bound, default,
                      tuple(key_branches))
        # (validated and converted now: a typo must not wait for a campaign)
        resolved = [sc.resolve(v) for v in variants]
        SCENARIOS[name] = replace(sc, variants=tuple(
            {k: r[k] for k in v} for v, r in zip(variants, resolved)))
        fn.scenario_name = name
        return fn
    return deco


def register_defect(name: str, title: str, expected: str, scenarios, description: str = "",
                    source: str = "runtime self-check", params: dict | None = None) -> Defect:
    d = Defect(name, title, expected, tuple(scenarios), description, source, dict(params or {}))
    DEFECTS[name] = d
    return d


def register_catalogue_defect(name: str, title: str, expected: str, scenarios, *, fix: str,
                              description: str = "", params: dict | None = None) -> Defect:
    """A defect re-introducing historical bug ``name`` of the catalogue
    (shared/reference/bugs.md; a variant is ``entry/variant``)."""
    entry = name.split("/", 1)[0]
    d = Defect(name, title, expected, tuple(scenarios), description,
               f"catalogue {entry}", dict(params or {}), entry, fix)
    DEFECTS[name] = d
    return d


def _load_builtin():
    from . import (catalogue, mmu_async, mmu_core, mmu_fault_a, mmu_fault_b,  # noqa: F401
                   mmu_l2, mmu_nx, mmu_roots_a, mmu_roots_b, mmu_yield, selftest)


def get_scenario(name_or_fn) -> Scenario:
    """A registered scenario by name, or an ad-hoc one from a function."""
    _load_builtin()
    if isinstance(name_or_fn, Scenario):
        return name_or_fn
    if callable(name_or_fn):
        reg = getattr(name_or_fn, "scenario_name", None)
        if reg is not None and reg in SCENARIOS:
            return SCENARIOS[reg]
        # an ad-hoc scenario is named after its function; another function of that name
        # (a nested ``scenario`` in another module, say) gets a numbered name
        base = getattr(name_or_fn, "__name__", "scenario")
        name, k = base, 2
        while name in SCENARIOS and not _same_function(SCENARIOS[name].fn, name_or_fn):
            name, k = f"{base}#{k}", k + 1
        scenario(name, default=False)(name_or_fn)
        return SCENARIOS[name_or_fn.scenario_name]
    sc = SCENARIOS.get(name_or_fn)
    if sc is None:
        close = difflib.get_close_matches(str(name_or_fn), SCENARIOS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see 'tdpmmu list')"
        raise UsageError(f"unknown scenario {name_or_fn!r}{hint}")
    return sc


def get_defect(name: str) -> Defect:
    _load_builtin()
    d = DEFECTS.get(name)
    if d is None:
        close = difflib.get_close_matches(name, DEFECTS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see 'tdpmmu list')"
        raise UsageError(f"unknown defect {name!r}{hint}")
    return d


def all_scenarios() -> list[Scenario]:
    _load_builtin()
    return list(SCENARIOS.values())


def default_scenarios() -> list[Scenario]:
    return [s for s in all_scenarios() if s.default]


def all_defects() -> list[Defect]:
    _load_builtin()
    return list(DEFECTS.values())
