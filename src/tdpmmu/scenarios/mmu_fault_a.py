"""Default TDP MMU scenarios (realistic KVM flows), group fault_a."""

from __future__ import annotations
