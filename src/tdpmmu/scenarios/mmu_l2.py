"""Default TDP MMU scenarios (realistic KVM flows), group l2."""

from __future__ import annotations
