"""Default TDP MMU scenarios (realistic KVM flows), group nx."""

from __future__ import annotations
