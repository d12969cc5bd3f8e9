"""The historical TDP MMU bug catalogue (shared/reference/bugs.md) as named defects.

Each defect is named by its catalogue id (a variant: ``id/variant``) and re-introduces
the kernel's historical behaviour in the model's own code path -- the same function, the
same step; the model consults it with ``traps.defect(name)``.  Where the historical code
differs from the newest kernel in a way the bug needs, the older design is a variant of
the model first (see the docstring of the function that consults the defect).

Entries outside what the model covers are listed in ``OUT_OF_SCOPE`` with the reason.
"""

from __future__ import annotations

from .registry import register_catalogue_defect

#: catalogue id -> why the model does not re-introduce it
OUT_OF_SCOPE: dict[str, str] = {}
#: ``id/variant`` -> why that one variant of an otherwise modelled entry is not
OUT_OF_SCOPE_VARIANTS: dict[str, str] = {}


# -- A1. root lifetime, root iteration, invalidation ---------------------------------


# -- A1. the asynchronous zap worker (v5.18-v6.5) -------------------------------------


# -- A2. the iterator and yielding ---------------------------------------------------


# -- A3. TLB flushing ----------------------------------------------------------------


# -- A4. SPTE atomicity, A/D bits, dirty logging --------------------------------------


# -- A5. the fault path --------------------------------------------------------------


# -- A6. NX huge page recovery -------------------------------------------------------


# -- A7. memslots, notifiers and prefaulting ------------------------------------------


# -- A8. teardown ---------------------------------------------------------------------


# -- Part B. review-time bugs and documented hazards -----------------------------------


# The defects themselves, one module per group of entries (registered on import).
from . import (catalogue_async, catalogue_fault_a, catalogue_fault_b,  # noqa: E402,F401
               catalogue_l2, catalogue_nx, catalogue_roots_a, catalogue_roots_b,
               catalogue_yield)

for _group in (catalogue_async, catalogue_fault_a, catalogue_fault_b, catalogue_l2,
               catalogue_nx, catalogue_roots_a, catalogue_roots_b, catalogue_yield):
    OUT_OF_SCOPE.update(getattr(_group, "OUT_OF_SCOPE", {}))
    OUT_OF_SCOPE_VARIANTS.update(getattr(_group, "OUT_OF_SCOPE_VARIANTS", {}))

__all__ = ["OUT_OF_SCOPE", "OUT_OF_SCOPE_VARIANTS", "register_catalogue_defect"]
