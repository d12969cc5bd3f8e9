"""Default TDP MMU scenarios (realistic KVM flows), group async."""

from __future__ import annotations
