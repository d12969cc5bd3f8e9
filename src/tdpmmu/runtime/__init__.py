"""Layer ``runtime``: the deterministic machine (executions, tasks, strategies, schedules).

KVM-agnostic: nothing here knows about SPTEs or even about locks.  Primitives talk to
it only through :mod:`tdpmmu.runtime.traps`.
"""

from .errors import *  # noqa: F401,F403
from .execution import Execution, ExecutionResult, TraceStep, format_site  # noqa: F401
from .strategies import DFS, PCT, RandomWalk, Replay, Strategy, Timeslice, make_strategy  # noqa: F401
