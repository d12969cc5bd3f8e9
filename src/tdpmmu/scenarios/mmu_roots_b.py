"""Default TDP MMU scenarios (realistic KVM flows), group roots_b."""

from __future__ import annotations
