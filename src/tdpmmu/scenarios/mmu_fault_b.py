"""Default TDP MMU scenarios (realistic KVM flows), group fault_b."""

from __future__ import annotations
