"""Layer ``explore``: the explorer (budgets, confirmation, shrinking, de-duplication)."""

from .engine import (ExitCode, ExitReason, ExploreResult, ReplayResult, Runner, explore,  # noqa: F401
                     origin_of, replay, shrink)
from .failure import Failure  # noqa: F401
