"""tdpmmu: an executable model of KVM x86's TDP MMU and a deterministic concurrency explorer.

The public façade, shared by the CLI and by users::

    import tdpmmu

    result = tdpmmu.explore("sync-counter", strategy="pct", schedules=1000, seed=0,
                            defects=["counter-racy-rmw"])
    for failure in result.failures:
        print(tdpmmu.render_failure(failure))

    tdpmmu.replay("sync-counter", failure.schedule, defects=["counter-racy-rmw"])

Layers, lowest first: ``runtime`` -> ``sync`` -> ``mmu`` -> ``scenarios`` ->
``explore`` -> ``report`` -> ``cli``; a layer imports only from lower ones.
"""

from .explore import ExitCode, ExitReason, ExploreResult, Failure, ReplayResult, explore, replay, shrink
from .report.text import render_failure
from .runtime.errors import ModelInternalError, ScheduleMismatch, UsageError, Violation
from .scenarios import register_defect, scenario

__all__ = [
    "explore",
    "replay",
    "shrink",
    "scenario",
    "register_defect",
    "render_failure",
    "ExitCode",
    "ExitReason",
    "ExploreResult",
    "ReplayResult",
    "Failure",
    "Violation",
    "UsageError",
    "ScheduleMismatch",
    "ModelInternalError",
]
